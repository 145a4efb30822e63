"""The loop delay of each joint at sub-step resolution (a sim joint's velocity-change kernel, shifted)."""

import math
from dataclasses import dataclass

import numpy as np

from ksim_entropy.bridge.diagnose.core import DiagnosisThresholds
from ksim_entropy.bridge.diagnose.response import Dense, ResponseModel, least_squares_fit

_DELAY_RESOLUTION = 20  # loop latencies searched per control step (1 ms at 50 Hz)

_KERNEL_LAGS = 3  # output lags of a sim joint's velocity-change kernel (its response in and after the step)


@dataclass(frozen=True)
class _Kernel:
    """A sim joint's velocity-change response to its outputs: ``Δv_t = Σ_i k_i·u_{t-d-i} + g_q·q_t + g_v·v_t + c``."""

    delay: int  # the sim's own (whole-step) delay d
    k: np.ndarray  # (_KERNEL_LAGS,)
    beta: float  # decay of the first step's response per step, -log(1 + g_v): shapes a partly held output
    fast: bool  # 1 + g_v <= 0.02: the joint settles within a control step, a sub-step latency is not resolved


def _kernel(data: Dense, joint: int, delay: int, max_delay: int) -> _Kernel | None:
    """The sim joint's kernel at its own delay, by least squares (None: too few rows or no variance)."""
    t = np.arange(max_delay + _KERNEL_LAGS + 1, data.q.shape[0] - 1)
    lags = [data.u[t - delay - i, joint] for i in range(_KERNEL_LAGS)]
    x = np.column_stack([*lags, data.q[t, joint], data.v[t, joint], np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if ok.sum() < 40 or np.sum((y[ok] - y[ok].mean()) ** 2) <= 0:
        return None
    coef = least_squares_fit(x[ok], y[ok])[0]
    decay = 1.0 + coef[_KERNEL_LAGS + 1]
    return _Kernel(delay, coef[:_KERNEL_LAGS], -math.log(min(max(decay, 0.02), 0.999)), bool(decay <= 0.02))


def _delayed_input(data: Dense, joint: int, kernel: _Kernel, delay: float, t: np.ndarray) -> np.ndarray:
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


def kernel_design(
    data: Dense, joint: int, kernel: _Kernel, delay: float, max_delay: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of [z_t, q_t, v_t, 1] and Δv_t, z the kernel's input term at `delay`; the same rows for every delay."""
    t = np.arange(max_delay + _KERNEL_LAGS + 1, data.q.shape[0] - 1)
    x = np.column_stack([_delayed_input(data, joint, kernel, delay, t), data.q[t, joint], data.v[t, joint]])
    x = np.column_stack([x, np.ones(t.size)])
    y = data.v[t + 1, joint] - data.v[t, joint]
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    return x[ok], y[ok]


def loop_delays(
    dense: tuple[Dense, Dense], models: tuple[ResponseModel, ResponseModel], th: DiagnosisThresholds
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
            x, y = kernel_design(dense[0], j, kernel, float(delay), th.max_delay_steps)
            if y.size >= 40:
                _, rss, tss = least_squares_fit(x, y)
                r2[g] = 1.0 - rss / tss if tss > 0 else -np.inf
        if not np.isfinite(r2).any():
            continue
        best = int(np.argmax(r2))
        delays[j] = grid[best]
        gains[j] = r2[best] - r2[kernel.delay * _DELAY_RESOLUTION]
    return delays, gains, kernels
