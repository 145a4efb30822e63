"""Per-step transfer events of a real run against the same run in simulation, and a citable verification bundle.

`transfer_events(real, sim, replay=...)` pairs two logs of the *same* run step by step (common `step_id`s: the sim log
replays the real commands or outputs, e.g. `ksim_entropy.sim2real.sim_logs.replay_open_loop`, or runs the same script)
and returns `TransferEvents`, one value per common step:

- ``observation_error``: the worst observation channel (joint_angles, joint_vels, projected_g, accel, gyro) at
  that step, ``max_c |real_c - sim_c| / σ_c``, with σ_c the sim channel's std but at least `NOISE_FLOORS` (the
  sensor noise the policy was trained with: a difference inside it is no error);
- ``dynamics_error``: with `replay`, the RMS over joints of ``q_real - q_replay`` (rad, the open-loop prediction
  error); without, the RMS over joints of the sim response model's one-step error on the real data over the sim's
  own residual std (dimensionless, ≈ 1 when the sim model predicts the robot as well as itself; see
  `diagnose.fit_response_model`);
- ``kl_gap_nats``: the worst channel's Gaussian ``KL(real ‖ sim)`` over the trailing `window_steps` common steps
  (nats; `NOISE_FLOORS`² is added to both variances);
- ``latency_delta_s``: the real log's ``t_us`` interval to its previous record minus the nominal control period
  (the sim log's median interval unless given): a lost record adds a whole period.

`verify(events, thresholds)` judges each criterion on a quantile of its events (NaN ignored) and returns a
`VerificationBundle` with VERIFIED / FAILED per criterion (FAILED with a reason when it has no finite event: an
unmeasured criterion is not verified), the overall status (VERIFIED only when every criterion is) and ``sha256``.

Canonical JSON (what the hash covers and `to_json` writes): floats rounded to 12 significant digits and written as
Python's shortest round-trip repr of that rounded value, -0.0 written as 0.0, NaN and ±Inf as null, integers as
integers, arrays as lists, keys sorted, separators ``,`` and ``:``, ASCII only. ``sha256`` is the hex SHA-256 of
the UTF-8 canonical JSON of ``{"schema": SCHEMA, "events": ..., "thresholds": ...}``; the criteria are computed from
those canonical (rounded) events, so `check_bundle` can recompute both the hash and every verdict.

Pure NumPy: this module never imports ksim, mujoco, jax or xax.
"""

import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from ksim_entropy.bridge.diagnose import DiagnosisError, fit_response_model, response_residuals
from ksim_entropy.constants import GRAVITY_MPS2
from ksim_entropy.formats.schema import StepLog

__all__ = [
    "CRITERIA",
    "NOISE_FLOORS",
    "SCHEMA",
    "CriterionResult",
    "TransferEvents",
    "VerificationBundle",
    "VerificationError",
    "VerificationThresholds",
    "canonical_json",
    "check_bundle",
    "transfer_events",
    "verify",
]

SCHEMA = "ksim-entropy/transfer-verification/v1"
CRITERIA = ("observation", "dynamics", "kl_gap", "latency")
# Std of the uniform sensor noise `tasks.walk` trains with (magnitude / √3): joint position ±0.03 rad, velocity
# ±0.26 rad/s, projected gravity ±0.05 g, gyro ±0.2 rad/s; accel (not a policy input) as projected gravity.
NOISE_FLOORS: Mapping[str, float] = MappingProxyType(
    {
        "joint_angles": 0.03 / math.sqrt(3.0),
        "joint_vels": 0.26 / math.sqrt(3.0),
        "projected_g": 0.05 * GRAVITY_MPS2 / math.sqrt(3.0),
        "accel": 0.05 * GRAVITY_MPS2 / math.sqrt(3.0),
        "gyro": 0.2 / math.sqrt(3.0),
    }
)
_OBSERVATION_GROUPS = tuple(NOISE_FLOORS)
_SIGNIFICANT_DIGITS = 12
_ARRAYS = ("step_id", "observation_error", "dynamics_error", "kl_gap_nats", "latency_delta_s")


class VerificationError(DiagnosisError):
    """The logs cannot be paired step by step (too few common step ids, nothing to compare)."""


# --------------------------------------------------------------------------------------------------- canonical JSON


def _canonical(value: Any) -> Any:
    """The canonical form of `value` (see the module docstring); raises on a type JSON cannot hold."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_canonical(v) for v in value.tolist()]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return None
        rounded = float(f"{value:.{_SIGNIFICANT_DIGITS}g}")
        return 0.0 if rounded == 0 else rounded
    raise TypeError(f"cannot write {type(value).__name__} into canonical JSON")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of `value`: 12 significant digits, null for NaN/±Inf, sorted keys, no spaces, ASCII."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _floats(values: list | None) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values or []], dtype=float)


# --------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, eq=False)
class TransferEvents:
    """Per common step: observation error, dynamics error, KL gap and latency delta (see the module docstring)."""

    step_id: np.ndarray  # (N,) int64, ascending common step ids
    observation_error: np.ndarray  # (N,) dimensionless
    dynamics_error: np.ndarray  # (N,) rad ("replay") or dimensionless ("model"); NaN when unmeasured
    kl_gap_nats: np.ndarray  # (N,) nats per channel over the trailing window; NaN before it fills
    latency_delta_s: np.ndarray  # (N,) s
    dynamics_source: str  # "replay", "model" or "none"
    window_steps: int
    nominal_period_s: float
    channels: tuple[str, ...]  # the observation channels compared

    def __post_init__(self) -> None:
        step_id = np.asarray(self.step_id, dtype=np.int64)
        object.__setattr__(self, "step_id", step_id)
        for name in _ARRAYS[1:]:
            array = np.asarray(getattr(self, name), dtype=float)
            if array.shape != step_id.shape:
                raise ValueError(f"TransferEvents.{name} has shape {array.shape}, step_id {step_id.shape}")
            object.__setattr__(self, name, array)
        if self.dynamics_source not in ("replay", "model", "none"):
            raise ValueError(f"dynamics_source must be 'replay', 'model' or 'none', got {self.dynamics_source!r}")
        object.__setattr__(self, "channels", tuple(self.channels))

    def __len__(self) -> int:
        return int(self.step_id.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (NaN stays NaN; `canonical_json` writes it as null)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return data | {name: data[name].tolist() for name in _ARRAYS} | {"channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransferEvents":
        """Inverse of `to_dict` (also of its canonical JSON: null becomes NaN)."""
        arrays = {name: _floats(data[name]) for name in _ARRAYS[1:]}
        return cls(
            step_id=np.array(data["step_id"], dtype=np.int64),
            dynamics_source=str(data["dynamics_source"]),
            window_steps=int(data["window_steps"]),
            nominal_period_s=float(data["nominal_period_s"]),
            channels=tuple(data["channels"]),
            **arrays,
        )


def _first_rows(log: StepLog) -> tuple[np.ndarray, np.ndarray]:
    """Unique step ids (ascending) and the row of each one's first record."""
    ids, rows = np.unique(log.step_id, return_index=True)
    return ids, rows


def _observation_blocks(real: StepLog, sim: StepLog) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list]:
    names: list[str] = []
    real_blocks, sim_blocks, floors = [], [], []
    for group in _OBSERVATION_GROUPS:
        if group in real.groups and group in sim.groups and real.group(group).shape[1] == sim.group(group).shape[1]:
            names += list(real.channel_names([group]))
            real_blocks.append(real.group(group))
            sim_blocks.append(sim.group(group))
            floors += [NOISE_FLOORS[group]] * real.group(group).shape[1]
    return names, real_blocks, sim_blocks, floors


def _nan_rms(x: np.ndarray) -> np.ndarray:
    """Row-wise RMS over the finite entries (NaN for a row without any)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: "mean of empty slice"
        return np.sqrt(np.nanmean(x**2, axis=1))


def _nan_max(x: np.ndarray) -> np.ndarray:
    """Row-wise maximum over the finite entries (NaN for a row without any)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: "all-NaN slice encountered"
        return np.nanmax(x, axis=1)


def _sliding_kl(real: np.ndarray, sim: np.ndarray, floors: np.ndarray, window: int) -> np.ndarray:
    """Worst channel's KL(N(μ_r, σ_r² + floor²) ‖ N(μ_s, σ_s² + floor²)) over each trailing window of rows."""

    def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = np.isfinite(x)
        zero = np.where(ok, x, 0.0)
        sums = [np.vstack([np.zeros((1, x.shape[1])), np.cumsum(a, axis=0)]) for a in (ok * 1.0, zero, zero**2)]
        count, total, squares = (s[window:] - s[:-window] for s in sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
            var = np.maximum(squares / count - mean**2, 0.0) * count / np.maximum(count - 1, 1)
        return count, mean, var

    n_r, m_r, v_r = moments(real)
    n_s, m_s, v_s = moments(sim)
    v_r, v_s = v_r + floors**2, v_s + floors**2
    kl = 0.5 * (np.log(v_s / v_r) + (v_r + (m_r - m_s) ** 2) / v_s - 1.0)
    kl[(n_r < 2) | (n_s < 2)] = np.nan
    out = np.full(real.shape[0], np.nan)
    out[window - 1 :] = _nan_max(kl)
    return out


def transfer_events(
    real: StepLog,
    sim: StepLog,
    *,
    replay: StepLog | None = None,
    window_steps: int = 50,
    nominal_period_s: float | None = None,
) -> TransferEvents:
    """Pair `real` and `sim` on their common step ids and compute the per-step events (see the module docstring).

    `window_steps`: length of the trailing window of the KL gap (default 50 = 1 s at 50 Hz). `nominal_period_s`:
    the control period latencies are measured against (default: the sim log's median `t_us` interval). Raises
    `VerificationError` when fewer than `window_steps` step ids are common or no observation channel is shared.
    """
    if isinstance(window_steps, bool) or not isinstance(window_steps, int) or window_steps < 2:
        raise ValueError(f"window_steps must be an int >= 2, got {window_steps!r}")
    ids_r, rows_r = _first_rows(real)
    ids_s, rows_s = _first_rows(sim)
    common, at_r, at_s = np.intersect1d(ids_r, ids_s, assume_unique=True, return_indices=True)
    if common.size < window_steps:
        raise VerificationError(
            f"only {common.size} step ids are common to the real ({len(real)} steps) and sim ({len(sim)} steps) "
            f"logs; need >= window_steps={window_steps}: is the sim log a run of the same steps?"
        )
    rr, rs = rows_r[at_r], rows_s[at_s]
    names, real_blocks, sim_blocks, floors = _observation_blocks(real, sim)
    if not names:
        raise VerificationError(f"no common observation group: real {list(real.groups)}, sim {list(sim.groups)}")
    floor = np.array(floors)
    sim_all = np.hstack(sim_blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel without finite values: NaN, floored below
        center, spread = np.nanmean(sim_all, axis=0), np.nanstd(sim_all, axis=0, ddof=1)
    center = np.nan_to_num(center)
    r = np.hstack(real_blocks)[rr] - center  # centred on the sim's means: the windowed sums stay well conditioned
    s = sim_all[rs] - center
    observation = _nan_max(np.abs(r - s) / np.maximum(np.nan_to_num(spread), floor))

    if nominal_period_s is None:
        intervals = np.diff(sim.t_us)
        if not (intervals > 0).any():
            raise VerificationError("the sim log has no increasing t_us to take the nominal control period from")
        nominal_period_s = float(np.median(intervals[intervals > 0])) / 1e6
    elif not (math.isfinite(nominal_period_s) and nominal_period_s > 0):
        raise ValueError(f"nominal_period_s must be > 0, got {nominal_period_s!r}")
    latency = np.full(len(real), np.nan)
    latency[1:] = np.diff(real.t_us) / 1e6 - nominal_period_s

    dynamics, source = _dynamics_error(real, sim, replay, common, rr)
    return TransferEvents(
        step_id=common,
        observation_error=observation,
        dynamics_error=dynamics,
        kl_gap_nats=_sliding_kl(r, s, floor, window_steps),
        latency_delta_s=latency[rr],
        dynamics_source=source,
        window_steps=window_steps,
        nominal_period_s=nominal_period_s,
        channels=tuple(names),
    )


def _dynamics_error(
    real: StepLog, sim: StepLog, replay: StepLog | None, common: np.ndarray, rows_real: np.ndarray
) -> tuple[np.ndarray, str]:
    out = np.full(common.size, np.nan)
    if replay is not None:
        if "joint_angles" not in replay.groups or "joint_angles" not in real.groups:
            raise VerificationError("replay and real logs both need joint_angles for the dynamics error")
        if replay.group("joint_angles").shape[1] != real.group("joint_angles").shape[1]:
            raise VerificationError(
                f"replay has {replay.group('joint_angles').shape[1]} joints, "
                f"the real log {real.group('joint_angles').shape[1]}"
            )
        ids, rows = _first_rows(replay)
        _, at_common, at_replay = np.intersect1d(common, ids, assume_unique=True, return_indices=True)
        diff = real.group("joint_angles")[rows_real[at_common]] - replay.group("joint_angles")[rows[at_replay]]
        out[at_common] = _nan_rms(diff)
        return out, "replay"
    both_measured = "joint_vels" in real.groups and "joint_vels" in sim.groups
    try:
        model = fit_response_model(sim, velocity="joint_vels" if both_measured else "differences")
        steps, residual = response_residuals(model, real)
    except DiagnosisError:
        return out, "none"
    scale = np.where(model.residual_std > 0, model.residual_std, np.nan)
    _, at_common, at_steps = np.intersect1d(common, steps, assume_unique=True, return_indices=True)
    out[at_common] = _nan_rms(residual[at_steps] / scale)
    return out, "model"


# --------------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class VerificationThresholds:
    """Pass limits per criterion, each judged on a quantile of its per-step events.

    Defaults leave ≥ 2× margin both ways on clean and faulty simulated pairs (tests/bridge/test_verify.py).
    """

    quantile: float = 0.5  # observation, dynamics and KL gap: their median step must pass
    max_observation_error: float = 1.0  # worst channel, in channel spreads
    max_dynamics_error_rad: float = 0.02  # with a replay: RMS joint-angle error, rad (≈ 1.1°)
    max_dynamics_error_ratio: float = 2.5  # without: one-step error over the sim's own residual std (clean ≈ 1)
    max_kl_gap_nats: float = 0.5  # worst channel, nats, over the trailing window
    latency_quantile: float = 0.99  # loop timing: 99 % of the intervals must pass
    max_latency_fraction: float = 0.5  # |latency delta| / nominal period

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"VerificationThresholds.{name} must be a finite number >= 0, got {value!r}")
        for name in ("quantile", "latency_quantile"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"VerificationThresholds.{name} must be in [0, 1], got {getattr(self, name)!r}")


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's verdict: the measured statistic against its threshold."""

    name: str
    status: str  # "VERIFIED" or "FAILED"
    measured: float  # NaN when no event was finite
    threshold: float
    unit: str
    statistic: str  # what `measured` is
    reason: str  # why it failed ("" when verified)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _criteria(events: TransferEvents, th: VerificationThresholds) -> tuple[CriterionResult, ...]:
    q = th.quantile
    if events.dynamics_source == "replay":
        dynamics = (th.max_dynamics_error_rad, "rad", "RMS joint-angle error real - open-loop replay")
    else:
        dynamics = (th.max_dynamics_error_ratio, "1", "sim response model one-step error / its own residual std")
    specs = {  # name -> (values, quantile, threshold, unit, statistic)
        "observation": (events.observation_error, q, th.max_observation_error, "1", "max_c |real - sim| / σ_c"),
        "dynamics": (events.dynamics_error, q, *dynamics),
        "kl_gap": (events.kl_gap_nats, q, th.max_kl_gap_nats, "nats", "worst channel's windowed KL(real ‖ sim)"),
        "latency": (
            np.abs(events.latency_delta_s) / events.nominal_period_s,
            th.latency_quantile,
            th.max_latency_fraction,
            "periods",
            "|t_us interval - nominal period| / nominal period",
        ),
    }
    results = []
    for name, (values, quantile, threshold, unit, statistic) in specs.items():
        finite = values[np.isfinite(values)]
        described = f"quantile {quantile:g} of {statistic}"
        if finite.size == 0:
            results.append(CriterionResult(name, "FAILED", math.nan, threshold, unit, described, "no finite event"))
            continue
        measured = float(np.quantile(finite, quantile))
        passed = measured <= threshold
        reason = "" if passed else f"{measured:.4g} {unit} > {threshold:.4g}"
        results.append(
            CriterionResult(name, "VERIFIED" if passed else "FAILED", measured, threshold, unit, described, reason)
        )
    return tuple(results)


@dataclass(frozen=True, eq=False)
class VerificationBundle:
    """Verdicts, the (canonical) events and thresholds they were computed from, and the SHA-256 that cites them."""

    status: str  # "VERIFIED" when every criterion is, else "FAILED"
    criteria: tuple[CriterionResult, ...]
    events: TransferEvents
    thresholds: VerificationThresholds
    sha256: str

    def criterion(self, name: str) -> CriterionResult:
        """The result of one criterion (KeyError naming the criteria otherwise)."""
        for result in self.criteria:
            if result.name == name:
                return result
        raise KeyError(f"no criterion {name!r}; criteria: {[c.name for c in self.criteria]}")

    def to_json(self) -> str:
        """The whole bundle as canonical JSON (byte-stable for the same events and thresholds)."""
        return canonical_json(
            {
                "schema": SCHEMA,
                "status": self.status,
                "criteria": [c.to_dict() for c in self.criteria],
                "sha256": self.sha256,
                "events": self.events.to_dict(),
                "thresholds": asdict(self.thresholds),
            }
        )


def _digest(events: dict[str, Any], thresholds: dict[str, Any]) -> str:
    payload = canonical_json({"schema": SCHEMA, "events": events, "thresholds": thresholds})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def verify(events: TransferEvents, thresholds: VerificationThresholds | None = None) -> VerificationBundle:
    """Judge every criterion and seal the canonical events and thresholds with their SHA-256."""
    th = thresholds if thresholds is not None else VerificationThresholds()
    canonical_events = json.loads(canonical_json(events.to_dict()))
    canonical_thresholds = json.loads(canonical_json(asdict(th)))
    sealed = TransferEvents.from_dict(canonical_events)
    sealed_th = VerificationThresholds(**canonical_thresholds)
    criteria = _criteria(sealed, sealed_th)
    return VerificationBundle(
        status="VERIFIED" if all(c.status == "VERIFIED" for c in criteria) else "FAILED",
        criteria=criteria,
        events=sealed,
        thresholds=sealed_th,
        sha256=_digest(canonical_events, canonical_thresholds),
    )


def check_bundle(json_text: str) -> bool:
    """True when a bundle's JSON is intact: its hash matches its events and thresholds, and its verdicts match them.

    Never raises on malformed input (returns False).
    """
    try:
        data = json.loads(json_text)
        if data.get("schema") != SCHEMA:
            return False
        bundle = verify(TransferEvents.from_dict(data["events"]), VerificationThresholds(**data["thresholds"]))
        expected = json.loads(bundle.to_json())
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return bool(data == expected)
