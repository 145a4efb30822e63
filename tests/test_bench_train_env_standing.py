"""bench/train_env_standing.py: first-episode bookkeeping against hand-made arrays, a smoke on the shipped policy."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import train_env_standing  # noqa: E402

SHIPPED_CKPT = ROOT / "assets" / "policies" / "kbot-stand" / "ckpt.bin"


def test_first_episodes_counts_falls_not_time_limits_and_only_the_first_episode():
    done = np.zeros((4, 10), dtype=bool)
    success = np.zeros((4, 10), dtype=bool)
    done[0, 2] = True  # falls at step 2 (0.06 s), then falls again at 7: only the first counts
    done[0, 7] = True
    done[1, 9] = success[1, 9] = True  # reaches the time limit on the last step: stood
    done[2, 4] = True  # falls at step 4 (0.1 s)
    # env 3 never ends: stood
    stood, fell, first = train_env_standing.first_episodes(done, success, ctrl_dt_s=0.02)
    assert stood == 2
    assert fell == pytest.approx([0.06, 0.10])
    assert first.tolist() == [2, 9, 4, 10]


def test_quantiles_of_nothing_is_none_and_of_values_is_numpys():
    assert train_env_standing.quantiles([]) is None
    found = train_env_standing.quantiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert found == {"min": 1.0, "p10": 1.4, "median": 3.0, "p90": 4.6, "max": 5.0}


def test_smoke_shipped_policy_stands_half_a_second_at_nominal(tmp_path):
    # The robot held by its PD servos alone needs 1.28 s to fall (docs/training.md), so every environment of the
    # shipped standing policy must still be up after 0.5 s at level 0; the JSON carries what was asked.
    out = tmp_path / "train_env.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "train_env_standing.py"),
            str(SHIPPED_CKPT),
            "--seconds",
            "0.5",
            "--envs",
            "4",
            "--iterations",
            "4",
            "--conditions",
            "nominal",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["seconds"], result["envs"]) == (0.5, 4)
    [row] = result["rows"]
    assert (row["iterations"], row["condition"], row["action"]) == (4, "nominal", "mean")
    assert row["stood_fraction"] == 1.0
    assert row["fall_s_quantiles"] is None
    assert sum(row["first_episode_ends"].values()) == 0


@pytest.mark.parametrize("content, message", [(None, "no checkpoint at"), (b"not a checkpoint", "nope.bin")])
def test_a_missing_or_foreign_checkpoint_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "nope.bin"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_env_standing.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_randomized_parameter_keeps_only_its_width(capsys):
    from ksim_entropy.kbot.walk import KBotWalkingTask

    shipped = KBotWalkingTask.from_checkpoint(SHIPPED_CKPT).config
    bench = train_env_standing
    config = dataclasses.replace(shipped, **bench.COMMON, **bench.CONDITIONS["randomized"])  # the bench's settings
    model = KBotWalkingTask(config).get_mujoco_model()
    full = KBotWalkingTask(config).get_domain_randomization(model)
    only = train_env_standing.only_task("joint_zero_offset")(config).get_domain_randomization(model)
    assert only.names == full.names
    keep = np.arange(len(full.names)) == full.names.index("joint_zero_offset")
    np.testing.assert_array_equal(only.initial_widths, np.where(keep, full.initial_widths, 0.0))
    np.testing.assert_array_equal(only.max_widths, np.where(keep, full.max_widths, 0.0))
    assert full.initial_widths[keep][0] > 0
    # ksim's level (it scales the reset noise) is the kept parameter's: full at full width, for "none" too.
    for name in ("joint_zero_offset", "none"):
        task = train_env_standing.only_task(name)(config)
        randomization = task.get_domain_randomization(model)
        curriculum = task.get_randomization_curriculum(model, randomization)
        assert float(curriculum.level(curriculum.initial_widths())) == pytest.approx(1.0)
    with pytest.raises(SystemExit):
        train_env_standing.main([str(SHIPPED_CKPT), "--only", "gyro_bias"])
    assert "--only: no randomized parameters ['gyro_bias']; the task has" in capsys.readouterr().err
