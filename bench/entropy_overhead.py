"""Cost of the entropy-bridged mixin: `tasks.walk` with the auto-tuned temperature and the entropy metrics against
the same task without them (fixed `entropy_coef`, no entropy metrics), same config, alternating runs. Prints JSON.

    python bench/entropy_overhead.py [--steps N] [--repeats R] [--out FILE] [key=value ...]

Both variants keep the sim-to-real blocks (`sim2real=true`); only the pieces of issue 4 differ: α in ksim's PPO
loss (tuned once per update), the per-group observation entropy metrics and the policy/observation entropy ratio.
Entropy matching needs a real-log profile and is off in both (`entropy_target_path` unset).

Targets (issue 4): throughput ratio with / without >= 0.97, compile-time ratio <= 1.1.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walk_throughput import overhead_main

VARIANTS = {
    "without": ["auto_temperature=false", "entropy_metrics=false"],
    "with": ["auto_temperature=true", "entropy_metrics=true"],
}


if __name__ == "__main__":
    overhead_main(__doc__, "tasks.walk with vs without the entropy-bridged mixin (auto-α, entropy metrics)", VARIANTS)
