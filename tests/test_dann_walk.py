"""Real logs as DANN windows: a stand-in robot's log through `tasks.windows` is the actor's input layout, and logs or
settings that do not match the policy are one-line errors before anything compiles. (Training with the windows,
the classifier in the checkpoint and resume are checked by the end-to-end runs, tests/test_e2e.py.)

The "real" log is the shipped standing policy closed-loop through kinfer's runtime on the stand-in robot
(`ksim_entropy.testing.reality`) with a hidden 0.05 rad/s gyro bias: a domain gap the classifier can find.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ksim_entropy.bridge.diagnose.randomizers import DYNAMICS_RANDOMIZERS, OBSERVATION_RANDOMIZERS
from ksim_entropy.bridge.logs import read_ndjson, write_ndjson
from ksim_entropy.cli.walk import build_config
from ksim_entropy.cli.windows import main as windows_main
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.formats.windows import WindowError, observation_windows, read_windows
from ksim_entropy.kbot.walk import TASK_ID, KBotWalkingTask, WalkConfig, preset_config
from ksim_entropy.testing.reality import HiddenRobot, reality_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "assets" / "policies" / "kbot-stand" / "policy.kinfer"
# What `build_config` needs to reach the DANN checks (rollouts of 8 frames, a validation rollout of 10).
SMALL = ["preset=cpu", "rollout_length_frames=8", "render_length_seconds=0.2"]
NUM_INPUTS = KBotWalkingTask.num_actor_inputs


def run(module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISABLE_TENSORBOARD")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def real_log(tmp_path_factory) -> Path:
    hidden = HiddenRobot(gyro_bias_rad_s=(0.05, -0.05, 0.0))
    log = reality_log(hidden, seconds=3.0, seed=0, suspended=False, policy=POLICY)
    return write_ndjson(log, tmp_path_factory.mktemp("dann") / "real.ndjson")


@pytest.fixture(scope="module")
def windows_file(real_log) -> Path:
    out = real_log.parent / "real_windows.npz"
    proc = run("tasks.windows", str(real_log), "--out", str(out), "--window-steps", "4", "--stride", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "windows of 4 steps from 150 rows" in proc.stdout
    return out


def test_windows_are_the_actor_inputs_of_the_logged_steps(real_log, windows_file):
    windows, meta = read_windows(windows_file, task_id=TASK_ID, num_inputs=NUM_INPUTS)
    assert meta["task_id"] == TASK_ID and meta["sources"][0]["rows"] == 150 and meta["sources"][0]["step_gaps"] == 0
    assert windows.shape == ((150 - 4) // 2 + 1, 4, NUM_INPUTS)
    # Independent of the task's function: the actor's input layout written out by hand (joint offsets from the
    # nominal pose, velocities × 0.1, gravity in g, gyro, command).
    log, _ = read_ndjson(real_log)
    task = KBotWalkingTask(WalkConfig(**preset_config("cpu")))
    nominal = np.asarray(task.nominal_pose(task.get_mujoco_model()))
    g = log.groups
    rows = np.concatenate(
        [g["joint_angles"] - nominal, g["joint_vels"] * 0.1, g["projected_g"] / 9.81, g["gyro"], g["command"]], axis=1
    )
    np.testing.assert_allclose(windows[3], rows[6:10], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dann_lambda=-0.5", "max_lambda must be finite and >= 0"),
        ("dann_windows_per_update=0", "windows_per_update >= 1"),
        ("rollout_length_frames=3", "windows of 4 steps do not fit rollouts of 3 frames"),
        ("render_length_seconds=0.06", "windows of 4 steps do not fit rollouts of 3 frames"),
    ],
)
def test_bad_dann_settings_are_one_line_errors_before_compiling(windows_file, tmp_path, override, message):
    with pytest.raises(SystemExit) as exc:
        build_config([*SMALL, f"dann_windows={windows_file}", override, f"exp_dir={tmp_path / 'r'}"])
    text = str(exc.value)
    assert text.startswith(f"error: dann_windows={windows_file}: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["randomization_mode=curriculum"], "needs sim2real=true, randomization_mode=uniform and no entropy_target_pa"),
        (["c2st_band=[0.8,0.6]"], "band must be 0 <= low <= high <= 1"),
        (["c2st_parameters=[body_mass_scale,gyro]"], "no randomized parameters ['gyro']; this task has"),
        (["rollout_length_frames=3"], "windows of 4 steps do not fit rollouts of 3 frames"),
    ],
)
def test_bad_discriminator_settings_are_one_line_errors_before_compiling(windows_file, tmp_path, overrides, message):
    with pytest.raises(SystemExit) as exc:
        build_config([*SMALL, f"c2st_windows={windows_file}", *overrides, f"exp_dir={tmp_path / 'r'}"])
    text = str(exc.value)
    assert text.startswith(f"error: c2st_windows={windows_file}: ") and message in text and "\n" not in text, text


def gap_report_json(path, names=None, **diagnosis):
    """A report.json as `ksim-bridge gap` writes it, reduced to its diagnosis."""
    diagnosis = {"available": True, "randomizers": {"names": names}, **diagnosis}
    path.write_text(json.dumps({"schema": "ksim_entropy.gap_report/1", "diagnosis": diagnosis}))
    return path


def test_c2st_moves_what_the_gap_reports_diagnosis_points_at(windows_file, tmp_path):
    # Every name the bridge can point at is one of the K-Bot's randomized parameters.
    names = [*DYNAMICS_RANDOMIZERS, *sorted(set(OBSERVATION_RANDOMIZERS.values()))]
    report = gap_report_json(tmp_path / "report.json", names)
    config = build_config(
        [*SMALL, f"c2st_windows={windows_file}", f"c2st_report={report}", f"exp_dir={tmp_path / 'r'}"]
    )
    task = KBotWalkingTask(config)
    guidance = task.get_discriminator_guidance()
    assert guidance.parameters == tuple(names)
    all_names = task.get_domain_randomization(task.get_mujoco_model()).names
    assert guidance.mask(all_names).sum() == len(names)
    none = gap_report_json(tmp_path / "none.json", [])  # the diagnosis points at nothing: every range moves
    config = build_config([*SMALL, f"c2st_windows={windows_file}", f"c2st_report={none}", f"exp_dir={tmp_path / 's'}"])
    assert KBotWalkingTask(config).get_discriminator_guidance().mask(all_names).all()


@pytest.mark.parametrize(
    ("report", "extra", "message"),
    [
        ({"names": ["joint_zero_offset"]}, ["c2st_parameters=[joint_damping]"], "not both"),
        ({"names": ["gyro_bias"]}, [], "no randomized parameters ['gyro_bias']"),
        ({"names": None}, [], "diagnosis.randomizers.names must be a list of names"),
        ({"available": False, "reason": "diagnosis failed: too short"}, [], "did not run (diagnosis failed: too"),
        (None, [], "no gap report at"),
    ],
)
def test_bad_gap_reports_are_one_line_errors_before_compiling(windows_file, tmp_path, report, extra, message):
    path = tmp_path / "report.json"
    if report is not None:
        gap_report_json(path, **report)
    with pytest.raises(SystemExit) as exc:
        build_config(
            [*SMALL, f"c2st_windows={windows_file}", f"c2st_report={path}", *extra, f"exp_dir={tmp_path / 'r'}"]
        )
    text = str(exc.value)
    assert text.startswith(f"error: c2st_windows={windows_file}: ") and message in text and "\n" not in text, text


def test_a_gap_report_without_c2st_windows_is_refused(tmp_path):
    path = gap_report_json(tmp_path / "report.json", ["joint_zero_offset"])
    with pytest.raises(SystemExit, match="needs c2st_windows="):
        build_config([*SMALL, f"c2st_report={path}", f"exp_dir={tmp_path / 'r'}"])


def test_windows_of_another_shape_or_file_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", windows=np.zeros((4, 4, 7), np.float32), meta=np.array("{}"))
    with pytest.raises(WindowError, match="format None"):
        read_windows(tmp_path / "other.npz", task_id=TASK_ID, num_inputs=NUM_INPUTS)
    with pytest.raises(WindowError, match="no such windows file"):
        read_windows(tmp_path / "missing.npz", task_id=TASK_ID, num_inputs=NUM_INPUTS)


def _log(**groups: np.ndarray) -> StepLog:
    n = next(iter(groups.values())).shape[0]
    return StepLog(step_id=np.arange(n), t_us=np.arange(n) * 20_000, groups=groups)


def test_logs_that_do_not_match_the_policy_are_refused(real_log, tmp_path):
    n = 20
    full = {
        "joint_angles": np.zeros((n, 20)),
        "joint_vels": np.zeros((n, 20)),
        "projected_g": np.tile([0.0, 0.0, -9.81], (n, 1)),
        "gyro": np.zeros((n, 3)),
        "command": np.zeros((n, 3)),
    }
    widths = {"joint_angles": 20, "joint_vels": 20, "projected_g": 3, "gyro": 3, "command": 3}

    def windows(log: StepLog, period: float = 0.02) -> np.ndarray:
        return observation_windows(
            log,
            lambda *g: np.concatenate(g, axis=1),
            widths=widths,
            control_period_s=period,
            window_steps=4,
            stride=1,
        )[0]

    assert windows(_log(**full)).shape == (17, 4, 49)
    with pytest.raises(WindowError, match=r"reads \['gyro'\], which the log does not have"):
        windows(_log(**{k: v for k, v in full.items() if k != "gyro"}))
    with pytest.raises(WindowError, match="'command' has 2 channels, the policy reads 3"):
        windows(_log(**{**full, "command": np.zeros((n, 2))}))
    with pytest.raises(WindowError, match="median control period 20.00 ms, the policy runs at 10.00 ms"):
        windows(_log(**full), period=0.01)
    # A missing value or a dropped step ends a run of usable rows: no window spans it.
    gappy = {**full, "gyro": full["gyro"].copy()}
    gappy["gyro"][10] = np.nan
    assert windows(_log(**gappy)).shape[0] == (10 - 4 + 1) + (9 - 4 + 1)
    # Through the command line: joint angles in degrees are refused, an existing output is kept.
    log, _ = read_ndjson(real_log)
    degrees = StepLog(
        step_id=log.step_id,
        t_us=log.t_us,
        groups={**log.groups, "joint_angles": np.degrees(log.groups["joint_angles"])},
    )
    path = write_ndjson(degrees, tmp_path / "deg.ndjson")
    with pytest.raises(SystemExit, match="units do not match the policy's"):
        windows_main([str(path), "--out", str(tmp_path / "w.npz")])
    assert not (tmp_path / "w.npz").exists()
    (tmp_path / "keep.npz").write_bytes(b"user data")
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        windows_main([str(real_log), "--out", str(tmp_path / "keep.npz")])
    assert (tmp_path / "keep.npz").read_bytes() == b"user data"
