"""External disturbances as ksim events: force pushes and wind, in SI units (N, N·m, s), that add up on a body.

Both events write a world-frame wrench (force in N, torque in N·m, applied at the body's centre of mass: MuJoCo's
``xfrc_applied`` convention) to one body. ``xfrc_applied`` persists in MuJoCo data from one physics step to the
next, so an event that simply *set* the row would erase every other event acting on the same body, and a push
that ended would have to remember to clear it. Instead each event keeps in its state the wrench it wrote last and
adds the difference on every physics step::

    xfrc_applied[body] += new - last

so a push and a wind on the base sum, and a finished push leaves only the others' contributions behind. At an
episode reset the engine builds fresh data (``xfrc_applied`` = 0) and fresh event states (``last`` = 0), which keeps
the two in step. Floating point: ``(w + p) - p`` equals ``w`` only to float32 rounding (about 1e-7 × |p|); a push on
its own returns the row to exactly zero.

- `ForcePushEvent`: every U(interval_s) seconds, a horizontal force of U(0, max_force_n) N in a uniformly random
  direction, plus optionally a torque of U(0, max_torque_nm) N·m about a uniformly random axis, for U(duration_s)
  seconds.
- `WindEvent`: a steady horizontal force drawn once per episode, U(0, max_force_n) N in a uniformly random
  direction, plus optional per-physics-step Gaussian gusts.
- `UprightAssistEvent`: a training aid, not a disturbance: a torque on one body that pulls it back upright
  (spring on its tilt, damper on its roll and pitch rates) and fades out as the curriculum level rises.

With ``scale_with_curriculum=True`` the applied wrench is multiplied by ksim's ``curriculum_level`` at every step (the
state keeps the unscaled draw). Each event reports its ranges (`magnitude_range_n`, ...) and the closed-form
differential entropy of what it draws (`entropy_nats`, `entropy_terms_nats`). Event states are flat float32 arrays,
as ksim 0.2.10 expects; `PushState` / `WindState` ``.unpack(state)`` names their slots.
"""

import difflib
import math
from typing import NamedTuple, Self

import attrs
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
from jaxtyping import Array, PRNGKeyArray
from ksim.utils.mujoco import get_body_data_idx_by_name, slice_update, update_data_field

from ksim_entropy.draws import hashed_uniforms, standard_normal

__all__ = [
    "ForcePushEvent",
    "PushState",
    "UprightAssistEvent",
    "WindEvent",
    "WindState",
    "resolve_body_id",
]

_LOG_2PI = math.log(2.0 * math.pi)  # entropy of a uniform angle on the circle (nats)
_LOG_4PI = math.log(4.0 * math.pi)  # entropy of a uniform direction on the unit sphere, w.r.t. area (nats)


# ----------------------------------------------------------------------------------------------- validation
def _log_width(width: float) -> float:
    """log(width) nats, with a zero width (a point mass) giving -inf instead of raising."""
    return math.log(width) if width > 0.0 else float("-inf")


def _non_negative(instance: object, attribute: "attrs.Attribute[float]", value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{type(instance).__name__}.{attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be finite and >= 0, got {value!r}")


def _time_range(instance: object, attribute: "attrs.Attribute[tuple[float, float]]", value: object) -> None:
    where = f"{type(instance).__name__}.{attribute.name}"
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"{where} must be a (low, high) pair in seconds, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        raise TypeError(f"{where} must hold numbers, got {value!r}")
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{where} must be finite, got {value!r}")
    if lo < 0.0:
        raise ValueError(f"{where} must be >= 0 s, got {value!r}")
    if lo > hi:
        raise ValueError(f"{where} is reversed: low {lo} > high {hi}")
    if hi <= 0.0:
        raise ValueError(f"{where} must have high > 0 s, got {value!r}")


def _body_id(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{type(instance).__name__}.body_id must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{type(instance).__name__}.body_id must be >= 1 (0 is the world body), got {value}")


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def resolve_body_id(physics_model: ksim.PhysicsModel, body_name: str | None = None) -> int:
    """Body index of `body_name`, or of the floating base (the body of the first free joint) when it is None.

    Works on a `mujoco.MjModel` or an `mjx.Model` (ksim's name helpers). Raises a ValueError that lists a few valid
    names (closest matches first) for an unknown name, for the world body, or for a model without a free joint.
    """
    names = get_body_data_idx_by_name(physics_model)
    if body_name is None:
        jnt_type = np.asarray(physics_model.jnt_type)
        free = np.flatnonzero(jnt_type == int(mujoco.mjtJoint.mjJNT_FREE))
        if free.size == 0:
            raise ValueError("the model has no free joint, so it has no floating base; pass body_name explicitly")
        return int(np.asarray(physics_model.jnt_bodyid)[free[0]])
    if body_name not in names or names[body_name] == 0:
        valid = [n for n, i in names.items() if i != 0 and n]
        close = difflib.get_close_matches(body_name, valid, n=5, cutoff=0.0)
        listed = ", ".join(repr(n) for n in close[:5])
        why = "is the world body (forces on it do nothing)" if names.get(body_name) == 0 else "not found in the model"
        raise ValueError(f"body {body_name!r} {why}; {len(valid)} bodies, e.g. {listed}")
    return int(names[body_name])


# ----------------------------------------------------------------------------------------------- shared base
@attrs.define(frozen=True, kw_only=True)
class _BodyWrenchEvent(ksim.Event):
    """An event that adds a world-frame wrench [force N, torque N·m] to `xfrc_applied[body_id]`."""

    body_id: int = attrs.field(default=1, validator=_body_id)
    scale_with_curriculum: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @classmethod
    def create(
        cls,
        physics_model: ksim.PhysicsModel,
        *,
        body_name: str | None = None,
        **config: float | bool | tuple[float, float],
    ) -> Self:
        """The event on body `body_name` (default: the floating base); `config` sets any other field."""
        return cls(body_id=resolve_body_id(physics_model, body_name), **config)

    def _scale(self, curriculum_level: Array) -> Array:
        if self.scale_with_curriculum:
            return jnp.asarray(curriculum_level, dtype=jnp.float32)
        return jnp.ones((), dtype=jnp.float32)

    def _level(self, curriculum_level: float) -> float:
        level = float(curriculum_level)
        if not math.isfinite(level) or level < 0.0:
            raise ValueError(f"curriculum_level must be finite and >= 0, got {curriculum_level!r}")
        return level if self.scale_with_curriculum else 1.0

    def _add_wrench(self, data: ksim.PhysicsData, delta: Array) -> ksim.PhysicsData:
        nbody = data.xfrc_applied.shape[0]
        if self.body_id >= nbody:
            raise ValueError(f"{type(self).__name__}.body_id={self.body_id} but the model has {nbody} bodies")
        row = data.xfrc_applied[self.body_id] + delta
        return update_data_field(data, "xfrc_applied", slice_update(data, "xfrc_applied", self.body_id, row))


def _horizontal(u: Array, max_magnitude: float) -> Array:
    """A horizontal vector (3,) with magnitude U(0, max) and angle U(0, 2π), from two U(0, 1) variates `u`."""
    magnitude, angle = u[0] * max_magnitude, u[1] * 2.0 * jnp.pi
    return magnitude * jnp.stack([jnp.cos(angle), jnp.sin(angle), jnp.zeros(())])


def _unit_vector(u: Array) -> Array:
    """A direction uniform on the unit sphere from two U(0, 1) variates (z uniform on [−1, 1], azimuth on [0, 2π))."""
    z, azimuth = 2.0 * u[0] - 1.0, 2.0 * jnp.pi * u[1]
    r = jnp.sqrt(jnp.maximum(1.0 - z**2, 0.0))
    return jnp.stack([r * jnp.cos(azimuth), r * jnp.sin(azimuth), z])


# ----------------------------------------------------------------------------------------------- push
class PushState(NamedTuple):
    """Named view of a `ForcePushEvent` state; the engine carries it packed as one float32 array of shape (14,).

    A flat array is what ksim 0.2.10 expects of an event state (`Trajectory.event_state` is typed
    ``FrozenDict[str, Array]`` and ``log_all_images`` plots each one with ``.reshape``). `unpack` and `pack` accept
    leading batch dimensions.
    """

    countdown_s: Array  # (...,) time until the next push onset (s); a push starts at the first step where it is <= 0
    remaining_s: Array  # (...,) time the current push still acts (s); <= 0: no push
    wrench: Array  # (..., 6) current/last push [force N, torque N·m], world frame, before curriculum scaling
    last_wrench: Array  # (..., 6) what this event added to xfrc_applied[body] at its last call

    @classmethod
    def unpack(cls, array: Array) -> "PushState":
        """The named fields of a packed state array of shape (..., 14)."""
        return cls(array[..., 0], array[..., 1], array[..., 2:8], array[..., 8:14])

    def pack(self) -> Array:
        """One float32 array of shape (..., 14): [countdown_s, remaining_s, wrench (6), last_wrench (6)]."""
        scalars = jnp.stack([self.countdown_s, self.remaining_s], axis=-1)
        return jnp.concatenate([scalars, self.wrench, self.last_wrench], axis=-1).astype(jnp.float32)


@attrs.define(frozen=True, kw_only=True)
class ForcePushEvent(_BodyWrenchEvent):
    """Intermittent pushes: a horizontal force (and optional torque) on one body for a random duration.

    Every ``=U(interval_s)`` s (onset to onset; the residual below zero carries over, so onsets lie on the physics
    grid within one step ``dt`` of the exact cumulative sums) a push starts and lasts ``=U(duration_s)`` s, i.e. it
    is on for the ceil(duration / dt) physics steps that follow its onset. Its wrench, constant while it lasts:

    - force: magnitude ``=U(0, max_force_n)`` N, direction uniform on the horizontal circle (world x-y plane);
    - torque (only if ``max_torque_nm > 0``): magnitude ``=U(0, max_torque_nm)`` N·m, axis uniform on the sphere.

    The first onset comes U(interval_s) s after the episode starts. If a new onset arrives while a push is still on
    (``interval_s[0] < duration_s[1]``), the new push replaces it. ``body_id`` defaults to 1 (in a single-robot
    model the first body under the world, usually the floating base); `create` resolves a body by name.

    Defaults follow K-Scale's kbot-joystick recipe (kscalelabs/kbot-joystick ForcePushEvent, `train.py` at 211f9a2:
    ``ksim.ForcePushEvent.from_body_name(body_name="base", max_force=200.0, max_torque=10.0,
    duration_range=(0.1, 0.5), interval_range=(0.0, 6.0))``), except the interval: we start at 1.0 s instead of 0 so
    pushes cannot come back-to-back. Unlike ksim's own ForcePushEvent (GitHub HEAD; not in ksim 0.2.10), which draws
    the force direction in 3-D, zeroes all of ``xfrc_applied`` every step and scales by the level twice, this one
    pushes horizontally, adds to what other events wrote, and scales once (``scale_with_curriculum``).
    """

    max_force_n: float = attrs.field(default=200.0, validator=_non_negative)
    max_torque_nm: float = attrs.field(default=10.0, validator=_non_negative)
    duration_s: tuple[float, float] = attrs.field(default=(0.1, 0.5), converter=_as_tuple, validator=_time_range)
    interval_s: tuple[float, float] = attrs.field(default=(1.0, 6.0), converter=_as_tuple, validator=_time_range)

    # ---- what it draws
    def magnitude_range_n(self, curriculum_level: float = 1.0) -> tuple[float, float]:
        """Support of the push force magnitude (N) at `curriculum_level` (ignored unless scale_with_curriculum)."""
        return 0.0, self.max_force_n * self._level(curriculum_level)

    def torque_range_nm(self, curriculum_level: float = 1.0) -> tuple[float, float]:
        """Support of the push torque magnitude (N·m) at `curriculum_level`."""
        return 0.0, self.max_torque_nm * self._level(curriculum_level)

    def entropy_terms_nats(self, curriculum_level: float = 1.0) -> dict[str, float]:
        """Differential entropy (nats) of each independent coordinate drawn per push.

        Coordinates: force magnitude (N) and force angle (rad) on the circle; torque magnitude (N·m) and torque axis
        on the unit sphere (area measure, 4π); duration (s); interval to the next onset (s). All are uniform, so each
        term is log(width): log F, log 2π, log T, log 4π, log(Δduration), log(Δinterval). A zero width (a point mass)
        gives -inf. With ``max_torque_nm == 0`` torque pushes are off: no torque is drawn and no torque terms appear.
        Caveat: in Cartesian force coordinates (Fx, Fy) the same push has h = h(polar) + E[log |F|] = 2 log F + log 2π
        − 1 nats; the polar pair is used here because its coordinates are independent, so the terms add up.
        """
        _, force = self.magnitude_range_n(curriculum_level)
        terms = {"force_magnitude": _log_width(force), "force_angle": _LOG_2PI}
        if self.max_torque_nm > 0.0:
            _, torque = self.torque_range_nm(curriculum_level)
            terms |= {"torque_magnitude": _log_width(torque), "torque_axis": _LOG_4PI}
        terms["duration"] = _log_width(self.duration_s[1] - self.duration_s[0])
        terms["interval"] = _log_width(self.interval_s[1] - self.interval_s[0])
        return terms

    def entropy_nats(self, curriculum_level: float = 1.0) -> float:
        """Differential entropy (nats) of one push's draw: the sum of `entropy_terms_nats` (independent coordinates)."""
        return float(sum(self.entropy_terms_nats(curriculum_level).values()))

    # ---- ksim.Event
    def _sample_wrench(self, u: Array) -> Array:
        """[force (N), torque (N·m)] from five U(0, 1) variates: force magnitude and angle, torque magnitude, axis."""
        force = _horizontal(u[0:2], self.max_force_n)
        torque = _unit_vector(u[3:5]) * u[2] * self.max_torque_nm if self.max_torque_nm > 0.0 else jnp.zeros(3)
        return jnp.concatenate([force, torque]).astype(jnp.float32)

    @staticmethod
    def _uniform_s(u: Array, bounds: tuple[float, float]) -> Array:
        return (bounds[0] + u * (bounds[1] - bounds[0])).astype(jnp.float32)

    def get_initial_event_state(self, rng: PRNGKeyArray) -> Array:
        """Packed `PushState`: no push on, zero last wrench, the first onset U(interval_s) s away."""
        return PushState(
            countdown_s=self._uniform_s(hashed_uniforms(rng, 1)[0], self.interval_s),
            remaining_s=jnp.zeros((), jnp.float32),
            wrench=jnp.zeros(6, jnp.float32),
            last_wrench=jnp.zeros(6, jnp.float32),
        ).pack()

    def __call__(
        self,
        model: ksim.PhysicsModel,
        data: ksim.PhysicsData,
        event_state: Array,
        curriculum_level: Array,
        rng: PRNGKeyArray,
    ) -> tuple[ksim.PhysicsData, Array]:
        """One physics step: maybe start a push, write this step's wrench, advance the clocks by dt."""
        state = PushState.unpack(event_state)
        dt = jnp.asarray(model.opt.timestep, dtype=jnp.float32)
        u = hashed_uniforms(rng, 7)  # one draw per step: wrench (5), duration, next interval
        onset = state.countdown_s <= 0.0
        wrench = jnp.where(onset, self._sample_wrench(u[0:5]), state.wrench)
        remaining = jnp.where(onset, self._uniform_s(u[5], self.duration_s), state.remaining_s)
        countdown = jnp.where(onset, state.countdown_s + self._uniform_s(u[6], self.interval_s), state.countdown_s)
        applied = jnp.where(remaining > 0.0, wrench * self._scale(curriculum_level), jnp.zeros(6, jnp.float32))
        data = self._add_wrench(data, applied - state.last_wrench)
        return data, PushState(countdown - dt, remaining - dt, wrench, applied).pack()


# ----------------------------------------------------------------------------------------------- wind
class WindState(NamedTuple):
    """Named view of a `WindEvent` state; the engine carries it packed as one float32 array of shape (9,)."""

    force: Array  # (..., 3) steady horizontal force drawn at reset (N), world frame, before curriculum scaling
    last_wrench: Array  # (..., 6) what this event added to xfrc_applied[body] at its last call

    @classmethod
    def unpack(cls, array: Array) -> "WindState":
        """The named fields of a packed state array of shape (..., 9)."""
        return cls(array[..., 0:3], array[..., 3:9])

    def pack(self) -> Array:
        """One float32 array of shape (..., 9): [force (3), last_wrench (6)]."""
        return jnp.concatenate([self.force, self.last_wrench], axis=-1).astype(jnp.float32)


@attrs.define(frozen=True, kw_only=True)
class WindEvent(_BodyWrenchEvent):
    """A steady horizontal force on one body for a whole episode, optionally with per-step Gaussian gusts.

    At every episode reset: magnitude ``=U(0, max_force_n)`` N, direction uniform on the horizontal circle. At every
    physics step the applied force is that steady force plus a gust ``+N(0, gust_std_n²)`` N drawn independently
    per step on each horizontal axis (white noise; off by default). The default 20 N on the base (about 6% of the
    K-Bot's ~36 kg weight) is our own choice of a gentle, always-on bias, not taken from a reference recipe.
    """

    max_force_n: float = attrs.field(default=20.0, validator=_non_negative)
    gust_std_n: float = attrs.field(default=0.0, validator=_non_negative)

    # ---- what it draws
    def magnitude_range_n(self, curriculum_level: float = 1.0) -> tuple[float, float]:
        """Support of the per-episode steady force magnitude (N) at `curriculum_level`."""
        return 0.0, self.max_force_n * self._level(curriculum_level)

    def entropy_terms_nats(self, curriculum_level: float = 1.0) -> dict[str, float]:
        """Differential entropy (nats) of each coordinate drawn once per episode: log F (magnitude), log 2π (angle).

        Polar coordinates (magnitude N, angle rad); in Cartesian (Fx, Fy) the same draw has 2 log F + log 2π − 1.
        Gusts are drawn per step, not per episode; see `gust_entropy_nats_per_step`.
        """
        _, force = self.magnitude_range_n(curriculum_level)
        return {"force_magnitude": _log_width(force), "force_angle": _LOG_2PI}

    def entropy_nats(self, curriculum_level: float = 1.0) -> float:
        """Differential entropy (nats) of the per-episode wind draw: h = log F + log 2π, (magnitude, angle) pair."""
        return float(sum(self.entropy_terms_nats(curriculum_level).values()))

    def gust_entropy_nats_per_step(self, curriculum_level: float = 1.0) -> float:
        """Differential entropy (nats) of one step's 2-D gust N(0, σ² I): log(2πe σ²), σ in N; -inf when σ = 0."""
        sigma = self.gust_std_n * self._level(curriculum_level)
        return math.log(2.0 * math.pi * math.e * sigma**2) if sigma > 0.0 else float("-inf")

    # ---- ksim.Event
    def get_initial_event_state(self, rng: PRNGKeyArray) -> Array:
        """Packed `WindState`: the episode's steady force and a zero last wrench (fresh data has xfrc_applied = 0)."""
        return WindState(
            force=_horizontal(hashed_uniforms(rng, 2), self.max_force_n).astype(jnp.float32),
            last_wrench=jnp.zeros(6, jnp.float32),
        ).pack()

    def __call__(
        self,
        model: ksim.PhysicsModel,
        data: ksim.PhysicsData,
        event_state: Array,
        curriculum_level: Array,
        rng: PRNGKeyArray,
    ) -> tuple[ksim.PhysicsData, Array]:
        """One physics step: steady force (+ gust), scaled by the level if asked, written as a difference."""
        state = WindState.unpack(event_state)
        force = state.force
        if self.gust_std_n > 0.0:
            gust = self.gust_std_n * standard_normal(hashed_uniforms(rng, 2))  # hashed: no threefry per step
            force = force + jnp.concatenate([gust, jnp.zeros(1, jnp.float32)])
        applied = jnp.concatenate([force * self._scale(curriculum_level), jnp.zeros(3, jnp.float32)])
        data = self._add_wrench(data, applied - state.last_wrench)
        return data, WindState(state.force, applied).pack()


# ----------------------------------------------------------------------------------------------- upright assist
@attrs.define(frozen=True, kw_only=True)
class UprightAssistEvent(_BodyWrenchEvent):
    """A torque that holds one body upright while the policy learns to, fading out with the curriculum.

    At every physics step, with z_b the body's z axis and ω its angular velocity (world frame, yaw rate left out):

        τ = fade · (stiffness_nm_per_rad · (z_b × e_z) − damping_nms_per_rad · (ω_x, ω_y, 0))      (N·m)

    |z_b × e_z| = sin(tilt), so the spring is stiffness · tilt near upright and pulls back along the tilt axis; it
    never acts on heading. fade = clip(1 − curriculum_level / fade_out_level, 0, 1): full help at level 0, none from
    `fade_out_level` on, so a curriculum that ramps the disturbances and randomization up (`scale_with_curriculum`
    events, `RandomizationCurriculum`) takes the help away over the same schedule. It draws nothing (its entropy is 0)
    and, like the other wrench events, adds to what other events wrote to ``xfrc_applied``.

    Why: a K-Bot held by its PD servos alone tips over in ~1.3 s (the ankles' 80 N·m/rad is a third of the ~250
    N·m/rad an inverted pendulum of its size needs, docs/training.md); measured in CPU MuJoCo, 500 N·m/rad with 50
    N·m·s/rad on the torso holds the nominal pose for 20 s and 300 N·m/rad does not. Early episodes then last long
    enough to show the policy standing states (the "assistive force" curricula of Yu, Turk and Liu, SIGGRAPH 2018).
    """

    stiffness_nm_per_rad: float = attrs.field(default=500.0, validator=_non_negative)
    damping_nms_per_rad: float = attrs.field(default=50.0, validator=_non_negative)
    fade_out_level: float = attrs.field(default=1.0)

    @fade_out_level.validator
    def _check_fade_out_level(self, attribute: "attrs.Attribute[float]", value: float) -> None:
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"fade_out_level must be a finite level > 0, got {value!r}")

    def fade(self, curriculum_level: Array | float) -> Array:
        """The fraction of the assist applied at `curriculum_level` (1 at level 0, 0 from `fade_out_level` on)."""
        level = jnp.asarray(curriculum_level, dtype=jnp.float32)
        return jnp.clip(1.0 - level / self.fade_out_level, 0.0, 1.0)

    def get_initial_event_state(self, rng: PRNGKeyArray) -> Array:
        """The last wrench this event added (6,): zero, as fresh data has xfrc_applied = 0."""
        return jnp.zeros(6, jnp.float32)

    def __call__(
        self,
        model: ksim.PhysicsModel,
        data: ksim.PhysicsData,
        event_state: Array,
        curriculum_level: Array,
        rng: PRNGKeyArray,
    ) -> tuple[ksim.PhysicsData, Array]:
        """One physics step: the spring-damper torque for the body's current tilt and rates, scaled by `fade`."""
        z_b = jnp.reshape(data.xmat[self.body_id], (3, 3))[:, 2]  # MJX keeps (3, 3), MuJoCo's MjData (9,)
        spring = jnp.cross(z_b, jnp.array([0.0, 0.0, 1.0], dtype=z_b.dtype))
        omega = data.cvel[self.body_id][:3] * jnp.array([1.0, 1.0, 0.0], dtype=z_b.dtype)
        torque = self.stiffness_nm_per_rad * spring - self.damping_nms_per_rad * omega
        applied = jnp.concatenate([jnp.zeros(3), torque * self.fade(curriculum_level)]).astype(jnp.float32)
        data = self._add_wrench(data, applied - event_state)
        return data, applied
