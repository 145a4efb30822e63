"""Smokes of bench/balance_feedback.py and bench/standing_eval.py, checked against closed forms and MuJoCo."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ksim_entropy.kbot.robot import kbot_asset_dir, resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import balance_feedback  # noqa: E402
import standing_eval  # noqa: E402


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=900, cwd=ROOT
    )


def test_balance_bench_margins_are_the_closed_form_and_pd_alone_matches_mujoco(tmp_path):
    out = tmp_path / "balance.json"
    proc = _run("balance_feedback.py", "--iterations", "1", "--population", "4", "--elite", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    balance = result["balance"]
    # What two ankles' soft limits can hold: torque / weight, the mass from the metadata's model.
    sim = KBotSimulator(resolve_robot_files("local"))
    mass = float(sim.model.body_subtreemass[1])
    assert balance["mass_kg"] == mass
    assert balance["com_range_the_ankles_can_hold_cm"] == pytest.approx(100 * (2 * 11.9) / (mass * 9.81), rel=1e-12)
    assert math.isclose(
        balance["forward_margin_cm"], balance["com_range_the_ankles_can_hold_cm"] - balance["com_ahead_of_ankles_cm"]
    )
    # PD alone, MuJoCo stepped here without the bench: the same fall time to the control step.
    sim.reset()
    steps_standing = 0
    while sim.data.qpos[2] >= 0.45 and steps_standing < 1000:
        sim.step(sim.nominal_pose_rad)
        steps_standing += 1
    assert result["pd_alone_stand_s"] == (steps_standing - 1) * 0.02  # the bench counts from 0
    assert len(result["search"]) == 1 and set(result["feedback"]) == set(balance_feedback.PARAMETERS)


def test_standing_eval_on_the_shipped_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(
        kbot_asset_dir().parent / "policies" / "kbot-stand" / "ckpt.bin", run_dir / "checkpoints" / "ckpt.7.bin"
    )
    curve = tmp_path / "curve.json"
    curve.write_text(
        json.dumps(
            {
                "runs": [
                    {
                        "points": [
                            {"update": 5, "wall_s": 1.0, "env_steps": 10},
                            {"update": 9, "wall_s": 2.5, "env_steps": 20},
                        ]
                    }
                ]
            }
        )
    )
    out = tmp_path / "standing.json"
    proc = _run(
        "standing_eval.py", str(run_dir), "--curve", str(curve), "--episodes", "1", "--seconds", "3", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["checkpoints"]
    assert (row["update"], row["wall_s"], row["env_steps"]) == (7, 2.5, 20)  # the first curve point at or after it
    assert row["levels"]["nominal"] == {"success_rate": 1.0, "standing_s": 3.0}
    assert set(row["levels"]) == set(standing_eval.LEVEL_NAMES)
    assert Path(result["png"]).stat().st_size > 10_000


def test_standing_eval_refuses_a_run_without_checkpoints(tmp_path):
    proc = _run("standing_eval.py", str(tmp_path), "--out", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "no checkpoints/ckpt.<update>.bin" in proc.stderr
    assert standing_eval.curve_position(None, 3) == {"wall_s": None, "env_steps": None}
    only_earlier = {"runs": [{"points": [{"update": 1, "wall_s": 4.0, "env_steps": 2}]}]}
    assert standing_eval.curve_position(only_earlier, 3) == {"wall_s": 4.0, "env_steps": 2}  # the last point


@pytest.mark.parametrize("speed", [0.01, 0.1, 0.25, 0.6, 2.0])
def test_push_fraction_within_a_speed_is_the_integral_scipy_computes(speed):
    from scipy import integrate, stats

    mass, max_force, (a, b) = 36.3, 150.0, (0.1, 0.3)

    def inside(t: float) -> float:  # P(F <= speed·m / t) for F ~ U(0, max_force), times the density of t
        return stats.uniform(0, max_force).cdf(speed * mass / t) / (b - a)

    expected, _ = integrate.quad(inside, a, b, points=[speed * mass / max_force])
    assert balance_feedback.fraction_within(speed, mass, max_force, (a, b)) == pytest.approx(expected, rel=1e-9)


def test_push_capture_uses_the_stand_presets_push_and_the_pendulum_formula():
    balancer = balance_feedback.Balancer()
    balance = balancer.balance_margin()
    push = balance_feedback.stand_preset_push(balancer.sim.model)
    # the stand preset's pushes (ksim_entropy/kbot/walk.py): <= 40 N, every 3-8 s
    assert (push.max_force_n, push.interval_s) == (40.0, (3.0, 8.0))
    capture = balance_feedback.push_capture(balance, push, samples=20_000, seed=0)
    reach_m = 2 * 11.9 / (balance["mass_kg"] * 9.81)
    assert capture["capture_speed_mps"] == pytest.approx(reach_m * math.sqrt(9.81 / balance["com_height_m"]))
    levels = capture["levels"]
    for level, row in levels.items():
        # 20,000 pushes: the Monte Carlo fraction within 4 binomial standard errors of the closed form.
        p = row["fraction_within_closed_form"]
        assert abs(row["fraction_within_monte_carlo"] - p) <= 4 * math.sqrt(p * (1 - p) / 20_000) + 1e-12
        assert row["max_push_mps"] == pytest.approx(40.0 * float(level) * 0.3 / balance["mass_kg"])
        assert 0 < row["mean_episode_s_without_stepping"] <= 20.0
    # Harder pushes, shorter episodes for a robot that cannot step.
    means = [levels[k]["mean_episode_s_without_stepping"] for k in sorted(levels, key=float)]
    assert means == sorted(means, reverse=True)
