"""The package on current JAX (issue 31): train a few updates and export, in `.venv-current-jax` (jax 0.10.2).

That environment is `requirements/lock.txt` with jax and jaxlib 0.10.2 (`python3 bootstrap.py current-jax`), where
ksim 0.2.10 and xax 0.4.4 import and run only through `ksim_entropy.compat`. The test skips, saying so, when the
environment is missing. Oracle for the export: kinfer's own runtime steps the written policy.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CURRENT_JAX_PYTHON = (
    Path(os.environ.get("KSIM_ENTROPY_CURRENT_JAX_VENV", ROOT / ".venv-current-jax")) / "bin" / "python"
)

pytestmark = pytest.mark.skipif(
    not CURRENT_JAX_PYTHON.exists(),
    reason=f"no current-JAX environment at {CURRENT_JAX_PYTHON.parent.parent}: run `python3 bootstrap.py current-jax`",
)

PROBE = """
import json, ksim_entropy, jax, ksim, xax
from ksim_entropy import compat
print(json.dumps({"jax": jax.__version__, "shims": compat.applied_shims(), "backend": jax.default_backend()}))
"""

STEP = """
import json, sys, numpy as np
from ksim_entropy.export import KinferRunner
runner = KinferRunner(sys.argv[1])
inputs = {"joint_angles": np.zeros(20), "joint_angular_velocities": np.zeros(20), "projected_gravity": [0, 0, -9.81],
          "accelerometer": [0, 0, 9.81], "gyroscope": np.zeros(3), "command": np.zeros(3), "time": [0.0]}
actions = [runner.step({k: np.asarray(v, np.float32) for k, v in inputs.items()}) for _ in range(3)]
print(json.dumps({"shape": list(actions[-1].shape), "finite": bool(np.isfinite(actions).all())}))
"""


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CURRENT_JAX_PYTHON), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_ksim_and_xax_import_on_current_jax_through_the_shims():
    proc = _run("-c", PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["jax"] == "0.10.2"
    assert probe["shims"] == ["jax.core.get_aval", "jax.jit(abstracted_axes=None)"]


@pytest.mark.slow
def test_walk_trains_saves_and_exports_on_current_jax(tmp_path):
    run_dir = tmp_path / "run"
    train = _run(
        "-m",
        "tasks.walk",
        "preset=cpu",
        "num_envs=2",
        "batch_size=2",
        "max_steps=3",
        "hidden_size=16",
        "render_length_seconds=0.1",
        "sim2sim_gate=false",
        f"exp_dir={run_dir}",
    )
    assert train.returncode == 0, (train.stdout + train.stderr)[-3000:]
    assert (run_dir / "checkpoints" / "ckpt.bin").exists()
    policy = run_dir / "policy.kinfer"
    assert policy.exists()
    step = _run("-c", STEP, str(policy))
    assert step.returncode == 0, step.stderr[-3000:]
    assert json.loads(step.stdout.strip().splitlines()[-1]) == {"shape": [20], "finite": True}
