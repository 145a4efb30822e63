"""A log's joint response model (velocity change on outputs, position and velocity feedback)."""

from dataclasses import dataclass

import numpy as np

from ksim_entropy.bridge.diagnose.core import MAX_SPAN_FACTOR, Channels, DiagnosisError
from ksim_entropy.formats.schema import StepLog


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
class Dense:
    """Joint angles, velocities and outputs indexed by step id (rows of missing step ids are NaN)."""

    q: np.ndarray
    v: np.ndarray
    u: np.ndarray
    step0: int


def dense_of(ch: Channels, velocity: str) -> Dense:
    """Joint arrays by step id, velocities measured ("joint_vels") or "differences" (backward, median t_us period).

    Both logs of a comparison must use the same velocity source: the two are not the same signal.
    """
    ids = ch.log.step_id
    _, first = np.unique(ids, return_index=True)
    rows = np.sort(first)
    ids = ids[rows]
    step0 = int(ids.min())
    span = int(ids.max()) - step0 + 1
    if span > MAX_SPAN_FACTOR * len(rows) + 100:
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
    return Dense(q, v, dense(ch.blocks["output"]), step0)


def design_matrix(data: Dense, joint: int, delay: int, max_delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows t = max_delay .. T-2 (same rows for every delay) of [u_{t-d}, q_t, v_t, 1] and v_{t+1} - v_t."""
    n = data.q.shape[0]
    t = np.arange(max_delay, n - 1)
    x = np.column_stack([data.u[t - delay, joint], data.q[t, joint], data.v[t, joint], np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    return x[ok], y[ok]


def least_squares_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Coefficients, RSS and TSS."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef, float(np.sum((y - x @ coef) ** 2)), float(np.sum((y - y.mean()) ** 2))


def response_model(data: Dense, max_delay: int, velocity: str) -> ResponseModel:
    """Fit the response model at every delay 0..max_delay and keep each joint's best delay."""
    joints = data.q.shape[1]
    r2 = np.full((max_delay + 1, joints), np.nan)
    coefs = np.full((max_delay + 1, joints, 4), np.nan)
    counts = np.zeros((max_delay + 1, joints), dtype=int)
    rss_all = np.full((max_delay + 1, joints), np.nan)
    for j in range(joints):
        for d in range(max_delay + 1):
            x, y = design_matrix(data, j, d, max_delay)
            if y.size < 20:
                continue
            coef, rss, tss = least_squares_fit(x, y)
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


def velocity_source(*logs: StepLog) -> str:
    """Measured joint velocities when every log has them, else backward differences."""
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
    velocity = velocity_source(log) if velocity is None else velocity
    if velocity not in ("joint_vels", "differences") or (velocity == "joint_vels" and "joint_vels" not in log.groups):
        raise DiagnosisError(
            f"velocity must be 'differences' or, for a log with joint_vels, 'joint_vels'; got {velocity!r}"
        )
    return response_model(dense_of(Channels.of(log), velocity), max_delay_steps, velocity)


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
    data = dense_of(Channels.of(log), model.velocity)
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
