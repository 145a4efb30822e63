"""The sim-to-sim gate on a tiny exported policy (a constant standing pose, which falls: it has no balance).

Oracles: MuJoCo stepped directly (no kinfer, no gate code) with the same targets and start; invariances a constant
policy must show (latency and sensor noise cannot change what it does); a stronger push makes it fall sooner.
"""

import json
import math
import subprocess
import sys

import mujoco
import numpy as np
import pytest
from matplotlib.image import imread

from ksim_entropy.export import ExportError
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions
from ksim_entropy.sim2real.sim2sim import DEFAULT_LEVELS, GateOptions, Perturbation, run_gate, write_gate_report
from tests.deploy.parts import write_tiny_policy

OPTIONS = GateOptions(episodes=2, seconds=3.0, command=(0.0, 0.0, 0.0))
LEVELS = (*DEFAULT_LEVELS, Perturbation("push 3 m/s", push_mps=3.0, push_interval_s=0.5))


@pytest.fixture(scope="module")
def files():
    return resolve_robot_files("local")


@pytest.fixture(scope="module")
def stand_policy(tmp_path_factory, files):
    names = KBotSimulator(files).joint_names
    return write_tiny_policy(tmp_path_factory.mktemp("gate") / "stand.kinfer", names, swing_rad=0.0)


@pytest.fixture(scope="module")
def gate(stand_policy, files):
    return run_gate(stand_policy, files, LEVELS, OPTIONS)


def _direct_fall_time(files, seed: int, dt_s: float, rk4: bool) -> tuple[float | None, float]:
    """Step MuJoCo directly with the policy's (float32) nominal targets; (fall time s, RMS planar speed m/s)."""
    sim = KBotSimulator(files, SimOptions(dt_s=dt_s))
    if rk4:
        sim.model.opt.integrator = mujoco.mjtIntegrator.mjINT_RK4
    rng = np.random.default_rng(seed)
    sim.reset(sim.nominal_pose_rad + rng.uniform(-0.02, 0.02, sim.num_joints))
    targets = sim.nominal_pose_rad.astype(np.float32).astype(float)
    start = sim.data.qpos[2]
    speeds = []
    for _ in range(round(OPTIONS.seconds / 0.02)):
        sim.step(targets)
        x, y = sim.data.qpos[4:6]
        tilt = math.degrees(math.acos(1 - 2 * (x * x + y * y)))
        if sim.data.qpos[2] < 0.6 * start or tilt > 60:
            return sim.time_s, float(np.sqrt(np.mean(speeds)))
        speeds.append(float(np.sum(sim.data.qvel[:2] ** 2)))
    return None, float(np.sqrt(np.mean(speeds)))


def test_nominal_level_matches_mujoco_stepped_directly(gate, files):
    nominal = gate.level("nominal")
    falls, speeds = zip(*(_direct_fall_time(files, seed, 0.001, rk4=True) for seed in (0, 1)), strict=True)
    assert nominal.fell_at_s == pytest.approx(list(falls), abs=1e-9)
    assert nominal.success_rate == 0.0  # no balance: it falls, and the gate says so
    assert nominal.tracking_error_mps == pytest.approx(np.mean(speeds), rel=1e-6)  # command 0: error = speed


def test_reference_is_the_training_simulator(gate, files):
    fall, _ = _direct_fall_time(files, 0, 0.004, rk4=False)  # 4 ms, implicit-fast: tasks.walk's settings
    assert fall is not None
    nominal = gate.level("nominal")
    assert nominal.transfer_efficiency == pytest.approx(nominal.mean_reward / gate.reference_reward)


def test_a_constant_policy_is_blind_to_latency_and_noise(gate):
    nominal = gate.level("nominal")
    for name in ("latency 20 ms", "noise x2"):
        level = gate.level(name)
        assert level.fell_at_s == nominal.fell_at_s
        # equal up to float32 rounding: before the first delayed action arrives, the servos hold the float64 pose
        assert level.episode_rewards == pytest.approx(nominal.episode_rewards, rel=1e-6)


def test_perturbations_change_the_physics(gate):
    nominal = gate.level("nominal")
    assert max(gate.level("push 3 m/s").fell_at_s) < min(nominal.fell_at_s)  # pushed over sooner
    assert gate.level("mass x1.15").fell_at_s != nominal.fell_at_s
    assert gate.level("friction x0.5").tracking_error_mps != nominal.tracking_error_mps


def test_verdict_and_report(gate, tmp_path):
    assert not gate.passed
    assert gate.reasons == ["nominal: success rate 0.00 < 0.8"]
    paths = write_gate_report(gate, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert [level["name"] for level in data["levels"]] == [level.name for level in LEVELS]
    assert data["levels"][0]["mean_reward"] == gate.levels[0].mean_reward
    image = imread(paths["png"])
    assert image.shape[0] > 400 and image[..., :3].std() > 0.05  # a real figure, not a blank canvas
    with pytest.raises(FileExistsError):
        write_gate_report(gate, tmp_path)


def test_thresholds_decide_the_verdict(stand_policy, files):
    lenient = GateOptions(episodes=1, seconds=0.5, command=(0.0, 0.0, 0.0), min_success=1.0, min_efficiency=0.0)
    short = run_gate(stand_policy, files, DEFAULT_LEVELS[:1], lenient)  # it stands for 0.5 s before it tips
    assert short.passed and short.levels[0].success_rate == 1.0


def test_cli_writes_the_report_and_exits_1_on_failure(stand_policy, tmp_path):
    command = [sys.executable, "-m", "tasks.sim2sim", str(stand_policy), "--out", str(tmp_path)]
    done = subprocess.run([*command, "--episodes", "1", "--seconds", "2"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "sim2sim gate FAILED (nominal: success rate 0.00 < 0.8)" in done.stdout
    assert (tmp_path / "sim2sim.json").is_file() and (tmp_path / "sim2sim.png").is_file()
    again = subprocess.run([*command, "--episodes", "1"], capture_output=True, text=True)
    assert again.returncode == 2 and "exist; pass overwrite" in again.stderr


def test_bad_input(stand_policy, files, tmp_path):
    broken = tmp_path / "broken.kinfer"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(ExportError, match="Corrupt"):
        run_gate(broken, files, DEFAULT_LEVELS, OPTIONS)
    with pytest.raises(ValueError, match="3 commands"):
        run_gate(stand_policy, files, DEFAULT_LEVELS, GateOptions(command=(0.3,)))
    with pytest.raises(ValueError, match="friction_scale"):
        Perturbation("bad", friction_scale=0.0)
    with pytest.raises(ValueError, match="episodes"):
        GateOptions(episodes=0)
