"""Entropy profile: per-channel Gaussian summary of a robot log, saved as JSON, loaded as a target by training code.

A profile holds, for each channel group of a `StepLog` (real K-Bot log or sim rollout), each channel's mean μ_c and
standard deviation σ_c (ddof=1) in the group's unit (`CHANNEL_GROUPS`). Read as a diagonal Gaussian (independent
channels), a group has differential entropy ``h = Σ_c ½ log(2πe σ_c²)`` nats, and its 2-Wasserstein distance to
another diagonal Gaussian is ``sqrt(Σ_c (μ1−μ2)² + (σ1−σ2)²)`` (in the group's unit).

File format (a contract with the training code; strict JSON, UTF-8)::

    {"format": "ksim-entropy/entropy-profile", "version": 1, "source": str,
     "groups": {GROUP: {"channels": [str, ...], "unit": str, "mean": [float, ...], "std": [float, ...],
                        "num_samples": int, "entropy_nats": float}}}

`entropy_nats` is written for humans; `load` recomputes it and rejects a file whose value differs (relative 1e-6:
a corrupt or hand-edited file). Every problem raises `EntropyProfileError` naming the path, group and field.
Pure NumPy at import (SciPy is imported only by `EntropyProfile.from_log`); never imports ksim, mujoco, jax or xax.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
from numpy.typing import ArrayLike

from ksim_entropy.constants import HALF_LOG_2PI_E
from ksim_entropy.formats.jsonfile import JsonFileError, read_json, write_json
from ksim_entropy.formats.schema import CHANNEL_GROUPS, StepLog

__all__ = ["DEFAULT_GROUPS", "FORMAT", "VERSION", "EntropyProfile", "EntropyProfileError", "GroupProfile"]

FORMAT = "ksim-entropy/entropy-profile"
VERSION = 1
DEFAULT_GROUPS: tuple[str, ...] = ("joint_angles", "joint_vels", "projected_g", "gyro")
ENTROPY_REL_TOL = 1e-6  # stored vs recomputed entropy_nats
ENTROPY_ABS_TOL = 1e-9  # nats; only matters for a group entropy within ~1e-3 of 0
_TOP_KEYS = ("format", "version", "source", "groups")
_GROUP_KEYS = ("channels", "unit", "mean", "std", "num_samples", "entropy_nats")


class EntropyProfileError(ValueError):
    """An unusable profile, profile file or profile input; the message names the path, group and field."""


def _fail(message: str, *, path: object = None, group: str | None = None, field: str | None = None) -> NoReturn:
    where = [str(path)] if path is not None else []
    where += [f"group {group!r}"] if group is not None else []
    where += [f"field {field!r}"] if field is not None else []
    raise EntropyProfileError(": ".join([*where, message])) from None  # the message already says why


def _vector(field: str, values: ArrayLike, channels: tuple[str, ...]) -> np.ndarray:
    """`values` as a read-only float64 (C,) copy, finite, one per channel."""
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        _fail(f"not an array of numbers ({err})", field=field)
    if array.shape != (len(channels),):
        _fail(f"shape {array.shape} does not match the {len(channels)} channels", field=field)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        j = int(bad[0])
        _fail(f"channel {channels[j]!r} (index {j}) is {array[j]}; must be finite", field=field)
    array.flags.writeable = False
    return array


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True, eq=False)
class GroupProfile:
    """Diagonal Gaussian of one channel group: per-channel `mean` and `std` (C,), in `unit` (e.g. rad, rad/s).

    `num_samples` is the number of finite values behind the least-observed channel's estimate (≥ 2). Arrays are
    stored as read-only float64 copies; equality compares every field exactly.
    """

    channels: tuple[str, ...]
    unit: str
    mean: np.ndarray
    std: np.ndarray
    num_samples: int

    def __post_init__(self) -> None:
        channels = self.channels
        if isinstance(channels, str) or not isinstance(channels, Sequence):
            _fail(f"must be a sequence of channel names, got {type(channels).__name__}", field="channels")
        channels = tuple(channels)
        if not channels:
            _fail("no channels; a group needs at least one", field="channels")
        if not all(isinstance(c, str) and c for c in channels):
            _fail(f"channel names must be non-empty strings, got {list(channels)!r}", field="channels")
        repeated = sorted({c for c in channels if channels.count(c) > 1})
        if repeated:
            _fail(f"channel names must be unique; repeated {repeated}", field="channels")
        if not isinstance(self.unit, str):
            _fail(f"must be a string, got {type(self.unit).__name__}", field="unit")
        mean, std = _vector("mean", self.mean, channels), _vector("std", self.std, channels)
        bad = np.flatnonzero(~(std > 0))
        if bad.size:
            j = int(bad[0])
            _fail(f"channel {channels[j]!r} (index {j}) is {std[j]}; must be > 0", field="std")
        if not _is_int(self.num_samples) or self.num_samples < 2:
            _fail(f"must be an integer >= 2, got {self.num_samples!r}", field="num_samples")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "num_samples", int(self.num_samples))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupProfile):
            return NotImplemented
        return (
            self.channels == other.channels
            and self.unit == other.unit
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.std, other.std)
            and self.num_samples == other.num_samples
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    @property
    def entropy_nats(self) -> float:
        """Differential entropy of the diagonal Gaussian, nats: ``Σ_c ½ log(2πe σ_c²)`` (channels independent)."""
        return float(np.sum(HALF_LOG_2PI_E + np.log(self.std)))

    @property
    def entropy_per_channel(self) -> float:
        """`entropy_nats` / number of channels, nats per channel."""
        return self.entropy_nats / len(self.channels)

    def w2(self, mean: ArrayLike, std: ArrayLike) -> float:
        """2-Wasserstein distance to the diagonal Gaussian N(mean, diag(std²)), in the group's unit.

        Closed form for diagonal (commuting) covariances: ``sqrt(Σ_c (μ_c − mean_c)² + (σ_c − std_c)²)``. `mean` and
        `std` are (C,) in the channel order of `channels`; `std` ≥ 0 (0: a constant channel).
        """
        other_mean = _vector("mean", mean, self.channels)
        other_std = _vector("std", std, self.channels)
        if (other_std < 0).any():
            _fail(f"must be >= 0, got {other_std.tolist()}", field="std")
        value = math.sqrt(float(np.sum((self.mean - other_mean) ** 2) + np.sum((self.std - other_std) ** 2)))
        if not math.isfinite(value):
            _fail("W2 overflowed float64; the inputs are too large", field="mean")
        return value


@dataclass(frozen=True, eq=False)
class EntropyProfile:
    """Per-group diagonal-Gaussian profiles of one log (`groups`: read-only, group name → `GroupProfile`).

    Group names are `CHANNEL_GROUPS` keys, each with that group's unit. `source` is free text (e.g. the log path).
    """

    groups: Mapping[str, GroupProfile]
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.groups, Mapping) or not self.groups:
            _fail("an entropy profile needs at least one group", field="groups")
        for name, group in self.groups.items():
            if name not in CHANNEL_GROUPS:
                _fail(f"unknown channel group; known groups: {list(CHANNEL_GROUPS)}", group=name)
            if not isinstance(group, GroupProfile):
                _fail(f"must be a GroupProfile, got {type(group).__name__}", group=name)
            if group.unit != CHANNEL_GROUPS[name]:
                _fail(f"{group.unit!r} is not the schema's unit {CHANNEL_GROUPS[name]!r}", group=name, field="unit")
        if not isinstance(self.source, str):
            _fail(f"must be a string, got {type(self.source).__name__}", field="source")
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntropyProfile):
            return NotImplemented
        return self.source == other.source and dict(self.groups) == dict(other.groups)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_log(
        cls,
        log: StepLog,
        groups: Sequence[str] = DEFAULT_GROUPS,
        *,
        min_std: float = 1e-6,
        source: str = "",
    ) -> "EntropyProfile":
        """Profile `log`: per channel of each group in `groups`, mean and std (ddof=1) over its finite values.

        NaN (a missing value, see `StepLog`) is skipped per channel, so a NaN in one channel costs the others
        nothing; a channel needs at least 2 finite values, and ±Inf or |value| > 1e150 raise. σ is floored at
        `min_std` (in the group's unit): a constant channel (a locked joint, a fixed command) has σ = 0, i.e.
        entropy −∞ and a zero divisor for any normalised comparison. `source` defaults to `log.source`.
        """
        # The bridge's metrics import SciPy (~0.8 s): imported here so that loading a profile (training) stays NumPy.
        from ksim_entropy.bridge.metrics import MetricInputError, check_samples

        if not isinstance(log, StepLog):
            _fail(f"from_log needs a StepLog, got {type(log).__name__}", field="log")
        if isinstance(groups, str) or not isinstance(groups, Sequence) or not groups:
            _fail(f"must be a non-empty sequence of group names, got {groups!r}", field="groups")
        for name in groups:
            if name not in CHANNEL_GROUPS:
                _fail(f"unknown channel group; known groups: {list(CHANNEL_GROUPS)}", group=name)
            if name not in log.groups:
                _fail(f"not in the log {log.source or '(in memory)'}; it has {list(log.group_names)}", group=name)
            if log.group(name).shape[1] == 0:
                _fail(f"has no value in the log {log.source or '(in memory)'} (0 wide): nothing to profile", group=name)
        if len(set(groups)) != len(groups):
            _fail(f"repeated group names in {list(groups)}", field="groups")
        if isinstance(min_std, bool) or not isinstance(min_std, int | float) or not 0 < min_std < math.inf:
            _fail(f"must be a finite number > 0, got {min_std!r}", field="min_std")
        profiles = {}
        for name in groups:
            block, channels = log.group(name), log.channel_names([name])
            means, stds, counts = [], [], []
            for j, channel in enumerate(channels):
                try:
                    (column,), _ = check_samples(
                        f"entropy profile of group {name!r}", {channel: block[:, j]}, nan_policy="omit"
                    )
                except MetricInputError as err:
                    raise EntropyProfileError(str(err)) from None
                means.append(column[:, 0].mean())
                stds.append(max(column[:, 0].std(ddof=1), min_std))
                counts.append(column.shape[0])
            unit = CHANNEL_GROUPS[name]
            profiles[name] = GroupProfile(channels, unit, np.array(means), np.array(stds), min(counts))
        return cls(profiles, source or log.source)

    def summary(self) -> str:
        """One line per group: channels, samples and entropy (nats, total and per channel)."""
        lines = [f"entropy profile of {self.source or '(in memory)'}:"]
        for name, g in self.groups.items():
            lines.append(
                f"  {name} [{len(g.channels)} × {g.unit}]: n={g.num_samples}, entropy {g.entropy_nats:.4g} nats "
                f"({g.entropy_per_channel:.4g} nats/channel)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file format (plain Python types; floats round-trip exactly through JSON)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "groups": {
                name: {
                    "channels": list(g.channels),
                    "unit": g.unit,
                    "mean": g.mean.tolist(),
                    "std": g.std.tolist(),
                    "num_samples": g.num_samples,
                    "entropy_nats": g.entropy_nats,
                }
                for name, g in self.groups.items()
            },
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the profile as JSON, atomically (temp file + fsync + rename); returns the path.

        Refuses an existing file (`FileExistsError`, the file untouched) unless `overwrite`; creates parent folders.
        """
        return write_json(self.to_dict(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "EntropyProfile":
        """Read and fully validate a profile file (see the module docstring); `EntropyProfileError` if unusable."""
        path = Path(path)
        try:
            data = read_json(path)
        except JsonFileError as err:
            _fail(str(err), path=path)
        return cls.from_dict(data, path=path)

    @classmethod
    def from_dict(cls, d: object, path: str | os.PathLike[str] | None = None) -> "EntropyProfile":
        """Validate the JSON object `d` of the file format and build the profile (`path`: named in errors)."""
        if not isinstance(d, Mapping):
            _fail(f"the profile must be a JSON object, got {type(d).__name__}", path=path)
        extra = sorted(set(d) - set(_TOP_KEYS))
        if extra:
            _fail(f"unknown keys {extra}; a profile has {list(_TOP_KEYS)}", path=path)
        for key in _TOP_KEYS:
            if key not in d:
                _fail("missing", path=path, field=key)
        if d["format"] != FORMAT:
            _fail(f"{d['format']!r} is not {FORMAT!r}: not an entropy profile", path=path, field="format")
        if not _is_int(d["version"]) or d["version"] != VERSION:
            _fail(f"unsupported version {d['version']!r}; this reader knows {VERSION}", path=path, field="version")
        if not isinstance(d["source"], str):
            _fail(f"must be a string, got {type(d['source']).__name__}", path=path, field="source")
        groups = d["groups"]
        if not isinstance(groups, Mapping) or not groups:
            _fail("must be a non-empty object of group name → group profile", path=path, field="groups")
        profiles = {}
        for name, entry in groups.items():
            try:
                profiles[name] = _group_from_dict(entry)
            except EntropyProfileError as err:
                _fail(str(err), path=path, group=name)
        try:
            return cls(profiles, d["source"])
        except EntropyProfileError as err:
            _fail(str(err), path=path)


def _numbers(field: str, value: object) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        _fail(f"must be a list of numbers, got {value!r:.80}", field=field)
    return [float(v) for v in value]


def _group_from_dict(entry: object) -> GroupProfile:
    """One group of the file format, every field type-checked, `entropy_nats` recomputed (errors name the field)."""
    if not isinstance(entry, Mapping):
        _fail(f"must be a JSON object, got {type(entry).__name__}")
    extra = sorted(set(entry) - set(_GROUP_KEYS))
    if extra:
        _fail(f"unknown keys {extra}; a group has {list(_GROUP_KEYS)}")
    for key in _GROUP_KEYS:
        if key not in entry:
            _fail("missing", field=key)
    channels = entry["channels"]
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        _fail(f"must be a list of strings, got {channels!r:.80}", field="channels")
    if not isinstance(entry["unit"], str):
        _fail(f"must be a string, got {entry['unit']!r}", field="unit")
    mean, std = _numbers("mean", entry["mean"]), _numbers("std", entry["std"])
    if not _is_int(entry["num_samples"]):
        _fail(f"must be an integer >= 2, got {entry['num_samples']!r}", field="num_samples")
    stored = entry["entropy_nats"]
    if isinstance(stored, bool) or not isinstance(stored, int | float) or not math.isfinite(stored):
        _fail(f"must be a finite number, got {stored!r}", field="entropy_nats")
    group = GroupProfile(tuple(channels), entry["unit"], np.array(mean), np.array(std), entry["num_samples"])
    if not math.isclose(stored, group.entropy_nats, rel_tol=ENTROPY_REL_TOL, abs_tol=ENTROPY_ABS_TOL):
        _fail(
            f"stored {stored!r} but the std values give {group.entropy_nats!r} (relative tolerance "
            f"{ENTROPY_REL_TOL}); the file is corrupt or was edited",
            field="entropy_nats",
        )
    return group
