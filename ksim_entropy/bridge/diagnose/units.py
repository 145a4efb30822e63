"""Detector 2, units: mis-scaled channels (a real/sim factor that is a common unit error)."""

import math

import numpy as np

from ksim_entropy.bridge.diagnose.core import (
    SCALE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    finite_values,
    quantiles_of,
    robust_spread,
    severity_of,
    spread_of,
)
from ksim_entropy.constants import STANDARD_GRAVITY_MPS2

_QUANTILES = np.linspace(0.01, 0.99, 99)

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


def _unit_factor(k: float, tolerance: float) -> tuple[float, str] | None:
    """The known unit factor (and its meaning) within `tolerance` of k, if any."""
    for factor, name in _UNIT_FACTORS:
        if abs(math.log(k / factor)) <= math.log(tolerance):
            return factor, name
    return None


def _scale_fits(r: np.ndarray, s: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: k of Q_real ≈ k·Q_sim through the origin, and the fit's RMS residual over the real spread."""
    qr, qs = quantiles_of(r, _QUANTILES), quantiles_of(s, _QUANTILES)
    k = np.full(r.shape[1], np.nan)
    residual = np.full(r.shape[1], np.inf)
    for c in range(r.shape[1]):
        norm = float(np.sum(qs[c] ** 2))
        if not np.isfinite(qr[c]).all() or not np.isfinite(qs[c]).all() or norm <= (floor * 1e-3) ** 2:
            continue
        k[c] = float(np.sum(qr[c] * qs[c])) / norm
        if k[c] > 0:
            rms = math.sqrt(float(np.mean((qr[c] - k[c] * qs[c]) ** 2)))
            residual[c] = rms / spread_of(r[:, c], k[c] * floor)
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


def _central_difference(ch: Channels) -> np.ndarray:
    """q_{t+1} - q_{t-1} where the three rows are consecutive step ids, else NaN (rad per two steps)."""
    q = ch.blocks["joint_angles"]
    out = np.full(q.shape, np.nan)
    ids = ch.log.step_id
    ok = (ids[2:] - ids[1:-1] == 1) & (ids[1:-1] - ids[:-2] == 1)
    out[1:-1][ok] = (q[2:] - q[:-2])[ok]
    return out


_SMOOTH_SLOPE_SPREAD = 1.5  # a joint's v-on-Δq slope this far from the reference log's median: not smooth at its rate


def _sibling_ratio(group: str, real: Channels, sim: Channels) -> np.ndarray | None:
    """Per channel of `group`, real/sim ratio of its relation to a physically tied channel of the same log.

    joint_angles ↔ output (a PD joint tracks its target: slope ≈ 1), joint_vels ↔ central difference of the joint
    angles (v ≈ Δq / 2T, whatever the period T), accel ↔ projected_g (mean |a| ≈ |g| unless the robot is in free
    fall). A unit error multiplies the ratio by its factor; a change of motion leaves it at 1. None: no sibling.
    """

    def relation(ch: Channels) -> np.ndarray | None:
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
            norms = [finite_values(np.linalg.norm(blocks[g], axis=1)) for g in (group, other)]
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
    x = finite_values(x)
    return x.size > 0 and abs(float(np.median(x))) >= 2.0 * robust_spread(x, floor)


_SCALE_ORDER = ("joint_angles", "output", "joint_vels", "projected_g", "accel", "gyro", "command")


def detect_scale(real: Channels, sim: Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    """Detector 2: channels off by a common unit factor; the finding, statistics and corrections made to real."""
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
        severity_of(largest, min_log),
        evidence,
        f"{len(channels)} real channels scaled against sim ({'; '.join(sorted(units))}): " + ", ".join(channels[:6]),
    )
    return finding, stats, corrections
