"""NDJSON step logs: kinfer's own runtime log read back exactly, injected faults counted, fuzzing, bounded memory."""

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksim_entropy.bridge.logs import LogReadError, iter_ndjson, read_ndjson, write_ndjson
from ksim_entropy.formats.schema import CHANNEL_GROUPS, StepLog

REPO = Path(__file__).resolve().parents[2]
JOINT_NAMES = (
    "dof_left_hip_pitch_04",
    "dof_left_knee_04",
    "dof_left_ankle_02",
    "dof_right_hip_pitch_04",
    "dof_right_knee_04",
    "dof_right_ankle_02",
)
COMMAND_NAMES = ("xvel", "yvel", "yawrate")
NUM_STEPS = 200
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAN_STEP = 50
# kinfer step-function input name → log group ("accelerometer" is not a model input here, so accel must be null).
INPUT_GROUPS = {
    "joint_angles": "joint_angles",
    "joint_angular_velocities": "joint_vels",
    "projected_gravity": "projected_g",
    "gyroscope": "gyro",
    "command": "command",
}

# Runs a .kinfer file in kinfer's Rust runtime with logging on (the runtime reads KINFER_LOG_PATH / KINFER_LOG_UUID
# when the runner is created), feeding seeded, physically plausible inputs; saves the inputs and actions as npz.
RUNNER = r"""
import datetime, gc, sys
import numpy as np
from kinfer.rust_bindings import ModelProviderABC, PyInputType, PyModelRunner

model, out, steps, runs, nan_step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])


class Provider(ModelProviderABC):
    def __new__(cls, *args, **kwargs):  # pyo3 base: __new__ takes no arguments
        return super().__new__(cls)

    def __init__(self, seed):
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.inputs = {}
        self.actions = []

    def sample(self, name, shape):
        if name == "joint_angles":
            return self.rng.uniform(-1.5, 1.5, shape)
        if name == "joint_angular_velocities":
            return self.rng.normal(0.0, 2.0, shape)
        if name == "projected_gravity":
            tilt = np.array([0.0, 0.0, -1.0]) + self.rng.normal(0.0, 0.1, 3)
            return 9.81 * tilt / np.linalg.norm(tilt)
        if name == "gyroscope":
            return self.rng.normal(0.0, 0.5, shape)
        return self.rng.uniform(-1.0, 1.0, shape)

    def get_inputs(self, input_types, metadata):
        step = len(self.actions)
        values = {}
        for name in input_types:
            if name == "carry":
                continue
            value = self.sample(name, PyInputType(name).get_shape(metadata)).astype(np.float32)
            if step == nan_step and name == "joint_angles":
                value[2] = np.nan
            if step == nan_step and name == "gyroscope":
                value[1] = np.inf
            values[name] = value
            self.inputs.setdefault(name, []).append(value)
        return values

    def take_action(self, action, metadata):
        self.actions.append(np.asarray(action, dtype=np.float32).copy())


saved = {}
for run in range(runs):
    provider = Provider(seed=run)
    runner = PyModelRunner(model, provider, None)
    runner.run(datetime.timedelta(milliseconds=2), total_steps=steps)
    del runner  # dropping the runner joins kinfer's log writer thread, which flushes the file
    gc.collect()
    for name, values in provider.inputs.items():
        saved.setdefault(name, []).extend(values)
    saved.setdefault("actions", []).extend(provider.actions)
np.savez(out, **{name: np.stack(values) for name, values in saved.items()})
"""


def run_kinfer(model: Path, log_dir: Path, name: str, *, runs: int = 1, nan_step: int = -1) -> tuple[Path, dict]:
    out = log_dir / f"{name}.npz"
    env = {**os.environ, "KINFER_LOG_PATH": str(log_dir), "KINFER_LOG_UUID": name}
    args = [sys.executable, "-c", RUNNER, str(model), str(out), str(NUM_STEPS), str(runs), str(nan_step)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as data:
        return log_dir / f"{name}.ndjson", dict(data)


@pytest.fixture(scope="module")
def kinfer_model(tmp_path_factory):
    import jax.numpy as jnp

    from ksim_entropy.export import KinferPolicy, export_kinfer

    def init_fn():
        return jnp.zeros(4, dtype=jnp.float32)

    def step_fn(joint_angles, joint_angular_velocities, projected_gravity, gyroscope, command, carry):
        # Elementwise in the joint inputs, so a NaN joint angle spoils only its own action; the carry never sees it.
        action = (
            0.5 * joint_angles
            + 0.1 * joint_angular_velocities
            + 0.01 * projected_gravity[2]
            + 0.1 * gyroscope[0]
            + 0.2 * command[0]
            + carry[0]
        )
        return action, 0.9 * carry + 0.01 * jnp.sum(command)

    policy = KinferPolicy(init_fn, step_fn, JOINT_NAMES, COMMAND_NAMES, carry_size=4)
    return export_kinfer(policy, tmp_path_factory.mktemp("model") / "tiny.kinfer")


@pytest.fixture(scope="module")
def kinfer_log(kinfer_model, tmp_path_factory):
    return run_kinfer(kinfer_model, tmp_path_factory.mktemp("logs"), "clean")


def read_kinfer(path: Path, **options) -> tuple[StepLog, object]:
    return read_ndjson(path, joint_names=JOINT_NAMES, num_commands=len(COMMAND_NAMES), **options)


def assert_rows_match(log: StepLog, data: dict, rows: np.ndarray | None = None) -> None:
    """Logged values (as the runtime's f32) equal the inputs fed and the actions returned at those step ids."""
    rows = log.step_id if rows is None else rows
    for name, group in INPUT_GROUPS.items():
        np.testing.assert_array_equal(log.group(group).astype(np.float32), data[name][rows], err_msg=group)
    np.testing.assert_array_equal(log.group("output").astype(np.float32), data["actions"][rows])


def edited(tmp_path: Path, lines: list[str], name: str = "edited.ndjson") -> Path:
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


def edit_record(line: str, **changes) -> str:
    record = json.loads(line)
    for group, change in changes.items():
        record[group] = change(record[group])
    return json.dumps(record, separators=(",", ":")) + "\n"


# --- kinfer's real log ------------------------------------------------------------------------------------------


def test_reads_the_log_kinfer_runtime_wrote(kinfer_log):
    path, data = kinfer_log
    log, report = read_kinfer(path)
    assert report.ok, report.summary()
    assert len(log) == report.records_used == report.lines_total == NUM_STEPS
    np.testing.assert_array_equal(log.step_id, np.arange(NUM_STEPS))
    assert_rows_match(log, data)
    # The model takes no accelerometer: kinfer writes "accel": null and the log has no accel group.
    assert '"accel":null' in path.read_text().splitlines()[0]
    assert log.group_names == ("joint_angles", "joint_vels", "projected_g", "gyro", "command", "output")
    with pytest.raises(KeyError, match="accel.*available"):
        log.group("accel")
    # t_us is wall-clock µs at each 2 ms control tick.
    assert np.all(np.diff(log.t_us) > 0)
    assert 1e-3 <= float(np.median(log.dt_s())) <= 2e-2
    assert log.channel_names(["joint_angles"]) == tuple(f"joint_angles/{name}" for name in JOINT_NAMES)
    assert log.channel_names()[1] == "joint_angles/dof_left_knee_04"
    matrix, names = log.matrix(["gyro", "command"])
    assert matrix.shape == (NUM_STEPS, 6) and names == (
        "gyro/x",
        "gyro/y",
        "gyro/z",
        "command[0]",
        "command[1]",
        "command[2]",
    )
    assert "OK" in report.summary()
    # Each record's output is the action computed from that same record's inputs (no off-by-one in the logger).
    q, v, g, w, c = (log.group(group) for group in ("joint_angles", "joint_vels", "projected_g", "gyro", "command"))
    carry = np.zeros(NUM_STEPS)
    for k in range(1, NUM_STEPS):
        carry[k] = 0.9 * carry[k - 1] + 0.01 * c[k - 1].sum()
    expected = 0.5 * q + 0.1 * v + (0.01 * g[:, 2] + 0.1 * w[:, 0] + 0.2 * c[:, 0] + carry)[:, None]
    np.testing.assert_allclose(log.group("output"), expected, atol=1e-5)


def test_kinfer_nan_and_inf_are_logged_as_null_and_read_as_counted_nan(kinfer_model, tmp_path):
    path, data = run_kinfer(kinfer_model, tmp_path, "nan", nan_step=NAN_STEP)
    line = path.read_text().splitlines()[NAN_STEP]
    # serde_json writes f32 NaN and Inf as null inside the arrays.
    assert json.loads(line)["joint_angles"][2] is None and json.loads(line)["gyro"][1] is None
    log, report = read_kinfer(path)
    counts = {name: group.nan_or_inf_records for name, group in report.groups.items()}
    assert counts == {"joint_angles": 1, "joint_vels": 0, "projected_g": 0, "gyro": 1, "command": 0, "output": 1}
    assert not report.ok and "1 records with NaN/Inf" in report.summary()
    for group, column in (("joint_angles", 2), ("gyro", 1), ("output", 2)):
        block = log.group(group)
        assert np.isnan(block).sum() == 1 and np.isnan(block[NAN_STEP, column])
    # Everything else is the exact input; the NaN sits where the runtime saw NaN/Inf (Inf is stored as NaN).
    expected = np.where(np.isfinite(data["gyroscope"]), data["gyroscope"], np.nan)
    np.testing.assert_array_equal(log.group("gyro").astype(np.float32), expected)
    np.testing.assert_array_equal(log.group("joint_angles").astype(np.float32), data["joint_angles"])
    np.testing.assert_array_equal(log.group("output").astype(np.float32), data["actions"])


def test_kinfer_appends_a_rerun_with_the_same_uuid(kinfer_model, tmp_path):
    # The runtime opens the log in append mode and restarts step_id at 0 for each runner.
    path, data = run_kinfer(kinfer_model, tmp_path, "rerun", runs=2)
    log, report = read_kinfer(path)
    np.testing.assert_array_equal(log.step_id, np.tile(np.arange(NUM_STEPS), 2))
    assert report.duplicate_or_backward_steps == 1 and report.dropped_steps == 0
    assert report.non_monotonic_t_us == 0  # the second run is later in wall-clock time
    assert_rows_match(log, data, rows=np.arange(2 * NUM_STEPS))
    assert not report.ok


# --- write → read ------------------------------------------------------------------------------------------------


def test_write_read_roundtrip_is_exact(tmp_path, kinfer_log):
    rng = np.random.default_rng(0)
    n = 257
    log = StepLog.from_arrays(
        joint_angles=rng.normal(size=(n, 6)).astype(np.float32),  # f32 data, stored as float64
        joint_vels=rng.normal(size=(n, 6)),
        projected_g=np.tile([0.0, 0.0, -9.81], (n, 1)),
        accel=np.array([0.0, 0.0, 9.81]) + rng.normal(size=(n, 3)),
        command=rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-300, 300, size=(n, 3)),  # any float64
        output=np.array(rng.normal(size=(n, 6)), dtype=np.float32),
        t_us=1_700_000_000_000_000 + 20_000 * np.arange(n),
        joint_names=JOINT_NAMES,
        source="sim",
    )
    path = write_ndjson(log, tmp_path / "sub" / "sim.ndjson")
    back, report = read_ndjson(path, joint_names=JOINT_NAMES)
    assert report.ok, report.summary()
    assert back.group_names == log.group_names
    for name in log.groups:
        np.testing.assert_array_equal(back.group(name), log.group(name))
    np.testing.assert_array_equal(back.t_us, log.t_us)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["step_id", "t_us", *CHANNEL_GROUPS] and first["gyro"] is None
    # kinfer's own log survives a read → write → read unchanged.
    real, _ = read_kinfer(kinfer_log[0])
    again, again_report = read_kinfer(write_ndjson(real, tmp_path / "again.ndjson"))
    assert again_report.ok
    for name in real.groups:
        np.testing.assert_array_equal(again.group(name), real.group(name))
    np.testing.assert_array_equal(again.t_us, real.t_us)


def test_write_refuses_to_overwrite_and_leaves_no_temp_file(tmp_path):
    log = StepLog.from_arrays(joint_angles=np.array([[0.1, np.nan], [np.inf, 0.2]]), dt_s=0.02)
    path = write_ndjson(log, tmp_path / "a.ndjson")
    before = path.read_bytes()
    assert b"[null,0.2]" in before  # NaN and Inf are written as null, like kinfer
    with pytest.raises(FileExistsError, match="exists"):
        write_ndjson(log.select(slice(0, 1)), path)
    assert path.read_bytes() == before
    write_ndjson(log.select(slice(0, 1)), path, overwrite=True)
    assert len(path.read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ndjson"]
    back, report = read_ndjson(path)
    assert report.groups["joint_angles"].nan_or_inf_records == 1 and np.isnan(back.group("joint_angles")[0, 1])


@FUZZ
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=60))
def test_fuzz_write_read_roundtrip(values):
    rows = np.array(values[: len(values) // 3 * 3]).reshape(-1, 3)
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes ±Inf
        log = StepLog.from_arrays(command=rows, output=rows.astype(np.float32), dt_s=0.02)
    with tempfile.TemporaryDirectory() as tmp:
        back, report = read_ndjson(write_ndjson(log, Path(tmp) / "a.ndjson"))
    for name in ("command", "output"):
        expected = np.where(np.isfinite(log.group(name)), log.group(name), np.nan)  # ±Inf is written as null
        np.testing.assert_array_equal(back.group(name), expected)
        assert report.groups[name].nan_or_inf_records == int((~np.isfinite(log.group(name))).any(axis=1).sum())
    np.testing.assert_array_equal(back.t_us, log.t_us)


def test_step_log_validates_shapes_and_selects():
    with pytest.raises(ValueError, match=r"group 'gyro' must have 3 columns"):
        StepLog.from_arrays(gyro=np.zeros((4, 2)), dt_s=0.02)
    with pytest.raises(ValueError, match=r"group 'output' must have shape \(4, k\), got \(3, 2\)"):
        StepLog.from_arrays(joint_angles=np.zeros((4, 2)), output=np.zeros((3, 2)), dt_s=0.02)
    with pytest.raises(ValueError, match="unknown channel group 'torque'"):
        StepLog(step_id=np.arange(2), t_us=np.arange(2), groups={"torque": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="t_us has 3 entries but step_id has 2"):
        StepLog(step_id=np.arange(2), t_us=np.arange(3), groups={})
    with pytest.raises(ValueError, match="step_id must hold integers"):
        StepLog(step_id=np.array([0.0, 1.0]), t_us=np.arange(2), groups={})
    with pytest.raises(ValueError, match="give t_us, or a control period"):
        StepLog.from_arrays(joint_angles=np.zeros((2, 1)))
    log = StepLog.from_arrays(joint_angles=np.arange(8.0).reshape(4, 2), gyro=np.ones((4, 3)), dt_s=0.02)
    assert not log.group("joint_angles").flags.writeable
    np.testing.assert_allclose(log.dt_s(), 0.02)
    matrix, names = log.matrix()
    assert matrix.shape == (4, 5) and names[:3] == ("joint_angles[0]", "joint_angles[1]", "gyro/x")
    picked = log.select(log.step_id % 2 == 1)
    np.testing.assert_array_equal(picked.group("joint_angles"), [[2.0, 3.0], [6.0, 7.0]])
    assert len(log.select([])) == 0 and len(log.select(slice(1, 3))) == 2
    with pytest.raises(ValueError, match="boolean mask has shape"):
        log.select([True, False])


# --- injected faults on the real log -----------------------------------------------------------------------------


def test_dropped_lines_are_counted(kinfer_log, tmp_path):
    path, data = kinfer_log
    dropped = {10, 11, 12, 50, 120, 121, 150}
    lines = [line for i, line in enumerate(path.read_text().splitlines(True)) if i not in dropped]
    log, report = read_kinfer(edited(tmp_path, lines))
    assert report.dropped_steps == 7 and report.gaps == 4
    assert report.records_used == NUM_STEPS - 7 and report.malformed_lines == 0 and not report.ok
    assert_rows_match(log, data)


def test_truncated_last_line(kinfer_log, tmp_path):
    path, data = kinfer_log
    lines = path.read_text().splitlines(True)
    log, report = read_kinfer(edited(tmp_path, [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]))
    assert report.truncated_last_line and report.malformed_lines == 0 and not report.ok
    assert report.lines_total == NUM_STEPS and report.records_used == NUM_STEPS - 1
    assert "truncated last line" in report.summary()
    assert_rows_match(log, data)
    # A complete last record that only lacks its newline is used.
    log, report = read_kinfer(edited(tmp_path, [*lines[:-1], lines[-1].rstrip("\n")]))
    assert report.ok and len(log) == NUM_STEPS


def test_malformed_middle_lines(kinfer_log, tmp_path):
    path, data = kinfer_log
    lines = path.read_text().splitlines(True)
    lines[100] = lines[100][:40] + "\n"  # a torn write
    lines[101] = "[1, 2, 3]\n"
    lines[102] = '{"step_id": -1, "t_us": 5}\n'
    log, report = read_kinfer(edited(tmp_path, lines))
    assert report.malformed_lines == 3 and report.records_used == NUM_STEPS - 3
    assert [line_no for line_no, _ in report.malformed_examples] == [101, 102, 103]
    reasons = [reason for _, reason in report.malformed_examples]
    assert reasons[0].startswith("invalid JSON") and "not a JSON object but list" in reasons[1]
    assert "step_id is -1" in reasons[2]
    assert report.dropped_steps == 3 and report.gaps == 1
    assert_rows_match(log, data)


def test_text_nan_and_overflowing_values(kinfer_log, tmp_path):
    path, data = kinfer_log
    lines = path.read_text().splitlines(True)
    lines[30] = edit_record(lines[30], joint_vels=lambda v: [math.nan, *v[1:]])  # json writes the NaN token
    lines[40] = edit_record(lines[40], command=lambda v: [v[0], "INF", v[2]]).replace('"INF"', "1e999")
    log, report = read_kinfer(edited(tmp_path, lines))
    assert report.groups["joint_vels"].nan_or_inf_records == 1 and report.groups["command"].nan_or_inf_records == 1
    assert np.isnan(log.group("joint_vels")[30, 0]) and np.isnan(log.group("command")[40, 1])
    assert not np.isinf(log.group("command")).any()
    np.testing.assert_array_equal(log.group("command")[40, [0, 2]].astype(np.float32), data["command"][40, [0, 2]])


def test_wrong_widths_blank_the_group_but_keep_the_record(kinfer_log, tmp_path):
    path, data = kinfer_log
    lines = path.read_text().splitlines(True)
    for i in (20, 21, 22):
        lines[i] = edit_record(lines[i], joint_angles=lambda v: v[:-1])
    for i in (60, 61):
        lines[i] = edit_record(lines[i], output=lambda v: [*v, 0.0])
    lines[70] = edit_record(lines[70], gyro=lambda v: [*v, 0.0], command=lambda v: None)
    record = json.loads(lines[80])
    record["temperature"] = record.pop("command")  # a missing key reads as null; an unknown key is ignored
    lines[80] = json.dumps(record) + "\n"
    log, report = read_kinfer(edited(tmp_path, lines))
    assert report.records_used == NUM_STEPS
    joints = len(JOINT_NAMES)
    assert report.groups["joint_angles"].wrong_width_records == 3
    assert report.groups["joint_angles"].wrong_widths == {joints - 1: 3}
    assert report.groups["output"].wrong_widths == {joints + 1: 2}
    assert report.groups["gyro"].wrong_width_records == 1 and report.groups["command"].null_records == 2
    assert report.unknown_keys == {"temperature": 1} and "ignored keys: temperature×1" in report.summary()
    assert "expected 6, saw 5×3" in report.summary()
    assert np.isnan(log.group("joint_angles")[[20, 21, 22]]).all() and np.isnan(log.group("output")[[60, 61]]).all()
    good = np.setdiff1d(np.arange(NUM_STEPS), [20, 21, 22])
    np.testing.assert_array_equal(log.group("joint_angles")[good].astype(np.float32), data["joint_angles"][good])
    np.testing.assert_array_equal(log.group("joint_vels").astype(np.float32), data["joint_angular_velocities"])
    # Widths that match no record at all make the log unusable.
    with pytest.raises(LogReadError, match=r"no record has joint_angles of the expected width 7 \(from num_joints\)"):
        read_ndjson(path, num_joints=7)


def in_degrees(path: Path, out: Path, groups: tuple[str, ...]) -> Path:
    def to_deg(values):
        return [math.degrees(x) for x in values]

    lines = [edit_record(line, **dict.fromkeys(groups, to_deg)) for line in path.read_text().splitlines()]
    out.write_text("".join(lines))
    return out


def test_degrees_are_flagged_and_converted(kinfer_log, tmp_path):
    path, data = kinfer_log
    to_deg = math.degrees(1.0)
    degrees = in_degrees(path, tmp_path / "deg.ndjson", ("joint_angles",))

    log, report = read_kinfer(degrees)  # "rad": flagged, never converted
    assert list(report.suspected_degrees) == ["joint_angles"] and not report.converted_to_rad
    assert re.fullmatch(
        r"max \|value\| 8\d\.\d looks like degrees \(ratio to 2π: 14\); 200 of 200 records above 6\.6 rad",
        report.suspected_degrees["joint_angles"],
    )
    np.testing.assert_allclose(log.group("joint_angles"), data["joint_angles"] * to_deg, rtol=1e-6)

    log, report = read_kinfer(degrees, angle_unit="auto")
    np.testing.assert_allclose(log.group("joint_angles"), data["joint_angles"], atol=1e-6)
    assert list(report.converted_to_rad) == ["joint_angles"] and not report.ok
    assert "joint_angles looked like degrees" in report.unit_warnings["joint_vels"]
    np.testing.assert_array_equal(log.group("joint_vels").astype(np.float32), data["joint_angular_velocities"])
    chunks = iter_ndjson(degrees, 64, joint_names=JOINT_NAMES, angle_unit="auto")
    streamed = np.concatenate([chunk.group("joint_angles") for chunk in chunks])
    np.testing.assert_array_equal(streamed, log.group("joint_angles"))
    assert chunks.report.converted_to_rad == report.converted_to_rad

    # One glitched record is not a unit: reported, never converted.
    lines = path.read_text().splitlines(True)
    lines[7] = edit_record(lines[7], joint_angles=lambda v: [math.degrees(x) for x in v])
    log, report = read_kinfer(edited(tmp_path, lines, "glitch.ndjson"), angle_unit="auto")
    assert not report.suspected_degrees and not report.converted_to_rad
    assert "1 of 200 records above 6.6 rad" in report.unit_warnings["joint_angles"]
    np.testing.assert_allclose(log.group("joint_angles")[7], np.degrees(data["joint_angles"][7]), rtol=1e-6)

    all_deg = in_degrees(path, tmp_path / "all_deg.ndjson", ("joint_angles", "joint_vels", "output"))
    log, report = read_kinfer(all_deg, angle_unit="deg")
    assert list(report.converted_to_rad) == ["joint_angles", "joint_vels", "output"]
    assert not report.suspected_degrees and report.ok
    for name, group in (("joint_angles", "joint_angles"), ("joint_angular_velocities", "joint_vels")):
        np.testing.assert_allclose(log.group(group), data[name], atol=1e-6)
    _, report = read_kinfer(all_deg, angle_unit="rad")
    assert set(report.suspected_degrees) == {"joint_angles", "joint_vels", "output"}
    assert "looks like deg/s" in report.suspected_degrees["joint_vels"]


def test_duplicate_and_backward_step_ids(kinfer_log, tmp_path):
    path, data = kinfer_log
    lines = path.read_text().splitlines(True)
    lines.insert(31, lines[30])
    log, report = read_kinfer(edited(tmp_path, lines))
    assert report.duplicate_or_backward_steps == 1 and report.non_monotonic_t_us == 1
    assert report.dropped_steps == 0 and report.records_used == NUM_STEPS + 1
    assert_rows_match(log, data)


def test_unusable_files_raise_log_read_error(tmp_path):
    with pytest.raises(LogReadError, match=r"missing\.ndjson: no such file"):
        read_ndjson(tmp_path / "missing.ndjson")
    with pytest.raises(LogReadError, match="no such file"):
        iter_ndjson(tmp_path / "missing.ndjson")  # raised at once, not on first iteration
    (tmp_path / "empty.ndjson").touch()
    with pytest.raises(LogReadError, match=r"empty\.ndjson: empty file"):
        read_ndjson(tmp_path / "empty.ndjson")
    with pytest.raises(LogReadError, match="is a directory"):
        read_ndjson(tmp_path)
    (tmp_path / "junk.ndjson").write_text('hello\n\n{"step_id": 1}\n[')
    with pytest.raises(LogReadError, match=r"no valid step record in 4 lines \(2 malformed, 1 blank, a truncated"):
        read_ndjson(tmp_path / "junk.ndjson")
    with pytest.raises(ValueError, match="angle_unit"):
        read_ndjson(tmp_path / "junk.ndjson", angle_unit="grad")


# --- fuzzing -----------------------------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.none(), st.just(10**400)
)
VALUES = st.one_of(
    st.none(),
    st.lists(NUMBERS, min_size=2, max_size=4),
    st.lists(st.floats(-100, 100), min_size=3, max_size=3),
    st.lists(st.one_of(st.text(max_size=2), st.booleans(), st.lists(st.integers(), max_size=1)), max_size=3),
    st.text(max_size=3),
    st.booleans(),
)
IDS = st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(-3, 2**64), st.booleans(), st.floats(), st.none())
RECORDS = st.fixed_dictionaries(
    {"step_id": IDS, "t_us": IDS}, optional={**{name: VALUES for name in CHANNEL_GROUPS}, "extra": VALUES}
)
LINES = st.one_of(
    RECORDS.map(json.dumps),
    RECORDS.map(json.dumps).flatmap(lambda text: st.integers(0, len(text)).map(lambda k: text[:k])),
    st.text(max_size=20).filter(lambda text: "\n" not in text and "\r" not in text),
)


def read_accounted(path: Path, **options) -> tuple[StepLog, object] | None:
    """read_ndjson, checking that every NaN and every line is accounted for; None on LogReadError."""
    try:
        log, report = read_ndjson(path, **options)
    except LogReadError:
        return None
    for name, block in log.groups.items():
        nan_rows = int(np.isnan(block).any(axis=1).sum())
        assert nan_rows == (report.groups[name].nan_rows if block.shape[1] else 0), name
        assert not np.isinf(block).any()
    used = report.records_used + report.blank_lines + report.malformed_lines + report.truncated_last_line
    assert used == report.lines_total and len(log) == report.records_used
    if report.ok:
        assert not any(np.isnan(block).any() for block in log.groups.values())
    json.dumps(report.to_dict(), allow_nan=False)
    assert report.summary()
    return log, report


def comparable(report) -> dict:
    data = report.to_dict()
    for group in data["groups"].values():
        group.pop("mean_norm")  # summed per chunk: equal up to rounding
    data["unit_warnings"] = sorted(data["unit_warnings"])
    data["issues"] = len(data["issues"])
    return data


@FUZZ
@given(data=st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.ndjson"
        path.write_bytes(data)
        read_accounted(path)


@FUZZ
@given(
    lines=st.lists(LINES, max_size=25),
    final_newline=st.booleans(),
    chunk=st.integers(1, 5),
    unit=st.sampled_from(["rad", "deg", "auto"]),
    joints=st.sampled_from([None, 2, 3]),
)
def test_fuzz_json_lines_and_chunked_reading_agree(lines, final_newline, chunk, unit, joints):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.ndjson"
        path.write_text("\n".join(lines) + ("\n" if final_newline and lines else ""))
        if path.stat().st_size == 0:
            with pytest.raises(LogReadError, match="empty"):
                read_ndjson(path)
            return
        result = read_accounted(path, angle_unit=unit, num_joints=joints)
        reader = iter_ndjson(path, chunk, angle_unit=unit, num_joints=joints)
        if result is None:
            with pytest.raises(LogReadError):
                list(reader)
            return
        log, report = result
        chunks = list(reader)
        assert all(len(c) <= chunk for c in chunks) and sum(len(c) for c in chunks) == len(log)
        for name in log.groups:
            np.testing.assert_array_equal(np.concatenate([c.group(name) for c in chunks]), log.group(name))
        np.testing.assert_array_equal(np.concatenate([c.step_id for c in chunks]), log.step_id)
        assert comparable(reader.report) == comparable(report)


# --- bounded memory ----------------------------------------------------------------------------------------------


def write_big_log(path: Path, num_lines: int) -> None:
    """kinfer-format lines with two joints and five null groups: narrow rows keep the traced parse fast."""
    joints = "[0.25,-0.5]"
    nulls = ",".join(f'"{name}":null' for name in ("joint_vels", "projected_g", "accel", "gyro", "command"))
    tail = f'"joint_angles":{joints},{nulls},"output":{joints}}}\n'
    with open(path, "w") as file:
        for start in range(0, num_lines, 10_000):
            steps = range(start, min(start + 10_000, num_lines))
            file.write("".join(f'{{"step_id":{i},"t_us":{1_700_000_000_000_000 + 20_000 * i},{tail}' for i in steps))


def traced_peak(fn):
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_chunk_when_streaming_and_by_the_arrays_when_reading(tmp_path):
    num_lines, chunk_records = 200_000, 16_384
    path = tmp_path / "big.ndjson"
    write_big_log(path, num_lines)

    def stream() -> float:
        total = 0.0
        for chunk in iter_ndjson(path, chunk_records):
            total += float(chunk.group("joint_angles")[:, 0].sum())
        return total

    total, peak_stream = traced_peak(stream)
    (log, report), peak_read = traced_peak(lambda: read_ndjson(path))
    assert total == 0.25 * num_lines and report.ok and len(log) == num_lines
    row_bytes = log.step_id.itemsize + log.t_us.itemsize + sum(block[0].nbytes for block in log.groups.values())
    chunk_bytes, final_bytes = chunk_records * row_bytes, num_lines * row_bytes
    print(
        f"\ntracemalloc peaks: iter_ndjson {peak_stream / 1e6:.2f} MB ({chunk_bytes / 1e6:.2f} MB chunks), "
        f"read_ndjson {peak_read / 1e6:.2f} MB for {final_bytes / 1e6:.2f} MB of arrays"
    )
    assert peak_stream < 3 * chunk_bytes + 1e6 < final_bytes / 2  # a few chunks, whatever the file length
    assert peak_read < 3 * final_bytes


# --- isolation ---------------------------------------------------------------------------------------------------


def test_bridge_never_imports_simulation_packages():
    code = (
        "import sys\n"
        "for name in ('ksim', 'mujoco', 'xax'): sys.modules[name] = None\n"
        "import ksim_entropy.bridge.logs, ksim_entropy.formats.schema\n"
        "heavy = sorted(m for m, mod in sys.modules.items() if mod is not None\n"
        "               and m.split('.')[0] in {'ksim', 'mujoco', 'xax', 'jax', 'kinfer', 'onnx'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
