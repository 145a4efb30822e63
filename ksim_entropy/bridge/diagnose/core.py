"""The diagnosis's types (thresholds, findings) and the channel helpers its detectors share."""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ksim_entropy.formats.schema import StepLog

FINDING_KINDS: tuple[str, ...] = (
    "swapped_channels",
    "misscaled_channels",
    "sensor_noise",
    "temporal_mismatch",
    "dynamics_mismatch",
    "observation_mismatch",
    "overconfident_policy",
)

# Smallest spread a channel is measured against, in the group's units: above float32 rounding and a flat signal's
# numerical noise, below any sensor noise that matters (a 14-bit encoder step is 3.8e-4 rad).
SCALE_FLOORS: Mapping[str, float] = MappingProxyType(
    {
        "joint_angles": 1e-3,
        "joint_vels": 1e-2,
        "projected_g": 1e-2,
        "accel": 1e-2,
        "gyro": 1e-3,
        "command": 1e-3,
        "output": 1e-3,
    }
)

# Smallest white-noise std that counts, per group: above what the estimate reads on noise-free logs (FIR model error
# of a joint angle: ≤ 1.6e-3 rad on the K-Bot's script, 4e-3 rad with kp × 0.5; a held IMU reads exactly constant).
NOISE_FLOORS: Mapping[str, float] = MappingProxyType(
    {"joint_angles": 2.5e-3, "projected_g": 2.5e-3, "accel": 2.5e-3, "gyro": 2.5e-4}
)

_W1_GRID = (np.arange(200) + 0.5) / 200  # midpoint quantile grid: mean |ΔQ| over it approximates W1

MAX_SPAN_FACTOR = 4  # step ids spread over more than this many times the rows: too sparse to align by step


class DiagnosisError(ValueError):
    """The logs cannot be compared at all (too short, different robots, no common channel); names the problem."""


@dataclass(frozen=True)
class DiagnosisThresholds:
    """Decision thresholds of `diagnose`, with the largest value seen on clean pairs.

    Calibration: the suspended K-Bot's scripted logs (`ksim_entropy.sim2real.sim_logs.scripted_log`), all ordered
    pairs of 6 seeds × 20 s and 5 seeds × 30 s: no finding, and every decision statistic at least 2× below its
    threshold; the injected faults of tests/bridge/test_diagnose.py are at least 2× above. Sensor noise and the FIR
    response check: the stand-in robot (`testing.reality`) with and without sensor noise (default × 1, 30, 100, joints
    or gyroscope only), with kp × 0.5, kd × 0.5 and a random robot (tests/bridge/test_diagnose.py).
    """

    min_steps: int = 100  # fewer steps in either log: DiagnosisError
    # swapped_channels: costs are W1 / max(σ_real, σ_sim), dimensionless
    swap_min_cost: float = 2.0  # a channel must be at least this unlike its own counterpart (clean: ≤ 0.36)
    swap_min_cost_ratio: float = 4.0  # ... and this many times more like its swap partner
    # misscaled_channels
    scale_min_factor: float = 2.0  # |log k| ≥ log 2 = 0.69 (clean, confirmable channels: |log k| ≤ 0.21)
    scale_max_fit_residual: float = 0.35  # RMS quantile residual of Q_real ≈ k·Q_sim over the real spread
    scale_group_spread: float = 1.25  # factors agree (with a sibling's, or the group's) within this factor
    scale_name_tolerance: float = 1.1  # k names a unit error when within this factor of it
    # sensor_noise: white-noise std of a channel (the nugget, see `_nugget`), noisier log over the quieter one
    noise_std_ratio: float = 2.0  # (clean, equal noise: ≤ 1.2)
    # temporal_mismatch
    max_delay_steps: int = 10  # actuation delays searched: 0..max_delay_steps control steps
    delay_min_r2_gain: float = 0.05  # R² the real joint loses when modelled with the sim's delay (clean: 0)
    period_ratio: float = 1.1  # median interval ratio real/sim (or its inverse) above this
    jitter_excess: float = 0.05  # robust std of the intervals, fraction of the period, beyond the sim's
    late_excess: float = 0.01  # fraction of intervals > 1.5 periods, beyond the sim's
    drop_excess: float = 0.005  # fraction of lost/out-of-order step ids (or non-increasing t_us) beyond the sim's
    # dynamics_mismatch
    min_r2: float = 0.5  # a joint's response model must explain this much in both logs to be compared
    excitation_ratio: float = 4.0  # ... and its output spread real/sim lie within [1/this, this] (same regime)
    dynamics_variance_loss: float = 0.1  # (RSS_cross - RSS_own) / TSS on the real log (clean: ≤ 0.017)
    # ... and the joint angle's response to past outputs (FIR, unbiased by white sensor noise) must lose this much
    # of its explained variance with the sim's coefficients (white noise alone: ≤ 1e-3; kp × 1.5: median 0.01)
    dynamics_response_loss: float = 0.005
    replay_steps: int = 250  # first steps compared with the open-loop replay (fewer for a free-standing robot)
    replay_error: float = 0.25  # RMS(real - replay) / std(real), per joint, offset and delay removed (clean: 1e-3)
    # observation_mismatch
    command_match: float = 0.5  # output W1 / σ_sim below this: the commanded motion matches (clean: ≤ 0.36;
    # a gate, not a decision: a clean channel above it is left unjudged, never flagged)
    observation_w1: float = 0.75  # W1 / σ_sim (clean: ≤ 0.36 on 20 s logs, ≤ 0.29 on 30 s)
    observation_ks: float = 0.35  # and the KS statistic (clean: ≤ 0.16 on 20 s, ≤ 0.13 on 30 s)
    angle_offset_rad: float = 0.01  # joint angle reading offset implied by the response models (clean: ≤ 6e-4)
    # overconfident_policy
    entropy_drop_nats: float = 1.0  # median over joints of -log(σ_real/σ_sim) (clean: ≤ 0.01)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"DiagnosisThresholds.{name} must be a finite number >= 0, got {value!r}")
        for name in (
            "swap_min_cost_ratio",
            "scale_min_factor",
            "scale_group_spread",
            "excitation_ratio",
            "scale_name_tolerance",
            "noise_std_ratio",
        ):
            if getattr(self, name) <= 1:
                raise ValueError(f"DiagnosisThresholds.{name} must be > 1, got {getattr(self, name)!r}")
        if self.min_steps < 2 * self.max_delay_steps + 10:
            raise ValueError(f"min_steps={self.min_steps} is too small for max_delay_steps={self.max_delay_steps}")


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Finding:
    """One named cause: the channels blamed, a severity in [0, 1), the evidence numbers and a one-line message."""

    kind: str
    channels: tuple[str, ...]
    severity: float
    evidence: Mapping[str, float]
    message: str

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; kinds: {FINDING_KINDS}")
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "evidence", MappingProxyType({k: float(v) for k, v in self.evidence.items()}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channels": list(self.channels),
            "severity": _json_number(self.severity),
            "evidence": {k: _json_number(v) for k, v in self.evidence.items()},
            "message": self.message,
        }


@dataclass(frozen=True)
class Diagnosis:
    """Ranked findings (empty: nothing wrong found), per-detector statistics, skipped detectors and corrections."""

    findings: tuple[Finding, ...]
    statistics: Mapping[str, Mapping[str, float]]  # detector -> headline numbers, also without a finding
    skipped: Mapping[str, str]  # detector (or part of one) -> why it could not run
    corrections: Mapping[str, str]  # real channel -> what was changed before the later detectors
    thresholds: DiagnosisThresholds = field(default_factory=DiagnosisThresholds)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Finding kinds, in rank order."""
        return tuple(f.kind for f in self.findings)

    def finding(self, kind: str) -> Finding | None:
        """The finding of this kind, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (non-finite numbers become null)."""
        return {
            "findings": [f.to_dict() for f in self.findings],
            "statistics": {d: {k: _json_number(v) for k, v in s.items()} for d, s in self.statistics.items()},
            "skipped": dict(self.skipped),
            "corrections": dict(self.corrections),
            "thresholds": asdict(self.thresholds),
        }

    def summary(self) -> str:
        """One line per finding, skipped detector and correction."""
        if not self.findings:
            lines = ["no finding"]
        else:
            lines = [f"{i + 1}. {f.kind} ({f.severity:.2f}): {f.message}" for i, f in enumerate(self.findings)]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        lines += [f"corrected {name}: {what}" for name, what in self.corrections.items()]
        return "\n".join(lines)


def severity_of(statistic: float, threshold: float) -> float:
    """Severity in [0, 1) of a statistic above its threshold (0 at or below it)."""
    return 0.0 if not statistic > threshold else float(1.0 - threshold / statistic) if threshold > 0 else 1.0


@dataclass
class Channels:
    """A log's groups as mutable float arrays (the real one gets corrected in place), with channel names."""

    log: StepLog
    blocks: dict[str, np.ndarray]

    @classmethod
    def of(cls, log: StepLog) -> "Channels":
        return cls(log, {name: np.array(block, dtype=float) for name, block in log.groups.items()})

    def names(self, group: str) -> tuple[str, ...]:
        return self.log.channel_names([group])


def finite_values(x: np.ndarray) -> np.ndarray:
    """The finite entries of `x` (flattened)."""
    return x[np.isfinite(x)]


def spread_of(x: np.ndarray, floor: float) -> float:
    """Sample std of the finite entries, at least `floor`."""
    x = finite_values(x)
    return max(float(np.std(x, ddof=1)) if x.size > 1 else 0.0, floor)


def robust_spread(x: np.ndarray, floor: float) -> float:
    """Std estimated from the median absolute deviation of the finite entries, at least `floor`."""
    x = finite_values(x)
    return max(1.4826 * float(np.median(np.abs(x - np.median(x)))) if x.size else 0.0, floor)


def quantiles_of(block: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(k, len(grid)) quantiles of each column's finite values (NaN row for a column without any)."""
    out = np.full((block.shape[1], grid.size), np.nan)
    for j in range(block.shape[1]):
        x = finite_values(block[:, j])
        if x.size:
            out[j] = np.quantile(x, grid)
    return out


def cost_matrix(real: np.ndarray, sim: np.ndarray, floors_r: np.ndarray, floors_s: np.ndarray) -> np.ndarray:
    """d[i, j] = W1(real_i, sim_j) / max(σ_real_i, σ_sim_j), W1 from the midpoint quantile grid."""
    qr, qs = quantiles_of(real, _W1_GRID), quantiles_of(sim, _W1_GRID)
    sr = np.array([spread_of(real[:, i], floors_r[i]) for i in range(real.shape[1])])
    ss = np.array([spread_of(sim[:, j], floors_s[j]) for j in range(sim.shape[1])])
    w1 = np.mean(np.abs(qr[:, None, :] - qs[None, :, :]), axis=2)
    return w1 / np.maximum(sr[:, None], ss[None, :])
