"""bench/gpu_walk.py: the one GPU command, run here at CPU-smoke size (`--tiny`) so that it never rots.

Oracles: the ratio is recomputed from the throughputs the JSON lists, the training summary from its own curve, and
the gate levels are the sim-to-sim gate's own (`ksim_entropy.sim2real.sim2sim.DEFAULT_LEVELS`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ksim_entropy.sim2real.sim2sim import DEFAULT_LEVELS

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/gpu_walk.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_without_a_gpu_it_refuses_before_anything_compiles(tmp_path):
    done = _bench("--out", str(tmp_path / "gpu.json"), timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: JAX runs on cpu here, not a GPU; --tiny runs the CPU smoke"
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--envs", "4096,x"], "error: --envs must be integers separated by commas, got '4096,x'"),
        (["--steps", "2"], "error: need --envs of positive integers, --steps >= 3 and --pairs >= 1"),
        (["num_envs"], "error: ['num_envs'] are not key=value"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    done = _bench("--out", str(tmp_path / "gpu.json"), *args, timeout=120)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (1, message)


@pytest.mark.slow
def test_tiny_smoke_measures_throughput_overhead_and_trains_exports_and_gates(tmp_path):
    out = tmp_path / "gpu_walk.json"
    done = _bench("--tiny", "--out", str(out))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert result["device"]["backend"] == "cpu"
    (row,) = result["throughput"]
    assert row["num_envs"] == 8 and row["median_interval_steps_per_s"] > 0 and row["compile_s"] > 0
    cost = result["overhead"]
    assert cost["sim2real_steps_per_s"] == [row["median_interval_steps_per_s"]]
    assert cost["ratio_ours_over_plain"] == pytest.approx(
        cost["sim2real_steps_per_s"][0] / cost["plain_steps_per_s"][0], abs=1e-3
    )
    walk = result["walking"]
    run_dir = Path(walk["policy"]).parent
    assert (run_dir / "checkpoints" / "ckpt.3.bin").exists()  # the 3 updates asked for (ksim names them by update)
    assert walk["points"] and max(p["update"] for p in walk["points"]) <= 3  # the curve, thinned to one per 5 s
    assert Path(walk["policy"]).stat().st_size > 10_000
    assert walk["gate"]["command"] == [0.5, 0.0, 0.0]
    assert list(walk["gate"]["levels"]) == [level.name for level in DEFAULT_LEVELS]
    nominal = walk["gate"]["levels"]["nominal"]
    assert result["meets"] == {"throughput": False, "walking": False}  # 3 updates on a CPU meet neither target
    assert 0.0 <= nominal["success_rate"] <= 1.0
    assert out.with_suffix(".png").stat().st_size > 10_000
