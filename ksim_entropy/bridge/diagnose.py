"""Why does the policy that works in simulation fail on the robot? Ranked findings from a real and a sim step log.

`diagnose(real, sim)` compares two `StepLog`s of the same setup (same robot, policy or motion script, command
distribution; the logs need not be time-aligned) and returns a `Diagnosis`: ranked `Finding`s, each with the
channels it blames, a severity, the evidence numbers and a message, plus the headline statistic of every detector
(also when it found nothing, so margins can be read) and the detectors it had to skip, with the reason.

The detectors run in an order that explains effects away, so that one fault yields one finding:

1. **swapped_channels** (wiring). For every real channel and every sim channel of the same family (IMU:
   projected_g/accel/gyro; joint state: joint_angles/joint_vels; output) the cost ``d = W1 / max(σ_real, σ_sim)``
   (1-Wasserstein distance of the marginals over the larger spread, floors in `SCALE_FLOORS`) says how unlike the
   two are. Whole groups: real A and B are swapped when ``Σ d(A→B, B→A)`` is `swap_min_cost_ratio` times smaller
   than ``Σ d(A→A, B→B)`` and the identity costs at least `swap_min_cost` per channel (the numbers of a gyroscope,
   ≈ 0 rad/s, are no accelerometer's, |a| ≈ 9.81 m/s²). Single channels (a joint order or IMU axis mix-up): an
   optimal assignment (Hungarian) inside each group; a cycle of channels counts when each of them costs at least
   `swap_min_cost` as itself and `swap_min_cost_ratio` times less as its partner. Channels that are alike (two
   joints with equal distributions) cannot be told apart and are never reported.
2. **misscaled_channels** (units). Per channel, the factor k of ``Q_real(p) ≈ k·Q_sim(p)`` (least squares over 99
   quantiles, through the origin: a unit error multiplies location and spread alike) and the fit's residual over
   the real spread. A well-fitting k with |k| ≥ `scale_min_factor` (or ≤ its inverse) is a unit error only when
   confirmed: the channel sits away from zero in both logs (so location and spread both scaled), or its relation
   to a physically tied channel of the same log changed by the same factor (joint angle vs its output, joint
   velocity vs the angle's central difference, |accel| vs |projected_g|). A zero-mean channel that merely moves
   less (a collapsed policy, weaker motion) keeps those relations and is not a unit error. The group's other
   channels with an agreeing k join (a unit is per group); all are divided by the named unit factor (180/π, 1/g,
   1000, 2π, ...) when the group's median k is within `scale_name_tolerance` of one. An offset, a collapse to a
   constant or a change of waveform fits badly and is left to the detectors below.
   **sensor_noise** (sensors). Per channel of joint_angles and the IMU groups, the white-noise std of each log:
   the nugget ``γ0 - (2γ1 - γ2)`` of its autocovariance (white noise adds to lag 0 only; a signal smooth at the
   control rate has ``γ0 ≈ 2γ1 - γ2``), for a joint angle of what its FIR model on past outputs leaves unexplained
   (the dithered PD response is not smooth, its residual is). A channel whose std differs by `noise_std_ratio`
   (each floored at `NOISE_FLOORS`, above the estimate's model error on noise-free logs) is named, and the quieter
   log's copy gets white noise of the missing std, so that the detectors below compare equally noisy data: noise
   left in a velocity (a regressor of the response model *and* its target) otherwise reads as a weaker, more damped
   joint. Joint velocities are not judged: at 50 Hz with a dither their physics is itself white.
3. **temporal_mismatch** (timing). Loop timing from ``t_us`` and ``step_id``: the median period ratio, the
   jitter (robust std of the intervals over the period), the fraction of late intervals (> 1.5 periods) and of
   dropped step ids, each in excess of the sim log's. Loop latency at sub-step resolution: per joint, the sim's
   velocity-change kernel (its response to outputs over `_KERNEL_LAGS` steps, at the sim's own whole-step delay
   from `fit_response_model`) is fed the real outputs delayed by 0..`max_delay_steps` steps on a 1/20-step grid
   (1 ms at 50 Hz; a partly held output weighted by the step's response shape, see `_delayed_input`); the real
   joint is late when its best delay exceeds the sim's, that gains at least `delay_min_r2_gain` of explained
   variance, and the sim's FIR response fits the real angle better with the outputs shifted by it (unbiased by
   sensor noise). Measured on the stand-in (8 s): 40, 60 ms exact within 2 ms; 15 and 30 ms read 3-6 ms low.
   A real log that responds *earlier* than the sim is never a cause (the sim's own latency setting; noted in
   `skipped`). Open-loop logs show only the loop latency, action + observation: a kinfer log has one timestamp per
   step, and the stand-in writes byte-identical logs for any split of a constant sum. Joints that settle within a
   control step (wrists) are timed in whole steps. The cross-correlation lag of output and joint angle is reported
   too, but not used to decide: it mixes delay with actuator bandwidth (weaker PD gains lag more without delay).
4. **dynamics_mismatch** (physics). Each log's response model at its own delay (a late joint: the sim's kernel at the
   real's fractional delay; a fast joint with a sub-step latency on the others is not judged); the sim's slopes
   (output gain, position and velocity feedback; each log keeps its own intercept, so sensor offsets do not count)
   predict the real velocity changes. The statistic is the fraction of the real variance lost against the real
   model's own fit, ``(RSS_cross - RSS_own) / TSS``. A joint counts only if its angle's response to past outputs (FIR
   on u_{t-1..t-15}, unbiased by white sensor noise, which is only in its target) changed too: the sim coefficients
   lose at least `dynamics_response_loss` of the real angle's explained variance; joints cleared this way are listed
   in `skipped` (sensor noise, not physics). With `replay` (the real outputs replayed open-loop in simulation from
   the real start, `ksim_entropy.sim_logs.replay_open_loop`), also the RMS joint-angle error between real and replay
   over the first `replay_steps` steps (after removing the median offset and the delay found in 3), over the real
   joint's motion std.
5. **observation_mismatch** (sensors). Per observation channel, ``W1 / σ_sim`` and the KS statistic, both large,
   on channels whose *commanded* motion matches (each joint's output ``W1 / σ_sim`` below `command_match`; for IMU
   channels the median over outputs): the sensor reads a different distribution for the same motion. For joint
   angles also the reading offset the response models imply: a constant offset δ of the angle reading leaves every
   slope and moves the intercept by ``-g_q·δ``, so ``δ = -(c_real - c_sim) / g_q`` with the real intercept refitted
   under the sim's slopes (≈ 1e-4 rad precision on 30 s of data). Joints with a dynamics finding are left out:
   their angles differ because the physics does.
6. **overconfident_policy** (policy). The change of the output's Gaussian entropy per joint,
   ``ΔH = log(σ_real / σ_sim)`` nats; a policy whose actions collapse on real observations has ``median ΔH ≤
   -entropy_drop_nats``.

Wiring, unit and noise findings are corrected in copies of the logs before steps 3-6 (``Diagnosis.corrections`` lists
what was changed) and rank first: every other number is read after them. The rest rank by severity,
``1 - threshold / statistic`` (0 at the threshold, 0.5 at twice it, → 1). Default thresholds leave at least 2×
margin on clean simulated pairs of different seeds (see `DiagnosisThresholds`; tests/bridge/test_diagnose.py).

Pure NumPy/SciPy: this module never imports ksim, mujoco, jax or xax.
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ksim_entropy.bridge.metrics import cross_correlation_lag, ks_statistic, wasserstein_1d
from ksim_entropy.bridge.schema import CHANNEL_GROUPS, JOINT_GROUPS, StepLog
from ksim_entropy.constants import STANDARD_GRAVITY_MPS2

__all__ = [
    "FINDING_KINDS",
    "NOISE_FLOORS",
    "SCALE_FLOORS",
    "Diagnosis",
    "DiagnosisError",
    "DiagnosisThresholds",
    "Finding",
    "ResponseModel",
    "diagnose",
    "fit_response_model",
    "response_residuals",
]

FINDING_KINDS: tuple[str, ...] = (
    "swapped_channels",
    "misscaled_channels",
    "sensor_noise",
    "temporal_mismatch",
    "dynamics_mismatch",
    "observation_mismatch",
    "overconfident_policy",
)
_STRUCTURAL = ("swapped_channels", "misscaled_channels", "sensor_noise")  # corrected before the later detectors

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
_FAMILIES = (("projected_g", "accel", "gyro"), ("joint_angles", "joint_vels"), ("output",))
_OBSERVATION_GROUPS = ("joint_angles", "joint_vels", "projected_g", "accel", "gyro")
# real/sim factors of common unit errors, and what each means
_UNIT_FACTORS = (
    (180.0 / math.pi, "real in degrees, sim in radians"),
    (math.pi / 180.0, "real in radians, sim in degrees"),
    (1.0 / STANDARD_GRAVITY_MPS2, "real in g, sim in m/s^2"),
    (STANDARD_GRAVITY_MPS2, "real in m/s^2, sim in g"),
    (1000.0, "real in milli-units"),
    (1e-3, "real in kilo-units"),
    (2.0 * math.pi, "real in radians, sim in revolutions"),
    (1.0 / (2.0 * math.pi), "real in revolutions, sim in radians"),
)
_QUANTILES = np.linspace(0.01, 0.99, 99)
_W1_GRID = (np.arange(200) + 0.5) / 200  # midpoint quantile grid: mean |ΔQ| over it approximates W1
_NOISE_GROUPS = ("joint_angles", "projected_g", "accel", "gyro")  # joint_vels: see detector 3 in the docstring
_FIR_LAGS = 15  # output lags of the input→output (FIR) model of a joint angle: the K-Bot's PD response settles in them
_KERNEL_LAGS = 3  # output lags of a sim joint's velocity-change kernel (its response in and after the step)
_DELAY_RESOLUTION = 20  # loop latencies searched per control step (1 ms at 50 Hz)
_LATE_FACTOR = 1.5  # an interval longer than this many nominal periods is late (a missed tick or an overrun)
_MAX_SPAN_FACTOR = 4  # step ids spread over more than this many times the rows: too sparse to align by step


class DiagnosisError(ValueError):
    """The logs cannot be compared at all (too short, different robots, no common channel); names the problem."""


@dataclass(frozen=True)
class DiagnosisThresholds:
    """Decision thresholds of `diagnose`, with the largest value seen on clean pairs.

    Calibration: the suspended K-Bot's scripted logs (`ksim_entropy.sim_logs.scripted_log`), all ordered pairs of
    6 seeds × 20 s and 5 seeds × 30 s: no finding, and every decision statistic at least 2× below its threshold;
    the injected faults of tests/bridge/test_diagnose.py are at least 2× above. Sensor noise and the FIR response
    check: the stand-in robot (`testing.reality`) with and without sensor noise (default × 1, 30, 100, joints
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


def _severity(statistic: float, threshold: float) -> float:
    return 0.0 if not statistic > threshold else float(1.0 - threshold / statistic) if threshold > 0 else 1.0


# --------------------------------------------------------------------------------------------------- channels


@dataclass
class _Channels:
    """A log's groups as mutable float arrays (the real one gets corrected in place), with channel names."""

    log: StepLog
    blocks: dict[str, np.ndarray]

    @classmethod
    def of(cls, log: StepLog) -> "_Channels":
        return cls(log, {name: np.array(block, dtype=float) for name, block in log.groups.items()})

    def names(self, group: str) -> tuple[str, ...]:
        return self.log.channel_names([group])


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _spread(x: np.ndarray, floor: float) -> float:
    x = _finite(x)
    return max(float(np.std(x, ddof=1)) if x.size > 1 else 0.0, floor)


def _robust_spread(x: np.ndarray, floor: float) -> float:
    x = _finite(x)
    return max(1.4826 * float(np.median(np.abs(x - np.median(x)))) if x.size else 0.0, floor)


def _quantiles(block: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(k, len(grid)) quantiles of each column's finite values (NaN row for a column without any)."""
    out = np.full((block.shape[1], grid.size), np.nan)
    for j in range(block.shape[1]):
        x = _finite(block[:, j])
        if x.size:
            out[j] = np.quantile(x, grid)
    return out


def _cost_matrix(real: np.ndarray, sim: np.ndarray, floors_r: np.ndarray, floors_s: np.ndarray) -> np.ndarray:
    """d[i, j] = W1(real_i, sim_j) / max(σ_real_i, σ_sim_j), W1 from the midpoint quantile grid."""
    qr, qs = _quantiles(real, _W1_GRID), _quantiles(sim, _W1_GRID)
    sr = np.array([_spread(real[:, i], floors_r[i]) for i in range(real.shape[1])])
    ss = np.array([_spread(sim[:, j], floors_s[j]) for j in range(sim.shape[1])])
    w1 = np.mean(np.abs(qr[:, None, :] - qs[None, :, :]), axis=2)
    return w1 / np.maximum(sr[:, None], ss[None, :])


# --------------------------------------------------------------------------------------------------- 1. wiring


def _detect_swaps(real: _Channels, sim: _Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    evidence: dict[str, float] = {}
    channels: list[str] = []
    corrections: dict[str, str] = {}
    worst_identity = 0.0
    best_ratio = 0.0
    for family in _FAMILIES:
        groups = [g for g in family if g in real.blocks and g in sim.blocks]
        # whole groups swapped
        for a_index, a in enumerate(groups):
            for b in groups[a_index + 1 :]:
                ra, rb, sa, sb = real.blocks[a], real.blocks[b], sim.blocks[a], sim.blocks[b]
                if not ra.shape[1] == rb.shape[1] == sa.shape[1] == sb.shape[1]:
                    continue
                fa, fb = np.full(ra.shape[1], SCALE_FLOORS[a]), np.full(rb.shape[1], SCALE_FLOORS[b])
                identity = np.diag(_cost_matrix(ra, sa, fa, fa)).sum() + np.diag(_cost_matrix(rb, sb, fb, fb)).sum()
                swapped = np.diag(_cost_matrix(ra, sb, fb, fb)).sum() + np.diag(_cost_matrix(rb, sa, fa, fa)).sum()
                per_channel = identity / (2 * ra.shape[1])
                ratio = identity / max(swapped, 1e-12)
                worst_identity = max(worst_identity, per_channel)
                if per_channel >= th.swap_min_cost and ratio >= th.swap_min_cost_ratio:
                    best_ratio = max(best_ratio, ratio)
                    real.blocks[a], real.blocks[b] = rb.copy(), ra.copy()
                    evidence[f"{a}<->{b}:cost_identity_per_channel"] = per_channel
                    evidence[f"{a}<->{b}:cost_swapped_per_channel"] = swapped / (2 * ra.shape[1])
                    evidence[f"{a}<->{b}:cost_ratio"] = ratio
                    channels += [*real.names(a), *real.names(b)]
                    corrections[a] = f"taken from the real log's {b} (groups swapped)"
                    corrections[b] = f"taken from the real log's {a} (groups swapped)"
        # channels permuted inside a group
        for group in groups:
            r, s = real.blocks[group], sim.blocks[group]
            if r.shape[1] != s.shape[1] or r.shape[1] < 2:
                continue
            floors = np.full(r.shape[1], SCALE_FLOORS[group])
            cost = _cost_matrix(r, s, floors, floors)
            if not np.isfinite(cost).all():
                continue
            diag = np.diag(cost)
            worst_identity = max(worst_identity, float(diag.max()))
            # identity wins ties: moving a channel must save more than a small fraction of the threshold
            rows, cols = linear_sum_assignment(cost + 0.05 * th.swap_min_cost * (1.0 - np.eye(r.shape[1])))
            perm = dict(zip(rows.tolist(), cols.tolist(), strict=True))
            accepted = _accepted_cycles(perm, cost, th)
            if not accepted:
                continue
            names = real.names(group)
            fixed = r.copy()
            for i in accepted:
                j = perm[i]
                fixed[:, j] = r[:, i]
                ratio = diag[i] / max(cost[i, j], 1e-12)
                best_ratio = max(best_ratio, ratio)
                evidence[f"{names[i]}->{names[j]}:cost_identity"] = float(diag[i])
                evidence[f"{names[i]}->{names[j]}:cost_swapped"] = float(cost[i, j])
                corrections[names[j]] = f"taken from the real log's {names[i]} (channels swapped)"
                channels.append(names[i])
            real.blocks[group] = fixed
    statistics = {"max_identity_cost": worst_identity, "best_cost_ratio": best_ratio}
    if not channels:
        return None, statistics, corrections
    pairs = sorted({k.rsplit(":", 1)[0] for k in evidence})
    finding = Finding(
        "swapped_channels",
        tuple(dict.fromkeys(channels)),
        _severity(best_ratio, th.swap_min_cost_ratio),
        evidence,
        "real channels carry another channel's signal: " + ", ".join(pairs),
    )
    return finding, statistics, corrections


def _accepted_cycles(perm: dict[int, int], cost: np.ndarray, th: DiagnosisThresholds) -> list[int]:
    """Members of the permutation's cycles in which every channel is clearly swapped."""
    accepted: list[int] = []
    seen: set[int] = set()
    for start in perm:
        if start in seen or perm[start] == start:
            continue
        cycle = [start]
        while perm[cycle[-1]] != start:
            cycle.append(perm[cycle[-1]])
        seen.update(cycle)
        if all(
            cost[i, i] >= th.swap_min_cost and cost[i, i] >= th.swap_min_cost_ratio * cost[i, perm[i]] for i in cycle
        ):
            accepted += cycle
    return accepted


# --------------------------------------------------------------------------------------------------- 2. units


def _unit_factor(k: float, tolerance: float) -> tuple[float, str] | None:
    """The known unit factor (and its meaning) within `tolerance` of k, if any."""
    for factor, name in _UNIT_FACTORS:
        if abs(math.log(k / factor)) <= math.log(tolerance):
            return factor, name
    return None


def _scale_fits(r: np.ndarray, s: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: k of Q_real ≈ k·Q_sim through the origin, and the fit's RMS residual over the real spread."""
    qr, qs = _quantiles(r, _QUANTILES), _quantiles(s, _QUANTILES)
    k = np.full(r.shape[1], np.nan)
    residual = np.full(r.shape[1], np.inf)
    for c in range(r.shape[1]):
        norm = float(np.sum(qs[c] ** 2))
        if not np.isfinite(qr[c]).all() or not np.isfinite(qs[c]).all() or norm <= (floor * 1e-3) ** 2:
            continue
        k[c] = float(np.sum(qr[c] * qs[c])) / norm
        if k[c] > 0:
            rms = math.sqrt(float(np.mean((qr[c] - k[c] * qs[c]) ** 2)))
            residual[c] = rms / _spread(r[:, c], k[c] * floor)
    return k, residual


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per column, the least-squares slope of x on y (with intercept) over rows where both are finite."""
    out = np.full(x.shape[1], np.nan)
    for c in range(x.shape[1]):
        ok = np.isfinite(x[:, c]) & np.isfinite(y[:, c])
        if ok.sum() >= 3:
            yc = y[ok, c] - y[ok, c].mean()
            var = float(np.sum(yc**2))
            if var > 0:
                out[c] = float(np.sum((x[ok, c] - x[ok, c].mean()) * yc)) / var
    return out


def _central_difference(ch: _Channels) -> np.ndarray:
    """q_{t+1} - q_{t-1} where the three rows are consecutive step ids, else NaN (rad per two steps)."""
    q = ch.blocks["joint_angles"]
    out = np.full(q.shape, np.nan)
    ids = ch.log.step_id
    ok = (ids[2:] - ids[1:-1] == 1) & (ids[1:-1] - ids[:-2] == 1)
    out[1:-1][ok] = (q[2:] - q[:-2])[ok]
    return out


_SMOOTH_SLOPE_SPREAD = 1.5  # a joint's v-on-Δq slope this far from the reference log's median: not smooth at its rate


def _sibling_ratio(group: str, real: _Channels, sim: _Channels) -> np.ndarray | None:
    """Per channel of `group`, real/sim ratio of its relation to a physically tied channel of the same log.

    joint_angles ↔ output (a PD joint tracks its target: slope ≈ 1), joint_vels ↔ central difference of the joint
    angles (v ≈ Δq / 2T, whatever the period T), accel ↔ projected_g (mean |a| ≈ |g| unless the robot is in free
    fall). A unit error multiplies the ratio by its factor; a change of motion leaves it at 1. None: no sibling.
    """

    def relation(ch: _Channels) -> np.ndarray | None:
        blocks = ch.blocks
        if group in ("joint_angles", "output"):
            other = "output" if group == "joint_angles" else "joint_angles"
            if other in blocks and blocks[other].shape == blocks[group].shape:
                return _slopes(blocks[group], blocks[other])
        elif group == "joint_vels":
            if "joint_angles" in blocks and blocks["joint_angles"].shape == blocks[group].shape:
                return _slopes(blocks[group], _central_difference(ch))
        elif group in ("accel", "projected_g") and "accel" in blocks and "projected_g" in blocks:
            other = "projected_g" if group == "accel" else "accel"
            norms = [_finite(np.linalg.norm(blocks[g], axis=1)) for g in (group, other)]
            ratio = float(np.median(norms[0]) / np.median(norms[1])) if all(n.size for n in norms) else math.nan
            return np.full(3, ratio)
        return None

    r, s = relation(real), relation(sim)
    if r is None or s is None:
        return None
    if group == "joint_vels" and np.isfinite(s).any():
        # v ≈ Δq / 2T holds for a joint whose motion is smooth at the log's rate: every joint of the reference log
        # then shares one slope 1/2T. A joint that settles within a step (a wrist) is sampled mid-transient and its
        # slope depends on when the step's target arrived: a latency would read as a velocity unit. No tie there.
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.abs(np.log(s / np.nanmedian(s))) > math.log(_SMOOTH_SLOPE_SPREAD)
        s = np.where(off, np.nan, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        return r / s


def _informative_location(x: np.ndarray, floor: float) -> bool:
    """The channel sits away from zero (|median| ≥ 2 robust spreads): a unit factor scales location and spread."""
    x = _finite(x)
    return x.size > 0 and abs(float(np.median(x))) >= 2.0 * _robust_spread(x, floor)


_SCALE_ORDER = ("joint_angles", "output", "joint_vels", "projected_g", "accel", "gyro", "command")


def _detect_scale(real: _Channels, sim: _Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    evidence: dict[str, float] = {}
    channels: list[str] = []
    corrections: dict[str, str] = {}
    stats = {"max_abs_log_factor": 0.0, "max_abs_log_factor_of_good_fits": 0.0, "max_abs_log_sibling_ratio": 0.0}
    units: set[str] = set()
    min_log, spread = math.log(th.scale_min_factor), math.log(th.scale_group_spread)
    for group in _SCALE_ORDER:  # joint angles first: the later siblings use the corrected angles
        if (
            group not in real.blocks
            or group not in sim.blocks
            or real.blocks[group].shape
            != (
                len(real.log),
                sim.blocks[group].shape[1],
            )
        ):
            continue
        r, s = real.blocks[group], sim.blocks[group]
        floor = SCALE_FLOORS[group]
        k, residual = _scale_fits(r, s, floor)
        good = (k > 0) & (residual <= th.scale_max_fit_residual)
        log_k = np.log(np.where(good, k, 1.0))
        sibling = _sibling_ratio(group, real, sim)
        log_sibling = np.full(r.shape[1], np.nan)
        if sibling is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_sibling = np.log(np.where(sibling > 0, sibling, np.nan))
        # k is a unit factor only if it is confirmed: the channel sits away from zero (location and spread scale
        # together), or its relation to a tied channel of the same log changed by the same factor.
        confirmable = good & np.array(
            [
                (_informative_location(r[:, c], k[c] * floor) and _informative_location(s[:, c], floor))
                or bool(abs(log_sibling[c] - log_k[c]) <= spread)
                for c in range(r.shape[1])
            ]
        )
        stats["max_abs_log_factor"] = max(
            stats["max_abs_log_factor"], float(np.max(np.abs(log_k[confirmable]), initial=0))
        )
        stats["max_abs_log_factor_of_good_fits"] = max(
            stats["max_abs_log_factor_of_good_fits"], float(np.max(np.abs(log_k)))
        )
        if np.isfinite(log_sibling).any():
            stats["max_abs_log_sibling_ratio"] = max(
                stats["max_abs_log_sibling_ratio"], float(np.nanmax(np.abs(log_sibling)))
            )
        candidate = good & (np.abs(log_k) >= min_log)
        confirmed = candidate & confirmable
        if not confirmed.any():
            continue
        # A unit is per group: extend to the candidates that agree with the confirmed ones, and divide all of them
        # by one factor, the named unit factor when the group's median is close to one.
        center = float(np.median(log_k[confirmed]))
        if confirmed.sum() * 2 >= candidate.sum():
            confirmed |= candidate & (np.abs(log_k - center) <= spread)
        named = _unit_factor(math.exp(center), th.scale_name_tolerance)
        factor = named[0] if named is not None else math.exp(center)
        names = real.names(group)
        for c in np.flatnonzero(confirmed):
            used = factor if abs(log_k[c] - center) <= spread else float(k[c])
            unit = _unit_factor(used, th.scale_name_tolerance)
            evidence[f"{names[c]}:factor"] = float(k[c])
            evidence[f"{names[c]}:fit_residual"] = float(residual[c])
            if np.isfinite(log_sibling[c]):
                evidence[f"{names[c]}:sibling_ratio"] = float(np.exp(log_sibling[c]))
            corrections[names[c]] = f"divided by {used:.6g} ({unit[1] if unit else 'unknown unit'})"
            units.add(unit[1] if unit else f"×{used:.4g}")
            channels.append(names[c])
            r[:, c] = r[:, c] / used
    if not channels:
        return None, stats, corrections
    largest = max(abs(math.log(evidence[f"{c}:factor"])) for c in channels)
    finding = Finding(
        "misscaled_channels",
        tuple(channels),
        _severity(largest, min_log),
        evidence,
        f"{len(channels)} real channels scaled against sim ({'; '.join(sorted(units))}): " + ", ".join(channels[:6]),
    )
    return finding, stats, corrections


# --------------------------------------------------------------------------------------------------- response model


@dataclass(frozen=True)
class ResponseModel:
    """Per-joint linear response of one log, by least squares on consecutive steps.

    ``v_{t+1} - v_t = g_u·u_{t-d} + g_q·q_t + g_v·v_t + c``: u the output (PD target, rad), q the joint angle (rad),
    v the joint velocity (rad/s; backward differences of q when the log has no joint_vels). A PD-actuated joint
    held at a target for one control period is exactly linear in (u, q, v) (zero-order-hold discretisation;
    gravity and friction show up in g_q and c), so ``g_u`` is the actuator's gain per control step and d the
    actuation delay: the delay is the d ∈ [0, max_delay] with the largest R². Needs an output that moves at step
    rate (policy noise, sensor-noise feedback or a dither); a smooth output makes d unidentifiable (flat R²).
    """

    velocity: str  # "joint_vels" (measured) or "differences" (backward differences of the joint angles)
    delay_steps: np.ndarray  # (J,) int, best delay per joint
    coef: np.ndarray  # (J, 4): g_u, g_q, g_v, c at the best delay
    r2: np.ndarray  # (J,) R² at the best delay (NaN: joint not fitted)
    r2_by_delay: np.ndarray  # (max_delay + 1, J)
    residual_std: np.ndarray  # (J,) rad/s, at the best delay
    num_samples: np.ndarray  # (J,) rows used at the best delay


@dataclass(frozen=True)
class _Dense:
    """Joint angles, velocities and outputs indexed by step id (rows of missing step ids are NaN)."""

    q: np.ndarray
    v: np.ndarray
    u: np.ndarray
    step0: int


def _dense(ch: _Channels, velocity: str) -> _Dense:
    """Joint arrays by step id, velocities measured ("joint_vels") or "differences" (backward, median t_us period).

    Both logs of a comparison must use the same velocity source: the two are not the same signal.
    """
    ids = ch.log.step_id
    _, first = np.unique(ids, return_index=True)
    rows = np.sort(first)
    ids = ids[rows]
    step0 = int(ids.min())
    span = int(ids.max()) - step0 + 1
    if span > _MAX_SPAN_FACTOR * len(rows) + 100:
        raise DiagnosisError(f"step ids span {span} steps over {len(rows)} rows: too sparse to align steps")
    order = ids - step0

    def dense(block: np.ndarray) -> np.ndarray:
        out = np.full((span, block.shape[1]), np.nan)
        out[order] = block[rows]
        return out

    q = dense(ch.blocks["joint_angles"])
    if velocity == "joint_vels":
        v = dense(ch.blocks["joint_vels"])
    else:
        times = np.full(span, np.nan)
        times[order] = ch.log.t_us[rows] / 1e6
        period = float(np.nanmedian(np.diff(times)))
        v = np.vstack([np.full((1, q.shape[1]), np.nan), np.diff(q, axis=0) / period])
    return _Dense(q, v, dense(ch.blocks["output"]), step0)


def _design(data: _Dense, joint: int, delay: int, max_delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows t = max_delay .. T-2 (same rows for every delay) of [u_{t-d}, q_t, v_t, 1] and v_{t+1} - v_t."""
    n = data.q.shape[0]
    t = np.arange(max_delay, n - 1)
    x = np.column_stack([data.u[t - delay, joint], data.q[t, joint], data.v[t, joint], np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    return x[ok], y[ok]


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Coefficients, RSS and TSS."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef, float(np.sum((y - x @ coef) ** 2)), float(np.sum((y - y.mean()) ** 2))


def _response_model(data: _Dense, max_delay: int, velocity: str) -> ResponseModel:
    joints = data.q.shape[1]
    r2 = np.full((max_delay + 1, joints), np.nan)
    coefs = np.full((max_delay + 1, joints, 4), np.nan)
    counts = np.zeros((max_delay + 1, joints), dtype=int)
    rss_all = np.full((max_delay + 1, joints), np.nan)
    for j in range(joints):
        for d in range(max_delay + 1):
            x, y = _design(data, j, d, max_delay)
            if y.size < 20:
                continue
            coef, rss, tss = _fit(x, y)
            if tss > 0:
                r2[d, j], coefs[d, j], counts[d, j], rss_all[d, j] = 1.0 - rss / tss, coef, y.size, rss
    fitted = np.isfinite(r2).any(axis=0)
    best = np.where(fitted, np.argmax(np.where(np.isfinite(r2), r2, -np.inf), axis=0), 0)
    cols = np.arange(joints)
    return ResponseModel(
        velocity=velocity,
        delay_steps=best,
        coef=coefs[best, cols],
        r2=np.where(fitted, r2[best, cols], np.nan),
        r2_by_delay=r2,
        residual_std=np.sqrt(rss_all[best, cols] / np.maximum(counts[best, cols] - 4, 1)),
        num_samples=counts[best, cols],
    )


def _velocity_source(*logs: StepLog) -> str:
    return "joint_vels" if all("joint_vels" in log.groups for log in logs) else "differences"


def fit_response_model(log: StepLog, *, max_delay_steps: int = 10, velocity: str | None = None) -> ResponseModel:
    """Fit the per-joint `ResponseModel` of a log with joint_angles and output.

    `velocity`: "joint_vels" or "differences"; default: the measured velocities when the log has them.
    """
    missing = [g for g in ("joint_angles", "output") if g not in log.groups]
    if missing:
        raise DiagnosisError(f"the response model needs groups {missing}; the log has {list(log.groups)}")
    if log.group("joint_angles").shape[1] != log.group("output").shape[1]:
        raise DiagnosisError(
            f"joint_angles has {log.group('joint_angles').shape[1]} joints but output has "
            f"{log.group('output').shape[1]}"
        )
    velocity = _velocity_source(log) if velocity is None else velocity
    if velocity not in ("joint_vels", "differences") or (velocity == "joint_vels" and "joint_vels" not in log.groups):
        raise DiagnosisError(
            f"velocity must be 'differences' or, for a log with joint_vels, 'joint_vels'; got {velocity!r}"
        )
    return _response_model(_dense(_Channels.of(log), velocity), max_delay_steps, velocity)


def response_residuals(model: ResponseModel, log: StepLog) -> tuple[np.ndarray, np.ndarray]:
    """One-step prediction errors (rad/s) of `model` (e.g. fitted on a sim log) on another log's data.

    Returns the step ids t and an (N, J) array of ``(v_{t+1} - v_t) - prediction`` at each joint's own delay, NaN
    where a needed step is missing; t runs over the log's step-id range.
    """
    missing = [g for g in ("joint_angles", "output") if g not in log.groups]
    if missing:
        raise DiagnosisError(f"response residuals need groups {missing}; the log has {list(log.groups)}")
    if model.velocity == "joint_vels" and "joint_vels" not in log.groups:
        raise DiagnosisError("the model was fitted on measured joint_vels and this log has none")
    data = _dense(_Channels.of(log), model.velocity)
    span, joints = data.q.shape
    if joints != model.coef.shape[0]:
        raise DiagnosisError(f"the model has {model.coef.shape[0]} joints, the log {joints}")
    residual = np.full((span, joints), np.nan)
    t = np.arange(span - 1)
    for j in range(joints):
        d = int(model.delay_steps[j])
        u = np.full(t.size, np.nan)
        u[d:] = data.u[t[d:] - d, j]
        x = np.column_stack([u, data.q[t, j], data.v[t, j], np.ones(t.size)])
        residual[t, j] = data.v[t + 1, j] - data.v[t, j] - x @ model.coef[j]
    return data.step0 + np.arange(span), residual


# --------------------------------------------------------------------------------------------------- sub-step delay


@dataclass(frozen=True)
class _Kernel:
    """A sim joint's velocity-change response to its outputs: ``Δv_t = Σ_i k_i·u_{t-d-i} + g_q·q_t + g_v·v_t + c``."""

    delay: int  # the sim's own (whole-step) delay d
    k: np.ndarray  # (_KERNEL_LAGS,)
    beta: float  # decay of the first step's response per step, -log(1 + g_v): shapes a partly held output
    fast: bool  # 1 + g_v <= 0.02: the joint settles within a control step, a sub-step latency is not resolved


def _kernel(data: _Dense, joint: int, delay: int, max_delay: int) -> _Kernel | None:
    """The sim joint's kernel at its own delay, by least squares (None: too few rows or no variance)."""
    t = np.arange(max_delay + _KERNEL_LAGS + 1, data.q.shape[0] - 1)
    lags = [data.u[t - delay - i, joint] for i in range(_KERNEL_LAGS)]
    x = np.column_stack([*lags, data.q[t, joint], data.v[t, joint], np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if ok.sum() < 40 or np.sum((y[ok] - y[ok].mean()) ** 2) <= 0:
        return None
    coef = _fit(x[ok], y[ok])[0]
    decay = 1.0 + coef[_KERNEL_LAGS + 1]
    return _Kernel(delay, coef[:_KERNEL_LAGS], -math.log(min(max(decay, 0.02), 0.999)), bool(decay <= 0.02))


def _delayed_input(data: _Dense, joint: int, kernel: _Kernel, delay: float, t: np.ndarray) -> np.ndarray:
    """The kernel's input term at rows t when outputs arrive `delay` steps late (fractional).

    A delay d + f holds u_{t-d-1} for the first fraction f of step t and u_{t-d} for the rest. Within the step the
    velocity responds like 1 - exp(-β·s) (s the time held, in steps), so u_{t-d} gets the weight
    (1 - e^{-β(1-f)}) / (1 - e^{-β}); later lags, whose response is smooth, are interpolated linearly.
    """
    d = math.floor(delay)
    f = delay - d
    u = data.u[:, joint]
    first = (1.0 - math.exp(-kernel.beta * (1.0 - f))) / (1.0 - math.exp(-kernel.beta))
    out = np.zeros(t.size)
    for i, k in enumerate(kernel.k):
        w = first if i == 0 else 1.0 - f
        out += k * (w * u[t - d - i] + (1.0 - w) * u[t - d - i - 1])
    return out


def _kernel_design(data: _Dense, joint: int, kernel: _Kernel, delay: float, max_delay: int):  # noqa: ANN202
    """Rows of [z_t, q_t, v_t, 1] and Δv_t, z the kernel's input term at `delay`; the same rows for every delay."""
    t = np.arange(max_delay + _KERNEL_LAGS + 1, data.q.shape[0] - 1)
    x = np.column_stack([_delayed_input(data, joint, kernel, delay, t), data.q[t, joint], data.v[t, joint]])
    x = np.column_stack([x, np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    return x[ok], y[ok]


def _loop_delays(
    dense: tuple[_Dense, _Dense], models: tuple[ResponseModel, ResponseModel], th: DiagnosisThresholds
) -> tuple[np.ndarray, np.ndarray, list[_Kernel | None]]:
    """Per joint: the real log's delay under the sim's kernel (steps, fractional), its R² gain, the sim's kernels.

    The delay is the one in [0, max_delay_steps] (1/_DELAY_RESOLUTION step grid) with the largest R², the gain its
    R² over that at the sim's own delay (NaN where either response model explains < `min_r2`). A fast joint
    (`_Kernel.fast`) is timed in whole steps.
    """
    model_r, model_s = models
    joints = model_r.r2.size
    delays = np.full(joints, np.nan)
    gains = np.full(joints, np.nan)
    kernels: list[_Kernel | None] = [None] * joints
    grid = np.arange(th.max_delay_steps * _DELAY_RESOLUTION + 1) / _DELAY_RESOLUTION
    for j in range(joints):
        if not (model_r.r2[j] >= th.min_r2 and model_s.r2[j] >= th.min_r2):
            continue
        kernel = _kernel(dense[1], j, int(model_s.delay_steps[j]), th.max_delay_steps)
        kernels[j] = kernel
        if kernel is None:
            continue
        r2 = np.full(grid.size, -np.inf)
        for g, delay in enumerate(grid):
            if kernel.fast and g % _DELAY_RESOLUTION:  # a fast joint is timed in whole steps only
                continue
            x, y = _kernel_design(dense[0], j, kernel, float(delay), th.max_delay_steps)
            if y.size >= 40:
                _, rss, tss = _fit(x, y)
                r2[g] = 1.0 - rss / tss if tss > 0 else -np.inf
        if not np.isfinite(r2).any():
            continue
        best = int(np.argmax(r2))
        delays[j] = grid[best]
        gains[j] = r2[best] - r2[kernel.delay * _DELAY_RESOLUTION]
    return delays, gains, kernels


# --------------------------------------------------------------------------------------------------- noise


def _nugget(x: np.ndarray) -> float:
    """White-noise variance of a series (rows in order): γ0 less its extrapolation from lags 1 and 2, 2γ1 - γ2.

    A signal smooth at the sampling rate has γ0 ≈ 2γ1 - γ2; white noise adds its variance to γ0 only. NaN when
    fewer than 20 finite pairs.
    """
    finite = _finite(x)
    if finite.size < 20:
        return math.nan
    x = x - float(np.mean(finite))
    gammas = []
    for lag in (0, 1, 2):
        products = _finite(x[lag:] * x[: x.size - lag])
        if products.size < 20:
            return math.nan
        gammas.append(float(np.mean(products)))
    return gammas[0] - (2.0 * gammas[1] - gammas[2])


def _fir_design(q: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows t, regressors [u_{t-1} .. u_{t-K}, 1] and q_t of a joint's input→output (FIR) model; None: too few.

    White noise on the angle reading is only in q_t, never in a regressor, so the fit is unbiased by it (and the
    output cannot react to the reading of the same step: u_t is computed after q_t is read).
    """
    t = np.arange(_FIR_LAGS, q.size)
    x = np.column_stack([*(u[t - k] for k in range(1, _FIR_LAGS + 1)), np.ones(t.size)])
    ok = np.isfinite(x).all(axis=1) & np.isfinite(q[t])
    return (t[ok], x[ok], q[t][ok]) if ok.sum() >= 4 * (_FIR_LAGS + 1) else None


def _fir_residual(q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The joint angle less what its FIR model on past outputs explains (NaN where undefined)."""
    out = np.full(q.size, np.nan)
    design = _fir_design(q, u)
    if design is not None:
        t, x, y = design
        out[t] = y - x @ _fit(x, y)[0]
    return out


def _response_loss(dense: tuple[_Dense, _Dense], joint: int, extra_delay: float = 0.0) -> float:
    """Fraction of the real angle's FIR-explained variance lost with the sim's coefficients (own intercept).

    `extra_delay` (steps, fractional): the real outputs are compared as if that much later (linear interpolation).
    """
    u_real = dense[0].u[:, joint]
    if extra_delay > 0:
        d = math.floor(extra_delay)
        f = extra_delay - d
        shifted = np.full(u_real.size, np.nan)
        shifted[d + 1 :] = (1.0 - f) * u_real[1 : u_real.size - d] + f * u_real[: u_real.size - d - 1]
        u_real = shifted
    designs = [_fir_design(dense[0].q[:, joint], u_real), _fir_design(dense[1].q[:, joint], dense[1].u[:, joint])]
    if designs[0] is None or designs[1] is None:
        return math.nan
    (_, xr, yr), (_, xs, ys) = designs
    _, rss_own, tss = _fit(xr, yr)
    prediction = xr[:, :-1] @ _fit(xs, ys)[0][:-1]
    rss_cross = float(np.sum((yr - prediction - np.mean(yr - prediction)) ** 2))
    return (rss_cross - rss_own) / max(tss - rss_own, 1e-300)


def _by_step(ch: _Channels, block: np.ndarray) -> np.ndarray | None:
    """`block` on the step-id grid (first row of each id; NaN rows for lost steps); None when too sparse."""
    ids, rows = np.unique(ch.log.step_id, return_index=True)
    span = int(ids[-1] - ids[0]) + 1 if ids.size else 0
    if span > _MAX_SPAN_FACTOR * len(rows) + 100:
        return None
    out = np.full((span, block.shape[1]), np.nan)
    out[ids - ids[0]] = block[rows]
    return out


def _noise_std(ch: _Channels, group: str, c: int) -> float:
    """White-noise std of one channel: of the joint angle less its FIR model when the log has outputs."""
    x = _by_step(ch, ch.blocks[group][:, c : c + 1])
    if x is None:
        return math.nan
    x = x[:, 0]
    if group == "joint_angles" and "output" in ch.blocks and ch.blocks["output"].shape == ch.blocks[group].shape:
        x = _fir_residual(x, _by_step(ch, ch.blocks["output"][:, c : c + 1])[:, 0])
    return math.sqrt(max(_nugget(x), 0.0))


def _detect_noise(real: _Channels, sim: _Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    evidence: dict[str, float] = {}
    louder: dict[str, list[str]] = {"real": [], "sim": []}
    added: dict[tuple[str, str], list[float]] = {}
    stats = {"max_abs_log_noise_std_ratio": 0.0}
    ratios: list[float] = []
    rng = np.random.default_rng(0)
    for group in _NOISE_GROUPS:
        if (
            group not in real.blocks
            or group not in sim.blocks
            or real.blocks[group].shape[1] != sim.blocks[group].shape[1]
        ):
            continue
        floor = NOISE_FLOORS[group]
        for c, name in enumerate(real.names(group)):
            std_r, std_s = _noise_std(real, group, c), _noise_std(sim, group, c)
            if not (math.isfinite(std_r) and math.isfinite(std_s)):
                continue
            log_ratio = math.log(max(std_r, floor) / max(std_s, floor))
            stats["max_abs_log_noise_std_ratio"] = max(stats["max_abs_log_noise_std_ratio"], abs(log_ratio))
            if abs(log_ratio) < math.log(th.noise_std_ratio):
                continue
            noisy, quiet = ("real", sim) if log_ratio > 0 else ("sim", real)
            excess = math.sqrt(abs(std_r**2 - std_s**2))
            quiet_side = "sim" if noisy == "real" else "real"
            quiet_values = _finite(quiet.blocks[group][:, c])  # a real sensor always has noise: constant is stuck
            stuck = quiet_side == "real" and quiet_values.size > 0 and bool(np.ptp(quiet_values) == 0)
            louder[noisy].append(f"{name} (constant in the {quiet_side} log: stuck?)" if stuck else name)
            block = quiet.blocks[group]
            block[:, c] += rng.normal(0.0, excess, block.shape[0])
            added.setdefault((quiet_side, group), []).append(excess)
            ratios.append(math.exp(abs(log_ratio)))
            evidence |= {f"{name}:noise_std_real": std_r, f"{name}:noise_std_sim": std_s}
            evidence[f"{name}:noise_std_ratio"] = math.exp(log_ratio)
    corrections = {
        f"{side}:{group}": f"white noise added to {len(stds)} channels of the {side} copy (std {min(stds):.3g}-"
        f"{max(stds):.3g} {CHANNEL_GROUPS[group]}): the other log's excess sensor noise"
        for (side, group), stds in added.items()
    }
    if not ratios:
        return None, stats, corrections
    parts = [
        f"the {side} log's sensors carry more white noise ({len(names)} channels: {', '.join(names[:6])})"
        for side, names in louder.items()
        if names
    ]
    finding = Finding(
        "sensor_noise",
        tuple(name.split(" ")[0] for name in louder["real"] + louder["sim"]),
        _severity(max(ratios), th.noise_std_ratio),
        evidence,
        "; ".join(parts) + f"; noise std ratio up to {max(ratios):.3g}: match the sensor noise in simulation",
    )
    return finding, stats, corrections


# --------------------------------------------------------------------------------------------------- 3. timing


def _timing(log: StepLog) -> dict[str, float]:
    intervals = np.diff(log.t_us).astype(float)
    positive = intervals[intervals > 0]
    nominal = float(np.median(positive)) if positive.size else float("nan")
    steps = np.diff(log.step_id)
    dropped = float(np.sum(np.clip(steps - 1, 0, None)) + np.sum(steps <= 0))
    deviation = intervals - nominal
    return {
        "period_s": nominal / 1e6,
        "jitter": 1.4826 * float(np.median(np.abs(deviation))) / nominal,
        "late_fraction": float(np.mean(intervals > _LATE_FACTOR * nominal)),
        "drop_fraction": dropped / max(len(log) + dropped - 1, 1),
        "clock_error_fraction": float(np.mean(intervals <= 0)),  # t_us not increasing
    }


def _detect_temporal(
    real: _Channels,
    sim: _Channels,
    models: tuple[ResponseModel, ResponseModel] | None,
    dense: tuple[_Dense, _Dense] | None,
    th: DiagnosisThresholds,
    skipped: dict[str, str],
) -> tuple[Finding | None, dict, tuple[np.ndarray, list] | None]:
    """Loop timing from t_us and step ids; the real log's loop latency over the sim's, per joint (fractional steps).

    Also returns (per joint: the real's total delay in steps where it is later than the sim's, else NaN; the sim's
    kernels) for the dynamics comparison.
    """
    tr, ts = _timing(real.log), _timing(sim.log)
    stats: dict[str, float] = {f"real_{k}": v for k, v in tr.items()} | {f"sim_{k}": v for k, v in ts.items()}
    ratio = tr["period_s"] / ts["period_s"]
    scores = {  # criterion -> (statistic, threshold); NaN (no increasing t_us) compares False: see clock errors
        "period_ratio": (max(ratio, 1.0 / ratio), th.period_ratio),
        "jitter_excess": (tr["jitter"] - ts["jitter"], th.jitter_excess),
        "late_excess": (tr["late_fraction"] - ts["late_fraction"], th.late_excess),
        "drop_excess": (tr["drop_fraction"] - ts["drop_fraction"], th.drop_excess),
        "clock_error_excess": (tr["clock_error_fraction"] - ts["clock_error_fraction"], th.drop_excess),
    }
    stats |= {name: value for name, (value, _) in scores.items()}
    flagged = {name: score for name, score in scores.items() if score[0] > score[1]}
    evidence = {name: value for name, (value, _) in flagged.items()}
    channels = ["step_id" if name == "drop_excess" else "t_us" for name in flagged]
    parts = [f"{name} {value:.3g} (> {threshold:g})" for name, (value, threshold) in flagged.items()]
    loop = None
    if models is not None and dense is not None:
        names = real.names("output")
        delays, gains, kernels = _loop_delays(dense, models, th)
        extra = delays - models[1].delay_steps
        moved = np.isfinite(extra) & (extra != 0)
        stats["max_abs_extra_delay_steps"] = float(np.max(np.abs(extra[moved]))) if moved.any() else 0.0
        stats["max_delay_r2_gain"] = float(np.max(gains[moved])) if moved.any() else 0.0
        found = moved & (gains >= th.delay_min_r2_gain)
        # confirmed by the angle's response to past outputs (FIR, unbiased by white sensor noise, which biases the
        # velocity-change regression): the sim's FIR must fit the real angle better with the outputs shifted
        for j in np.flatnonzero(found & (extra > 0)):
            found[j] = _response_loss(dense, j, float(extra[j])) < _response_loss(dense, j)
        late, early = found & (extra > 0), found & (extra < 0)
        period_s = ts["period_s"]
        if early.any():  # the sim is the late one: its own latency setting, never a cause on the robot
            stats["median_early_delay_s"] = float(np.median(extra[early])) * period_s
            skipped["temporal_mismatch:sim_later"] = (
                f"the real log responds {-stats['median_early_delay_s'] * 1e3:.0f} ms earlier than the sim log on "
                f"{int(early.sum())} joints: the sim's own loop latency is longer (its settings), not a cause"
            )
        loop = (np.where(late, delays, np.nan), kernels)
        if late.any():
            lags = _xcorr_lags(dense, th.max_delay_steps)
            for j in np.flatnonzero(late):
                evidence[f"{names[j]}:extra_delay_steps"] = float(extra[j])
                evidence[f"{names[j]}:r2_gain"] = float(gains[j])
                if lags is not None:
                    evidence[f"{names[j]}:xcorr_extra_lag_steps"] = float(lags[0][j] - lags[1][j])
                channels.append(names[j])
            median = float(np.median(extra[late]))
            evidence["median_extra_delay_steps"] = median
            evidence["median_extra_delay_s"] = median * period_s
            flagged["delay"] = (float(np.max(gains[late])), th.delay_min_r2_gain)
            low_ms, high_ms = (float(v) * period_s * 1e3 for v in (extra[late].min(), extra[late].max()))
            parts.append(
                f"loop latency {median * period_s * 1e3:+.0f} ms over the sim's ({low_ms:.0f}..{high_ms:.0f} ms on "
                f"{int(late.sum())} joints): action + observation latency, whose split logs like these cannot show "
                "(no sensor timestamps); a response-model estimate (a sub-step latency reads up to ~5 ms low), "
                "`tasks.fit` replays it at 1 ms"
            )
    if not flagged:
        return None, stats, loop
    severity = max(_severity(value, threshold) for value, threshold in flagged.values())
    finding = Finding("temporal_mismatch", tuple(dict.fromkeys(channels)), severity, evidence, "; ".join(parts))
    return finding, stats, loop


def _xcorr_lags(dense: tuple[_Dense, _Dense], max_lag: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per joint lag (steps) of the joint angle behind the output, real and sim; None where undefined."""
    lags = []
    for data in dense:
        ok = np.isfinite(data.u).all(axis=1) & np.isfinite(data.q).all(axis=1)
        u, q = data.u[ok], data.q[ok]
        if u.shape[0] < 2 * max_lag + 3 or (np.std(u, axis=0) == 0).any() or (np.std(q, axis=0) == 0).any():
            return None
        lags.append(np.asarray(cross_correlation_lag(u, q, max_lag=max_lag).lag_samples))
    return lags[0], lags[1]


# --------------------------------------------------------------------------------------------------- 4. dynamics


@dataclass(frozen=True)
class _Comparison:
    """Per joint: compared at all, variance lost with the sim's slopes, and the angle offset the intercepts imply."""

    comparable: np.ndarray
    variance_loss: np.ndarray
    angle_offset_rad: np.ndarray
    gain_ratio: np.ndarray  # real/sim output gain (own fit over the sim's)
    damping_ratio: np.ndarray  # real/sim velocity feedback
    latency_steps: np.ndarray  # the real's delay the comparison used where it is later than the sim's, else NaN
    unresolved: np.ndarray  # a loop latency was found on other joints; this one settles too fast to time it


def _compare_models(
    models: tuple[ResponseModel, ResponseModel],
    dense: tuple[_Dense, _Dense],
    th: DiagnosisThresholds,
    loop: tuple[np.ndarray, list] | None = None,
) -> tuple[_Comparison, np.ndarray]:
    """The sim's slopes on the real data, the real log keeping its own intercept c*.

    A constant angle reading offset δ (q_read = q + δ) leaves every slope and moves the intercept by -g_q·δ, so
    ``δ = -(c* - c_sim) / g_q,sim``. A joint the timing detector found late (`loop`) is compared with the sim's
    kernel (`_Kernel`) fed the real outputs at the real's fractional delay, so a sub-step latency is not read as
    physics. Also returns the real/sim output spread per joint (the operating regime).
    """
    model_r, model_s = models
    joints = model_r.r2.size
    floor = SCALE_FLOORS["output"]
    excitation = np.array([_spread(dense[0].u[:, j], floor) / _spread(dense[1].u[:, j], floor) for j in range(joints)])
    regime = np.abs(np.log(excitation)) <= math.log(th.excitation_ratio)
    comparable = (model_r.r2 >= th.min_r2) & (model_s.r2 >= th.min_r2) & regime
    loss, offset, gain, damping, latency = (np.full(joints, np.nan) for _ in range(5))
    for j in np.flatnonzero(comparable):
        kernel = loop[1][j] if loop is not None and np.isfinite(loop[0][j]) else None
        if kernel is not None:
            x, y = _kernel_design(dense[0], j, kernel, float(loop[0][j]), th.max_delay_steps)
            sim_coef = _fit(*_kernel_design(dense[1], j, kernel, float(kernel.delay), th.max_delay_steps))[0]
            latency[j] = loop[0][j]
        else:
            x, y = _design(dense[0], j, int(model_r.delay_steps[j]), th.max_delay_steps)
            sim_coef = model_s.coef[j]
        own, rss_own, tss = _fit(x, y)
        prediction = x[:, :3] @ sim_coef[:3]
        intercept = float(np.mean(y - prediction))
        loss[j] = (float(np.sum((y - prediction - intercept) ** 2)) - rss_own) / tss
        gain[j], damping[j] = own[0] / sim_coef[0], own[2] / sim_coef[2]
        if sim_coef[1] != 0:
            offset[j] = -(intercept - sim_coef[3]) / sim_coef[1]
    # a fast joint is timed in whole steps: with a latency found on the others, its comparison is ambiguous unless
    # it was found late too and the loop's latency is a whole number of steps
    fast = np.array([loop is not None and loop[1][j] is not None and loop[1][j].fast for j in range(joints)])
    timed = np.isfinite(loop[0]) & ~fast if loop is not None else np.zeros(joints, dtype=bool)
    shared = float(np.median(loop[0][timed] - model_s.delay_steps[timed])) if timed.any() else math.nan
    whole = abs(shared - round(shared)) <= 0.1 if timed.any() else True
    unresolved = fast & timed.any() & ~(np.isfinite(loop[0]) & whole if loop is not None else False)
    return _Comparison(comparable, loss, offset, gain, damping, latency, unresolved), excitation


def _detect_dynamics(
    real: _Channels,
    models: tuple[ResponseModel, ResponseModel],
    dense: tuple[_Dense, _Dense],
    comparison: _Comparison,
    excitation: np.ndarray,
    replay: StepLog | None,
    th: DiagnosisThresholds,
    skipped: dict[str, str],
) -> tuple[Finding | None, dict, set[int]]:
    model_s = models[1]
    names = real.names("joint_angles")
    outside = np.abs(np.log(excitation)) > math.log(th.excitation_ratio)
    if outside.any():
        skipped["dynamics_mismatch:joints"] = (
            f"{int(outside.sum())} joints not compared: output spread real/sim outside "
            f"[1/{th.excitation_ratio:g}, {th.excitation_ratio:g}] (another operating regime)"
        )
    comparable, loss = comparison.comparable, comparison.variance_loss
    if not comparable.any():
        skipped["dynamics_mismatch:model"] = (
            f"no joint is comparable (R² >= {th.min_r2} in both logs and a matching output spread)"
        )
    stats = {
        "max_variance_loss": float(np.nanmax(loss)) if comparable.any() else float("nan"),
        "joints_compared": float(comparable.sum()),
    }
    flagged = comparable & (loss >= th.dynamics_variance_loss)
    # white sensor noise biases the response model (a noisy velocity is both regressor and target); the response
    # of the joint angle to past outputs is not biased by it: a joint whose response matches is not a physics finding
    extra = np.nan_to_num(comparison.latency_steps - model_s.delay_steps)  # 0 where no latency was found
    response = np.array([_response_loss(dense, j, extra[j]) if flagged[j] else np.nan for j in range(flagged.size)])
    explained = flagged & (response < th.dynamics_response_loss)
    if explained.any():
        skipped["dynamics_mismatch:noise"] = (
            f"{int(explained.sum())} joints' response models differ but their angles respond to past outputs alike "
            f"(FIR loss < {th.dynamics_response_loss:g}): sensor noise, not physics: "
            + ", ".join(names[j] for j in np.flatnonzero(explained)[:6])
        )
    flagged &= ~explained
    ambiguous = flagged & comparison.unresolved
    if ambiguous.any():
        skipped["dynamics_mismatch:latency"] = (
            f"{int(ambiguous.sum())} joints settle within a control step, so their response cannot tell the loop "
            "latency found on the other joints from physics; not judged: "
            + ", ".join(names[j] for j in np.flatnonzero(ambiguous)[:6])
        )
    flagged &= ~ambiguous
    stats["max_response_loss"] = float(np.nanmax(response)) if np.isfinite(response).any() else float("nan")
    evidence: dict[str, float] = {}
    scores = [(stats["max_variance_loss"], th.dynamics_variance_loss)] if flagged.any() else []
    for j in np.flatnonzero(flagged):
        evidence[f"{names[j]}:variance_loss"] = float(loss[j])
        evidence[f"{names[j]}:response_loss"] = float(response[j])
        evidence[f"{names[j]}:gain_ratio"] = float(comparison.gain_ratio[j])
        evidence[f"{names[j]}:damping_ratio"] = float(comparison.damping_ratio[j])
    if replay is not None:
        errors = _replay_errors(real, replay, np.rint(extra).astype(int), th)
        stats["max_replay_error"] = float(np.nanmax(errors)) if np.isfinite(errors).any() else float("nan")
        replay_flagged = errors >= th.replay_error
        for j in np.flatnonzero(replay_flagged):
            evidence[f"{names[j]}:replay_error"] = float(errors[j])
        if replay_flagged.any():
            scores.append((stats["max_replay_error"], th.replay_error))
        flagged |= replay_flagged
    if not flagged.any():
        return None, stats, set()
    gains = [evidence[k] for k in evidence if k.endswith(":gain_ratio")]
    detail = f"; output gain real/sim {min(gains):.2f}-{max(gains):.2f}" if gains else ""
    finding = Finding(
        "dynamics_mismatch",
        tuple(names[j] for j in np.flatnonzero(flagged)),
        max(_severity(v, t) for v, t in scores),
        evidence,
        f"{int(flagged.sum())} joints respond differently to the same outputs{detail}",
    )
    return finding, stats, set(np.flatnonzero(flagged).tolist())


def _replay_errors(real: _Channels, replay: StepLog, extra_delay: np.ndarray, th: DiagnosisThresholds) -> np.ndarray:
    """Per joint RMS(real - replay) / std(real) over the first `replay_steps` steps, offset and delay removed."""
    q_replay = replay.group("joint_angles")
    q_real = real.blocks["joint_angles"]
    order = np.argsort(replay.step_id, kind="stable")
    replay_ids = replay.step_id[order]
    steps = real.log.step_id[: th.replay_steps]
    errors = np.full(q_real.shape[1], np.nan)
    for j in range(q_real.shape[1]):
        # the real joint at step t did what the replayed one did at t - (its extra delay)
        wanted = steps - int(extra_delay[j])
        at = np.clip(np.searchsorted(replay_ids, wanted), 0, replay_ids.size - 1)
        found = replay_ids[at] == wanted
        diff = q_real[: steps.size, j][found] - q_replay[order[at[found]], j]
        ok = np.isfinite(diff)
        if ok.sum() >= 10:
            centred = diff[ok] - np.median(diff[ok])
            errors[j] = math.sqrt(float(np.mean(centred**2))) / _spread(q_real[: steps.size, j][found][ok], 1e-2)
    return errors


# --------------------------------------------------------------------------------------------------- 5. sensors


def _detect_observation(
    real: _Channels,
    sim: _Channels,
    comparison: _Comparison | None,
    excluded_joints: set[int],
    th: DiagnosisThresholds,
    skipped: dict[str, str],
) -> tuple[Finding | None, dict]:
    output_z = None
    if (
        "output" in real.blocks
        and "output" in sim.blocks
        and real.blocks["output"].shape[1] == sim.blocks["output"].shape[1]
    ):
        output_z = _w1_z(real.blocks["output"], sim.blocks["output"], SCALE_FLOORS["output"])
        if not np.isfinite(output_z).any():
            output_z = None
            skipped["observation_mismatch:command_gate"] = "no finite output in a log: commanded motion not compared"
    else:
        skipped["observation_mismatch:command_gate"] = "no common output group: commanded motion not compared"
    stats = {"max_w1_z": 0.0, "max_ks": 0.0}
    if output_z is not None:
        stats["max_output_w1_z"] = float(np.nanmax(output_z))
    offsets = None
    if comparison is not None and comparison.comparable.any():
        offsets = np.where(comparison.comparable, comparison.angle_offset_rad, np.nan)
        offsets[sorted(excluded_joints)] = np.nan
        stats["max_abs_angle_offset_rad"] = float(np.nanmax(np.abs(offsets))) if np.isfinite(offsets).any() else 0.0
    evidence: dict[str, float] = {}
    channels: list[str] = []
    scores: list[tuple[float, float]] = []
    ungated: list[str] = []
    empty: list[str] = []
    for group in _OBSERVATION_GROUPS:
        if (
            group not in real.blocks
            or group not in sim.blocks
            or real.blocks[group].shape[1] != sim.blocks[group].shape[1]
        ):
            continue
        r, s = real.blocks[group], sim.blocks[group]
        z, ks = _w1_z(r, s, SCALE_FLOORS[group]), _ks(r, s)
        joint_level = group in JOINT_GROUPS
        for c, name in enumerate(real.names(group)):
            if joint_level and c in excluded_joints:
                continue
            if not np.isfinite(z[c]):
                empty.append(name)
                continue
            offset = offsets[c] if offsets is not None and group == "joint_angles" else float("nan")
            shifted = bool(abs(offset) >= th.angle_offset_rad)
            gate = output_z[c] if joint_level and output_z is not None else None
            if gate is None and output_z is not None:
                gate = float(np.nanmedian(output_z))
            marginal = False
            if gate is not None and not gate < th.command_match:  # NaN: this joint's motion is unknown
                ungated.append(name)
            else:
                stats["max_w1_z"] = max(stats["max_w1_z"], float(z[c]))
                stats["max_ks"] = max(stats["max_ks"], float(ks[c]))
                marginal = bool(z[c] >= th.observation_w1 and ks[c] >= th.observation_ks)
            if not (marginal or shifted):
                continue
            channels.append(name)
            evidence[f"{name}:w1_z"] = float(z[c])
            evidence[f"{name}:ks"] = float(ks[c])
            evidence[f"{name}:median_shift"] = float(np.nanmedian(r[:, c]) - np.nanmedian(s[:, c]))
            floor = SCALE_FLOORS[group]
            evidence[f"{name}:spread_ratio"] = _spread(r[:, c], floor) / _spread(s[:, c], floor)
            if marginal:
                scores.append((min(z[c] / th.observation_w1, ks[c] / th.observation_ks), 1.0))
            if shifted:
                evidence[f"{name}:offset_rad"] = float(offset)
                scores.append((abs(offset), th.angle_offset_rad))
    if empty:
        skipped["observation_mismatch:no_data"] = (
            f"{len(empty)} channels have fewer than 2 finite values in a log: " + ", ".join(empty[:6])
        )
    if ungated:
        skipped["observation_mismatch:channels"] = (
            f"{len(ungated)} channels' distributions not judged: their commanded motion differs "
            f"(output W1/σ >= {th.command_match})"
        )
    if not channels:
        return None, stats
    finding = Finding(
        "observation_mismatch",
        tuple(channels),
        max(_severity(v, t) for v, t in scores),
        evidence,
        f"{len(channels)} sensor channels read differently while the commanded motion matches: "
        + ", ".join(channels[:6]),
    )
    return finding, stats


def _w1_z(r: np.ndarray, s: np.ndarray, floor: float) -> np.ndarray:
    """W1(real_c, sim_c) / max(σ_sim_c, floor) per column (NaN where a side has fewer than 2 finite values)."""
    out = np.full(r.shape[1], np.nan)
    for c in range(r.shape[1]):
        x, y = _finite(r[:, c]), _finite(s[:, c])
        if x.size >= 2 and y.size >= 2:
            out[c] = float(wasserstein_1d(x, y)) / _spread(y, floor)
    return out


def _ks(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = np.full(r.shape[1], np.nan)
    for c in range(r.shape[1]):
        x, y = _finite(r[:, c]), _finite(s[:, c])
        if x.size >= 2 and y.size >= 2:
            out[c] = float(ks_statistic(x, y).statistic)
    return out


# --------------------------------------------------------------------------------------------------- 6. policy


def _detect_overconfident(real: _Channels, sim: _Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict]:
    r, s = real.blocks["output"], sim.blocks["output"]
    floor = SCALE_FLOORS["output"]
    delta = np.array([math.log(_spread(r[:, c], floor) / _spread(s[:, c], floor)) for c in range(r.shape[1])])
    drop = -float(np.median(delta))
    stats = {"median_entropy_drop_nats": drop, "max_entropy_drop_nats": -float(np.min(delta))}
    if drop < th.entropy_drop_nats:
        return None, stats
    names = real.names("output")
    collapsed = np.flatnonzero(-delta >= th.entropy_drop_nats)
    evidence = {"median_entropy_drop_nats": drop, "collapsed_fraction": collapsed.size / delta.size}
    evidence |= {f"{names[c]}:entropy_change_nats": float(delta[c]) for c in collapsed}
    finding = Finding(
        "overconfident_policy",
        tuple(names[c] for c in collapsed),
        _severity(drop, th.entropy_drop_nats),
        evidence,
        f"the action distribution collapses on the robot: output entropy {-drop:+.2f} nats per joint (median), "
        f"std ×{math.exp(-drop):.2f}; {collapsed.size}/{delta.size} joints",
    )
    return finding, stats


# --------------------------------------------------------------------------------------------------- entry point


def _check_inputs(real: StepLog, sim: StepLog, replay: StepLog | None, th: DiagnosisThresholds) -> None:
    for name, log in (("real", real), ("sim", sim), ("replay", replay)):
        if log is None:
            continue
        if not isinstance(log, StepLog):
            raise DiagnosisError(f"{name} must be a StepLog, got {type(log).__name__}")
        if name != "replay" and len(log) < th.min_steps:
            raise DiagnosisError(f"{name} log has {len(log)} steps; diagnosis needs >= {th.min_steps} (min_steps)")
    for group in JOINT_GROUPS:
        if group in real.groups and group in sim.groups:
            wr, ws = real.group(group).shape[1], sim.group(group).shape[1]
            if wr != ws:
                raise DiagnosisError(f"{group} has {wr} joints in the real log but {ws} in the sim log")
    if real.joint_names is not None and sim.joint_names is not None and real.joint_names != sim.joint_names:
        raise DiagnosisError(
            f"the logs name different joints (or orders): real {real.joint_names} vs sim {sim.joint_names}"
        )
    if not set(real.groups) & set(sim.groups):
        raise DiagnosisError(f"no common channel group: real has {list(real.groups)}, sim has {list(sim.groups)}")
    if replay is not None:
        if "joint_angles" not in replay.groups or "joint_angles" not in real.groups:
            raise DiagnosisError(f"replay and real logs need joint_angles (replay has {list(replay.groups)})")
        wp, wr = replay.group("joint_angles").shape[1], real.group("joint_angles").shape[1]
        if wp != wr:
            raise DiagnosisError(f"replay has {wp} joints, the real log {wr}")


def _without_empty_groups(log: StepLog, side: str, skipped: dict[str, str]) -> StepLog:
    """`log` less its zero-width groups (e.g. `command: []` of a policy without commands): they hold no channel."""
    empty = [name for name, block in log.groups.items() if block.shape[1] == 0]
    if not empty:
        return log
    skipped[f"empty_groups:{side}"] = f"{', '.join(empty)}: no value in the {side} log (0 wide), treated as absent"
    groups = {name: block for name, block in log.groups.items() if name not in empty}
    return StepLog(log.step_id, log.t_us, groups, log.joint_names, log.source)


def diagnose(
    real: StepLog,
    sim: StepLog,
    *,
    replay: StepLog | None = None,
    thresholds: DiagnosisThresholds | None = None,
) -> Diagnosis:
    """Name what differs between a real and a sim log of the same setup, with evidence; see the module docstring.

    `replay`: optional, the real log's outputs replayed open-loop in simulation from its first state. Raises
    `DiagnosisError` for logs that cannot be compared (too short, different joints, nothing in common); detectors
    that lack the groups they need are listed in `Diagnosis.skipped` with the reason.
    """
    th = thresholds if thresholds is not None else DiagnosisThresholds()
    skipped: dict[str, str] = {}
    if isinstance(real, StepLog) and isinstance(sim, StepLog):
        real, sim = _without_empty_groups(real, "real", skipped), _without_empty_groups(sim, "sim", skipped)
    _check_inputs(real, sim, replay, th)
    real_ch, sim_ch = _Channels.of(real), _Channels.of(sim)
    findings: list[Finding] = []
    statistics: dict[str, dict[str, float]] = {}
    corrections: dict[str, str] = {}

    for kind, detect in (
        ("swapped_channels", _detect_swaps),
        ("misscaled_channels", _detect_scale),
        ("sensor_noise", _detect_noise),
    ):
        finding, statistics[kind], fixed = detect(real_ch, sim_ch, th)
        corrections |= fixed
        findings += [finding] if finding is not None else []

    joint_groups = ("joint_angles", "output")
    models = dense = None
    if all(g in real_ch.blocks and g in sim_ch.blocks for g in joint_groups):
        if real_ch.blocks["joint_angles"].shape[1] != real_ch.blocks["output"].shape[1]:
            skipped["dynamics_mismatch"] = "joint_angles and output have different widths"
        else:
            try:
                velocity = _velocity_source(real, sim)
                dense = (_dense(real_ch, velocity), _dense(sim_ch, velocity))
            except DiagnosisError as err:
                skipped["dynamics_mismatch"] = str(err)
            else:
                models = (
                    _response_model(dense[0], th.max_delay_steps, velocity),
                    _response_model(dense[1], th.max_delay_steps, velocity),
                )
    else:
        skipped["dynamics_mismatch"] = f"needs {list(joint_groups)} in both logs"
    if models is None:
        skipped["temporal_mismatch:delay"] = skipped["dynamics_mismatch"]

    finding, statistics["temporal_mismatch"], loop = _detect_temporal(real_ch, sim_ch, models, dense, th, skipped)
    findings += [finding] if finding is not None else []

    excluded: set[int] = set()
    comparison = None
    if models is not None and dense is not None:
        comparison, excitation = _compare_models(models, dense, th, loop)
        finding, statistics["dynamics_mismatch"], excluded = _detect_dynamics(
            real_ch, models, dense, comparison, excitation, replay, th, skipped
        )
        findings += [finding] if finding is not None else []

    finding, statistics["observation_mismatch"] = _detect_observation(
        real_ch, sim_ch, comparison, excluded, th, skipped
    )
    findings += [finding] if finding is not None else []

    if "output" in real_ch.blocks and "output" in sim_ch.blocks:
        finding, statistics["overconfident_policy"] = _detect_overconfident(real_ch, sim_ch, th)
        findings += [finding] if finding is not None else []
    else:
        skipped["overconfident_policy"] = "needs the output group in both logs"

    findings.sort(key=lambda f: (f.kind not in _STRUCTURAL, -f.severity, FINDING_KINDS.index(f.kind)))
    return Diagnosis(
        findings=tuple(findings),
        statistics=MappingProxyType({k: MappingProxyType(v) for k, v in statistics.items()}),
        skipped=MappingProxyType(skipped),
        corrections=MappingProxyType(corrections),
        thresholds=th,
    )
