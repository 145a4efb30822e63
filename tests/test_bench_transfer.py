"""The pieces of bench/transfer_eval.py that do not train: standing time on the stand-in robot, the summary, the
plot and the argument checks. (The bench's runs are benchmarks; its training steps are the e2e-tested commands.)"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ksim_entropy.testing.reality import HiddenRobot, reality_log

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import transfer_eval  # noqa: E402

POLICY = ROOT / "assets" / "policies" / "kbot-stand" / "policy.kinfer"


def test_standing_time_is_how_long_the_stand_in_robot_stood():
    still = transfer_eval.standing(POLICY, HiddenRobot(), push_mps=0.0, episodes=1)
    assert still == {"standing_s": 20.0, "success": 1.0, "episodes_s": [20.0]}
    toppled = transfer_eval.standing(POLICY, HiddenRobot(), push_mps=1.5, episodes=2)
    for seed, seconds in enumerate(toppled["episodes_s"]):  # each is the fall the stand-in robot reports, to a step
        with pytest.raises(ValueError, match="fell at t") as fall:
            reality_log(HiddenRobot(), seconds=20.0, seed=1000 + seed, suspended=False, policy=POLICY, push_mps=1.5)
        assert seconds == pytest.approx(float(re.search(r"t = ([\d.]+) s", str(fall.value)).group(1)), abs=0.02)
    assert toppled["success"] == 0.0 and toppled["standing_s"] == pytest.approx(sum(toppled["episodes_s"]) / 2)


def _levels(stand_in: float, nominal: float) -> dict:
    return {
        "0.2": {
            "stand_in": {"standing_s": stand_in, "success": stand_in / 20.0},
            "nominal": {"standing_s": nominal, "success": 1.0},
            "transfer_efficiency": stand_in / nominal,
        }
    }


def test_summary_is_mean_min_max_over_seeds_and_the_plot_is_written(tmp_path):
    results = {
        "source": [{"seed": None, "levels": _levels(10.0, 20.0)}],
        "plain": [{"seed": 0, "levels": _levels(12.0, 20.0)}, {"seed": 1, "levels": _levels(16.0, 16.0)}],
    }
    summary = transfer_eval.summarize(results, [0.2])
    plain = summary["plain"]["0.2"]
    assert plain["stand_in_standing_s"] == {"mean": 14.0, "min": 12.0, "max": 16.0}
    assert plain["stand_in_success"] == {"mean": 0.7, "min": 0.6, "max": 0.8}
    assert plain["transfer_efficiency"]["mean"] == pytest.approx((0.6 + 1.0) / 2)
    assert plain["nominal_standing_s"] == 18.0 and summary["source"]["0.2"]["stand_in_standing_s"]["mean"] == 10.0
    transfer_eval.plot(summary, [0.2], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "plain,bogus"], "unknown arms ['bogus']"),
        (["--episodes", "0"], "need --updates >= 1, --episodes >= 1"),
        (["--windows-seconds", "5"], "--windows-seconds must be at least 20.0 s"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "transfer_eval.py"), "--out", str(tmp_path / "t"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "t_runs").exists()  # nothing made before the arguments were checked
