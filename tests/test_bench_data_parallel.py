"""bench/data_parallel.py: a few-update smoke of 1 against 2 host devices, so the bench never rots."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["num_envs=4", "batch_size=2", "hidden_size=16", "rollout_length_frames=8", "render_length_seconds=0.16"]
TINY += ["log_interval_seconds=0.0"]  # a state line per update: tiny updates take milliseconds


def test_smoke_one_against_two_host_devices(tmp_path):
    out = tmp_path / "data_parallel.json"
    cmd = [sys.executable, "bench/data_parallel.py", "--devices", "1,2", "--steps", "5", "--out", str(out), *TINY]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == "cpu (forced host devices)"
    assert set(result["devices"]) == {"1", "2"}
    for run in result["devices"].values():
        assert run["env_steps_per_s"] > 0 and run["compile_s"] is not None
    assert result["throughput_vs_first"]["1"] == 1.0
    ratio = result["devices"]["2"]["env_steps_per_s"] / result["devices"]["1"]["env_steps_per_s"]
    assert abs(result["throughput_vs_first"]["2"] - ratio) < 1e-3
    assert "devices=1" in result["config"] and "devices=2" not in result["config"]  # the baseline run's config


def test_bad_device_lists_are_refused():
    for bad in ("1,x", "0,2"):
        done = subprocess.run(
            [sys.executable, "bench/data_parallel.py", "--devices", bad], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 2 and ("--devices" in done.stderr or "device counts" in done.stderr), done.stderr
