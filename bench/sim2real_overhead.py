"""Cost of the sim-to-real blocks: `tasks.walk` with `sim2real=true` against the same task built from ksim's plain
classes (`sim2real=false`), same config, measured alternately in one run. Prints JSON.

    python bench/sim2real_overhead.py [--steps N] [--repeats R] [--out FILE] [key=value ...]

sim2real=true switches on every block of issue 3 at once: per-episode entropy-aware randomization of 12 parameter
groups (link masses, torso mass and CoM, joint friction, damping, armature, foot friction, IMU mounting, per-joint
kp / kd / torque limit, joint zero offsets) with widths in the curriculum state, MuJoCo PD servos, an action delay
line at the physics rate, delayed noisy biased sensors, force pushes and wind. Runs alternate (plain, ours, plain,
ours, ...) so machine load drifts hit both; compile times are cold (JAX's persistent cache off).

Targets (issue 3): throughput ratio ours / plain >= 0.97, compile-time ratio <= 1.1.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walk_throughput import compare

TARGETS = {"throughput_ratio_min": 0.97, "compile_ratio_max": 1.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="PPO updates per run (the first one compiles)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()

    result = compare(args.steps, args.repeats, {"plain": ["sim2real=false"], "sim2real": ["sim2real=true"]}, overrides)
    summary = {
        "benchmark": "tasks.walk sim2real blocks vs plain ksim",
        **result,
        "targets": TARGETS,
        "meets_targets": result["throughput_ratio"] >= TARGETS["throughput_ratio_min"]
        and result["compile_ratio"] <= TARGETS["compile_ratio_max"],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
