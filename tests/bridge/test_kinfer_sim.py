"""kinfer-sim's `--save-logs` NDJSON read into the schema, and compared with a robot log by `ksim-bridge gap`.

kinfer-sim 0.0.94 (K-Scale's sim-to-sim tool) logs one dict per control step and `kmv.utils.logging.save_logs`
writes each with `json.dump` (default separators, NaN as the token `NaN`): `step_id` (counted after the physics
steps, so from 1), the model's inputs under kinfer-sim's names in the model's input order (float32 arrays;
projected gravity float64), `action`, `joint_torques`, then `joint_order`; no `t_us`. The logs here are written
that way by this test from simulated K-Bot data, not copied from kinfer-sim.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from ksim_entropy.bridge.cli import main
from ksim_entropy.bridge.logs import LogReadError, iter_ndjson, read_ndjson, write_ndjson
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions
from ksim_entropy.sim2real.sim_logs import scripted_log

SECONDS = 4.0  # 200 control steps at 50 Hz
KINFER_SIM_INPUTS = {  # kinfer-sim's key -> the schema group it holds
    "joint_angles": "joint_angles",
    "joint_velocities": "joint_vels",
    "projected_gravity": "projected_g",
    "accelerometer": "accel",
    "gyroscope": "gyro",
    "command": "command",
}


def write_kinfer_sim_log(path: Path, log: StepLog, inputs: tuple[str, ...], *, time: bool = False) -> Path:
    """`log` as kinfer-sim --save-logs writes it, with the model inputs `inputs` (kinfer-sim's names)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for row in range(len(log)):
            arrays: dict[str, np.ndarray] = {}
            for key in inputs:
                dtype = np.float64 if key == "projected_gravity" else np.float32
                arrays[key] = log.group(KINFER_SIM_INPUTS[key])[row].astype(dtype)
            if time:
                arrays["time"] = np.array([row * 0.02], dtype=np.float32)  # MuJoCo time when the inputs were read
            arrays["action"] = log.group("output")[row].astype(np.float32)
            arrays["joint_torques"] = rng.normal(0.0, 5.0, len(log.joint_names))
            record = {"step_id": row + 1} | arrays | {"joint_order": np.asarray(log.joint_names)}
            json.dump({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in record.items()}, file)
            file.write("\n")
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    sim = KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))
    work = tmp_path_factory.mktemp("kinfer_sim")
    simulated, robot = scripted_log(sim, seconds=SECONDS, seed=41), scripted_log(sim, seconds=SECONDS, seed=42)
    no_angles = ("joint_velocities", "projected_gravity", "gyroscope")  # the keys of the log in the issue
    full = ("joint_angles", "joint_velocities", "projected_gravity", "gyroscope", "command")
    return {
        "simulated": simulated,
        "no_angles": write_kinfer_sim_log(work / "run_a" / "kinfer_log.ndjson", simulated, no_angles),
        "full": write_kinfer_sim_log(work / "run_b" / "kinfer_log.ndjson", simulated, full, time=True),
        "robot": write_ndjson(robot, work / "robot.ndjson"),
        "work": work,
    }


def test_reads_kinfer_sim_keys_derives_time_and_names_missing_groups(logs: dict) -> None:
    simulated = logs["simulated"]
    log, report = read_ndjson(logs["no_angles"])
    assert report.format == "kinfer-sim" and report.ok, report.summary()
    assert log.group_names == ("joint_vels", "projected_g", "gyro", "output")
    assert np.array_equal(log.step_id, np.arange(1, len(simulated) + 1))
    assert np.array_equal(log.t_us, log.step_id * 20_000)  # no time in the log: step_id × the 50 Hz period
    assert log.joint_names == simulated.joint_names  # from joint_order
    assert np.array_equal(log.group("joint_vels"), simulated.group("joint_vels").astype(np.float32))
    assert np.array_equal(log.group("projected_g"), simulated.group("projected_g"))
    assert np.array_equal(log.group("output"), simulated.group("output").astype(np.float32))
    assert report.unknown_keys == {"joint_torques": len(simulated)}
    summary = report.summary()
    assert "kinfer-sim: t_us derived as step_id × 20 ms (control period assumed" in summary
    assert "absent groups: joint_angles, accel, command" in summary
    assert "joint_velocities → joint_vels" in summary and "action → output" in summary
    faster, faster_report = read_ndjson(logs["no_angles"], control_period_s=0.01)
    assert np.array_equal(faster.t_us, faster.step_id * 10_000) and "(control period given)" in faster_report.summary()
    chunks = list(reader := iter_ndjson(logs["no_angles"], chunk_records=64))
    assert [len(c) for c in chunks] == [64, 64, 64, 8] and chunks[0].joint_names == simulated.joint_names
    assert reader.report.format == "kinfer-sim"


def test_kinfer_sim_time_input_nan_token_and_bad_records(logs: dict, tmp_path: Path) -> None:
    lines = logs["full"].read_text().splitlines(keepends=True)
    record = json.loads(lines[10])
    record["gyroscope"][1] = float("nan")
    lines[10] = json.dumps(record) + "\n"  # kinfer-sim writes NaN as the bare token NaN
    assert "NaN" in lines[10]
    broken = json.loads(lines[20])
    broken["time"] = None
    lines[20] = json.dumps(broken) + "\n"
    path = tmp_path / "kinfer_log.ndjson"
    path.write_text("".join(lines))
    log, report = read_ndjson(path)
    assert log.group_names == ("joint_angles", "joint_vels", "projected_g", "gyro", "command", "output")
    time_s = np.array([np.float32(0.02 * (step - 1)) for step in log.step_id], dtype=np.float64)  # as logged
    assert np.array_equal(log.t_us, np.round(time_s * 1e6).astype(np.int64))  # the simulated clock, in µs
    assert report.groups["gyro"].nan_or_inf_records == 1 and np.isnan(log.group("gyro")[10, 1])
    assert report.malformed_lines == 1 and "no usable `time`" in report.malformed_examples[0][1]
    assert "simulated clock" in report.summary()
    with pytest.raises(LogReadError, match="joint_order .* differs from the given joint_names"):
        read_ndjson(logs["full"], joint_names=tuple(reversed(logs["simulated"].joint_names)))


def test_a_log_of_neither_format_still_names_the_missing_t_us(tmp_path: Path) -> None:
    (tmp_path / "other.ndjson").write_text('{"step_id": 1, "qpos": [0.1, 0.2]}\n')
    with pytest.raises(LogReadError, match="t_us is None"):
        read_ndjson(tmp_path / "other.ndjson")


@pytest.mark.parametrize("which", ["no_angles", "full"])
def test_cli_gap_compares_a_kinfer_sim_log_with_a_robot_log(
    logs: dict, which: str, capsys: pytest.CaptureFixture
) -> None:
    out = logs["work"] / f"gap_{which}"
    status = main(["gap", "--sim", str(logs[which]), "--real", str(logs["robot"]), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "kinfer-sim: t_us derived" in captured.out
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["inputs"]["sim"]["quality"]["format"] == "kinfer-sim"
    assert data["inputs"]["real"]["quality"]["format"] == "kinfer"
    diagnosis = data["diagnosis"]
    assert diagnosis["available"], diagnosis
    if which == "no_angles":  # what cannot be compared is said, not failed
        assert data["skipped_groups"]["real_only"] == ["joint_angles", "accel", "command"]
        assert "needs ['joint_angles', 'output'] in both logs" in diagnosis["result"]["skipped"]["dynamics_mismatch"]
    else:
        assert diagnosis["result"]["statistics"]["dynamics_mismatch"]["joints_compared"] >= 15
