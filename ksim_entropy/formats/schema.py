"""The common per-step log schema of real-robot (kinfer) and simulated K-Bot runs, and the report of reading one.

A log is a sequence of control steps. Each step has a `step_id`, a wall-clock time `t_us` and up to seven channel
groups, the ones kinfer 0.6.1's runtime writes (`kinfer/rust/src/logger.rs`), in the K-Bot's units:

=============  ===========  ===================================================================
group          unit         meaning
=============  ===========  ===================================================================
joint_angles   rad          measured joint positions, in `joint_names` order
joint_vels     rad/s        measured joint velocities
projected_g    m/s^2        gravity vector in the IMU frame (|g| ≈ 9.81)
accel          m/s^2        IMU accelerometer
gyro           rad/s        IMU gyroscope
command        per-command  the policy's command inputs (each in its own unit, e.g. m/s, rad/s)
output         rad          the policy's output: joint position targets, in `joint_names` order
=============  ===========  ===================================================================

Pure NumPy: this module must never import ksim, mujoco or xax.
"""

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CHANNEL_GROUPS",
    "JOINT_GROUPS",
    "VECTOR_GROUPS",
    "GroupReport",
    "LogReport",
    "StepLog",
]

CHANNEL_GROUPS: Mapping[str, str] = MappingProxyType(
    {
        "joint_angles": "rad",
        "joint_vels": "rad/s",
        "projected_g": "m/s^2",
        "accel": "m/s^2",
        "gyro": "rad/s",
        "command": "per-command",
        "output": "rad",
    }
)
JOINT_GROUPS: tuple[str, ...] = ("joint_angles", "joint_vels", "output")  # one column per joint
VECTOR_GROUPS: tuple[str, ...] = ("projected_g", "accel", "gyro")  # x, y, z in the IMU frame

IndexLike = slice | np.ndarray | Sequence[int] | Sequence[bool]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _int_column(name: str, values: object) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return _read_only(array.astype(np.int64, copy=False))


def _group_block(name: str, values: object, num_steps: int) -> np.ndarray:
    if name not in CHANNEL_GROUPS:
        raise ValueError(f"unknown channel group {name!r}; known groups: {list(CHANNEL_GROUPS)}")
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"group {name!r} must be numeric, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] != num_steps:
        raise ValueError(f"group {name!r} must have shape ({num_steps}, k), got {array.shape}")
    if name in VECTOR_GROUPS and array.shape[1] != 3:
        raise ValueError(f"group {name!r} must have 3 columns (x, y, z), got {array.shape[1]}")
    return _read_only(array.astype(np.float64, copy=False))


@dataclass(frozen=True, eq=False)
class StepLog:
    """One run, step by step: `step_id` (N,) int64, `t_us` (N,) int64 wall-clock µs, and channel groups.

    `groups` maps group names (keys of `CHANNEL_GROUPS`) to (N, k) float64 blocks in the units of `CHANNEL_GROUPS`;
    only groups the log has are present. NaN marks a value that is missing or was not finite (see the `LogReport`).
    Arrays are stored as read-only views (no copy when they already are int64 / float64); equality is identity.
    """

    step_id: np.ndarray
    t_us: np.ndarray
    groups: Mapping[str, np.ndarray]
    joint_names: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        step_id = _int_column("step_id", self.step_id)
        t_us = _int_column("t_us", self.t_us)
        if t_us.shape != step_id.shape:
            raise ValueError(f"t_us has {t_us.shape[0]} entries but step_id has {step_id.shape[0]}")
        if not isinstance(self.groups, Mapping):
            raise ValueError(f"groups must be a mapping of group name to array, got {type(self.groups).__name__}")
        blocks = {name: _group_block(name, self.groups[name], step_id.shape[0]) for name in self.groups}
        ordered = {name: blocks[name] for name in CHANNEL_GROUPS if name in blocks}
        joint_names = self.joint_names
        if joint_names is not None:
            if isinstance(joint_names, str) or not all(isinstance(n, str) for n in joint_names):
                raise ValueError(f"joint_names must be a sequence of strings, got {joint_names!r}")
            joint_names = tuple(joint_names)
        object.__setattr__(self, "step_id", step_id)
        object.__setattr__(self, "t_us", t_us)
        object.__setattr__(self, "groups", MappingProxyType(ordered))
        object.__setattr__(self, "joint_names", joint_names)
        object.__setattr__(self, "source", str(self.source))

    @classmethod
    def from_arrays(
        cls,
        *,
        joint_angles: ArrayLike | None = None,
        joint_vels: ArrayLike | None = None,
        projected_g: ArrayLike | None = None,
        accel: ArrayLike | None = None,
        gyro: ArrayLike | None = None,
        command: ArrayLike | None = None,
        output: ArrayLike | None = None,
        step_id: ArrayLike | None = None,
        t_us: ArrayLike | None = None,
        dt_s: float | None = None,
        joint_names: Sequence[str] | None = None,
        source: str = "",
    ) -> "StepLog":
        """Build a log from (N, k) group arrays (None = absent group).

        `step_id` defaults to 0..N-1; `t_us` must be given, or `dt_s` (control period, s) to make it 0, dt, 2dt, ...
        """
        given = {
            "joint_angles": joint_angles,
            "joint_vels": joint_vels,
            "projected_g": projected_g,
            "accel": accel,
            "gyro": gyro,
            "command": command,
            "output": output,
        }
        groups = {name: np.asarray(v) for name, v in given.items() if v is not None}
        arrays = [*groups.values(), *(np.asarray(a) for a in (step_id, t_us) if a is not None)]
        if not arrays:
            raise ValueError("from_arrays needs at least one group, step_id or t_us to know the number of steps")
        num_steps = arrays[0].shape[0] if arrays[0].ndim else 0  # StepLog names any shape mismatch
        if step_id is None:
            step_id = np.arange(num_steps, dtype=np.int64)
        if t_us is None:
            if dt_s is None or not dt_s > 0:
                raise ValueError(f"give t_us, or a control period dt_s > 0 (got dt_s={dt_s})")
            t_us = np.round(np.arange(num_steps) * (dt_s * 1e6)).astype(np.int64)
        elif dt_s is not None:
            raise ValueError("give either t_us or dt_s, not both")
        names = tuple(joint_names) if joint_names is not None else None
        return cls(step_id=step_id, t_us=t_us, groups=groups, joint_names=names, source=source)

    def __len__(self) -> int:
        return int(self.step_id.shape[0])

    @property
    def group_names(self) -> tuple[str, ...]:
        """Groups present, in `CHANNEL_GROUPS` order."""
        return tuple(self.groups)

    def group(self, name: str) -> np.ndarray:
        """The (N, k) block of one group; KeyError naming the groups this log has."""
        try:
            return self.groups[name]
        except KeyError:
            raise KeyError(f"group {name!r} is not in this log; available: {list(self.groups)}") from None

    def _names_of(self, name: str) -> list[str]:
        width = self.group(name).shape[1]
        if name in VECTOR_GROUPS:
            return [f"{name}/{axis}" for axis in "xyz"]
        if name in JOINT_GROUPS and self.joint_names is not None and len(self.joint_names) == width:
            return [f"{name}/{joint}" for joint in self.joint_names]
        return [f"{name}[{i}]" for i in range(width)]

    def channel_names(self, groups: Iterable[str] | None = None) -> tuple[str, ...]:
        """Column names, e.g. `joint_angles/dof_left_knee_04` (or `joint_angles[3]`), `gyro/z`, `command[0]`."""
        names = self.group_names if groups is None else tuple(groups)
        return tuple(column for name in names for column in self._names_of(name))

    def matrix(self, groups: Iterable[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """The chosen groups (default: all) side by side as one (N, C) float64 array, and its column names."""
        names = self.group_names if groups is None else tuple(groups)
        blocks = [self.group(name) for name in names]
        matrix = np.hstack(blocks) if blocks else np.empty((len(self), 0))
        return matrix, self.channel_names(names)

    def dt_s(self) -> np.ndarray:
        """Intervals between consecutive steps, s, from `t_us`: shape (N-1,)."""
        return np.diff(self.t_us) / 1e6

    def select(self, index: IndexLike) -> "StepLog":
        """The steps picked by a slice, a boolean mask of length N or integer indices."""
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.size == 0 and index.dtype != bool:
                index = index.astype(np.intp)
            if index.dtype == bool and index.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {index.shape}, expected ({len(self)},)")
            if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
                raise ValueError(f"select takes a slice, a boolean mask or integer indices, got dtype {index.dtype}")
        return StepLog(
            step_id=self.step_id[index],
            t_us=self.t_us[index],
            groups={name: block[index] for name, block in self.groups.items()},
            joint_names=self.joint_names,
            source=self.source,
        )


@dataclass
class GroupReport:
    """What reading found in one channel group. Each record lands in at most one of the `*_records` categories."""

    width: int  # expected number of values per record
    valid_records: int = 0  # records whose values were taken (they may still hold NaN, see nan_or_inf_records)
    nan_or_inf_records: int = 0  # records with at least one NaN/±Inf/null value (stored as NaN)
    null_records: int = 0  # records where the whole group was null or missing (row stored as NaN)
    wrong_width_records: int = 0  # records with a list of another length (row stored as NaN)
    wrong_widths: dict[int, int] = field(default_factory=dict)  # length seen → records (first 10 lengths)
    bad_type_records: int = 0  # records whose value is not a list of numbers (row stored as NaN)
    finite_records: int = 0  # records with all values finite
    max_abs: float = 0.0  # largest finite |value|, in the log's own units (before any degree conversion)
    records_over_limit: int = 0  # joint groups and gyro: records with a |value| above what radians allow
    mean_norm: float | None = None  # x, y, z groups: mean Euclidean norm over finite records

    @property
    def nan_rows(self) -> int:
        """Rows of the returned block that hold NaN (when the group is at least one value wide)."""
        return self.nan_or_inf_records + self.null_records + self.wrong_width_records + self.bad_type_records

    def issues(self) -> list[str]:
        counts = {
            "with NaN/Inf": self.nan_or_inf_records,
            "null": self.null_records,
            f"of wrong width (expected {self.width}, saw {_widths_text(self.wrong_widths)})": self.wrong_width_records,
            "not a list of numbers": self.bad_type_records,
        }
        return [f"{count} records {what}" for what, count in counts.items() if count]


def _widths_text(widths: Mapping[int, int]) -> str:
    return ", ".join(f"{width}×{count}" for width, count in widths.items())


@dataclass
class LogReport:
    """Everything found while reading a step log; `ok` only when nothing at all was wrong.

    Counts refer to lines of the file (1-based `line_no`) and to records (lines that parsed as a step). Step-id
    and time checks compare each record with the one before it in the file.
    """

    path: str
    angle_unit: str = "rad"
    format: str = "kinfer"  # "kinfer" (the robot's runtime) or "kinfer-sim" (kinfer-sim --save-logs, renamed keys)
    notes: list[str] = field(default_factory=list)  # how the file was read (derived time, joint names): not issues
    lines_total: int = 0
    records_used: int = 0
    blank_lines: int = 0  # harmless: not an issue
    malformed_lines: int = 0
    malformed_examples: list[tuple[int, str]] = field(default_factory=list)  # (line_no, reason), first 10
    truncated_last_line: bool = False  # unparsable final line without newline (a crash mid-write); not malformed
    dropped_steps: int = 0  # step ids missing between consecutive records (writer drops, deleted/bad lines)
    gaps: int = 0  # places where step ids jump forward by more than one
    duplicate_or_backward_steps: int = 0  # records whose step_id is <= the previous one (e.g. an appended rerun)
    non_monotonic_t_us: int = 0  # records whose t_us is <= the previous one
    groups: dict[str, GroupReport] = field(default_factory=dict)  # the groups present, by name
    unexpected_records: dict[str, int] = field(default_factory=dict)  # values of groups absent from the log, ignored
    unknown_keys: dict[str, int] = field(default_factory=dict)  # keys outside the schema (first 20), ignored
    suspected_degrees: dict[str, str] = field(default_factory=dict)  # group → evidence
    unit_warnings: dict[str, str] = field(default_factory=dict)  # group → evidence of another unit problem
    converted_to_rad: dict[str, str] = field(default_factory=dict)  # group → why it was converted from degrees

    MAX_EXAMPLES = 10

    def add_malformed(self, line_no: int, reason: str) -> None:
        self.malformed_lines += 1
        if len(self.malformed_examples) < self.MAX_EXAMPLES:
            self.malformed_examples.append((line_no, reason))

    def _file_issues(self) -> list[str]:
        issues = [f"{self.malformed_lines} malformed lines skipped"] if self.malformed_lines else []
        if self.truncated_last_line:
            issues.append("truncated last line skipped")
        if self.dropped_steps:
            issues.append(f"{self.dropped_steps} step ids missing in {self.gaps} gaps")
        if self.duplicate_or_backward_steps:
            issues.append(f"{self.duplicate_or_backward_steps} duplicate or backward step ids")
        if self.non_monotonic_t_us:
            issues.append(f"{self.non_monotonic_t_us} non-increasing t_us")
        return issues

    def _unit_issues(self) -> list[str]:
        ignored = self.unexpected_records.items()
        issues = [f"{name}: {n} values ignored (group absent from the first record)" for name, n in ignored]
        issues.extend(f"{name}: suspected degrees: {why}" for name, why in self.suspected_degrees.items())
        issues.extend(f"{name}: {why}" for name, why in self.unit_warnings.items())
        return issues

    def issues(self) -> list[str]:
        """One line per problem found; empty when the log is clean."""
        group_issues = [f"{name}: {issue}" for name, group in self.groups.items() for issue in group.issues()]
        return self._file_issues() + group_issues + self._unit_issues()

    @property
    def ok(self) -> bool:
        """True when nothing was skipped, missing, non-finite, out of order or in a suspicious unit."""
        return not self.issues()

    def summary(self) -> str:
        """Human-readable report, one fact per line."""
        lines = [
            f"{self.path}: {self.records_used} records from {self.lines_total} lines "
            f"({self.blank_lines} blank) — {'OK' if self.ok else 'ISSUES'}"
        ]
        lines.extend(f"  {self.format}: {note}" for note in self.notes)
        lines.extend(f"  {issue}" for issue in self._file_issues())
        for name, group in self.groups.items():
            detail = "; ".join(group.issues()) or "clean"
            lines.append(f"  {name} [{group.width} × {CHANNEL_GROUPS[name]}]: {detail}")
        absent = [name for name in CHANNEL_GROUPS if name not in self.groups]
        if absent:
            lines.append(f"  absent groups: {', '.join(absent)}")
        lines.extend(f"  {issue}" for issue in self._unit_issues())
        lines.extend(f"  converted to rad: {name} ({why})" for name, why in self.converted_to_rad.items())
        lines.extend(f"  malformed line {line_no}: {reason}" for line_no, reason in self.malformed_examples)
        if self.unknown_keys:
            lines.append(f"  ignored keys: {', '.join(f'{k}×{n}' for k, n in self.unknown_keys.items())}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (integer dict keys become strings), with `ok` and `issues` added."""
        data = dataclasses.asdict(self)
        for group in data["groups"].values():
            group["wrong_widths"] = {str(k): v for k, v in group["wrong_widths"].items()}
            if group["mean_norm"] is not None and not math.isfinite(group["mean_norm"]):
                group["mean_norm"] = None
        data["malformed_examples"] = [list(example) for example in self.malformed_examples]
        data["ok"] = self.ok
        data["issues"] = self.issues()
        return data
