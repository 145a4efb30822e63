"""examples/camera_quadruped.py (issue 35 item 5): a ksim task whose actor reads a randomized camera image trains a
few updates and logs the visual randomization's entropy, which equals the closed form at the logged width."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ksim_entropy.visual import PARAMETERS, ImageRandomization

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_camera_quadruped_trains_and_logs_its_visual_entropy(tmp_path):
    args = ["max_steps=2", "num_envs=8", "batch_size=4", "hidden_size=16", "rollout_length_frames=16"]
    run = subprocess.run(
        [sys.executable, "examples/camera_quadruped.py", *args, f"exp_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (tmp_path / "checkpoints" / "ckpt.2.bin").exists()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r["train"] for r in records if "visual_dr_entropy_nats" in r.get("train", {})]
    assert train, "no update logged the visual randomization"
    width = train[-1]["visual_dr_width"]
    assert width == pytest.approx(1.0)  # uniform mode at the configured widths: curriculum level 1
    expected = ImageRandomization(follow_curriculum=True).entropies(width)
    for name in PARAMETERS:
        assert train[-1][f"visual_dr_entropy_{name}"] == pytest.approx(float(expected[name]), abs=1e-5)
    assert train[-1]["visual_dr_entropy_nats"] == pytest.approx(float(sum(expected.values())), abs=1e-4)
