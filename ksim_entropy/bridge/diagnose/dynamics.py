"""Detector 5, dynamics: joints whose response to the outputs differs between real and sim."""

import math
from dataclasses import dataclass

import numpy as np

from ksim_entropy.bridge.diagnose.core import (
    SCALE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    severity_of,
    spread_of,
)
from ksim_entropy.bridge.diagnose.delay import kernel_design
from ksim_entropy.bridge.diagnose.noise import response_loss
from ksim_entropy.bridge.diagnose.response import Dense, ResponseModel, design_matrix, least_squares_fit
from ksim_entropy.formats.schema import StepLog


@dataclass(frozen=True)
class Comparison:
    """Per joint: compared at all, variance lost with the sim's slopes, and the angle offset the intercepts imply."""

    comparable: np.ndarray
    variance_loss: np.ndarray
    angle_offset_rad: np.ndarray
    gain_ratio: np.ndarray  # real/sim output gain (own fit over the sim's)
    damping_ratio: np.ndarray  # real/sim velocity feedback
    latency_steps: np.ndarray  # the real's delay the comparison used where it is later than the sim's, else NaN
    unresolved: np.ndarray  # a loop latency was found on other joints; this one settles too fast to time it


def compare_models(
    models: tuple[ResponseModel, ResponseModel],
    dense: tuple[Dense, Dense],
    th: DiagnosisThresholds,
    loop: tuple[np.ndarray, list] | None = None,
) -> tuple[Comparison, np.ndarray]:
    """The sim's slopes on the real data, the real log keeping its own intercept c*.

    A constant angle reading offset δ (q_read = q + δ) leaves every slope and moves the intercept by -g_q·δ, so
    ``δ = -(c* - c_sim) / g_q,sim``. A joint the timing detector found late (`loop`) is compared with the sim's
    kernel (`_Kernel`) fed the real outputs at the real's fractional delay, so a sub-step latency is not read as
    physics. Also returns the real/sim output spread per joint (the operating regime).
    """
    model_r, model_s = models
    joints = model_r.r2.size
    floor = SCALE_FLOORS["output"]
    excitation = np.array(
        [spread_of(dense[0].u[:, j], floor) / spread_of(dense[1].u[:, j], floor) for j in range(joints)]
    )
    regime = np.abs(np.log(excitation)) <= math.log(th.excitation_ratio)
    comparable = (model_r.r2 >= th.min_r2) & (model_s.r2 >= th.min_r2) & regime
    loss, offset, gain, damping, latency = (np.full(joints, np.nan) for _ in range(5))
    for j in np.flatnonzero(comparable):
        kernel = loop[1][j] if loop is not None and np.isfinite(loop[0][j]) else None
        if kernel is not None:
            x, y = kernel_design(dense[0], j, kernel, float(loop[0][j]), th.max_delay_steps)
            sim_coef = least_squares_fit(*kernel_design(dense[1], j, kernel, float(kernel.delay), th.max_delay_steps))[
                0
            ]
            latency[j] = loop[0][j]
        else:
            x, y = design_matrix(dense[0], j, int(model_r.delay_steps[j]), th.max_delay_steps)
            sim_coef = model_s.coef[j]
        own, rss_own, tss = least_squares_fit(x, y)
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
    return Comparison(comparable, loss, offset, gain, damping, latency, unresolved), excitation


def detect_dynamics(
    real: Channels,
    models: tuple[ResponseModel, ResponseModel],
    dense: tuple[Dense, Dense],
    comparison: Comparison,
    excitation: np.ndarray,
    replay: StepLog | None,
    th: DiagnosisThresholds,
    skipped: dict[str, str],
) -> tuple[Finding | None, dict, set[int]]:
    """Detector 5: joints whose response to the outputs differs; the finding, statistics, flagged joints."""
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
    response = np.array([response_loss(dense, j, extra[j]) if flagged[j] else np.nan for j in range(flagged.size)])
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
        max(severity_of(v, t) for v, t in scores),
        evidence,
        f"{int(flagged.sum())} joints respond differently to the same outputs{detail}",
    )
    return finding, stats, set(np.flatnonzero(flagged).tolist())


def _replay_errors(real: Channels, replay: StepLog, extra_delay: np.ndarray, th: DiagnosisThresholds) -> np.ndarray:
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
            errors[j] = math.sqrt(float(np.mean(centred**2))) / spread_of(q_real[: steps.size, j][found][ok], 1e-2)
    return errors
