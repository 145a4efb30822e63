"""Delayed, noisy observations for ksim: a wrapper that makes any ksim observation look like a real sensor stream.

`DelayedObservation` wraps a ksim `Observation` and, once per control step (each call of ksim's `get_observation`),
runs mjlab's pipeline, in this order:

1. compute: the wrapped observation's value u_s on the current physics state;
2. noise: v_s = u_s + b + n_s, with b a bias drawn once per episode (at carry init) and n_s fresh per-step
   Gaussian + uniform noise (`SensorNoise`);
3. delay: push v_s through a `Latency` delay line and output v_{max(s − d, 0)}, d drawn once per episode (plus
   optional jitter and sample-and-hold, see `ksim_entropy.latency`).

Step s = 0 is the first observation of an episode. In ksim that observation is taken on the reset state itself
(`get_initial_obs_carry` runs on the reset state, then the next `get_observation` sees that same state), so a delay
of d steps shows the reset state for the first d + 1 steps and never anything from the previous episode: ksim
replaces the whole carry on termination. The latency's `step_s` must therefore be the control period (ctrl_dt).

Noise is added before the delay, so a delayed output carries the noise drawn when its value was written (a sensor
sample is noisy when taken, then travels late). The result is stored under the observation's own name in ksim's
observation dict: the policy and the critic both see it. Setting ksim's own `noise` on the wrapper still works
(ksim then adds it after the delay, under ``noisy_<name>``), so a clean delayed critic input plus a noisy actor
input is possible. Setting ksim's `noise` on the *wrapped* observation is rejected: ksim would never apply it.

The wrapped observation may itself be stateful (ksim's `ProjectedGravityObservation` is): its carry is nested in
ours and advanced every step. Its `initial_carry` is computed at reset with no commands, so observations that read
`state.commands` cannot be wrapped (a clear error says so).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import attrs
import jax
import jax.numpy as jnp
import ksim
import numpy as np
import xax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ksim_entropy.draws import hashed_key_and_uniforms, hashed_uniforms, standard_normal, uniforms
from ksim_entropy.latency import DelayLine, Latency

__all__ = ["DelayedObservation", "DelayedObservationCarry", "SensorNoise"]

Magnitude = float | tuple[float, ...]


def _to_magnitude(value: float | Sequence[float]) -> Magnitude:
    """A float stays a float; a per-channel sequence becomes a tuple of floats (hashable: ksim jits on it)."""
    if isinstance(value, str | bytes):
        raise TypeError(f"a noise magnitude must be a float or a sequence of floats, got {value!r}")
    if isinstance(value, Sequence | np.ndarray):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"a per-channel noise magnitude must be a non-empty 1-D sequence, got shape {arr.shape}")
        return tuple(float(v) for v in arr)
    return float(value)


def _check_magnitude(_: object, attribute: attrs.Attribute, value: Magnitude) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"SensorNoise.{attribute.name} must be finite and >= 0, got {value!r}")


@attrs.define(frozen=True, kw_only=True)
class SensorNoise:
    """Additive sensor noise in the observation's physical units.

    Units follow the wrapped observation: rad for joint positions, rad/s for joint velocities and gyros, m/s² for
    accelerometers and ksim's projected gravity (a 9.81 m/s² vector), unitless for normalised quantities. Every
    magnitude is a float (all channels) or one value per channel, broadcast against the observation's shape.

    Attributes:
        gaussian_std: Per-step Gaussian noise standard deviation, N(0, std²) each step.
        uniform_mag: Per-step uniform noise half-width, U(−mag, mag) each step.
        bias_mag: Per-episode bias half-width: one U(−bias_mag, bias_mag) offset per channel, drawn at episode reset
            and added at every step of the episode.
        scale_with_curriculum: If True, all three magnitudes are multiplied by ksim's curriculum level (the
            convention of ksim's own noise classes). Off by default: our curriculum level means something else.

    """

    gaussian_std: Magnitude = attrs.field(default=0.0, converter=_to_magnitude, validator=_check_magnitude)
    uniform_mag: Magnitude = attrs.field(default=0.0, converter=_to_magnitude, validator=_check_magnitude)
    bias_mag: Magnitude = attrs.field(default=0.0, converter=_to_magnitude, validator=_check_magnitude)
    scale_with_curriculum: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @property
    def variance(self) -> np.ndarray:
        """Per-step noise variance, gaussian_std² + uniform_mag²/3 (unit²), per channel or scalar (bias excluded)."""
        return np.asarray(self.gaussian_std) ** 2 + np.asarray(self.uniform_mag) ** 2 / 3.0

    @property
    def std(self) -> np.ndarray:
        """Per-step noise standard deviation, sqrt(`variance`) (unit)."""
        return np.sqrt(self.variance)

    @property
    def bias_variance(self) -> np.ndarray:
        """Variance of the per-episode bias across episodes, bias_mag²/3 (unit²)."""
        return np.asarray(self.bias_mag) ** 2 / 3.0

    def _broadcast(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        mag = np.asarray(getattr(self, name), dtype=np.float32)
        try:
            out_shape = np.broadcast_shapes(mag.shape, shape)
        except ValueError:
            out_shape = None
        if out_shape != tuple(shape):
            raise ValueError(
                f"SensorNoise.{name} has {mag.size} per-channel values, which cannot broadcast against an "
                f"observation of shape {tuple(shape)}; give a float or one value per channel (last axis)"
            )
        return np.broadcast_to(mag, shape)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError if any magnitude cannot broadcast against an observation of `shape`."""
        for name in ("gaussian_std", "uniform_mag", "bias_mag"):
            self._broadcast(name, tuple(shape))

    @property
    def has_bias(self) -> bool:
        return bool(np.any(np.asarray(self.bias_mag) > 0))

    @property
    def draws_per_value(self) -> int:
        """U(0, 1) variates per observation entry and step: one per noise kind on (Gaussian, uniform), 0 to 2."""
        return int(np.any(np.asarray(self.gaussian_std) > 0)) + int(np.any(np.asarray(self.uniform_mag) > 0))

    def sample_bias(self, rng: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        """Draw an episode's bias, U(−bias_mag, bias_mag) per channel, for an observation of `shape`."""
        return self.bias_from_unit(uniforms(rng, tuple(shape) if self.has_bias else 0), tuple(shape))

    def bias_from_unit(self, u: Array, shape: tuple[int, ...]) -> Array:
        """`sample_bias` from U(0, 1) variates `u`: `shape`-many (any layout) with a bias, none without."""
        mag = self._broadcast("bias_mag", tuple(shape))
        if not self.has_bias:
            return jnp.zeros(shape, dtype=jnp.float32)
        return (2.0 * jnp.reshape(u, shape) - 1.0) * mag

    def add(self, value: Array, bias: Array | None, rng: PRNGKeyArray, curriculum_level: Array | float) -> Array:
        """Return value + bias + per-step noise (all scaled by `curriculum_level` if `scale_with_curriculum`).

        `bias` comes from `sample_bias` (None: no bias). The result is floating point even for an integer value.
        """
        shape = jnp.shape(value)
        return self.add_from_unit(value, bias, uniforms(rng, (self.draws_per_value, *shape)), curriculum_level)

    def add_from_unit(self, value: Array, bias: Array | None, u: Array, curriculum_level: Array | float) -> Array:
        """`add` with the step's randomness given: `draws_per_value` U(0, 1) variates per entry of `value`.

        Uniform noise is (2u − 1)·mag and Gaussian noise `standard_normal(u)`·std (the inverse CDF), so both kinds
        come from one draw.
        """
        value = jnp.asarray(value)
        shape = value.shape
        std = self._broadcast("gaussian_std", shape)
        mag = self._broadcast("uniform_mag", shape)
        noise = jnp.zeros(shape, dtype=jnp.result_type(value, jnp.float32)) if bias is None else bias
        if self.draws_per_value:
            u = jnp.reshape(u, (self.draws_per_value, *shape))
            if np.any(std > 0):
                noise = noise + standard_normal(u[0]) * std
            if np.any(mag > 0):
                noise = noise + (2.0 * u[-1] - 1.0) * mag
        if self.scale_with_curriculum:
            noise = noise * curriculum_level
        return value + noise


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DelayedObservationCarry:
    """Per-environment carry of a `DelayedObservation` (a pytree; fields are None when the feature is off)."""

    inner: PyTree  # the wrapped observation's own carry (None for a stateless one)
    bias: Array | None  # the episode's bias, observation-shaped (None without sensor noise)
    line: DelayLine | None  # the delay line (None without latency)


def _check_inner(_: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, ksim.Observation):
        raise TypeError(f"DelayedObservation.observation must be a ksim.Observation, got {type(value).__name__}")
    if value.noise is not None:
        raise TypeError(
            f"the wrapped {type(value).__name__} has its own ksim noise ({value.noise!r}), which ksim would never "
            "apply inside DelayedObservation; remove it and use DelayedObservation(sensor_noise=SensorNoise(...)) "
            "so the noise is added before the delay"
        )


@attrs.define(frozen=True, kw_only=True)
class DelayedObservation(ksim.StatefulObservation):
    """A ksim observation made noisy (`sensor_noise`) and late (`latency`), per episode and per environment.

    Attributes:
        observation: The wrapped ksim observation (stateless or stateful; without ksim `noise` of its own).
        latency: Delay spec; its `step_s` must be the control period (one write per ksim control step). None: no
            delay.
        sensor_noise: Additive per-step noise and per-episode bias, in the observation's units. None: no noise.

    """

    observation: ksim.Observation = attrs.field(validator=_check_inner)
    latency: Latency | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Latency))
    )
    sensor_noise: SensorNoise | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(SensorNoise))
    )

    @classmethod
    def create(
        cls,
        observation: ksim.Observation,
        *,
        ctrl_dt_s: float,
        latency_range_s: tuple[float, float] = (0.0, 0.0),
        jitter_s: float = 0.0,
        hold_prob: float = 0.0,
        buffer_steps: int | None = None,
        sensor_noise: SensorNoise | None = None,
    ) -> Self:
        """Wrap `observation` with a latency given in seconds, quantised to control steps of `ctrl_dt_s` seconds.

        Args:
            observation: The ksim observation to wrap.
            ctrl_dt_s: The control period (s): ksim's ``ctrl_dt``.
            latency_range_s: (min, max) per-episode delay (s); each bound is rounded to whole control steps
                (Python's round: halves go to the even step, e.g. 0.03 s and 0.05 s at 0.02 s are both 2 steps).
            jitter_s: Extra per-step delay, up to this many seconds (rounded to steps).
            hold_prob: Per-step probability of repeating the previous output (a dropped sample).
            buffer_steps: Ring buffer length (steps); default: just long enough.
            sensor_noise: Additive noise, in the observation's units.

        """
        lo, hi = latency_range_s
        latency = Latency(
            min_s=lo, max_s=hi, step_s=ctrl_dt_s, jitter_s=jitter_s, hold_prob=hold_prob, buffer_steps=buffer_steps
        )
        return cls(observation=observation, latency=latency, sensor_noise=sensor_noise)

    def get_name(self) -> str:
        """``delayed_`` + the wrapped observation's snake-case class name (+ ``_<sensor_name>`` if it has one)."""
        inner = self.observation
        name = xax.camelcase_to_snakecase(type(inner).__name__)
        sensor_name = getattr(inner, "sensor_name", None)
        if isinstance(sensor_name, str):
            name = f"{name}_{sensor_name}"
        return f"delayed_{name}"

    def get_markers(self, name: str) -> list:
        return list(self.observation.get_markers(name))

    def _observe_inner(
        self, state: ksim.ObservationInput, inner_carry: PyTree, curriculum_level: Array, rng: PRNGKeyArray
    ) -> tuple[Array, PyTree]:
        inner_state = ksim.ObservationInput(
            commands=state.commands, physics_state=state.physics_state, obs_carry=inner_carry
        )
        if isinstance(self.observation, ksim.StatefulObservation):
            value, inner_carry = self.observation.observe_stateful(inner_state, curriculum_level, rng)
        else:
            value = self.observation.observe(inner_state, curriculum_level, rng)
        return jnp.asarray(value), inner_carry

    def initial_carry(self, physics_state: ksim.PhysicsState, rng: PRNGKeyArray) -> DelayedObservationCarry:
        """The carry at an episode reset: draws the episode's bias and delay, fills the line with zeros.

        The fill only fixes the buffer's shape and dtype: ksim's next observation is taken on this same reset state
        and is written before it is read, so the reset value itself is not computed (only its shape, traced with no
        commands and curriculum level 1): 4 delayed K-Bot sensors lower to ~300 fewer ops per walk unroll.
        The bias and the delay are hashed from `rng` (`hashed_uniforms`: ksim computes this reset on every step, so
        a threefry here would cost a compiled loop per step); the wrapped observation gets `rng` itself.
        """
        state = ksim.ObservationInput(commands=xax.FrozenDict({}), physics_state=physics_state, obs_carry=None)
        level = jnp.ones((), dtype=jnp.float32)

        def inner_reset(inner_rng: PRNGKeyArray) -> PyTree:
            if isinstance(self.observation, ksim.StatefulObservation):
                return self.observation.initial_carry(physics_state, inner_rng)
            return None

        def reset_value(inner_rng: PRNGKeyArray) -> Array:
            return self._observe_inner(state, inner_reset(inner_rng), level, inner_rng)[0]

        try:  # traced only: the value's shape and dtype
            value_spec = jax.eval_shape(reset_value, rng)
        except KeyError as e:
            raise TypeError(
                f"{type(self.observation).__name__} reads a command ({e}); observations that need commands cannot be "
                "wrapped in DelayedObservation (its initial carry is computed on the reset state without commands)"
            ) from e
        shape, noise, latency = value_spec.shape, self.sensor_noise, self.latency
        bias_draws = math.prod(shape) if noise is not None and noise.has_bias else 0
        u = hashed_uniforms(rng, bias_draws + (0 if latency is None else latency.draws_at_reset))
        inner_carry = inner_reset(rng)
        bias, dtype = None, value_spec.dtype
        if noise is not None:
            noise.check_shape(shape)
            bias = noise.bias_from_unit(u[:bias_draws], shape)
            dtype = jnp.result_type(dtype, jnp.float32)  # the dtype `add` gives every later value
        fill = jnp.zeros(shape, dtype)
        line = None if latency is None else latency.init_from_unit(fill, u[bias_draws:])
        return DelayedObservationCarry(inner=inner_carry, bias=bias, line=line)

    def observe_stateful(
        self, state: ksim.ObservationInput, curriculum_level: Array, rng: PRNGKeyArray
    ) -> tuple[Array, DelayedObservationCarry]:
        """One control step: compute → add noise and bias → delay. Returns (output, next carry).

        The wrapped observation's key and the step's noise and jitter are hashed from `rng` together
        (`hashed_key_and_uniforms`: no threefry, which would cost a compiled loop per step).
        """
        carry: DelayedObservationCarry = state.obs_carry
        noise, latency = self.sensor_noise, self.latency
        noise_draws = 0 if noise is None else noise.draws_per_value * math.prod(carry.bias.shape)
        inner_rng, u = hashed_key_and_uniforms(rng, noise_draws + (0 if latency is None else latency.draws_per_step))
        value, inner_carry = self._observe_inner(state, carry.inner, curriculum_level, inner_rng)
        if noise is not None:
            value = noise.add_from_unit(value, carry.bias, u[:noise_draws], curriculum_level)
        line = carry.line
        if latency is not None:
            value, line = latency.step_from_unit(line, value, u[noise_draws:])
        return value, DelayedObservationCarry(inner=inner_carry, bias=carry.bias, line=line)
