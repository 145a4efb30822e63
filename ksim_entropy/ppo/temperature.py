"""An entropy temperature α for PPO, tuned during training toward a target policy entropy (nats per action dim).

ksim's PPO adds ``−entropy_coef · Σ_dims H`` to the loss with a fixed, jit-static `entropy_coef`. Here α plays that
role but is a traced array, so it changes every update without recompiling, and it is steered toward a target
entropy H̄ (per action dimension) by one of three controllers, run once per PPO update on the mean per-dimension
policy entropy H of that update:

- ``"damped"`` (default), after ALF's `EntropyTargetAlgorithm` (HorizonRobotics/alf, the on-policy anchor, see
  ../shared/docs/sim2real-anchors.md §4.2): log α moves by a step `rate` toward the side that corrects the error,
  ``log α += rate · sign(H̄ − H_avg)``. ALF shrinks the step at each sign change of the error; here that is
  `rate_decay` (×, floored at `min_rate`; reset to `initial_rate` further than `fast_margin` nats/dim from the
  target), default 1.0, i.e. a constant ln 2 step. A plain dual gradient oscillates on-policy because the entropy
  answers α with a lag of many updates. Measured on a noisy one-step bandit (tests/test_temperature.py, 32 seeds,
  2000 updates, targets −1.0 and −0.5): with the constant step every seed's mean error over the last 50 updates is
  within 0.052 nats/dim and its largest within 0.134; with ALF-style shrinking (×0.9) the step became small, the
  entropy cycled slower and wider, and 7 of 32 seeds ended with a mean error above 0.1 (worst 0.25). The rule uses
  the sign of the error only, not ALF's trend-weighted step.
- ``"pi"`` (the training config's default): proportional-integral on log α, ``log α = I + kp·e`` with
  ``I += ki·e`` clamped to the bounds (no wind-up past them), e the averaged error H̄ − H (`pi_gains`).
- ``"dual"``: SAC's dual descent (Haarnoja et al., arXiv 1812.05905): minimise ``log α · (H − H̄)`` with Adam
  (`dual_learning_rate`); its Adam moments are part of the state and are checkpointed with it.

`tolerance` (nats/dim, default 0) is a dead band: an averaged entropy within ±tolerance of the target counts as on
target, and outside it the error counts from the band's edge, so α holds rather than drifts. Without it, a policy
whose own gradient keeps the entropy a few hundredths of a nat above the target walks α down onto its floor, where
it stays: measured on the K-Bot stand preset (target −1.5), 359 updates in a row on the 1e-4 floor with the entropy
0.00-0.05 above the target (docs/training.md). A positive α cannot pull such an entropy lower; the band stops it
from trying.

Signed bounds (`min_alpha` ≤ 0, mode ``"pi"``) treat the target as what it is, an equality, whose multiplier may take
either sign: a negative α is an entropy penalty, for a policy whose own gradient keeps raising σ past the target (the
K-Bot stand preset from update ~200 on, docs/training.md). The controller then moves asinh(α / `signed_scale`)
instead of log α: linear in α within about ±`signed_scale` of zero, and log|α| plus a constant beyond, so the same
gains act alike far from zero.

α is clamped to [`min_alpha`, `max_alpha`] (ALF's floor 1e-4; 0.1 is ALF's initial α, ten times the top of the
1e-3…1e-2 range locomotion PPO stacks use, anchors §4.3). Defaults: α₀ = 4e-3 (kbot-joystick's entropy_coef),
H̄ = −1.0 nats/dim (SAC's −dim(A) convention, σ ≈ 0.089 for a Gaussian: anchors §4.4).

Entropies are analytic differential entropies: a Gaussian with std σ has ½·log(2πe) + log σ nats per dimension.
(xax 0.4.4's `Normal.entropy()` returns log(2πe) + log σ, ½·log(2πe) ≈ 1.419 nats too much; use
`gaussian_entropy` for the PPO variables.)
"""

from dataclasses import dataclass, replace
from typing import Literal

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PyTree

from ksim_entropy.constants import HALF_LOG_2PI_E

__all__ = [
    "HALF_LOG_2PI_E",
    "EntropyTemperature",
    "TemperatureMode",
    "TemperatureState",
    "gaussian_entropy",
    "gaussian_entropy_range",
]


TemperatureMode = Literal["pi", "damped", "dual", "fixed"]
MODES: tuple[TemperatureMode, ...] = ("pi", "damped", "dual", "fixed")


def gaussian_entropy(std: ArrayLike) -> Array:
    """Differential entropy (nats) of a Gaussian with standard deviation `std`, elementwise."""
    return HALF_LOG_2PI_E + jnp.log(std)


def gaussian_entropy_range(min_std: float, max_std: float) -> tuple[float, float]:
    """The per-dimension entropies (nats) a Gaussian policy with std clamped to [min_std, max_std] can reach."""
    if not 0.0 < min_std <= max_std:
        raise ValueError(f"need 0 < min_std <= max_std, got {min_std}, {max_std}")
    return HALF_LOG_2PI_E + float(np.log(min_std)), HALF_LOG_2PI_E + float(np.log(max_std))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TemperatureState:
    """The controller's state; all float32 / int32 arrays, saved in checkpoints as is."""

    log_alpha: Array  # () log α; with signed bounds asinh(α / signed_scale), ≈ log(2α / signed_scale) for large α
    rate: Array  # () damped: current step on log α
    last_sign: Array  # () damped: sign of the last error (+1 entropy too low, −1 too high, 0 none yet)
    entropy_avg: Array  # () running average of the per-dimension entropy (nats)
    num_updates: Array  # int32 ()
    opt_state: PyTree  # dual: Adam's state over log α; other modes: ()
    integral: Array  # () pi: the integral part of log α (of asinh(α / signed_scale) with signed bounds)
    target_start: Array  # () where an annealed target starts (nats/dim): the first update's entropy
    bound_updates: Array  # int32 (): updates in a row that ended with α on one of its bounds


@attrs.define(frozen=True, kw_only=True)
class EntropyTemperature:
    """Target-entropy controller for α (see the module doc).

    `entropy_range` (nats/dim), if given, is what the policy's action distribution can reach; a target outside it
    is refused. `min_alpha` ≤ 0 makes the temperature signed (mode "pi" only; `signed_scale` in units of α).
    """

    target_entropy: float = attrs.field(default=-1.0)
    initial_alpha: float = attrs.field(default=4e-3)
    min_alpha: float = attrs.field(default=1e-4)
    max_alpha: float = attrs.field(default=1e-1)
    mode: TemperatureMode = attrs.field(default="damped")
    initial_rate: float = attrs.field(default=float(np.log(2.0)))
    rate_decay: float = attrs.field(default=1.0)
    min_rate: float = attrs.field(default=0.01)
    fast_margin: float = attrs.field(default=1.0)
    averaging: float = attrs.field(default=0.5)
    dual_learning_rate: float = attrs.field(default=0.05)
    pi_gains: tuple[float, float] = attrs.field(default=(2.0, 0.3))
    anneal_updates: int = attrs.field(default=0)
    tolerance: float = attrs.field(default=0.0)
    signed_scale: float = attrs.field(default=1e-3)
    entropy_range: tuple[float, float] | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"temperature mode must be one of {MODES}, got {self.mode!r}")
        values = {k: getattr(self, k) for k in ("target_entropy", "initial_alpha", "min_alpha", "max_alpha")}
        for name, value in values.items():
            if not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if not self.min_alpha < self.max_alpha:
            raise ValueError(
                f"alpha bounds inverted or empty: need min_alpha < max_alpha, got min_alpha={self.min_alpha}, "
                f"max_alpha={self.max_alpha}"
            )
        if self.signed and self.mode not in ("pi", "fixed"):
            raise ValueError(
                f"min_alpha={self.min_alpha} <= 0 (a signed temperature) needs temperature mode 'pi' (or 'fixed'); "
                f"mode {self.mode!r} moves log α and needs 0 < min_alpha"
            )
        if not (np.isfinite(self.signed_scale) and self.signed_scale > 0.0):
            raise ValueError(f"signed_scale must be a finite α > 0, got {self.signed_scale}")
        if not self.min_alpha <= self.initial_alpha <= self.max_alpha:
            raise ValueError(
                f"initial_alpha={self.initial_alpha} is outside [min_alpha, max_alpha] = [{self.min_alpha}, "
                f"{self.max_alpha}]"
            )
        if not 0.0 < self.min_rate <= self.initial_rate:
            raise ValueError(f"need 0 < min_rate <= initial_rate, got {self.min_rate}, {self.initial_rate}")
        if not 0.0 < self.rate_decay <= 1.0:
            raise ValueError(f"rate_decay must be in (0, 1], got {self.rate_decay}")
        if not 0.0 < self.averaging <= 1.0:
            raise ValueError(f"averaging must be in (0, 1], got {self.averaging}")
        if not self.fast_margin > 0.0 or not self.dual_learning_rate > 0.0:
            raise ValueError("fast_margin and dual_learning_rate must be > 0")
        kp, ki = self.pi_gains
        if not (np.isfinite(kp) and np.isfinite(ki) and kp >= 0.0 and ki > 0.0):
            raise ValueError(f"pi_gains (kp, ki) need kp >= 0 and ki > 0, got {self.pi_gains}")
        if isinstance(self.anneal_updates, bool) or not isinstance(self.anneal_updates, int) or self.anneal_updates < 0:
            raise ValueError(f"anneal_updates must be an integer >= 0, got {self.anneal_updates!r}")
        if not (np.isfinite(self.tolerance) and self.tolerance >= 0.0):
            raise ValueError(f"tolerance must be a finite number of nats/dim >= 0, got {self.tolerance}")
        if self.entropy_range is not None:
            low, high = self.entropy_range
            if not low < self.target_entropy < high:
                raise ValueError(
                    f"target entropy {self.target_entropy:.3f} nats/dim is out of reach: the policy's action "
                    f"distribution spans ({low:.3f}, {high:.3f}) nats/dim"
                )

    @property
    def signed(self) -> bool:
        """Whether α may go below zero (an entropy penalty): `min_alpha` <= 0."""
        return self.min_alpha <= 0.0

    def _control(self, alpha: float) -> float:
        """The variable the controller moves for this α: log α, or asinh(α / signed_scale) when signed."""
        return float(np.arcsinh(alpha / self.signed_scale)) if self.signed else float(np.log(alpha))

    @property
    def _optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.dual_learning_rate)

    def initial_state(self) -> TemperatureState:
        log_alpha = jnp.asarray(self._control(self.initial_alpha), dtype=jnp.float32)
        return TemperatureState(
            log_alpha=log_alpha,
            rate=jnp.asarray(self.initial_rate, dtype=jnp.float32),
            last_sign=jnp.zeros((), dtype=jnp.float32),
            entropy_avg=jnp.zeros((), dtype=jnp.float32),
            num_updates=jnp.zeros((), dtype=jnp.int32),
            opt_state=self._optimizer.init(log_alpha) if self.mode == "dual" else (),
            integral=jnp.array(self._control(self.initial_alpha), dtype=jnp.float32),  # own buffer: donated
            target_start=jnp.asarray(self.target_entropy, dtype=jnp.float32),
            bound_updates=jnp.zeros((), dtype=jnp.int32),
        )

    def adopt(self, saved: TemperatureState, saved_min_alpha: float) -> TemperatureState:
        """A state saved by a temperature whose lower bound was `saved_min_alpha`, in this temperature's terms.

        The state holds the controller's variable, log α or asinh(α / signed_scale) (signed), not α itself: resumed
        under the other form, α = 1e-3 saved as log α = −6.9 would read as α = 1e-3·sinh(−6.9) ≈ −0.5. When the forms
        differ, α is carried over (clipped to this temperature's bounds) and the PI integral restarts at it.
        """
        if (saved_min_alpha <= 0.0) == self.signed:
            return saved
        control = float(saved.log_alpha)
        alpha = self.signed_scale * np.sinh(control) if saved_min_alpha <= 0.0 else np.exp(control)
        alpha = float(np.clip(alpha, self.min_alpha, self.max_alpha))
        control = jnp.asarray(self._control(alpha), dtype=jnp.float32)
        return replace(saved, log_alpha=control, integral=jnp.array(control))

    def alpha(self, state: TemperatureState) -> Array:
        if self.signed:
            return self.signed_scale * jnp.sinh(state.log_alpha)
        return jnp.exp(state.log_alpha)

    def target(self, state: TemperatureState) -> Array:
        """The target entropy (nats/dim) at this state's update.

        `target_entropy`, or with `anneal_updates` > 0 a straight line from the first update's entropy to
        `target_entropy` over that many updates.
        """
        final = jnp.float32(self.target_entropy)
        if self.anneal_updates == 0:
            return final
        progress = jnp.minimum(state.num_updates.astype(jnp.float32) / self.anneal_updates, 1.0)
        return state.target_start + (final - state.target_start) * progress

    def _banded(self, error: Array) -> Array:
        """An entropy error (nats/dim) counted from the edge of the ±`tolerance` dead band; zero inside it."""
        return jnp.sign(error) * jnp.maximum(jnp.abs(error) - self.tolerance, 0.0)

    def update(self, state: TemperatureState, entropy_per_dim: ArrayLike) -> TemperatureState:
        """One controller step on the mean per-dimension policy entropy (nats) of the last PPO update."""
        h = jnp.asarray(entropy_per_dim, dtype=jnp.float32)
        first = state.num_updates == 0
        target_start = jnp.where(first, h, state.target_start) if self.anneal_updates else state.target_start
        state = replace(state, target_start=target_start)
        target = self.target(replace(state, num_updates=state.num_updates + 1))
        avg = jnp.where(first, h, (1.0 - self.averaging) * state.entropy_avg + self.averaging * h)
        error = self._banded(target - avg)  # > 0: entropy too low, raise α
        lo, hi = self._control(self.min_alpha), self._control(self.max_alpha)
        opt_state, rate, integral = state.opt_state, state.rate, state.integral
        sign = jnp.sign(error)
        if self.mode == "dual":
            grad = self._banded(h - target)  # d/d log α of log α · (H − H̄)
            step, opt_state = self._optimizer.update(grad, state.opt_state, state.log_alpha)
            log_alpha = jnp.clip(optax.apply_updates(state.log_alpha, step), lo, hi)
        elif self.mode == "pi":
            kp, ki = self.pi_gains
            integral = jnp.clip(state.integral + ki * error, lo, hi)  # clamped: no wind-up past a bound
            log_alpha = jnp.clip(integral + kp * error, lo, hi)
        elif self.mode == "fixed":
            log_alpha = state.log_alpha
        else:
            crossed = (sign * state.last_sign) < 0
            rate = jnp.where(crossed, jnp.maximum(state.rate * self.rate_decay, self.min_rate), state.rate)
            rate = jnp.where(jnp.abs(error) > self.fast_margin, jnp.float32(self.initial_rate), rate)
            log_alpha = jnp.clip(state.log_alpha + rate * sign, lo, hi)
        on_bound = (log_alpha <= lo + 1e-6) | (log_alpha >= hi - 1e-6)
        return TemperatureState(
            log_alpha=log_alpha.astype(jnp.float32),
            rate=rate.astype(jnp.float32),
            last_sign=sign.astype(jnp.float32),
            entropy_avg=avg,
            num_updates=state.num_updates + 1,
            opt_state=opt_state,
            integral=integral.astype(jnp.float32),
            target_start=target_start,
            bound_updates=jnp.where(on_bound & (self.mode != "fixed"), state.bound_updates + 1, 0).astype(jnp.int32),
        )
