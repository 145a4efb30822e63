"""Detector 4, timing: control-period jitter and the loop delay (observation or actuation)."""

import numpy as np

from ksim_entropy.bridge.diagnose.core import Channels, DiagnosisThresholds, Finding, severity_of
from ksim_entropy.bridge.diagnose.delay import loop_delays
from ksim_entropy.bridge.diagnose.noise import response_loss
from ksim_entropy.bridge.diagnose.response import Dense, ResponseModel
from ksim_entropy.bridge.metrics import cross_correlation_lag
from ksim_entropy.formats.schema import StepLog

_LATE_FACTOR = 1.5  # an interval longer than this many nominal periods is late (a missed tick or an overrun)


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


def detect_temporal(
    real: Channels,
    sim: Channels,
    models: tuple[ResponseModel, ResponseModel] | None,
    dense: tuple[Dense, Dense] | None,
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
        delays, gains, kernels = loop_delays(dense, models, th)
        extra = delays - models[1].delay_steps
        moved = np.isfinite(extra) & (extra != 0)
        stats["max_abs_extra_delay_steps"] = float(np.max(np.abs(extra[moved]))) if moved.any() else 0.0
        stats["max_delay_r2_gain"] = float(np.max(gains[moved])) if moved.any() else 0.0
        found = moved & (gains >= th.delay_min_r2_gain)
        # confirmed by the angle's response to past outputs (FIR, unbiased by white sensor noise, which biases the
        # velocity-change regression): the sim's FIR must fit the real angle better with the outputs shifted
        for j in np.flatnonzero(found & (extra > 0)):
            found[j] = response_loss(dense, j, float(extra[j])) < response_loss(dense, j)
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
    severity = max(severity_of(value, threshold) for value, threshold in flagged.values())
    finding = Finding("temporal_mismatch", tuple(dict.fromkeys(channels)), severity, evidence, "; ".join(parts))
    return finding, stats, loop


def _xcorr_lags(dense: tuple[Dense, Dense], max_lag: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per joint lag (steps) of the joint angle behind the output, real and sim; None where undefined."""
    lags = []
    for data in dense:
        ok = np.isfinite(data.u).all(axis=1) & np.isfinite(data.q).all(axis=1)
        u, q = data.u[ok], data.q[ok]
        if u.shape[0] < 2 * max_lag + 3 or (np.std(u, axis=0) == 0).any() or (np.std(q, axis=0) == 0).any():
            return None
        lags.append(np.asarray(cross_correlation_lag(u, q, max_lag=max_lag).lag_samples))
    return lags[0], lags[1]
