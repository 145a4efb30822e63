"""Cost of the sim-to-real blocks: `tasks.walk` with `sim2real=true` against the same task built from ksim's plain
classes (`sim2real=false`), same config, measured alternately in one run. Prints JSON.

    python bench/sim2real_overhead.py [--steps N] [--repeats R] [--warm-repeats W] [--warm-steps M] [--out FILE]
        [key=value ...]

sim2real=true switches on every block of issue 3 at once: per-episode entropy-aware randomization of 12 parameter
groups (link masses, torso mass and CoM, joint friction, damping, armature, foot friction, IMU mounting, per-joint
kp / kd / torque limit, joint zero offsets) with widths in the curriculum state, MuJoCo PD servos, an action delay
line at the physics rate, delayed noisy biased sensors, force pushes and wind. Runs alternate in pairs (plain, ours,
ours, plain, ...) so machine load drifts hit both; compile times are cold (JAX's persistent cache off). With
`--warm-repeats`, further pairs of `--warm-steps` updates each measure throughput with each variant's programs
cached after its first warm run (about 35 s of start-up instead of 100-130 s), and the judged throughput ratio is
theirs: one run's throughput moves ±20 % on this shared machine, so pairs are what buy precision.

Targets (issue 3): throughput ratio ours / plain >= 0.97, compile-time ratio <= 1.1.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walk_throughput import overhead_main

if __name__ == "__main__":
    overhead_main(
        __doc__,
        "tasks.walk sim2real blocks vs plain ksim",
        {"plain": ["sim2real=false"], "sim2real": ["sim2real=true"]},
    )
