"""Reward terms for velocity-commanded locomotion, as ksim `Reward` subclasses (ksim 0.2.10 sign convention).

In ksim 0.2.10 a `…Reward` must have a scale ≥ 0 and a `…Penalty` a scale ≤ 0; `get_reward` returns the
magnitude of the term for every step of one environment's trajectory (shape (T,)).

The velocity command is a 3-vector `[vx (m/s), vy (m/s), wz (rad/s)]` in the robot's heading frame, e.g. a
`ksim.FloatVectorCommand` with three ranges.
"""

import attrs
import jax.numpy as jnp
import ksim
import xax
from jaxtyping import Array

__all__ = ["BaseVelocityTrackingReward", "YawRateTrackingReward", "base_frame_planar_velocity"]


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
