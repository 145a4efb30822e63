"""Detector 3, sensor noise: white-noise std of each sensor channel, real against sim."""

import math

import numpy as np

from ksim_entropy.bridge.diagnose.core import (
    MAX_SPAN_FACTOR,
    NOISE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    finite_values,
    severity_of,
)
from ksim_entropy.bridge.diagnose.response import Dense, least_squares_fit
from ksim_entropy.formats.schema import CHANNEL_GROUPS

_FIR_LAGS = 15  # output lags of the input→output (FIR) model of a joint angle: the K-Bot's PD response settles in them

_NOISE_GROUPS = ("joint_angles", "projected_g", "accel", "gyro")  # joint_vels: see detector 3 in the docstring


def _nugget(x: np.ndarray) -> float:
    """White-noise variance of a series (rows in order): γ0 less its extrapolation from lags 1 and 2, 2γ1 - γ2.

    A signal smooth at the sampling rate has γ0 ≈ 2γ1 - γ2; white noise adds its variance to γ0 only. NaN when
    fewer than 20 finite pairs.
    """
    finite = finite_values(x)
    if finite.size < 20:
        return math.nan
    x = x - float(np.mean(finite))
    gammas = []
    for lag in (0, 1, 2):
        products = finite_values(x[lag:] * x[: x.size - lag])
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
        out[t] = y - x @ least_squares_fit(x, y)[0]
    return out


def response_loss(dense: tuple[Dense, Dense], joint: int, extra_delay: float = 0.0) -> float:
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
    _, rss_own, tss = least_squares_fit(xr, yr)
    prediction = xr[:, :-1] @ least_squares_fit(xs, ys)[0][:-1]
    rss_cross = float(np.sum((yr - prediction - np.mean(yr - prediction)) ** 2))
    return (rss_cross - rss_own) / max(tss - rss_own, 1e-300)


def _by_step(ch: Channels, block: np.ndarray) -> np.ndarray | None:
    """`block` on the step-id grid (first row of each id; NaN rows for lost steps); None when too sparse."""
    ids, rows = np.unique(ch.log.step_id, return_index=True)
    span = int(ids[-1] - ids[0]) + 1 if ids.size else 0
    if span > MAX_SPAN_FACTOR * len(rows) + 100:
        return None
    out = np.full((span, block.shape[1]), np.nan)
    out[ids - ids[0]] = block[rows]
    return out


def _noise_std(ch: Channels, group: str, c: int) -> float:
    """White-noise std of one channel: of the joint angle less its FIR model when the log has outputs."""
    x = _by_step(ch, ch.blocks[group][:, c : c + 1])
    if x is None:
        return math.nan
    x = x[:, 0]
    if group == "joint_angles" and "output" in ch.blocks and ch.blocks["output"].shape == ch.blocks[group].shape:
        x = _fir_residual(x, _by_step(ch, ch.blocks["output"][:, c : c + 1])[:, 0])
    return math.sqrt(max(_nugget(x), 0.0))


def detect_noise(real: Channels, sim: Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    """Detector 3: sensor channels whose white-noise std differs; the finding, statistics and corrections."""
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
            quiet_values = finite_values(quiet.blocks[group][:, c])  # a real sensor always has noise: constant is stuck
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
        severity_of(max(ratios), th.noise_std_ratio),
        evidence,
        "; ".join(parts) + f"; noise std ratio up to {max(ratios):.3g}: match the sensor noise in simulation",
    )
    return finding, stats, corrections
