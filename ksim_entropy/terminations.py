"""Terminations that keep numerical failures out of training batches."""

import attrs
import jax.numpy as jnp
import ksim
from jaxtyping import Array

__all__ = ["UnstablePhysicsTermination"]


@attrs.define(frozen=True, kw_only=True)
class UnstablePhysicsTermination(ksim.Termination):
    """Fail the episode when the state is not finite or any joint moves faster than `max_joint_velocity_radps`.

    A diverging contact solve reaches thousands of rad/s within a few steps, while even the K-Bot's light wrists,
    driven by random PD targets in simulation, peak near 100-130 rad/s (tests/test_physics_stability.py), so the
    1000 rad/s default only fires on a blow-up. ksim's `BadVelocityTermination` looks at the base's linear speed
    only and lets NaN through.
    """

    max_joint_velocity_radps: float = attrs.field(default=1000.0, validator=attrs.validators.gt(0.0))

    def __call__(self, state: ksim.PhysicsData, curriculum_level: Array) -> Array:
        finite = jnp.isfinite(state.qpos).all(axis=-1) & jnp.isfinite(state.qvel).all(axis=-1)
        too_fast = jnp.abs(state.qvel[..., 6:]).max(axis=-1) > self.max_joint_velocity_radps
        return jnp.where(finite & ~too_fast, 0, -1)
