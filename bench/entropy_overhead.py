"""Cost of the entropy-bridged mixin: `tasks.walk` with the auto-tuned temperature and the entropy metrics against
the same task without them (fixed `entropy_coef`, no entropy metrics), same config, alternating runs. Prints JSON.

    python bench/entropy_overhead.py [--steps N] [--repeats R] [--out FILE] [key=value ...]

Both variants keep the sim-to-real blocks (`sim2real=true`); only the pieces of issue 4 differ: α in ksim's PPO
loss (tuned once per update), the per-group observation entropy metrics and the policy/observation entropy ratio.
Entropy matching needs a real-log profile and is off in both (`entropy_target_path` unset).

Targets (issue 4): throughput ratio with / without >= 0.97, compile-time ratio <= 1.1.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walk_throughput import compare

TARGETS = {"throughput_ratio_min": 0.97, "compile_ratio_max": 1.1}
VARIANTS = {
    "without": ["auto_temperature=false", "entropy_metrics=false"],
    "with": ["auto_temperature=true", "entropy_metrics=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="PPO updates per run (the first one compiles)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()
    result = compare(args.steps, args.repeats, VARIANTS, overrides)
    summary = {
        "benchmark": "tasks.walk with vs without the entropy-bridged mixin (auto-α, entropy metrics)",
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
