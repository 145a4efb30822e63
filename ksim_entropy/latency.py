"""Latency as a shift register: a delay in seconds drawn per episode, quantised to steps, optional jitter and hold.

One idea shared by delayed observations (quantised to control steps) and delayed actions (quantised to physics
steps). A `DelayLine` is the per-environment carry; `Latency` is the frozen spec.

Semantics, with step index s = 0 at the episode reset and v_s the value written at step s:

- the episode draws a base delay d uniformly from the integers {round(min_s/step_s), ..., round(max_s/step_s)};
- each step adds a jitter j_s uniform in {0, ..., round(jitter_s/step_s)};
- the value read is v_r with r_s = max(s − d − j_s, r_{s−1}, 0): never older than what was already read (a sensor
  stream does not go back in time);
- with probability `hold_prob` the previous output is repeated instead (a dropped frame / sample-and-hold);
- step 0 writes v_0, the state at the reset (ksim observes the reset state first), so early reads (r = 0) return it;
  the fill given to `init` only fixes the buffer's shape and dtype.

Without jitter and hold the output at step s is exactly v_{max(s − d, 0)}.
"""

import math
from dataclasses import dataclass

import attrs
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ksim_entropy.draws import hashed_uniforms, uniform_int

__all__ = ["DelayLine", "Latency"]


def _non_negative(_: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < math.inf:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be finite and >= 0 (seconds), got {value!r}")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DelayLine:
    """Per-environment shift register (a pytree, so it can live in any ksim carry).

    Two leaves without holds (three with): ksim selects every carry leaf at each reset, each select with
    its own copy of the "done" logic, so the integers share one array and the buffer needs no write index.
    """

    buffer: Array  # (buffer_length, *value_shape): buffer[i] holds v_{s−i}, the value written i steps ago
    counters: Array  # int32 (2,): (age a of the value read last, −1 before the first step; the episode's delay d)
    last_output: Array | None  # value_shape: what was output last, for holds (None without holds)

    @property
    def age(self) -> Array:
        """int32: how many steps old the value read last was (s − r), −1 before the episode's first step."""
        return self.counters[..., 0]

    @property
    def delay(self) -> Array:
        """int32: the episode's base delay d (steps)."""
        return self.counters[..., 1]


@attrs.define(frozen=True, kw_only=True)
class Latency:
    """A delay drawn per episode from [min_s, max_s] seconds, quantised to steps of `step_s` seconds."""

    min_s: float = attrs.field(converter=float, validator=_non_negative)
    max_s: float = attrs.field(converter=float, validator=_non_negative)
    step_s: float = attrs.field(converter=float)
    jitter_s: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    hold_prob: float = attrs.field(default=0.0, converter=float)
    buffer_steps: int | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if not self.step_s > 0.0:
            raise ValueError(f"step_s must be > 0 (the control or physics period, s), got {self.step_s!r}")
        if self.min_s > self.max_s:
            raise ValueError(f"latency range is empty: min_s={self.min_s} > max_s={self.max_s}")
        if self.buffer_steps is not None and (
            isinstance(self.buffer_steps, bool) or not isinstance(self.buffer_steps, int)
        ):
            raise TypeError(f"buffer_steps must be an int (steps) or None, got {self.buffer_steps!r}")
        if not 0.0 <= self.hold_prob < 1.0:
            raise ValueError(f"hold_prob must be in [0, 1), got {self.hold_prob!r}")
        needed = self.max_steps + self.jitter_steps + 1
        if self.buffer_steps is not None and self.buffer_steps < needed:
            raise ValueError(
                f"latency up to {self.max_s + self.jitter_s:g} s is {needed - 1} steps of {self.step_s:g} s, longer "
                f"than the buffer of {self.buffer_steps} steps (needs at least {needed})"
            )

    @property
    def min_steps(self) -> int:
        return round(self.min_s / self.step_s)

    @property
    def max_steps(self) -> int:
        return round(self.max_s / self.step_s)

    @property
    def jitter_steps(self) -> int:
        return round(self.jitter_s / self.step_s)

    @property
    def buffer_length(self) -> int:
        return self.buffer_steps if self.buffer_steps is not None else self.max_steps + self.jitter_steps + 1

    @property
    def draws_at_reset(self) -> int:
        """U(0, 1) variates `init_from_unit` uses: 1 for a delay range, 0 for a fixed delay."""
        return int(self.min_steps != self.max_steps)

    @property
    def draws_per_step(self) -> int:
        """U(0, 1) variates `step_from_unit` uses: 2 with jitter or holds (jitter, hold), else 0."""
        return 2 if self.jitter_steps > 0 or self.hold_prob > 0.0 else 0

    def init(self, value: Array, rng: PRNGKeyArray) -> DelayLine:
        """A fresh line at an episode reset: every slot holds `value`, the state at the reset; the delay drawn."""
        return self.init_from_unit(value, hashed_uniforms(rng, self.draws_at_reset))

    def init_from_unit(self, value: Array, u: Array) -> DelayLine:
        """`init` with the episode's randomness given: `u` holds `draws_at_reset` U(0, 1) variates."""
        value = jnp.asarray(value)
        delay = uniform_int(u[0], self.min_steps, self.max_steps) if self.draws_at_reset else self.min_steps
        # Every carry leaf costs a select (and its own copy of ksim's "done" logic) at each reset: keep the last
        # output only when holds read it back.
        return DelayLine(
            buffer=jnp.broadcast_to(value, (self.buffer_length, *value.shape)),
            counters=jnp.stack([jnp.int32(-1), jnp.asarray(delay, dtype=jnp.int32)]),
            last_output=value if self.hold_prob > 0.0 else None,
        )

    def step_from_unit(self, line: DelayLine, value: Array, u: Array) -> tuple[Array, DelayLine]:
        """Write `value` as v_s and return the delayed output for step s with the updated line.

        `u` holds the step's `draws_per_step` U(0, 1) variates (jitter, hold); callers draw them together with
        their own (`ksim_entropy.draws.hashed_key_and_uniforms`).
        """
        # A shift register: the read age a_s = s − r_s = min(d + j_s, a_{s−1} + 1) (a_{s−1} + 1 ≤ s, so r_s ≥ 0 and
        # r_s ≥ r_{s−1} hold by themselves); a hold keeps r, so the age grows by one (capped: a held value is output
        # from `last_output`, and the next read is at most d + j steps old again).
        n = self.buffer_length
        buffer = jnp.concatenate([jnp.asarray(value, line.buffer.dtype)[None], line.buffer[: n - 1]])
        older = line.age + 1
        jitter = uniform_int(u[0], 0, self.jitter_steps) if self.jitter_steps else 0
        age = jnp.minimum(line.delay + jitter, older)
        if self.hold_prob > 0.0:
            hold = (older > 0) & (u[1] < self.hold_prob)
            age = jnp.where(hold, jnp.minimum(older, n), age)
            out = jnp.where(hold, line.last_output, buffer[jnp.minimum(age, n - 1)])
            return out, DelayLine(buffer=buffer, counters=jnp.stack([age, line.delay]), last_output=out)
        return buffer[age], DelayLine(buffer=buffer, counters=jnp.stack([age, line.delay]), last_output=None)
