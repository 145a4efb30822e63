"""Read and write kinfer's NDJSON step logs, streaming, with a `LogReport` of everything odd in the file.

kinfer 0.6.1's runtime (`kinfer/rust/src/logger.rs`, `model.rs`) writes `$KINFER_LOG_PATH/<$KINFER_LOG_UUID or UTC
time>.ndjson` when `KINFER_LOG_PATH` is set: one compact JSON object per control step,
`{"step_id", "t_us", "joint_angles", "joint_vels", "projected_g", "accel", "gyro", "command", "output"}`, a group
being `null` when the model has no such input. serde_json writes f32 NaN and ±Inf as `null` *inside* the arrays.

Reading policies (every departure from a clean log is counted in the report; nothing is dropped silently):

- Lines: blank lines are skipped (harmless). Lines that are not a JSON object with integer `step_id` and `t_us` in
  [0, 2^63) are skipped and counted as malformed, with up to 10 examples. An unparsable final line without a
  newline (a crash mid-write) is reported as `truncated_last_line` instead. Lines over 1 MiB are malformed.
- Groups: the groups with a list in the first valid record are the log's groups (kinfer's set is fixed by the model
  inputs); later non-null values of other groups are counted in `unexpected_records` and ignored.
- Widths: projected_g/accel/gyro are 3 wide; joint groups take `num_joints` (else `len(joint_names)`), command takes
  `num_commands`, otherwise each group takes the length in the first valid record. A record whose list has another
  length keeps its row (its other groups are good) with that group all NaN, counted in `wrong_width_records`; the
  same for a null group (`null_records`) and a value that is not a list of numbers (`bad_type_records`). When no
  record at all has a group's expected width, the input is unusable: `LogReadError`.
- Non-finite values: NaN, ±Inf and null elements are stored as NaN; a record holding one is counted once in
  `nan_or_inf_records`; its finite values are kept. Downstream metrics drop NaN rows per channel.
- Step order: `step_id` jumps forward count as `gaps` / `dropped_steps` (the writer drops lines when its queue is
  full; deleted or malformed lines show up here too); `step_id` <= previous (duplicates, a rerun appended to the
  same file) and `t_us` <= previous are counted. Records are kept in file order.
- Units: `angle_unit="rad"` never converts but flags suspected degrees; `"deg"` converts joint_angles, joint_vels
  and output from degrees; `"auto"` converts exactly the groups flagged as degrees. Conversions are listed in
  `converted_to_rad`. A record is over the radian limit when one |value| exceeds 2π·1.05 rad for joint_angles /
  output (no K-Bot joint range exceeds ±3.5 rad, while its nominal pose alone has 50-90° joints) or 50 rad/s for
  joint_vels (1.3 × the fastest K-Bot actuator's 37.7 rad/s, robstride_02 in assets/kbot/metadata.json; in deg/s
  any motion faster than 0.87 rad/s exceeds it). A group is suspected to be in degrees when at least 10 % of its
  records are over the limit; fewer is reported as glitches and never converted. Values over the limit × 180/π
  are implausible in degrees too (unit warning). gyro over 2000°/s (a MEMS gyroscope's full scale) and
  projected_g/accel whose mean norm is outside [0.5 g, 2 g] are unit warnings, never converted.

Values are the float64 nearest to the decimal text; for kinfer logs `.astype(np.float32)` recovers the exact f32
values the runtime saw.

kinfer-sim logs (K-Scale's sim-to-sim tool, `kinfer-sim ... --save-logs`, 0.0.94: `kmv.utils.logging.save_logs`
writes `<save_path>/<run>/kinfer_log.ndjson`, one `json.dump` of a dict per control step) are recognised by their
keys when the first record has `step_id` but no `t_us` and any of `joint_velocities`, `projected_gravity`,
`accelerometer`, `gyroscope`, `action`, `joint_torques`, `joint_order`. Their groups are renamed to the schema's
(`_KINFER_SIM_GROUPS`; a group the model does not take as input is absent, joint angles included), `joint_order`
gives the joint names, `joint_torques` has no schema group and is counted among the ignored keys, NaN may be
written as the token `NaN`. They carry no wall-clock time: `t_us` comes from the model's `time` input (the
simulated clock) when it was logged, else from `step_id × control_period_s` (default 0.02 s, the K-Bot's 50 Hz);
`LogReport.format` and `LogReport.notes` say so.
"""

import json
import json.scanner
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TextIO

import numpy as np

from ksim_entropy.constants import STANDARD_GRAVITY_MPS2
from ksim_entropy.formats.jsonfile import atomic_write
from ksim_entropy.formats.schema import CHANNEL_GROUPS, JOINT_GROUPS, VECTOR_GROUPS, GroupReport, LogReport, StepLog

__all__ = ["AngleUnit", "LogReadError", "NdjsonReader", "NdjsonWriter", "iter_ndjson", "read_ndjson", "write_ndjson"]

AngleUnit = Literal["rad", "deg", "auto"]

_KEYS = frozenset(("step_id", "t_us", *CHANNEL_GROUPS))
_MISSING = object()
_MAX_LINE_BYTES = 1 << 20  # kinfer lines are ~1-2 KiB for the K-Bot; anything this long is not a step record
_MAX_UNKNOWN_KEYS = 20
_MAX_WRONG_WIDTHS = 10
_NUMBER_OR_NULL_TYPES = frozenset((float, int, type(None)))
_INT64_END = 2**63
_RAD_PER_DEG = math.pi / 180.0
_DEG_PER_RAD = 180.0 / math.pi
_ANGLE_LIMIT_RAD = 2.0 * math.pi * 1.05
_FASTEST_ACTUATOR_RAD_S = 37.699  # robstride_02 max_velocity, assets/kbot/metadata.json
_VELOCITY_LIMIT_RAD_S = 50.0
_GYRO_LIMIT_RAD_S = math.radians(2000.0)  # full scale of common MEMS gyroscopes
_RAD_LIMITS = {  # largest |value| plausible in radian units
    "joint_angles": _ANGLE_LIMIT_RAD,
    "joint_vels": _VELOCITY_LIMIT_RAD_S,
    "output": _ANGLE_LIMIT_RAD,
    "gyro": _GYRO_LIMIT_RAD_S,
}
_DEGREE_FRACTION = 0.1  # degrees put most K-Bot records over the limit; a few over it are glitches, not a unit
_NORM_BAND = (0.5 * STANDARD_GRAVITY_MPS2, 2.0 * STANDARD_GRAVITY_MPS2)
_DEFAULT_CHUNK_RECORDS = 65536
_FIRST_CAPACITY = 1024
_BATCH_ROWS = 256  # rows of Python number lists held for one numpy conversion (< 1 MB for the K-Bot)
_WRITE_BLOCK_ROWS = 4096


_KINFER_SIM_GROUPS = {  # kinfer-sim 0.0.94's ModelProvider.arrays key -> schema group (kinfer_sim/provider.py)
    "joint_angles": "joint_angles",
    "joint_velocities": "joint_vels",
    "projected_gravity": "projected_g",
    "accelerometer": "accel",
    "gyroscope": "gyro",
    "command": "command",
    "action": "output",
}
_KINFER_SIM_ONLY = frozenset(
    ("joint_velocities", "projected_gravity", "accelerometer", "gyroscope", "action", "joint_torques", "joint_order")
)
_KINFER_SIM_CONSUMED = frozenset(("step_id", "time", "joint_order"))
_DEFAULT_CONTROL_PERIOD_S = 0.02  # the K-Bot's control_frequency, 50 Hz (assets/kbot/metadata.json)


class LogReadError(ValueError):
    """A log file cannot be used at all: missing, empty, no valid record, or no record of the expected width."""


@dataclass(frozen=True)
class _Options:
    num_joints: int | None
    num_commands: int | None
    joint_names: tuple[str, ...] | None
    angle_unit: AngleUnit
    chunk_records: int
    control_period_s: float | None = None

    @classmethod
    def make(
        cls,
        num_joints: int | None,
        num_commands: int | None,
        joint_names: Sequence[str] | None,
        angle_unit: AngleUnit,
        chunk_records: int,
        control_period_s: float | None = None,
    ) -> "_Options":
        if angle_unit not in ("rad", "deg", "auto"):
            raise ValueError(f"angle_unit must be 'rad', 'deg' or 'auto', got {angle_unit!r}")
        for name, value in (("num_joints", num_joints), ("num_commands", num_commands)):
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if type(chunk_records) is not int or chunk_records < 1:
            raise ValueError(f"chunk_records must be a positive int, got {chunk_records!r}")
        if control_period_s is not None and (
            isinstance(control_period_s, bool)
            or not isinstance(control_period_s, int | float)
            or not 0 < control_period_s < math.inf
        ):
            raise ValueError(f"control_period_s must be a finite number > 0 or None, got {control_period_s!r}")
        names = None if joint_names is None else tuple(joint_names)
        if names is not None:
            if num_joints is not None and num_joints != len(names):
                raise ValueError(f"num_joints={num_joints} but {len(names)} joint_names were given")
            num_joints = len(names)
        return cls(num_joints, num_commands, names, angle_unit, chunk_records, control_period_s)

    def width(self, name: str, first_value: list) -> tuple[int, str]:
        """Expected width of a group and where it comes from."""
        if name in VECTOR_GROUPS:
            return 3, "x, y, z"
        if name in JOINT_GROUPS and self.num_joints is not None:
            return self.num_joints, "num_joints" if self.joint_names is None else "joint_names"
        if name == "command" and self.num_commands is not None:
            return self.num_commands, "num_commands"
        return len(first_value), "first valid record"

    def converted_groups(self) -> frozenset[str]:
        """Groups converted while streaming (known before reading): all joint groups for 'deg'."""
        return frozenset(JOINT_GROUPS) if self.angle_unit == "deg" else frozenset()


class _Chunk:
    """Preallocated rows for up to `capacity` records; grows by doubling."""

    def __init__(self, capacity: int, widths: dict[str, int]) -> None:
        self.n = 0
        self.step_id = np.empty(capacity, dtype=np.int64)
        self.t_us = np.empty(capacity, dtype=np.int64)
        self.values = {name: np.empty((capacity, width)) for name, width in widths.items()}
        self.filled = {name: np.zeros(capacity, dtype=bool) for name in widths}  # values taken from the record

    @property
    def capacity(self) -> int:
        return self.step_id.shape[0]

    def grow(self, capacity: int) -> None:
        def grown(array: np.ndarray) -> np.ndarray:
            new = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            new[: self.n] = array[: self.n]
            return new

        self.step_id, self.t_us = grown(self.step_id), grown(self.t_us)
        self.values = {name: grown(block) for name, block in self.values.items()}
        self.filled = {name: grown(mask) for name, mask in self.filled.items()}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record_error(obj: object) -> str | None:
    """Why a parsed line is not a step record, or None."""
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    for key in ("step_id", "t_us"):
        value = obj.get(key)
        if type(value) is not int or not 0 <= value < _INT64_END:
            return f"{key} is {_clip(repr(value), 40)}, not an integer in [0, 2^63)"
    return None


_SCAN_ONCE = json.scanner.make_scanner(json.JSONDecoder())


def _parse_json(text: str) -> object:
    """`json.loads`, going straight to its C scanner for the usual line (a value, then at most a newline)."""
    try:
        value, end = _SCAN_ONCE(text, 0)
    except StopIteration:  # leading whitespace, or no value: json.loads decides, with its own error message
        return json.loads(text)
    if end == len(text) or text[end:] == "\n":
        return value
    return json.loads(text)  # other trailing text: whitespace is fine, anything else is "Extra data"


def _lines(path: Path) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line_no, line or None when over _MAX_LINE_BYTES, whether a newline ended it), reading in bounded pieces."""
    try:
        with open(path, "rb") as file:
            line_no = 0
            while line := file.readline(_MAX_LINE_BYTES):
                line_no += 1
                if line.endswith(b"\n") or len(line) < _MAX_LINE_BYTES:
                    yield line_no, line, line.endswith(b"\n")
                else:
                    yield line_no, None, _skip_rest_of_line(file)
    except OSError as err:
        raise LogReadError(f"{path}: cannot read: {err}") from err


def _skip_rest_of_line(file: BinaryIO) -> bool:
    while piece := file.readline(_MAX_LINE_BYTES):
        if piece.endswith(b"\n"):
            return True
    return False


class _Pass:
    """One streaming pass over a file: lines → chunks of rows, counting everything in `report`."""

    def __init__(self, path: Path, options: _Options, convert: frozenset[str]) -> None:
        self.path = path
        self.options = options
        self.convert = convert
        self.report = LogReport(path=str(path), angle_unit=options.angle_unit)
        self._widths: dict[str, int] | None = None
        self._width_sources: dict[str, str] = {}
        self._absent: tuple[str, ...] = ()
        self._chunk: _Chunk | None = None
        self._capacity = min(_FIRST_CAPACITY, options.chunk_records)
        self._prev_step = -1  # no record yet
        self._prev_t = 0
        self._format: str | None = None  # "kinfer" or "kinfer-sim", from the first JSON object
        self._sim_time = False  # kinfer-sim: t_us from the `time` input (else from step_id)
        self._period_us = 0.0
        self.joint_names = options.joint_names
        # Per present group: name, width, and the rows / number lists awaiting one batch conversion.
        self._groups: tuple[tuple[str, int, list[int], list[list]], ...] = ()

    def chunks(self) -> Iterator[_Chunk]:
        """Finished chunks of at most `chunk_records` rows; then checks the whole file is usable."""
        for line_no, line, has_newline in _lines(self.path):
            self.report.lines_total = line_no
            self._line(line_no, line, has_newline)
            if self._chunk is not None and self._chunk.n == self.options.chunk_records:
                self._capacity = self.options.chunk_records
                yield self._finish_chunk()
        if self._chunk is not None and self._chunk.n:
            yield self._finish_chunk()
        self._check_usable()
        _assess_units(self.report)

    def _line(self, line_no: int, line: bytes | None, has_newline: bool) -> None:
        if line is None:
            self.report.add_malformed(line_no, f"longer than {_MAX_LINE_BYTES} bytes")
            return
        try:
            obj = _parse_json(line.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if not line.strip():
                self.report.blank_lines += 1
            elif has_newline:
                self.report.add_malformed(line_no, f"invalid JSON: {_clip(str(err), 80)}")
            else:
                self.report.truncated_last_line = True
            return
        plain_quotes = 2 * len(obj) if isinstance(obj, dict) else -1
        if isinstance(obj, dict) and self._format != "kinfer":
            names = obj.get("joint_order")
            if type(names) is list and all(type(n) is str for n in names):
                plain_quotes += 2 * len(names)
            obj = self._from_kinfer_sim(obj)
        reason = _record_error(obj)
        if reason is not None and self._format == "kinfer-sim" and reason.startswith("t_us"):
            reason = "no usable `time` ([seconds]) in a kinfer-sim log that logs it" if self._sim_time else reason
        if reason is not None:
            self.report.add_malformed(line_no, reason)
            return
        # Without strings or booleans in the values (each key brings exactly two quotes), number lists can be
        # converted in batches; anything numpy refuses there goes through `_fill` one row at a time.
        plain = line.count(b'"') == plain_quotes and b"true" not in line and b"false" not in line
        self._record(obj, plain)

    def _from_kinfer_sim(self, obj: dict) -> dict:
        """A kinfer-sim record in the schema's keys (the format is decided by the first JSON object)."""
        if self._format is None:
            self._format = "kinfer"
            if "t_us" not in obj and "step_id" in obj and obj.keys() & _KINFER_SIM_ONLY:
                self._start_kinfer_sim(obj)
        if self._format == "kinfer":
            return obj
        step_id = obj.get("step_id")
        out: dict = {"step_id": step_id, "t_us": None}
        if self._sim_time:
            time_s = obj.get("time")
            if type(time_s) is list and len(time_s) == 1 and type(time_s[0]) in (int, float):
                if math.isfinite(time_s[0]) and 0 <= time_s[0] < _INT64_END / 1e6:
                    out["t_us"] = round(time_s[0] * 1e6)
        elif type(step_id) is int and 0 <= step_id < _INT64_END / max(self._period_us, 1.0):
            out["t_us"] = round(step_id * self._period_us)
        for key, value in obj.items():
            if key in _KINFER_SIM_GROUPS:
                out[_KINFER_SIM_GROUPS[key]] = value
            elif key not in _KINFER_SIM_CONSUMED:
                out[key] = value  # joint_torques and anything else: counted among the ignored keys
        return out

    def _start_kinfer_sim(self, first: dict) -> None:
        report, options = self.report, self.options
        self._format = report.format = "kinfer-sim"
        renamed = ", ".join(f"{k} → {v}" for k, v in _KINFER_SIM_GROUPS.items() if k != v and k in first)
        report.notes.append(f"kinfer-sim --save-logs log (no t_us); groups renamed: {renamed or 'none'}")
        if type(first.get("time")) is list:
            self._sim_time = True
            report.notes.append(
                "t_us derived from the logged `time` input: kinfer-sim's simulated clock, not wall time"
            )
        else:
            period_s = options.control_period_s or _DEFAULT_CONTROL_PERIOD_S
            self._period_us = period_s * 1e6
            source = "given" if options.control_period_s else "assumed: the K-Bot's 50 Hz; set control_period_s"
            report.notes.append(f"t_us derived as step_id × {period_s * 1e3:g} ms (control period {source})")
        order = first.get("joint_order")
        if type(order) is list and order and all(type(n) is str for n in order):
            if options.joint_names is not None and tuple(order) != options.joint_names:
                raise LogReadError(
                    f"{self.path}: the log's joint_order {order} differs from the given joint_names "
                    f"{list(options.joint_names)}"
                )
            self.joint_names = tuple(order)
            report.notes.append(f"joint names from the log's joint_order ({len(order)} joints)")

    def _start(self, first: dict) -> dict[str, int]:
        widths = {}
        for name in CHANNEL_GROUPS:
            if type(first.get(name)) is list:
                widths[name], self._width_sources[name] = self.options.width(name, first[name])
                self.report.groups[name] = GroupReport(width=widths[name])
        self._widths = widths
        self._absent = tuple(name for name in CHANNEL_GROUPS if name not in widths)
        self._groups = tuple((name, width, [], []) for name, width in widths.items())
        return widths

    def _room(self, widths: dict[str, int]) -> _Chunk:
        if self._chunk is None:
            self._chunk = _Chunk(self._capacity, widths)
        elif self._chunk.n == self._chunk.capacity:
            self._chunk.grow(min(2 * self._chunk.capacity, self.options.chunk_records))
        return self._chunk

    def _record(self, obj: dict, plain: bool) -> None:
        widths = self._widths if self._widths is not None else self._start(obj)
        chunk = self._room(widths)
        row = chunk.n
        step_id, t_us = obj["step_id"], obj["t_us"]
        self._check_order(step_id, t_us)
        chunk.step_id[row], chunk.t_us[row] = step_id, t_us
        missing = 0  # schema keys absent from the record (same as null)
        for name, width, rows, values in self._groups:
            value = obj.get(name, _MISSING)
            if plain and type(value) is list and len(value) == width:
                rows.append(row)
                values.append(value)
            else:
                if value is _MISSING:
                    missing, value = missing + 1, None
                self._fill(chunk, row, name, width, value)
        report = self.report
        for name in self._absent:
            value = obj.get(name, _MISSING)
            if value is _MISSING:
                missing += 1
            elif value is not None:
                report.unexpected_records[name] = report.unexpected_records.get(name, 0) + 1
        if len(obj) != len(_KEYS) - missing:
            for key in obj.keys() - _KEYS:
                if key in report.unknown_keys or len(report.unknown_keys) < _MAX_UNKNOWN_KEYS:
                    report.unknown_keys[key] = report.unknown_keys.get(key, 0) + 1
        chunk.n += 1
        if chunk.n % _BATCH_ROWS == 0:
            self._flush(chunk)

    def _flush(self, chunk: _Chunk) -> None:
        """Convert the pending number lists of each group in one call; rows numpy refuses go through `_fill`."""
        for name, width, rows, values in self._groups:
            if not rows:
                continue
            try:
                block = np.array(values, dtype=np.float64)  # null → NaN
            except (ValueError, TypeError, OverflowError):  # nested lists or dicts, integers beyond float64
                block = None
            if block is not None and block.shape == (len(rows), width):
                chunk.values[name][rows] = block
                chunk.filled[name][rows] = True
                self.report.groups[name].valid_records += len(rows)
            else:
                for row, value in zip(rows, values, strict=True):
                    self._fill(chunk, row, name, width, value)
            rows.clear()
            values.clear()

    def _check_order(self, step_id: int, t_us: int) -> None:
        prev_step = self._prev_step
        if prev_step >= 0:
            if step_id > prev_step + 1:
                self.report.gaps += 1
                self.report.dropped_steps += step_id - prev_step - 1
            elif step_id <= prev_step:
                self.report.duplicate_or_backward_steps += 1
            if t_us <= self._prev_t:
                self.report.non_monotonic_t_us += 1
        self._prev_step, self._prev_t = step_id, t_us

    def _fill(self, chunk: _Chunk, row: int, name: str, width: int, value: object) -> None:
        stats = self.report.groups[name]
        if type(value) is list and len(value) == width:
            kinds = set(map(type, value))
            if kinds <= _NUMBER_OR_NULL_TYPES:
                if type(None) in kinds:
                    value = [math.nan if v is None else v for v in value]
                try:
                    chunk.values[name][row] = value
                except OverflowError:  # an integer beyond float64
                    pass
                else:
                    chunk.filled[name][row] = True
                    stats.valid_records += 1
                    return
            stats.bad_type_records += 1
        elif value is None:
            stats.null_records += 1
        elif type(value) is list:
            stats.wrong_width_records += 1
            if len(value) in stats.wrong_widths or len(stats.wrong_widths) < _MAX_WRONG_WIDTHS:
                stats.wrong_widths[len(value)] = stats.wrong_widths.get(len(value), 0) + 1
        else:
            stats.bad_type_records += 1
        chunk.values[name][row] = math.nan

    def _finish_chunk(self) -> _Chunk:
        """Count non-finite records, store them as NaN, update unit statistics, convert degrees if asked."""
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        self._flush(chunk)
        self.report.records_used += chunk.n
        for name, block in chunk.values.items():
            _update_stats(self.report.groups[name], name, block[: chunk.n], chunk.filled[name][: chunk.n])
            if name in self.convert:
                block[: chunk.n] *= _RAD_PER_DEG
        chunk.filled = {}
        return chunk

    def _check_usable(self) -> None:
        report = self.report
        if report.records_used == 0:
            found = [f"{report.malformed_lines} malformed", f"{report.blank_lines} blank"]
            if report.truncated_last_line:
                found.append("a truncated last line")
            if report.malformed_examples:
                found.append("first: line {}: {}".format(*report.malformed_examples[0]))
            raise LogReadError(f"{self.path}: no valid step record in {report.lines_total} lines ({', '.join(found)})")
        for name, stats in report.groups.items():
            if stats.valid_records == 0 and stats.wrong_width_records:
                raise LogReadError(
                    f"{self.path}: no record has {name} of the expected width {stats.width} (from "
                    f"{self._width_sources[name]}); lengths seen: "
                    + ", ".join(f"{width} ({count} records)" for width, count in stats.wrong_widths.items())
                )


def _update_stats(stats: GroupReport, name: str, block: np.ndarray, filled: np.ndarray) -> None:
    finite = np.isfinite(block)
    finite_rows = finite.all(axis=1)
    stats.nan_or_inf_records += int(np.count_nonzero(filled & ~finite_rows))
    if not finite.all():
        block[~finite] = np.nan
    magnitude = np.abs(block)
    stats.max_abs = max(stats.max_abs, float(np.max(magnitude, initial=0.0, where=finite)))
    if name in _RAD_LIMITS:
        stats.records_over_limit += int(np.count_nonzero((magnitude > _RAD_LIMITS[name]).any(axis=1)))
    new_finite = int(np.count_nonzero(finite_rows))
    if name in VECTOR_GROUPS and new_finite:
        previous = stats.mean_norm or 0.0
        with np.errstate(over="ignore", invalid="ignore"):  # norms of huge values may overflow to inf
            norms = np.linalg.norm(block[finite_rows], axis=1)
            total = stats.finite_records + new_finite
            stats.mean_norm = previous + float(norms.sum() - new_finite * previous) / total
    stats.finite_records += new_finite


def _assess_units(report: LogReport) -> None:
    """Fill `suspected_degrees` and `unit_warnings` from the groups' statistics (in the log's own units)."""
    for name, limit in _RAD_LIMITS.items():
        stats = report.groups.get(name)
        if stats is None or not stats.records_over_limit:
            continue
        over, unit = stats.records_over_limit, CHANNEL_GROUPS[name]
        counted = f"{over} of {stats.valid_records} records above {limit:.3g} {unit}"
        if stats.max_abs > limit * _DEG_PER_RAD:
            report.unit_warnings[name] = (
                f"max |value| {stats.max_abs:.4g} is implausible in {unit} and in degrees "
                f"(limit {limit:.3g} {unit} = {limit * _DEG_PER_RAD:.4g} in degrees; {counted})"
            )
        if name == "gyro":
            report.unit_warnings.setdefault(
                name, f"{counted} (a MEMS gyroscope's 2000°/s full scale): deg/s? never converted"
            )
        elif report.angle_unit == "deg":
            continue
        elif over >= _DEGREE_FRACTION * stats.valid_records:
            report.suspected_degrees[name] = _degree_evidence(name, stats.max_abs) + f"; {counted}"
        else:
            report.unit_warnings.setdefault(
                name, f"{counted}, max |value| {stats.max_abs:.4g}: glitches? not converted"
            )
    for name in ("projected_g", "accel"):
        stats = report.groups.get(name)
        if stats is None or stats.mean_norm is None:
            continue
        low, high = _NORM_BAND
        if not low <= stats.mean_norm <= high:
            report.unit_warnings[name] = (
                f"mean |{name}| {stats.mean_norm:.4g} is outside [{low:.3g}, {high:.3g}] m/s^2 "
                f"(expected ≈ {STANDARD_GRAVITY_MPS2:.2f}); wrong unit (g?) or not a gravity-bearing signal"
            )


def _degree_evidence(name: str, largest: float) -> str:
    if name == "joint_vels":
        return (
            f"max |value| {largest:.1f} looks like deg/s ({largest / _VELOCITY_LIMIT_RAD_S:.1f} × the "
            f"{_VELOCITY_LIMIT_RAD_S:.0f} rad/s limit, 1.3 × the fastest K-Bot actuator's "
            f"{_FASTEST_ACTUATOR_RAD_S:.1f} rad/s)"
        )
    return f"max |value| {largest:.1f} looks like degrees (ratio to 2π: {largest / (2 * math.pi):.0f})"


def _note_conversions(report: LogReport, convert: frozenset[str]) -> None:
    """Record which groups were converted to rad, and warn when only one of joint_angles / joint_vels was."""
    for name in JOINT_GROUPS:
        if name in convert and name in report.groups:
            why = "angle_unit='deg'" if report.angle_unit == "deg" else f"auto: {report.suspected_degrees[name]}"
            report.converted_to_rad[name] = why
    if report.angle_unit == "auto":
        for name, sibling in (("joint_angles", "joint_vels"), ("joint_vels", "joint_angles")):
            if name in report.converted_to_rad and sibling in report.groups and sibling not in convert:
                report.unit_warnings.setdefault(
                    sibling, f"left unconverted although {name} looked like degrees; check its unit"
                )


def _auto_conversions(report: LogReport) -> frozenset[str]:
    return frozenset(report.suspected_degrees) if report.angle_unit == "auto" else frozenset()


def _checked_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise LogReadError(f"{path}: no such file")
    if path.is_dir():
        raise LogReadError(f"{path}: is a directory, not an NDJSON log file")
    if path.stat().st_size == 0:
        raise LogReadError(f"{path}: empty file (0 bytes)")
    return path


def _step_log(step_id: np.ndarray, t_us: np.ndarray, groups: dict[str, np.ndarray], scan: _Pass, path: Path) -> StepLog:
    return StepLog(step_id=step_id, t_us=t_us, groups=groups, joint_names=scan.joint_names, source=str(path))


class NdjsonReader(Iterator[StepLog]):
    """Streams a log as `StepLog` chunks of at most `chunk_records` steps; `report` covers the whole file.

    Memory stays bounded by about two chunks whatever the file length. With `angle_unit="auto"` the file is read
    twice: a first pass decides which groups are in degrees, so that every chunk is converted alike. Errors that
    need the whole file (no valid record, no record of the expected width) are raised at the end of iteration.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_records: int = _DEFAULT_CHUNK_RECORDS,
        num_joints: int | None = None,
        num_commands: int | None = None,
        joint_names: Sequence[str] | None = None,
        angle_unit: AngleUnit = "rad",
        control_period_s: float | None = None,
    ) -> None:
        self._options = _Options.make(
            num_joints, num_commands, joint_names, angle_unit, chunk_records, control_period_s
        )
        self.path = _checked_path(path)
        self._report: LogReport | None = None
        self._chunks = self._generate()

    def _generate(self) -> Iterator[StepLog]:
        convert = self._options.converted_groups()
        if self._options.angle_unit == "auto":
            prescan = _Pass(self.path, self._options, frozenset())
            for _ in prescan.chunks():
                pass
            convert = _auto_conversions(prescan.report)
        scan = _Pass(self.path, self._options, convert)
        for chunk in scan.chunks():
            n = chunk.n
            groups = {name: block[:n] for name, block in chunk.values.items()}
            yield _step_log(chunk.step_id[:n], chunk.t_us[:n], groups, scan, self.path)
        _note_conversions(scan.report, convert)
        self._report = scan.report

    def __next__(self) -> StepLog:
        return next(self._chunks)

    @property
    def report(self) -> LogReport:
        """The whole file's report; available once iteration has finished."""
        if self._report is None:
            raise RuntimeError(f"{self.path}: the report is complete only after iterating to the end")
        return self._report


def iter_ndjson(
    path: str | os.PathLike[str],
    chunk_records: int = _DEFAULT_CHUNK_RECORDS,
    *,
    num_joints: int | None = None,
    num_commands: int | None = None,
    joint_names: Sequence[str] | None = None,
    angle_unit: AngleUnit = "rad",
    control_period_s: float | None = None,
) -> NdjsonReader:
    """Stream a kinfer NDJSON log in bounded memory: iterate the result for `StepLog` chunks, then read `.report`.

    Options and policies as for `read_ndjson`. Missing or empty files raise `LogReadError` here, at once.
    """
    return NdjsonReader(
        path,
        chunk_records=chunk_records,
        num_joints=num_joints,
        num_commands=num_commands,
        joint_names=joint_names,
        angle_unit=angle_unit,
        control_period_s=control_period_s,
    )


def read_ndjson(
    path: str | os.PathLike[str],
    *,
    num_joints: int | None = None,
    num_commands: int | None = None,
    joint_names: Sequence[str] | None = None,
    angle_unit: AngleUnit = "rad",
    control_period_s: float | None = None,
) -> tuple[StepLog, LogReport]:
    """Read a whole kinfer NDJSON log (streamed line by line into float64 blocks) and report what was found.

    `num_joints` / `num_commands` / `joint_names` fix the expected widths (else the first valid record does);
    `angle_unit` says how joint angles, velocities and outputs are stored (see the module docstring);
    `control_period_s` dates a kinfer-sim log without a `time` input (default 0.02 s).
    Peak memory is about twice the returned arrays. Raises `LogReadError` when the file is unusable.
    """
    options = _Options.make(num_joints, num_commands, joint_names, angle_unit, _DEFAULT_CHUNK_RECORDS, control_period_s)
    path = _checked_path(path)
    scan = _Pass(path, options, options.converted_groups())
    chunks = list(scan.chunks())
    step_id = np.concatenate([chunk.step_id[: chunk.n] for chunk in chunks])
    t_us = np.concatenate([chunk.t_us[: chunk.n] for chunk in chunks])
    groups = {}
    for name in scan.report.groups:  # one group at a time, freeing its chunk blocks before the next
        groups[name] = np.concatenate([chunk.values.pop(name)[: chunk.n] for chunk in chunks])
    del chunks
    convert = options.converted_groups() | _auto_conversions(scan.report)
    for name in _auto_conversions(scan.report):
        groups[name] *= _RAD_PER_DEG
    _note_conversions(scan.report, convert)
    return _step_log(step_id, t_us, groups, scan, path), scan.report


def _format_rows(block: np.ndarray) -> list[str]:
    """JSON arrays of each row: shortest round-trip float64 text, null for NaN/±Inf (as serde_json writes)."""
    rows = []
    for values, finite in zip(block.tolist(), np.isfinite(block).all(axis=1).tolist(), strict=True):
        texts = map(repr, values) if finite else (repr(v) if math.isfinite(v) else "null" for v in values)
        rows.append("[" + ",".join(texts) + "]")
    return rows


def _format_record(step_id: int, t_us: int, rows: Mapping[str, str | None]) -> str:
    """One NDJSON line: every channel group in schema order, null when absent."""
    fields = [f'"step_id":{step_id}', f'"t_us":{t_us}']
    fields.extend(f'"{name}":{rows.get(name) or "null"}' for name in CHANNEL_GROUPS)
    return "{" + ",".join(fields) + "}\n"


def _format_lines(log: StepLog, start: int, stop: int) -> str:
    columns = {name: _format_rows(log.groups[name][start:stop]) for name in CHANNEL_GROUPS if name in log.groups}
    steps = zip(log.step_id[start:stop].tolist(), log.t_us[start:stop].tolist(), strict=True)
    return "".join(
        _format_record(step_id, t_us, {name: rows[i] for name, rows in columns.items()})
        for i, (step_id, t_us) in enumerate(steps)
    )


def write_ndjson(log: StepLog, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write `log` in kinfer's NDJSON schema (all 7 groups, null when absent), atomically (`atomic_write`).

    Floats are written as the shortest text that reads back to the same float64, so any float64 (hence any f32)
    value round-trips exactly; NaN and ±Inf are written as null, like kinfer. `joint_names` and `source` are not
    part of the schema and are not written. Refuses to replace an existing file unless `overwrite=True`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="\n") as file:
            for start in range(0, len(log), _WRITE_BLOCK_ROWS):
                file.write(_format_lines(log, start, start + _WRITE_BLOCK_ROWS))

    atomic_write(path, write)
    return path


class NdjsonWriter:
    """Append control steps to a kinfer NDJSON log as they happen: one line per step, flushed at once.

    For live runs (the deployment loop): a process that dies loses at most the line it was writing, and
    `read_ndjson` reads what is there. Same schema and float formatting as `write_ndjson`; never replaces an
    existing file unless `overwrite=True`. Use as a context manager, or call `close()` (which fsyncs).
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file: TextIO = self.path.open("w" if overwrite else "x", encoding="utf-8", newline="\n")
        except FileExistsError:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it") from None
        self.steps = 0

    def write(self, step_id: int, t_us: int, groups: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Append one step; `groups` maps channel group names (schema units) to 1-D values."""
        unknown = set(groups) - set(CHANNEL_GROUPS)
        if unknown:
            raise ValueError(f"unknown channel groups {sorted(unknown)}; known: {list(CHANNEL_GROUPS)}")
        rows = {
            name: _format_rows(np.asarray(values, dtype=float).reshape(1, -1))[0] for name, values in groups.items()
        }
        self._file.write(_format_record(int(step_id), int(t_us), rows))
        self._file.flush()
        self.steps += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "NdjsonWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
