"""Reward terms for velocity-commanded locomotion, as ksim `Reward` subclasses (ksim 0.2.10 sign convention).

In ksim 0.2.10 a `…Reward` must have a scale ≥ 0 and a `…Penalty` a scale ≤ 0; `get_reward` returns the
magnitude of the term for every step of one environment's trajectory (shape (T,)).

The velocity command is a 3-vector `[vx (m/s), vy (m/s), wz (rad/s)]` in the robot's heading frame, e.g. a
`ksim.FloatVectorCommand` with three ranges.
"""

import attrs
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import xax
from jaxtyping import Array
from ksim.utils.mujoco import get_body_data_idx_by_name, get_joint_names_in_order

__all__ = [
    "ActionRatePenalty",
    "ActionSmoothnessPenalty",
    "BaseAccelerationPenalty",
    "BaseHeightTrackingReward",
    "BaseTiltReward",
    "BaseVelocityTrackingReward",
    "EnergyPenalty",
    "FootSlipPenalty",
    "JointLimitProximityPenalty",
    "NominalPosePenalty",
    "NormalizedTorquePenalty",
    "YawRateTrackingReward",
    "applied_torque",
    "base_frame_planar_velocity",
    "episode_start_mask",
]


def base_frame_planar_velocity(qpos: Array, qvel: Array) -> Array:
    """Planar (x, y) velocity of the floating base in its own frame (m/s), from free-joint qpos/qvel (..., nq/nv)."""
    linvel_world = qvel[..., :3]  # free joint: linear velocity in the world frame
    linvel_base = xax.rotate_vector_by_quat(linvel_world, qpos[..., 3:7], inverse=True)
    return linvel_base[..., :2]


def _positive(_: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.define(frozen=True, kw_only=True)
class BaseVelocityTrackingReward(ksim.Reward):
    """exp(−‖v_xy − cmd_xy‖² / (2σ²)): 1 when the base's planar velocity (base frame) equals the command."""

    command_name: str = attrs.field()
    sigma_mps: float = attrs.field(default=0.25, validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        command = trajectory.command[self.command_name]
        velocity_xy = base_frame_planar_velocity(trajectory.qpos, trajectory.qvel)
        error_sq = jnp.sum(jnp.square(velocity_xy - command[..., :2]), axis=-1)
        return jnp.exp(-error_sq / (2.0 * self.sigma_mps**2))


@attrs.define(frozen=True, kw_only=True)
class YawRateTrackingReward(ksim.Reward):
    """exp(−(ω_z − cmd_wz)² / (2σ²)), with ω_z the free joint's angular velocity about the base z axis (rad/s)."""

    command_name: str = attrs.field()
    sigma_radps: float = attrs.field(default=0.5, validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        command = trajectory.command[self.command_name]
        yaw_rate = trajectory.qvel[..., 5]  # free joint: angular velocity in the base frame
        return jnp.exp(-jnp.square(yaw_rate - command[..., 2]) / (2.0 * self.sigma_radps**2))


@attrs.define(frozen=True, kw_only=True)
class BaseHeightTrackingReward(ksim.Reward):
    """exp(−(z − z*)² / (2σ²)): 1 when the floating base is `height_m` above the world origin (m; flat floor)."""

    height_m: float = attrs.field(validator=_positive)
    sigma_m: float = attrs.field(default=0.05, validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        return jnp.exp(-jnp.square(trajectory.qpos[..., 2] - self.height_m) / (2.0 * self.sigma_m**2))


@attrs.define(frozen=True, kw_only=True)
class BaseTiltReward(ksim.Reward):
    """exp(−sin²θ / (2σ²)), θ the angle between the base's z axis and the vertical: 1 when upright, σ in rad.

    Unlike ksim's `UprightReward` (cos θ − sin θ, slope −1 at every tilt), the kernel is steepest around σ, so
    it separates "a little off" from "upright" while a policy still balances.
    """

    sigma_rad: float = attrs.field(default=0.1, validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        up = xax.rotate_vector_by_quat(jnp.array([0.0, 0.0, 1.0]), trajectory.qpos[..., 3:7])
        sin_sq = jnp.sum(jnp.square(up[..., :2]), axis=-1)
        return jnp.exp(-sin_sq / (2.0 * self.sigma_rad**2))


@attrs.define(frozen=True, kw_only=True)
class NominalPosePenalty(ksim.Reward):
    """Mean over joints of w_j (q_j − q*_j)² (rad²): distance from the nominal pose q*, weighted per joint."""

    nominal_rad: tuple[float, ...] = attrs.field()
    weights: tuple[float, ...] = attrs.field()

    def __attrs_post_init__(self) -> None:
        if len(self.nominal_rad) != len(self.weights):
            raise ValueError(f"{len(self.nominal_rad)} nominal angles but {len(self.weights)} weights")
        if any(not (w >= 0 and np.isfinite(w)) for w in self.weights):
            raise ValueError(f"weights must be finite and >= 0, got {self.weights}")

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        error = trajectory.qpos[..., 7:] - jnp.asarray(self.nominal_rad)
        return jnp.mean(jnp.asarray(self.weights) * jnp.square(error), axis=-1)


def episode_start_mask(done: Array, lag: int = 1) -> Array:
    """(T,) bool: True where step t has a valid predecessor `lag` steps back in the same episode.

    Step t's predecessor t − 1 belongs to the same episode unless step t − 1 ended one (`done[t-1]`); the first
    `lag` steps of a rollout have no predecessor in it at all.
    """
    valid = jnp.ones_like(done, dtype=bool)
    for k in range(1, lag + 1):  # none of steps t-1 .. t-lag may have ended an episode (or lie before the rollout)
        valid = valid & ~jnp.concatenate([jnp.ones((k,), dtype=bool), done[..., :-k]], axis=-1)
    return valid


@attrs.define(frozen=True, kw_only=True)
class ActionRatePenalty(ksim.Reward):
    """Mean over joints of (a_t − a_{t−1})² (rad² per control step); 0 where a step has no predecessor."""

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        action = trajectory.action
        diff = action - jnp.concatenate([action[..., :1, :], action[..., :-1, :]], axis=-2)
        return jnp.where(episode_start_mask(trajectory.done, 1), jnp.mean(jnp.square(diff), axis=-1), 0.0)


@attrs.define(frozen=True, kw_only=True)
class ActionSmoothnessPenalty(ksim.Reward):
    """Mean over joints of (a_t − 2a_{t−1} + a_{t−2})² (rad²): the discrete second difference, jerky targets."""

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        a = trajectory.action
        prev1 = jnp.concatenate([a[..., :1, :], a[..., :-1, :]], axis=-2)
        prev2 = jnp.concatenate([a[..., :2, :], a[..., :-2, :]], axis=-2)
        second = a - 2.0 * prev1 + prev2
        return jnp.where(episode_start_mask(trajectory.done, 2), jnp.mean(jnp.square(second), axis=-1), 0.0)


def applied_torque(trajectory: ksim.Trajectory, torque_obs: str) -> Array:
    """The applied joint torques (N·m, (..., nu)) from the observation `torque_obs`, with a clear error if missing.

    `trajectory.ctrl` is not a torque once the PD servos run inside MuJoCo (`ksim_entropy.actuation`): there it holds
    position targets. `ksim.ActuatorForceObservation` (data.actuator_force) is the applied actuator force both for
    plain motors and for native PD servos.
    """
    if torque_obs not in trajectory.obs:
        raise KeyError(
            f"torque observation '{torque_obs}' is missing: add ksim.ActuatorForceObservation() to the task's "
            f"observations under that name; observations are {sorted(trajectory.obs)}"
        )
    return trajectory.obs[torque_obs]


@attrs.define(frozen=True, kw_only=True)
class NormalizedTorquePenalty(ksim.Reward):
    """Mean over joints of (τ / τ_max)², τ the applied joint torque (N·m) and τ_max its actuator limit.

    τ is read from the observation `torque_obs` (default ``"actuator_force"``, a `ksim.ActuatorForceObservation`).
    """

    torque_limits_nm: tuple[float, ...] = attrs.field()
    torque_obs: str = attrs.field(default="actuator_force")

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        torque = applied_torque(trajectory, self.torque_obs)
        return jnp.mean(jnp.square(torque / jnp.asarray(self.torque_limits_nm)), axis=-1)

    @classmethod
    def create(
        cls, physics_model: ksim.PhysicsModel, *, scale: float, torque_obs: str = "actuator_force"
    ) -> "NormalizedTorquePenalty":
        """τ_max per actuator: its forcerange if force-limited (native PD servos), else its ctrlrange (motors)."""
        forcelimited = np.asarray(physics_model.actuator_forcelimited).astype(bool)
        forcerange = np.asarray(physics_model.actuator_forcerange, dtype=float)
        ctrlrange = np.asarray(physics_model.actuator_ctrlrange, dtype=float)
        biased = np.asarray(physics_model.actuator_biastype) != mujoco.mjtBias.mjBIAS_NONE
        limits = []
        for i in range(int(physics_model.nu)):
            if forcelimited[i]:
                lo, hi = forcerange[i]
            elif biased[i]:  # a servo's ctrl is a target, not a torque: its ctrlrange says nothing about torque
                raise ValueError(
                    f"actuator {i} is a servo without a force range: its torque limit is unknown "
                    "(give the joint a soft_torque_limit before use_native_pd)"
                )
            else:
                lo, hi = ctrlrange[i]
            limits.append(max(abs(float(lo)), abs(float(hi))))
        if any(limit <= 0 for limit in limits):
            raise ValueError(
                f"every actuator needs a non-zero forcerange (force-limited) or ctrlrange to normalise torques, "
                f"got {limits}"
            )
        return cls(torque_limits_nm=tuple(limits), torque_obs=torque_obs, scale=scale)


@attrs.define(frozen=True, kw_only=True)
class EnergyPenalty(ksim.Reward):
    """Mechanical power Σ_j |τ_j q̇_j| (W): applied torque (N·m) times joint speed (rad/s).

    τ is read from the observation `torque_obs` (default ``"actuator_force"``, a `ksim.ActuatorForceObservation`).
    """

    torque_obs: str = attrs.field(default="actuator_force")

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        torque = applied_torque(trajectory, self.torque_obs)
        return jnp.sum(jnp.abs(torque * trajectory.qvel[..., 6:]), axis=-1)


@attrs.define(frozen=True, kw_only=True)
class BaseAccelerationPenalty(ksim.Reward):
    """‖v_t − v_{t−1}‖ / ctrl_dt (m/s²) of the base's linear velocity: jolts a real IMU and gearbox feel."""

    ctrl_dt_s: float = attrs.field(validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        v = trajectory.qvel[..., :3]
        dv = v - jnp.concatenate([v[..., :1, :], v[..., :-1, :]], axis=-2)
        accel = jnp.linalg.norm(dv, axis=-1) / self.ctrl_dt_s
        return jnp.where(episode_start_mask(trajectory.done, 1), accel, 0.0)


@attrs.define(frozen=True, kw_only=True)
class FootSlipPenalty(ksim.Reward):
    """Σ over feet in contact of ‖v_xy‖² ((m/s)²): horizontal foot speed while the foot touches the floor.

    Speed is the finite difference of the foot body's position over one control step.
    """

    foot_body_ids: tuple[int, ...] = attrs.field()
    contact_obs: str = attrs.field()
    ctrl_dt_s: float = attrs.field(validator=_positive)

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        pos = trajectory.xpos[..., jnp.asarray(self.foot_body_ids), :2]  # (T, feet, 2)
        vel = (pos - jnp.concatenate([pos[..., :1, :, :], pos[..., :-1, :, :]], axis=-3)) / self.ctrl_dt_s
        contact = trajectory.obs[self.contact_obs]
        if contact.ndim == pos.ndim:  # (T, geoms per foot, feet) from ksim.FeetContactObservation
            contact = contact.any(axis=-2)
        slip = jnp.sum(jnp.where(contact, jnp.sum(jnp.square(vel), axis=-1), 0.0), axis=-1)
        return jnp.where(episode_start_mask(trajectory.done, 1), slip, 0.0)

    @classmethod
    def create(
        cls,
        physics_model: ksim.PhysicsModel,
        *,
        foot_body_names: tuple[str, ...],
        contact_obs: str,
        ctrl_dt_s: float,
        scale: float,
    ) -> "FootSlipPenalty":
        body_ids = get_body_data_idx_by_name(physics_model)  # works for mujoco.MjModel and mjx.Model
        missing = [n for n in foot_body_names if n not in body_ids]
        if missing:
            raise ValueError(f"foot bodies {missing} not in the model; bodies are {sorted(body_ids)}")
        ids = tuple(body_ids[n] for n in foot_body_names)
        return cls(foot_body_ids=ids, contact_obs=contact_obs, ctrl_dt_s=ctrl_dt_s, scale=scale)


@attrs.define(frozen=True, kw_only=True)
class JointLimitProximityPenalty(ksim.Reward):
    """Σ_j max(0, 1 − d_j / m_j)², d_j = min(q − lower, upper − q) (rad): 0 away from the limits, 1 per joint at one.

    The margin m_j is a fraction of joint j's range.
    """

    lower_rad: tuple[float, ...] = attrs.field()
    upper_rad: tuple[float, ...] = attrs.field()
    margin_rad: tuple[float, ...] = attrs.field()

    def get_reward(self, trajectory: ksim.Trajectory) -> Array:
        q = trajectory.qpos[..., 7:]
        distance = jnp.minimum(q - jnp.asarray(self.lower_rad), jnp.asarray(self.upper_rad) - q)
        closeness = jnp.clip(1.0 - distance / jnp.asarray(self.margin_rad), 0.0, None)
        return jnp.sum(jnp.square(closeness), axis=-1)

    @classmethod
    def create(
        cls, physics_model: ksim.PhysicsModel, *, margin_fraction: float = 0.1, scale: float
    ) -> "JointLimitProximityPenalty":
        if not 0.0 < margin_fraction < 0.5:
            raise ValueError(f"margin_fraction must be in (0, 0.5), got {margin_fraction}")
        names = get_joint_names_in_order(physics_model)  # works for mujoco.MjModel and mjx.Model
        hinges = range(1, physics_model.njnt)  # joint 0 is the floating base
        ranges = [tuple(float(v) for v in np.asarray(physics_model.jnt_range[j])) for j in hinges]
        unlimited = [names[j] for j in hinges if not bool(physics_model.jnt_limited[j])]
        if unlimited:
            raise ValueError(f"joints {unlimited} have no range; limit proximity is undefined for them")
        return cls(
            lower_rad=tuple(lo for lo, _ in ranges),
            upper_rad=tuple(hi for _, hi in ranges),
            margin_rad=tuple(margin_fraction * (hi - lo) for lo, hi in ranges),
            scale=scale,
        )
