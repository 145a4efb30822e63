"""Run by tests/test_data_parallel.py: a whole (short) training run of the quadruped example with `devices=auto`.

    python tests/multi_host_train_probe.py EXP_DIR

With JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set, every process runs this same command and
`devices=auto` spans every process's devices; without them, one process uses the devices it sees (two, with
XLA_FLAGS=--xla_force_host_platform_device_count=2). Training goes through xax's launcher, as a user's would.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("MUJOCO_GL", "egl")

from ksim_entropy.ppo.data_parallel import initialize_distributed  # noqa: E402

UPDATES = 3  # xax counts the burn-in update: two PPO updates after it

if __name__ == "__main__":
    initialize_distributed()
    import quadruped

    values = {**quadruped.DEFAULTS, "num_envs": 8, "batch_size": 4, "hidden_size": 16, "devices": "auto"}
    values.update(max_steps=UPDATES, exp_dir=sys.argv[1], save_every_n_seconds=None)
    quadruped.QuadrupedTask.launch(quadruped.QuadrupedTask.get_config(values, use_cli=False), use_cli=[])
