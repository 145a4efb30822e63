"""Fitted randomization: what a fit of the simulation to real logs found, per parameter, saved as `fitted.json`.

Each parameter has a `name` (snake_case; per-joint or per-axis ones as ``zero_offset/<joint>``, ``gyro_bias/x``),
its best estimate `mean`, the range `[low, high]` training should randomize over, its `unit`, a one-sigma
`uncertainty` (same unit), whether the logs `identifiable`-ly constrain it, and the `prior` range the fit started
from. An unidentifiable parameter keeps its prior range: the fit never turns missing evidence into a narrow range.

File format (strict JSON, UTF-8)::

    {"format": "ksim-entropy/fitted-randomization", "version": 1, "robot": str, "joint_names": [str, ...],
     "final_loss": float, "coverage": {"logs": [str, ...], "seconds": float, "windows": int, ...},
     "parameters": [{"name": str, "mean": float, "low": float, "high": float, "unit": str,
                     "uncertainty": float, "identifiable": bool, "prior": [float, float], "note": str}, ...]}

Pure NumPy; never imports ksim, mujoco, jax or xax.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ksim_entropy.formats.jsonfile import JsonFileError, read_json, write_json
from ksim_entropy.formats.schema import StepLog

__all__ = ["FORMAT", "VERSION", "FittedParameter", "FittedRandomization", "FittedRandomizationError", "imu_moments"]

FORMAT = "ksim-entropy/fitted-randomization"
VERSION = 1
_TOP_KEYS = ("format", "version", "robot", "joint_names", "final_loss", "coverage", "parameters")
_PARAM_KEYS = ("name", "mean", "low", "high", "unit", "uncertainty", "identifiable", "prior", "note")
_AXES = ("x", "y", "z")


class FittedRandomizationError(ValueError):
    """An unusable fitted randomization or file; the message names the path, parameter and field."""


def _fail(message: str, *, path: object = None, name: str | None = None, field_: str | None = None) -> NoReturn:
    where = [str(path)] if path is not None else []
    where += [f"parameter {name!r}"] if name is not None else []
    where += [f"field {field_!r}"] if field_ is not None else []
    raise FittedRandomizationError(": ".join([*where, message])) from None


def _number(value: object, what: str, name: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        _fail(f"must be a number, got {value!r:.60}", name=name, field_=what)
    value = float(value)
    if not math.isfinite(value):
        _fail(f"must be finite, got {value}", name=name, field_=what)
    return value


@dataclass(frozen=True)
class FittedParameter:
    """One fitted parameter (see the module docstring); checked: low <= mean <= high inside the prior."""

    name: str
    mean: float
    low: float
    high: float
    unit: str
    uncertainty: float
    identifiable: bool
    prior: tuple[float, float]
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(f"a parameter needs a non-empty name, got {self.name!r}")
        for what in ("mean", "low", "high", "uncertainty"):
            object.__setattr__(self, what, _number(getattr(self, what), what, self.name))
        if not isinstance(self.prior, Sequence) or len(self.prior) != 2:
            _fail(f"must be [low, high], got {self.prior!r}", name=self.name, field_="prior")
        prior = (_number(self.prior[0], "prior", self.name), _number(self.prior[1], "prior", self.name))
        object.__setattr__(self, "prior", prior)
        if not isinstance(self.unit, str) or not isinstance(self.note, str):
            _fail("unit and note must be strings", name=self.name)
        if not isinstance(self.identifiable, bool):
            _fail(f"must be true or false, got {self.identifiable!r}", name=self.name, field_="identifiable")
        if not prior[0] <= prior[1]:
            _fail(f"prior {list(prior)} is inverted", name=self.name, field_="prior")
        if not self.low <= self.mean <= self.high:
            _fail(f"need low <= mean <= high, got {self.low}, {self.mean}, {self.high}", name=self.name)
        if self.uncertainty < 0:
            _fail(f"must be >= 0, got {self.uncertainty}", name=self.name, field_="uncertainty")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "unit": self.unit,
            "uncertainty": self.uncertainty,
            "identifiable": self.identifiable,
            "prior": list(self.prior),
            "note": self.note,
        }


@dataclass(frozen=True)
class FittedRandomization:
    """Every fitted parameter of one robot, plus the fit's final loss and what the logs covered."""

    robot: str
    joint_names: tuple[str, ...]
    parameters: tuple[FittedParameter, ...]
    final_loss: float
    coverage: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "final_loss", _number(self.final_loss, "final_loss"))
        names = [p.name for p in self.parameters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            _fail(f"parameter names must be unique; repeated {repeated}")
        if not self.parameters:
            _fail("no parameters")

    def __getitem__(self, name: str) -> FittedParameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"no fitted parameter {name!r}; have {[p.name for p in self.parameters]}")

    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def per_joint(self, prefix: str) -> list[FittedParameter]:
        """The parameters ``<prefix>/<joint>`` in joint order (empty if there are none); a gap is an error."""
        found = {p.name.split("/", 1)[1]: p for p in self.parameters if p.name.startswith(prefix + "/")}
        if not found:
            return []
        missing = [j for j in self.joint_names if j not in found]
        if missing:
            _fail(f"{prefix}: no value for joints {missing}")
        return [found[j] for j in self.joint_names]

    def summary(self) -> str:
        lines = [f"fitted randomization of {self.robot} (final loss {self.final_loss:.4g})"]
        for p in self.parameters:
            kept = "prior range kept" if (p.low, p.high) == tuple(p.prior) else "the data bound its range"
            flag = "" if p.identifiable else f"  (unidentifiable: {kept})"
            lines.append(
                f"  {p.name:36s} {p.mean:+.5g} ± {p.uncertainty:.2g} {p.unit:10s} "
                f"range [{p.low:+.5g}, {p.high:+.5g}]{flag}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "robot": self.robot,
            "joint_names": list(self.joint_names),
            "final_loss": self.final_loss,
            "coverage": dict(self.coverage),
            "parameters": [p.to_dict() for p in self.parameters],
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write `fitted.json` atomically; refuses to replace a file unless `overwrite`."""
        return write_json(self.to_dict(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FittedRandomization":
        """Read and validate a `fitted.json`; `FittedRandomizationError` naming the path and field if unusable."""
        path = Path(path)
        try:
            data = read_json(path)
        except JsonFileError as err:
            _fail(str(err), path=path)
        try:
            return cls.from_dict(data)
        except FittedRandomizationError as err:
            _fail(str(err), path=path)

    @classmethod
    def from_dict(cls, d: object) -> "FittedRandomization":
        if not isinstance(d, Mapping):
            _fail(f"must be a JSON object, got {type(d).__name__}")
        extra, missing = sorted(set(d) - set(_TOP_KEYS)), [k for k in _TOP_KEYS if k not in d]
        if extra or missing:
            _fail(f"unknown keys {extra} / missing keys {missing}; a fitted randomization has {list(_TOP_KEYS)}")
        if d["format"] != FORMAT:
            _fail(f"{d['format']!r} is not {FORMAT!r}: not a fitted randomization", field_="format")
        if d["version"] != VERSION or isinstance(d["version"], bool):
            _fail(f"unsupported version {d['version']!r}; this reader knows {VERSION}", field_="version")
        joints = d["joint_names"]
        if not isinstance(joints, list) or not all(isinstance(j, str) for j in joints):
            _fail("must be a list of strings", field_="joint_names")
        if not isinstance(d["robot"], str) or not isinstance(d["coverage"], Mapping):
            _fail("robot must be a string and coverage an object")
        if not isinstance(d["parameters"], list):
            _fail("must be a list of parameter objects", field_="parameters")
        parameters = []
        for entry in d["parameters"]:
            if not isinstance(entry, Mapping):
                _fail(f"each parameter must be an object, got {entry!r:.60}", field_="parameters")
            name = entry.get("name")
            extra, missing = sorted(set(entry) - set(_PARAM_KEYS)), [k for k in _PARAM_KEYS if k not in entry]
            if extra or missing:
                _fail(f"unknown keys {extra} / missing keys {missing}", name=name)
            parameters.append(FittedParameter(**{k: entry[k] for k in _PARAM_KEYS}))
        return cls(d["robot"], tuple(joints), tuple(parameters), d["final_loss"], d["coverage"])


def imu_moments(log: StepLog) -> dict[str, tuple[float, float]]:
    """IMU biases and noise of a robot at rest (suspended or standing still), from observation moments alone.

    At rest the true angular velocity is 0 and the accelerometer reads the specific force −g, so over the log the
    gyro's mean is its bias, the mean of accel + projected_g is the accelerometer's bias, and the spread about the
    means is the noise. Returns name → (estimate, one-sigma uncertainty): ``gyro_bias/<axis>`` (rad/s),
    ``accel_bias/<axis>`` (m/s²) and ``noise_std/<group>`` for gyro, accel, projected_g. This is the maximum-entropy
    (Gaussian) reading of the first two moments; the uncertainty of a mean is std/√n.
    """
    for group in ("gyro", "accel", "projected_g"):
        if group not in log.groups:
            _fail(f"the log has no {group!r} channels; IMU moments need gyro, accel and projected_g")
    gyro, accel, gravity = (np.asarray(log.group(g), dtype=float) for g in ("gyro", "accel", "projected_g"))
    rows = np.isfinite(gyro).all(1) & np.isfinite(accel).all(1) & np.isfinite(gravity).all(1)
    n = int(rows.sum())
    if n < 10:
        _fail(f"need >= 10 rows with finite IMU values to estimate biases, got {n}")
    gyro, accel, gravity = gyro[rows], accel[rows], gravity[rows]
    specific = accel + gravity  # accel − (−g): the accelerometer's error at rest
    out: dict[str, tuple[float, float]] = {}
    for prefix, values in (("gyro_bias", gyro), ("accel_bias", specific)):
        mean, std = values.mean(0), values.std(0, ddof=1)
        for axis, m, s in zip(_AXES, mean, std, strict=True):
            out[f"{prefix}/{axis}"] = (float(m), float(s / math.sqrt(n)))
    for group, values in (("gyro", gyro), ("accel", accel), ("projected_g", gravity)):
        std = float(np.sqrt(np.mean(values.var(0, ddof=1))))
        out[f"noise_std/{group}"] = (std, std / math.sqrt(2.0 * (n - 1)))
    return out
