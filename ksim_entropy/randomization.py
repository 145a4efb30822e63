"""Physics randomizers that know their entropy and take their width as a traced array (drop-in ksim classes).

Each `RandomizedParameter` is a `ksim.PhysicsRandomizer` for one group of physical quantities (all link masses, the
joints' friction loss, the IMU mounting angles, ...). It owns a `Distribution` (uniform, log-uniform, truncated
Gaussian; `ksim_entropy.distributions`) over the *random variable it declares* — a scale factor, an offset in SI
units, or a value set outright — and maps a draw onto MuJoCo model fields with `apply`.

- Used alone in `get_physics_randomizers`, a parameter behaves like ksim's own randomizers: ksim samples it once per
  environment at width `width`.
- Grouped in a `DomainRandomization`, parameters compose in order (a mass offset after a mass scale acts on the
  scaled mass) and are sampled with a vector of widths that is an *array*: the task mixin
  (`ksim_entropy.ppo.mixins.DomainRandomizationMixin`) keeps it in the curriculum state and redraws the physics at every
  episode reset, so widening or narrowing a range never recompiles the jitted step.

Entropies are differential entropies in nats of the declared variable (a mass *scale* U(0.9, 1.1) has
log 0.2 nats per body whatever the body's mass). `npd` is OpenAI ADR's nats per dimension; `normalized_npd` divides
each width by a reference scale so robots and runs compare (`ksim_entropy.distributions`).

Defaults cite their sources: MuJoCo Playground's locomotion `randomize.py` (Go1/G1/T1/Berkeley Humanoid), K-Scale's
kbot-joystick and ksim 0.2.10 (see ../shared/docs/sim2real-anchors.md §1.1, §5, §6).

Two K-Bot facts shape the defaults. (1) The foot capsules have contact priority 1 and friction 0.64, so MuJoCo takes
the contact's friction from the feet: randomizing the floor geom's friction (ksim's `FloorFrictionRandomizer`) does
nothing; `GeomFriction` on the foot geoms does. (2) The joints have zero damping, so a damping *scale* does nothing;
`JointDamping` adds N·m·s/rad instead.
"""

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Literal, Self

import attrs
import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray
from mujoco import mjx

from ksim_entropy.distributions import Distribution, LogUniform, TruncatedNormal, Uniform
from ksim_entropy.draws import uniforms

__all__ = [
    "ActuatorKdScale",
    "ActuatorKpScale",
    "BodyMassOffset",
    "BodyMassScale",
    "CenterOfMassOffset",
    "DomainRandomization",
    "GeomFriction",
    "Gravity",
    "ImuMisalignment",
    "JointArmature",
    "JointDamping",
    "JointFrictionLoss",
    "JointZeroOffset",
    "RandomizedParameter",
    "TorqueLimitScale",
    "actuator_joint_names",
    "make_distribution",
]

Family = Literal["uniform", "loguniform", "truncnormal"]


# ----------------------------------------------------------------------------------------------- model helpers
def model_names(model: ksim.PhysicsModel | mujoco.MjModel, adr: ArrayLike, count: int) -> list[str]:
    """Names of `count` objects of one kind (bodies, joints, geoms, cameras, ...) from their name addresses `adr`."""
    raw = bytes(np.asarray(model.names))
    return [raw[int(a) :].split(b"\x00", 1)[0].decode() for a in np.asarray(adr)[:count]]


def _lookup(kind: str, available: Sequence[str], requested: Sequence[str]) -> tuple[int, ...]:
    """Indices of `requested` names in `available`; a ValueError naming each unknown one (with close matches)."""
    index = {name: i for i, name in enumerate(available) if name}
    unknown = [name for name in requested if name not in index]
    if unknown:
        hints = {name: difflib.get_close_matches(name, list(index), n=3) for name in unknown}
        raise ValueError(f"unknown {kind} name(s) {unknown}; close matches: {hints}; {kind}s: {sorted(index)}")
    if len(set(requested)) != len(requested):
        raise ValueError(f"{kind} names repeat: {list(requested)}")
    return tuple(index[name] for name in requested)


def _field(model: ksim.PhysicsModel, path: str) -> Array:
    value = model
    for part in path.split("."):
        value = getattr(value, part)
    return jnp.asarray(value)


# CPU MuJoCo skips a frame's offset when the compiler flagged it as coinciding with its body's frame (`*_sameframe`);
# MJX always applies it. A randomized offset must clear the flag, or CPU MuJoCo silently ignores the new value.
_SAMEFRAME_FLAG = {
    "site_pos": "site_sameframe",
    "site_quat": "site_sameframe",
    "body_ipos": "body_sameframe",
    "body_iquat": "body_sameframe",
    "geom_pos": "geom_sameframe",
    "geom_quat": "geom_sameframe",
}


def with_updates(model: ksim.PhysicsModel, updates: Mapping[str, Array]) -> ksim.PhysicsModel:
    """`model` with fields replaced (dotted paths such as ``opt.gravity`` allowed); MjModels are copied, not mutated.

    On an MjModel, updating a frame offset (site/body-inertial/geom position or orientation) also clears MuJoCo's
    matching `*_sameframe` flags, without which CPU MuJoCo would ignore the new offset (MJX never reads them).
    """
    if not updates:
        return model
    if isinstance(model, mjx.Model):
        return model.tree_replace(dict(updates))
    if isinstance(model, mujoco.MjModel):
        copy = mujoco.MjModel.__copy__(model)
        for path, value in updates.items():
            *parents, leaf = path.split(".")
            target = copy
            for part in parents:
                target = getattr(target, part)
            getattr(target, leaf)[...] = np.asarray(value)
            if path in _SAMEFRAME_FLAG:
                getattr(copy, _SAMEFRAME_FLAG[path])[...] = 0
        return copy
    raise TypeError(f"expected a mujoco.MjModel or mjx.Model, got {type(model).__name__}")


def make_distribution(
    family: Family,
    low: float | Sequence[float],
    high: float | Sequence[float],
    *,
    nominal: float | None = None,
    std: float | Sequence[float] | None = None,
    unitless: bool = False,
) -> Distribution:
    """A distribution by name: uniform (the maximum-entropy choice on [low, high]), log-uniform or truncated normal.

    Widths stretch the range about `nominal` (1 for scale factors, 0 for offsets) when it lies inside [low, high],
    so a narrowing curriculum collapses onto the unrandomized robot; otherwise about the range's centre. For
    "truncnormal" the mean is that centre and `std` defaults to a quarter of the range.
    """
    lo, hi = np.atleast_1d(np.asarray(low, dtype=float)), np.atleast_1d(np.asarray(high, dtype=float))
    inside = nominal is not None and bool(np.all((lo <= nominal) & (nominal <= hi)))
    center = np.full(lo.shape, float(nominal)) if inside else None
    if family == "uniform":
        return Uniform(low=lo, high=hi, center=center, unitless=unitless)
    if family == "loguniform":
        return LogUniform(low=lo, high=hi, center=center)
    if family == "truncnormal":
        mean = (lo + hi) / 2.0 if center is None else center
        sd = (hi - lo) / 4.0 if std is None else np.asarray(std, dtype=float)
        return TruncatedNormal(mean=mean, std=sd, low=lo, high=hi, unitless=unitless)
    raise ValueError(f"unknown distribution family {family!r}; choose 'uniform', 'loguniform' or 'truncnormal'")


def _check_width_value(what: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def actuator_joint_names(model: ksim.PhysicsModel) -> list[str]:
    """The joint each actuator drives, in actuator order (works on `mujoco.MjModel` and `mjx.Model`)."""
    joints = model_names(model, model.name_jntadr, model.njnt)
    return [joints[int(j)] for j in np.asarray(model.actuator_trnid)[:, 0]]


# ----------------------------------------------------------------------------------------------- base class
@attrs.define(frozen=True, kw_only=True)
class RandomizedParameter(ksim.PhysicsRandomizer, ABC):
    """One group of physical quantities drawn from `dist`, with a width scale that may be a traced array.

    `width` is the width used when ksim samples this randomizer on its own (once per environment) and the starting
    width for curricula; `max_width` is the widest a curriculum may go. Both are checked at construction: at
    `max_width` every value the distribution can produce must be physically valid (`positive` parameters > 0).
    """

    dist: Distribution = attrs.field()
    width: float = attrs.field(default=1.0)
    max_width: float = attrs.field(default=1.0)
    name: str | None = attrs.field(default=None)

    positive: ClassVar[bool] = False  # the declared variable must stay > 0 (scale factors, frictions)

    def __attrs_post_init__(self) -> None:
        width = _check_width_value(f"{self.get_name()}: width", self.width)
        max_width = _check_width_value(f"{self.get_name()}: max_width", self.max_width)
        if width > max_width:
            raise ValueError(f"{self.get_name()}: width {width} exceeds max_width {max_width}")
        if len(self.dist.shape) != 1:
            raise ValueError(f"{self.get_name()}: distribution must be a vector, got shape {self.dist.shape}")
        if self.dims not in (1, self.size):
            raise ValueError(
                f"{self.get_name()}: distribution has {self.dims} dimensions; need 1 (shared) or {self.size}"
            )
        if self.positive:
            low, _ = self.dist.bounds(max_width)
            if float(jnp.min(low)) <= 0.0:
                raise ValueError(
                    f"{self.get_name()}: at max_width={max_width} the range reaches {float(jnp.min(low)):g}; "
                    "this quantity must stay > 0"
                )

    def get_name(self) -> str:
        return self.name if self.name is not None else super().get_name()

    @property
    def dims(self) -> int:
        """Number of independent random dimensions (1 when one draw is shared by every element)."""
        return int(self.dist.shape[0])

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of model elements this parameter sets (bodies, joints, axes, ...)."""

    @abstractmethod
    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        """Model-field updates for one draw `value` of shape (size,) (a shared draw arrives broadcast)."""

    def draw(self, rng: PRNGKeyArray, width: ArrayLike, pin_to_boundary: ArrayLike = False) -> Array:
        """A draw of shape (size,); with `pin_to_boundary` each dimension sits at its low or high bound (ADR)."""
        return self.draw_from_unit(uniforms(rng, (2, self.dims)), width, pin_to_boundary)

    def draw_from_unit(self, u: Array, width: ArrayLike, pin_to_boundary: ArrayLike = False) -> Array:
        """`draw` from given U(0, 1) variates `u` of shape (2, dims): row 0 the value, row 1 the boundary side."""
        return jnp.broadcast_to(_draw_or_pin(self.dist, u, width, pin_to_boundary), (self.size,))

    def sample(
        self, model: ksim.PhysicsModel, rng: PRNGKeyArray, width: ArrayLike, pin_to_boundary: ArrayLike = False
    ) -> dict[str, Array]:
        """Model-field updates for a fresh draw at width scale `width`."""
        return self.apply(model, self.draw(rng, width, pin_to_boundary))

    def __call__(self, model: ksim.PhysicsModel, rng: PRNGKeyArray) -> dict[str, Array]:
        return self.sample(model, rng, self.width)

    def entropy(self, width: ArrayLike | None = None) -> Array:
        """Differential entropy of the declared variable (nats, summed over dimensions), closed form."""
        return jnp.sum(self.dist.entropy(self.width if width is None else width))

    def npd(self, width: ArrayLike | None = None) -> Array:
        """ADR nats per dimension: mean of log(range width)."""
        return self.dist.npd(self.width if width is None else width)

    def normalized_npd(self, width: ArrayLike | None = None) -> Array:
        """Nats per dimension of widths divided by the reference scale (unit-free)."""
        return self.dist.normalized_npd(self.width if width is None else width)


def _draw_or_pin(dist: Distribution, u: Array, width: ArrayLike, pin: ArrayLike) -> Array:
    """Per dimension: `dist`'s quantile at u[0], or where `pin` holds, its low / high bound as u[1] < / ≥ 0.5."""
    low, high = dist.bounds(width)
    return jnp.where(pin, jnp.where(u[1] < 0.5, low, high), dist.quantile(u[0], width))


def _vector(value: Array, size: int) -> Array:
    return jnp.broadcast_to(value, (size,))


# ----------------------------------------------------------------------------------------------- bodies
@attrs.define(frozen=True, kw_only=True)
class BodyMassScale(RandomizedParameter):
    """Link mass × s per body, s unitless; inertia scales with it (same shape, uniform density change)."""

    body_ids: tuple[int, ...] = attrs.field(converter=tuple)
    positive: ClassVar[bool] = True

    @property
    def size(self) -> int:
        return len(self.body_ids)

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.body_ids)
        s = _vector(value, self.size)
        return {
            "body_mass": _field(model, "body_mass").at[ids].multiply(s),
            "body_inertia": _field(model, "body_inertia").at[ids].multiply(s[:, None]),
        }

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        body_names: Sequence[str] | None = None,
        low: float = 0.9,
        high: float = 1.1,
        family: Family = "uniform",
        shared: bool = False,
        **kwargs: object,
    ) -> Self:
        """All bodies but the world by default; ×U(0.9, 1.1) is Playground's Go1/G1/Berkeley Humanoid range."""
        names = model_names(model, model.name_bodyadr, model.nbody)
        ids = tuple(range(1, model.nbody)) if body_names is None else _lookup("body", names, body_names)
        n = 1 if shared else len(ids)
        return cls(
            body_ids=ids, dist=make_distribution(family, [low] * n, [high] * n, nominal=1.0, unitless=True), **kwargs
        )


@attrs.define(frozen=True, kw_only=True)
class BodyMassOffset(RandomizedParameter):
    """Link mass + Δm per body (kg), added at the body's centre of mass (its inertia about the CoM is unchanged)."""

    body_ids: tuple[int, ...] = attrs.field(converter=tuple)
    nominal_mass_kg: tuple[float, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        low, _ = self.dist.bounds(self.max_width)
        lightest = np.asarray(self.nominal_mass_kg) + np.broadcast_to(np.asarray(low), (self.size,))
        if np.any(lightest <= 0):
            raise ValueError(
                f"{self.get_name()}: at max_width={self.max_width} a body's mass reaches {lightest.min():g} kg"
            )

    @property
    def size(self) -> int:
        return len(self.body_ids)

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.body_ids)
        return {"body_mass": _field(model, "body_mass").at[ids].add(_vector(value, self.size))}

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        body_names: Sequence[str],
        low: float = -1.0,
        high: float = 1.0,
        family: Family = "uniform",
        **kwargs: object,
    ) -> Self:
        """+U(−1, 1) kg on the torso is Playground's range for all four of its robots."""
        ids = _lookup("body", model_names(model, model.name_bodyadr, model.nbody), body_names)
        mass = tuple(float(m) for m in np.asarray(model.body_mass)[list(ids)])
        n = len(ids)
        dist = make_distribution(family, [low] * n, [high] * n, nominal=0.0)
        return cls(body_ids=ids, nominal_mass_kg=mass, dist=dist, **kwargs)


@attrs.define(frozen=True, kw_only=True)
class CenterOfMassOffset(RandomizedParameter):
    """Body centre of mass + Δ (m) in the body frame, 3 values per body (x, y, z)."""

    body_ids: tuple[int, ...] = attrs.field(converter=tuple)

    @property
    def size(self) -> int:
        return 3 * len(self.body_ids)

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.body_ids)
        delta = _vector(value, self.size).reshape(len(self.body_ids), 3)
        return {"body_ipos": _field(model, "body_ipos").at[ids].add(delta)}

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        body_names: Sequence[str],
        max_offset_m: float | Sequence[float] = 0.05,
        family: Family = "uniform",
        **kwargs: object,
    ) -> Self:
        """±0.05 m per axis is Playground Go1's torso range and kbot-joystick's all-body range."""
        ids = _lookup("body", model_names(model, model.name_bodyadr, model.nbody), body_names)
        m = np.broadcast_to(np.asarray(max_offset_m, dtype=float), (3,))
        high = np.tile(m, len(ids))
        return cls(body_ids=ids, dist=make_distribution(family, -high, high, nominal=0.0), **kwargs)


# ----------------------------------------------------------------------------------------------- joints (dofs)
@attrs.define(frozen=True, kw_only=True)
class _DofParameter(RandomizedParameter):
    """A per-joint `dof_*` field, scaled (× s) or offset (+ Δ in the field's units)."""

    dof_ids: tuple[int, ...] = attrs.field(converter=tuple)
    mode: Literal["scale", "add"] = attrs.field(default="scale")
    nominal: tuple[float, ...] = attrs.field(converter=tuple)

    field_name: ClassVar[str]
    units: ClassVar[str]

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("scale", "add"):
            raise ValueError(f"{self.get_name()}: mode must be 'scale' or 'add', got {self.mode!r}")
        super().__attrs_post_init__()
        low, _ = self.dist.bounds(self.max_width)
        low = np.broadcast_to(np.asarray(low), (self.size,))
        nominal = np.asarray(self.nominal)
        smallest = nominal * low if self.mode == "scale" else nominal + low
        if (self.mode == "scale" and np.any(low <= 0)) or np.any(smallest < 0):
            raise ValueError(
                f"{self.get_name()}: at max_width={self.max_width} {self.field_name} reaches {smallest.min():g} "
                f"{self.units} (scale {low.min():g}); it must stay >= 0 with scales > 0"
            )
        if self.mode == "scale" and np.all(nominal == 0):
            raise ValueError(
                f"{self.get_name()}: every nominal {self.field_name} is 0, so scaling it does nothing; use mode='add'"
            )

    @property
    def size(self) -> int:
        return len(self.dof_ids)

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.dof_ids)
        current = _field(model, self.field_name)
        v = _vector(value, self.size)
        new = current.at[ids].multiply(v) if self.mode == "scale" else current.at[ids].add(v)
        return {self.field_name: new}

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        low: float,
        high: float,
        mode: Literal["scale", "add"] = "scale",
        joint_names: Sequence[str] | None = None,
        family: Family = "uniform",
        shared: bool = False,
        **kwargs: object,
    ) -> Self:
        """Every hinge/slide joint by default (the floating base is skipped)."""
        names = model_names(model, model.name_jntadr, model.njnt)
        types = np.asarray(model.jnt_type)
        movable = [
            j for j in range(model.njnt) if types[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
        ]
        joints = movable if joint_names is None else list(_lookup("joint", names, joint_names))
        bad = [names[j] for j in joints if j not in movable]
        if bad:
            raise ValueError(f"{cls.__name__}: joints {bad} are not hinge or slide joints")
        dofs = tuple(int(np.asarray(model.jnt_dofadr)[j]) for j in joints)
        nominal = tuple(float(v) for v in np.asarray(getattr(model, cls.field_name))[list(dofs)])
        n = 1 if shared else len(dofs)
        centre = 1.0 if mode == "scale" else 0.0
        dist = make_distribution(family, [low] * n, [high] * n, nominal=centre, unitless=mode == "scale")
        return cls(dof_ids=dofs, mode=mode, nominal=nominal, dist=dist, **kwargs)


@attrs.define(frozen=True, kw_only=True)
class JointFrictionLoss(_DofParameter):
    """Joint dry friction `dof_frictionloss` (N·m): × s (default) or + Δ. ksim and Playground's G1 use ×U(0.5, 2)."""

    field_name: ClassVar[str] = "dof_frictionloss"
    units: ClassVar[str] = "N·m"


@attrs.define(frozen=True, kw_only=True)
class JointDamping(_DofParameter):
    """Joint viscous damping `dof_damping` (N·m·s/rad): × s or + Δ (use + Δ on the K-Bot, whose damping is 0)."""

    field_name: ClassVar[str] = "dof_damping"
    units: ClassVar[str] = "N·m·s/rad"


@attrs.define(frozen=True, kw_only=True)
class JointArmature(_DofParameter):
    """Rotor inertia `dof_armature` (kg·m²): × s. ksim uses ×U(0.95, 1.05), Playground ×U(1.0, 1.05)."""

    field_name: ClassVar[str] = "dof_armature"
    units: ClassVar[str] = "kg·m²"


# ------------------------------------------------------------------------------------ contacts, world, sensors
@attrs.define(frozen=True, kw_only=True)
class GeomFriction(RandomizedParameter):
    """Sliding friction coefficient (unitless) of the listed geoms, set outright (= value)."""

    geom_ids: tuple[int, ...] = attrs.field(converter=tuple)
    positive: ClassVar[bool] = True

    @property
    def size(self) -> int:
        return len(self.geom_ids)

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.geom_ids)
        return {"geom_friction": _field(model, "geom_friction").at[ids, 0].set(_vector(value, self.size))}

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        geom_names: Sequence[str],
        low: float = 0.4,
        high: float = 1.0,
        family: Family = "uniform",
        shared: bool = True,
        **kwargs: object,
    ) -> Self:
        """=U(0.4, 1.0) is Playground's floor range; one draw shared by all listed geoms (one floor) by default.

        MuJoCo takes a contact's friction from the geom with the higher `priority` (the max of both when equal), so
        list the geoms that win: on the K-Bot, the foot capsules.
        """
        ids = _lookup("geom", model_names(model, model.name_geomadr, model.ngeom), geom_names)
        current = np.unique(np.asarray(model.geom_friction)[list(ids), 0])
        nominal = float(current[0]) if current.size == 1 else None  # stretch about the model's own value
        n = 1 if shared else len(ids)
        dist = make_distribution(family, [low] * n, [high] * n, nominal=nominal, unitless=True)
        return cls(geom_ids=ids, dist=dist, **kwargs)


@attrs.define(frozen=True, kw_only=True)
class Gravity(RandomizedParameter):
    """Gravity vector + Δg (m/s²) per world axis: a tilted or mis-scaled gravity (LocoMuJoCo randomizes it)."""

    @property
    def size(self) -> int:
        return 3

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        return {"opt.gravity": _field(model, "opt.gravity") + _vector(value, 3)}

    @classmethod
    def create(
        cls, max_offset_mps2: float | Sequence[float] = 0.1, family: Family = "uniform", **kwargs: object
    ) -> Self:
        """±0.1 m/s² per axis by default (≈ 0.6° of tilt; our choice)."""
        high = np.broadcast_to(np.asarray(max_offset_mps2, dtype=float), (3,))
        return cls(dist=make_distribution(family, -high, high, nominal=0.0), **kwargs)


def _quat_from_rpy(rpy: Array) -> Array:
    """Quaternion (w, x, y, z) of R = Rz(yaw) · Ry(pitch) · Rx(roll), exact (no small-angle approximation)."""
    half = rpy / 2.0
    c, s = jnp.cos(half), jnp.sin(half)
    cr, cp, cy = c[0], c[1], c[2]
    sr, sp, sy = s[0], s[1], s[2]
    return jnp.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def _quat_mul(a: Array, b: Array) -> Array:
    w1, x1, y1, z1 = a[0], a[1], a[2], a[3]
    w2, x2, y2, z2 = b[0], b[1], b[2], b[3]
    return jnp.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


@attrs.define(frozen=True, kw_only=True)
class ImuMisalignment(RandomizedParameter):
    """IMU mounting error: the IMU site is rotated by roll, pitch, yaw (rad) about its parent body's axes."""

    site_id: int = attrs.field()

    @property
    def size(self) -> int:
        return 3

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        quat = _field(model, "site_quat")
        q = _quat_mul(_quat_from_rpy(_vector(value, 3)), quat[self.site_id])
        return {"site_quat": quat.at[self.site_id].set(q / jnp.linalg.norm(q))}

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        site_name: str = "imu_site",
        max_tilt_rad: float = math.radians(2.0),
        max_yaw_rad: float = math.radians(2.0),
        family: Family = "uniform",
        **kwargs: object,
    ) -> Self:
        """±2° roll/pitch (ksim's IMUAlignmentRandomizer uses a 2° std) and ±2° yaw."""
        (site_id,) = _lookup("site", model_names(model, model.name_siteadr, model.nsite), [site_name])
        high = np.array([max_tilt_rad, max_tilt_rad, max_yaw_rad], dtype=float)
        return cls(site_id=site_id, dist=make_distribution(family, -high, high, nominal=0.0), **kwargs)


# ----------------------------------------------------------------------------------------------- actuators
@attrs.define(frozen=True, kw_only=True)
class _ActuatorParameter(RandomizedParameter):
    """A per-actuator quantity of a MuJoCo PD servo (`ksim_entropy.actuation.use_native_pd`)."""

    actuator_ids: tuple[int, ...] = attrs.field(converter=tuple)

    @property
    def size(self) -> int:
        return len(self.actuator_ids)

    @classmethod
    def _actuators(cls, model: ksim.PhysicsModel, joint_names: Sequence[str] | None) -> tuple[int, ...]:
        bias = np.asarray(model.actuator_biastype)
        gain = np.asarray(model.actuator_gaintype)
        if not np.all((bias == mujoco.mjtBias.mjBIAS_AFFINE) & (gain == mujoco.mjtGain.mjGAIN_FIXED)):
            raise ValueError(
                f"{cls.__name__} needs MuJoCo PD servos (fixed gain, affine bias); this model has plain motors. "
                "Convert it with ksim_entropy.actuation.use_native_pd(mj_model, metadata)."
            )
        if joint_names is None:
            return tuple(range(model.nu))
        joint_ids = _lookup("joint", model_names(model, model.name_jntadr, model.njnt), joint_names)
        trn = np.asarray(model.actuator_trnid)[:, 0]
        by_joint = {int(j): a for a, j in enumerate(trn)}
        missing = [joint_names[i] for i, j in enumerate(joint_ids) if j not in by_joint]
        if missing:
            raise ValueError(f"{cls.__name__}: joints {missing} have no actuator")
        return tuple(by_joint[j] for j in joint_ids)

    @classmethod
    def create(
        cls,
        model: ksim.PhysicsModel,
        *,
        low: float | Sequence[float],
        high: float | Sequence[float],
        joint_names: Sequence[str] | None = None,
        family: Family = "uniform",
        shared: bool = False,
        **kwargs: object,
    ) -> Self:
        """Every actuator by default, one independent draw per joint; `low`/`high` one value or one per joint."""
        ids = cls._actuators(model, joint_names)
        n = 1 if shared else len(ids)
        try:
            lo, hi = (np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in (low, high))
        except ValueError:
            raise ValueError(
                f"{cls.__name__}: low/high need 1 or {n} values, got {np.shape(low)}, {np.shape(high)}"
            ) from None
        nominal = 1.0 if cls.positive else 0.0  # scale factors vs offsets (rad)
        dist = make_distribution(family, lo, hi, nominal=nominal, unitless=cls.positive)
        return cls(actuator_ids=ids, dist=dist, **kwargs)


@attrs.define(frozen=True, kw_only=True)
class ActuatorKpScale(_ActuatorParameter):
    """Position gain kp × s per joint (unitless): gainprm[0] and biasprm[1] = −kp scale together."""

    positive: ClassVar[bool] = True

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.actuator_ids)
        s = _vector(value, self.size)
        return {
            "actuator_gainprm": _field(model, "actuator_gainprm").at[ids, 0].multiply(s),
            "actuator_biasprm": _field(model, "actuator_biasprm").at[ids, 1].multiply(s),
        }


@attrs.define(frozen=True, kw_only=True)
class ActuatorKdScale(_ActuatorParameter):
    """Velocity gain kd × s per joint (unitless): biasprm[2] = −kd."""

    positive: ClassVar[bool] = True

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.actuator_ids)
        return {"actuator_biasprm": _field(model, "actuator_biasprm").at[ids, 2].multiply(_vector(value, self.size))}


@attrs.define(frozen=True, kw_only=True)
class TorqueLimitScale(_ActuatorParameter):
    """Torque limit × s per joint (unitless): the servo's forcerange."""

    positive: ClassVar[bool] = True

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.actuator_ids)
        s = _vector(value, self.size)
        return {"actuator_forcerange": _field(model, "actuator_forcerange").at[ids].multiply(s[:, None])}


@attrs.define(frozen=True, kw_only=True)
class JointZeroOffset(_ActuatorParameter):
    """Calibration error δ (rad) per joint: the servo drives to target + δ, i.e. τ = kp·(target + δ − q) − kd·q̇.

    Implemented as biasprm[0] = kp·δ with the kp in the model at that point, so in a `DomainRandomization` it must
    come after `ActuatorKpScale` (checked). The matching encoder offset is a per-episode observation bias
    (`ksim_entropy.observation.SensorNoise`). ±0.05 rad is Playground's `qpos0` range for all four robots.
    """

    def apply(self, model: ksim.PhysicsModel, value: Array) -> dict[str, Array]:
        ids = jnp.asarray(self.actuator_ids)
        kp = _field(model, "actuator_gainprm")[ids, 0]
        return {"actuator_biasprm": _field(model, "actuator_biasprm").at[ids, 0].set(kp * _vector(value, self.size))}


# ----------------------------------------------------------------------------------------------- the set
@attrs.define(frozen=True, eq=False)  # holds arrays: compared (and hashed) by identity
class _DistributionGroup:
    """The parameters whose distributions share a class, as one concatenated distribution over all their dimensions."""

    dist: Distribution
    params: tuple[int, ...]  # parameter indices, ascending
    ends: tuple[int, ...]  # each parameter's last dimension (exclusive) in `dist`
    param_of_dim: np.ndarray  # (dims,) the parameter each dimension belongs to (for its width)
    columns: np.ndarray | slice  # each dimension's position among all parameters' dimensions (in parameter order)

    def blocks(self) -> list[tuple[int, slice]]:
        """(parameter index, its dimensions in `dist`) for each parameter of the group."""
        return [(i, slice(a, b)) for i, a, b in zip(self.params, (0, *self.ends[:-1]), self.ends, strict=True)]


def _group_by_distribution(parameters: Sequence[RandomizedParameter]) -> tuple[_DistributionGroup, ...]:
    by_class: dict[type[Distribution], list[int]] = {}
    for i, p in enumerate(parameters):
        by_class.setdefault(type(p.dist), []).append(i)
    starts = np.concatenate([[0], np.cumsum([p.dims for p in parameters])])
    groups = []
    for cls, params in by_class.items():
        dims = [parameters[i].dims for i in params]
        columns = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in params]).astype(np.int32)
        if np.array_equal(columns, np.arange(columns[0], columns[0] + len(columns))):
            columns = slice(int(columns[0]), int(columns[0]) + len(columns))  # a slice, not a gather
        groups.append(
            _DistributionGroup(
                dist=cls.concatenate([parameters[i].dist for i in params]),
                params=tuple(params),
                ends=tuple(np.cumsum(dims).tolist()),
                param_of_dim=np.repeat(params, dims).astype(np.int32),
                columns=columns,
            )
        )
    return tuple(groups)


@attrs.define(frozen=True, kw_only=True)
class DomainRandomization(ksim.PhysicsRandomizer):
    """An ordered set of `RandomizedParameter`s sampled together with a vector of traced widths (one per parameter).

    As a ksim randomizer it samples every parameter at its starting width; `sample` takes the widths as an array and
    optionally pins one parameter to the boundary of its range (ADR's boundary sampling). Draws, entropies and npd
    evaluate the parameters' distributions class by class, each class as one concatenated vector distribution
    (`Distribution.concatenate`): the same numbers as parameter by parameter, in a few vector operations.
    """

    parameters: tuple[RandomizedParameter, ...] = attrs.field(converter=tuple)
    _groups: tuple[_DistributionGroup, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.parameters:
            raise ValueError("DomainRandomization needs at least one parameter")
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names must be unique (pass name=...), got {names}")
        for i, p in enumerate(self.parameters):
            if not isinstance(p, RandomizedParameter):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a RandomizedParameter")
            if isinstance(p, ActuatorKpScale):
                late = [q.get_name() for q in self.parameters[:i] if isinstance(q, JointZeroOffset)]
                if late:
                    raise ValueError(f"{late} must come after {p.get_name()}: the zero offset uses the scaled kp")
        object.__setattr__(self, "_groups", _group_by_distribution(self.parameters))

    @property
    def names(self) -> list[str]:
        return [p.get_name() for p in self.parameters]

    @property
    def initial_widths(self) -> np.ndarray:
        return np.array([p.width for p in self.parameters], dtype=np.float32)

    @property
    def max_widths(self) -> np.ndarray:
        return np.array([p.max_width for p in self.parameters], dtype=np.float32)

    @property
    def dims(self) -> np.ndarray:
        return np.array([p.dims for p in self.parameters], dtype=np.int32)

    def check_widths(self, widths: ArrayLike) -> np.ndarray:
        """Concrete widths validated against [0, max_width] per parameter (a ValueError naming the culprits)."""
        w = np.asarray(widths, dtype=np.float64)
        self._check_width_shape(w.shape)
        bad = [
            f"{name}={value!r} (allowed 0..{limit:g})"
            for name, value, limit in zip(self.names, w.tolist(), self.max_widths.tolist(), strict=True)
            if not (math.isfinite(value) and 0.0 <= value <= limit + 1e-6)
        ]
        if bad:
            raise ValueError(f"impossible randomization width(s): {', '.join(bad)}")
        return w.astype(np.float32)

    def sample(
        self, model: ksim.PhysicsModel, rng: PRNGKeyArray, widths: ArrayLike, pinned: ArrayLike = -1
    ) -> dict[str, Array]:
        """Model-field updates for one environment; parameter `pinned` (index, −1 for none) sits on its boundary.

        All parameters share one random draw (each then maps its slice through its distribution's quantile): one
        draw instead of three per parameter keeps the jitted step small.
        """
        return self.sample_from_unit(model, uniforms(rng, self.num_draws), widths, pinned)

    @property
    def num_draws(self) -> int:
        """U(0, 1) variates one `sample` uses: two per dimension (the value and, when pinned, the boundary side)."""
        return 2 * int(self.dims.sum())

    def sample_from_unit(
        self, model: ksim.PhysicsModel, u: Array, widths: ArrayLike, pinned: ArrayLike = -1
    ) -> dict[str, Array]:
        """`sample` with the randomness given: `num_draws` U(0, 1) variates.

        Read as a (2, total dims) array, parameter i takes the columns of its dimensions (in parameter order), row 0
        for the value and row 1 for the boundary side: the same draw as its `draw_from_unit` on those columns.
        """
        u = jnp.reshape(u, (2, int(self.dims.sum())))
        pinned = jnp.asarray(pinned)
        values: dict[int, Array] = {}
        for group, w in self._group_widths(widths):
            drawn = _draw_or_pin(group.dist, u[:, group.columns], w, group.param_of_dim == pinned)
            values.update((i, drawn[block]) for i, block in group.blocks())
        updates: dict[str, Array] = {}
        current = model
        for i, p in enumerate(self.parameters):
            new = p.apply(current, jnp.broadcast_to(values[i], (p.size,)))
            updates.update(new)
            current = with_updates(current, new)
        return updates

    def __call__(self, model: ksim.PhysicsModel, rng: PRNGKeyArray) -> dict[str, Array]:
        """The draw ksim asks for: one environment's physics at the initial widths, jitted for an MJX model.

        ksim calls it once per run through an un-jitted `vmap`, where each op of the draw would compile on its own
        (about 130 small XLA compiles on the K-Bot, ~2 s of start-up on CPU); inside a jitted caller it is inlined.
        """
        return self.sampler(model)(model, rng, self.initial_widths)

    def sampler(self, model: ksim.PhysicsModel) -> Callable[..., dict[str, Array]]:
        """`sample`, jitted for an MJX model (else `sample` itself).

        Outside a jitted step (ksim's start-up, a checkpoint restore) each op of an un-jitted draw would compile on
        its own; inside a jitted caller the jitted one is inlined.
        """
        return jax.jit(self.sample) if isinstance(model, mjx.Model) else self.sample

    def _group_widths(self, widths: ArrayLike | None) -> list[tuple[_DistributionGroup, Array]]:
        """Each distribution group with its per-dimension width scales, from one width per parameter."""
        w = jnp.asarray(self.initial_widths if widths is None else widths, dtype=jnp.float32)
        self._check_width_shape(w.shape)
        return [(group, w[group.param_of_dim]) for group in self._groups]

    def _check_width_shape(self, shape: tuple[int, ...]) -> None:
        """A ValueError unless `shape` holds one width per parameter (checked at trace time: shapes are static)."""
        if shape != (len(self.parameters),):
            raise ValueError(f"need {len(self.parameters)} widths ({self.names}), got shape {shape}")

    def entropies(self, widths: ArrayLike | None = None) -> Array:
        """Per-parameter differential entropy (nats), shape (P,)."""
        total = jnp.zeros(len(self.parameters), dtype=jnp.float32)
        for group, w in self._group_widths(widths):
            h = group.dist.entropy(w)
            total = total + jax.ops.segment_sum(h, group.param_of_dim, len(self.parameters), indices_are_sorted=True)
        return total

    def npd(self, widths: ArrayLike | None = None) -> Array:
        """ADR nats per dimension over all parameters: Σ log(range widths) / total dimensions."""
        total = jnp.zeros((), dtype=jnp.float32)
        for group, w in self._group_widths(widths):
            low, high = group.dist.bounds(w)
            total = total + jnp.sum(jnp.log(high - low))
        return total / float(self.dims.sum())

    def normalized_npd(self, widths: ArrayLike | None = None) -> Array:
        """`npd` with each range divided by its reference scale (unit-free; comparable across robots)."""
        log_reference = [np.log(np.broadcast_to(p.dist.reference_scale(), (p.dims,))) for p in self.parameters]
        return self.npd(widths) - float(np.concatenate(log_reference).mean())
