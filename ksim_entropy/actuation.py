"""PD servos inside MuJoCo, so actuator strength is a model parameter, and actuation latency at the physics rate.

ksim's `PositionActuators` computes the K-Bot's PD torques in Python from constants, τ = clip(kp·(a − q) − kd·q̇,
±soft_torque_limit), and writes them to `data.ctrl` of a model whose actuators are plain motors. Constants cannot be
randomized per environment. `use_native_pd` rewrites each motor as a MuJoCo position servo with the same law
(gain kp, affine bias −kp·q − kd·q̇, force range ±limit), so kp, kd and the torque limit live in
`actuator_gainprm`, `actuator_biasprm` and `actuator_forcerange`, fields a ksim `PhysicsRandomizer` can replace per
environment (traced, no recompilation). `NativePDActuators` is the ksim actuator for such a model: the policy's
action (joint position targets, rad) goes to `data.ctrl` unchanged.

`DelayedActuators` wraps a stateless ksim actuator and delays the commanded action by a latency drawn per episode and
quantised to physics steps (`ksim_entropy.latency`), so it can resolve one physics step (4 ms at 250 Hz) and span
several control steps, which ksim's own `action_latency_range` (a blend inside one control step) cannot.

Timing, with ksim's engines (`MjxEngine.step` / `MujocoEngine.step`): the actuator is called on every physics step
with ksim's (blended) action. Note that ksim's blend, prct = clip(i − latency, 0, 1) at sub-step i, gives the
*previous* control step's action on sub-step 0 even with ``action_latency_range=(0, 0)``: ksim itself delays each new
action by one physics step. `DelayedActuators` adds its delay on top of what ksim passes in.
"""

import copy
import math
from collections.abc import Callable
from typing import Self

import attrs
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ksim_entropy.draws import hashed_key_and_uniforms
from ksim_entropy.latency import DelayLine, Latency

__all__ = ["DelayedActuators", "NativePDActuators", "is_native_pd", "use_native_pd"]


def _default_actuator_name(joint_name: str) -> str:
    return f"{joint_name}_ctrl"  # ksim.PositionActuators.get_actuator_name


def _name(model: mujoco.MjModel, adr: int) -> str:
    return model.names[adr:].split(b"\x00", 1)[0].decode()


def is_native_pd(model: ksim.PhysicsModel) -> bool:
    """True when every actuator is a PD position servo (fixed gain kp, affine bias with biasprm[1] = −gainprm[0]).

    Works for `mujoco.MjModel` and `mjx.Model`; holds after kp/kd/limit randomization (kp scales gain and bias alike).
    """
    if model.nu == 0:
        return False
    gaintype = np.asarray(model.actuator_gaintype)
    biastype = np.asarray(model.actuator_biastype)
    gain = np.asarray(model.actuator_gainprm)[:, 0]
    bias = np.asarray(model.actuator_biasprm)[:, 1]
    return bool(
        np.all(gaintype == mujoco.mjtGain.mjGAIN_FIXED)
        and np.all(biastype == mujoco.mjtBias.mjBIAS_AFFINE)
        and np.allclose(bias, -gain, rtol=1e-12, atol=0.0)
    )


def _gain(joint: str, field: str, value: float | None) -> float:
    if value is None:
        raise ValueError(f"joint '{joint}' has no {field} in the metadata; a PD servo needs kp and kd")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"joint '{joint}': {field} must be a finite number >= 0, got {value!r}")
    return value


def use_native_pd(
    mj_model: mujoco.MjModel,
    metadata: ksim.Metadata,
    *,
    actuator_name: Callable[[str], str] = _default_actuator_name,
) -> mujoco.MjModel:
    """A copy of `mj_model` whose joint motors are MuJoCo PD position servos with the metadata's kp, kd and limit.

    Each actuator `actuator_name(joint)` (ksim's ``<joint>_ctrl`` by default) of a joint in `metadata` becomes

        actuator_force = clip(kp·ctrl − kp·q − kd·q̇, forcerange)      (N·m; ctrl = target position, rad)

    i.e. gaintype FIXED with gainprm[0] = kp (N·m/rad), biastype AFFINE with biasprm[:3] = [0, −kp, −kd]
    (kd in N·m·s/rad), ctrl no longer clamped (ctrllimited = 0, as ksim does not clamp position targets; ctrlrange is
    rewritten to the joint's range, rad, for information only). This is exactly ksim.PositionActuators' law on the
    original model: its torque clip(kp·(a − q) − kd·q̇, ±soft_torque_limit) is then clamped by the motor's ctrlrange
    (a motor's ctrl is its force) and forcerange if limited, so the servo's force range is ±soft_torque_limit narrowed
    by those (for the K-Bot: ±soft_torque_limit). Without a soft_torque_limit the motor's own ranges are kept; with
    none of them the force is unlimited (forcelimited = 0). A joint-level ``actuatorfrcrange`` stays as it was: it
    clamps `qfrc_actuator` (not `actuator_force`) in both models.

    Requirements, each checked with a clear `ValueError`: every actuator is a plain motor (fixed gain 1, no bias, no
    activation dynamics) with a joint transmission and gear 1 (with gear g, `actuator_force` would be the motor-side
    force, not the joint torque that `ksim.ActuatorForceObservation` and the torque rewards assume); every actuator has
    metadata and every joint in the metadata has an actuator; kp, kd given and >= 0; soft_torque_limit > 0 if given;
    actuator i drives the 1-dof joint at qpos[7 + i] / qvel[6 + i] (ksim's layout: `NativePDActuators` holds qpos[7:]).
    Converting a model twice is refused (it is no longer made of motors; see `is_native_pd`).

    `mj_model` itself is not modified (`copy.copy` of an MjModel is a deep copy).
    """
    if not isinstance(mj_model, mujoco.MjModel):
        raise TypeError(f"use_native_pd needs a mujoco.MjModel (convert before mjx.put_model), got {type(mj_model)}")
    joints = metadata.joint_name_to_metadata
    if not joints:
        raise ValueError("metadata.joint_name_to_metadata is empty: kp, kd and torque limits come from it")
    if mj_model.nu == 0:
        raise ValueError("the model has no actuators to convert")
    if is_native_pd(mj_model):
        raise ValueError("the model's actuators are already PD servos (use_native_pd was applied before?)")

    actuators = {_name(mj_model, mj_model.name_actuatoradr[i]): i for i in range(mj_model.nu)}
    joint_of_actuator = {actuator_name(joint): joint for joint in joints}
    no_actuator = sorted(joint for joint in joints if actuator_name(joint) not in actuators)
    if no_actuator:
        raise ValueError(
            f"joints {no_actuator} are in the metadata but have no actuator "
            f"(looked for {[actuator_name(j) for j in no_actuator]}; actuators are {sorted(actuators)})"
        )
    no_metadata = sorted(name for name in actuators if name not in joint_of_actuator)
    if no_metadata:
        raise ValueError(f"actuators {no_metadata} have no joint in the metadata (kp, kd and limits would be unknown)")
    first_joint = mj_model.jnt_type[0] if mj_model.njnt else None
    if first_joint != mujoco.mjtJoint.mjJNT_FREE:
        raise ValueError("the model's first joint must be the floating base (free joint), ksim's layout")

    model = copy.copy(mj_model)
    for name, i in actuators.items():
        joint = joint_of_actuator[name]
        params = joints[joint]
        if mj_model.actuator_trntype[i] != mujoco.mjtTrn.mjTRN_JOINT:
            raise ValueError(
                f"actuator '{name}' does not drive a joint (transmission type {mj_model.actuator_trntype[i]})"
            )
        jnt = int(mj_model.actuator_trnid[i, 0])
        if _name(mj_model, mj_model.name_jntadr[jnt]) != joint:
            raise ValueError(
                f"actuator '{name}' drives joint '{_name(mj_model, mj_model.name_jntadr[jnt])}', not '{joint}'"
            )
        if mj_model.jnt_type[jnt] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
            raise ValueError(f"actuator '{name}': joint '{joint}' is not a hinge or slide joint")
        if mj_model.jnt_qposadr[jnt] != 7 + i or mj_model.jnt_dofadr[jnt] != 6 + i:
            raise ValueError(
                f"actuator {i} ('{name}') drives qpos[{mj_model.jnt_qposadr[jnt]}], not qpos[{7 + i}]: actuators must "
                "be in joint order after the free joint (ksim's layout; the hold action is qpos[7:])"
            )
        gear = float(mj_model.actuator_gear[i, 0])
        if gear != 1.0:
            raise ValueError(
                f"actuator '{name}' has gear {gear:g}; only gear 1 is supported (actuator_force must be the joint "
                "torque that ksim.ActuatorForceObservation and the torque rewards read)"
            )
        plain_motor = (
            mj_model.actuator_dyntype[i] == mujoco.mjtDyn.mjDYN_NONE
            and mj_model.actuator_gaintype[i] == mujoco.mjtGain.mjGAIN_FIXED
            and mj_model.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_NONE
            and mj_model.actuator_gainprm[i, 0] == 1.0
            and mj_model.actuator_actnum[i] == 0
        )
        if not plain_motor:
            kind = (
                "already a PD servo (converted twice?)"
                if mj_model.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_AFFINE
                else "not a plain motor"
            )
            raise ValueError(f"actuator '{name}' is {kind}: use_native_pd converts <motor> actuators (gain 1, no bias)")

        kp = _gain(joint, "kp", params.kp)
        kd = _gain(joint, "kd", params.kd)
        lo, hi = -math.inf, math.inf
        if params.soft_torque_limit is not None:
            limit = float(params.soft_torque_limit)
            if not limit > 0.0:  # also rejects NaN
                raise ValueError(f"joint '{joint}': soft_torque_limit must be > 0 N·m, got {limit!r}")
            lo, hi = -limit, limit
        if mj_model.actuator_ctrllimited[i]:  # a motor's ctrl is its force (gain 1, gear 1)
            lo, hi = (
                max(lo, float(mj_model.actuator_ctrlrange[i, 0])),
                min(hi, float(mj_model.actuator_ctrlrange[i, 1])),
            )
        if mj_model.actuator_forcelimited[i]:
            lo = max(lo, float(mj_model.actuator_forcerange[i, 0]))
            hi = min(hi, float(mj_model.actuator_forcerange[i, 1]))
        if not lo <= 0.0 <= hi or lo == hi:
            raise ValueError(f"actuator '{name}': the torque range [{lo:g}, {hi:g}] N·m does not straddle 0")

        model.actuator_gaintype[i] = mujoco.mjtGain.mjGAIN_FIXED
        model.actuator_gainprm[i] = 0.0
        model.actuator_gainprm[i, 0] = kp
        model.actuator_biastype[i] = mujoco.mjtBias.mjBIAS_AFFINE
        model.actuator_biasprm[i] = 0.0
        model.actuator_biasprm[i, 1] = -kp
        model.actuator_biasprm[i, 2] = -kd
        model.actuator_ctrllimited[i] = 0
        model.actuator_ctrlrange[i] = mj_model.jnt_range[jnt] if mj_model.jnt_limited[jnt] else 0.0
        limited = math.isfinite(lo) or math.isfinite(hi)
        model.actuator_forcelimited[i] = int(limited)
        model.actuator_forcerange[i] = (lo, hi) if limited else (0.0, 0.0)
    return model


@attrs.define(frozen=True, kw_only=True)
class NativePDActuators(ksim.Actuators):
    """The ksim actuator for a `use_native_pd` model: the action (joint position targets, rad) is `ctrl` unchanged.

    The PD law runs inside MuJoCo (`mj_forward` / `mjx.forward`), on the state at the start of each physics step,
    as ksim.PositionActuators does in Python. The default action, which ksim applies until the first action arrives
    (and blends from inside a control step), is the current joint positions: hold still.
    """

    def get_ctrl(self, action: Array, physics_data: ksim.PhysicsData, rng: PRNGKeyArray) -> Array:
        """Position targets (rad), one per actuator in joint order."""
        return action

    def get_default_action(self, physics_data: ksim.PhysicsData) -> Array:
        """The joint positions qpos[7:] (rad), copied (a MuJoCo MjData's qpos is a live buffer)."""
        return jnp.array(physics_data.qpos[7:])


def _stateless(_: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, ksim.StatefulActuators):
        raise TypeError(
            f"DelayedActuators.{attribute.name} must be a stateless ksim.Actuators; {type(value).__name__} is a "
            "StatefulActuators, whose state DelayedActuators cannot carry"
        )
    if not isinstance(value, ksim.Actuators):
        raise TypeError(f"DelayedActuators.{attribute.name} must be a ksim.Actuators, got {type(value).__name__}")


def _is_latency(_: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, Latency):
        raise TypeError(
            f"DelayedActuators.{attribute.name} must be a ksim_entropy.latency.Latency, got {type(value).__name__} "
            "(use DelayedActuators.create(..., latency_range_s=(lo, hi), dt_s=...) to speak seconds)"
        )


@attrs.define(frozen=True, kw_only=True)
class DelayedActuators(ksim.StatefulActuators):
    """Delays the action commanded to a stateless ksim actuator by d physics steps, d drawn per episode.

    With ksim's engines `get_stateful_ctrl` is called on every physics step s (s = 0 after the reset) with the
    commanded action c_s; the inner actuator gets c_{s−d} for s ≥ d and, before that, the inner actuator's default
    action at the reset (for `NativePDActuators`: the reset joint positions, so the robot holds still until the first
    command arrives). d is uniform over the integers round(min_s/dt), ..., round(max_s/dt) (Python's round: halves go
    to even) and may exceed a control step. Optional per-step jitter and sample-and-hold follow
    `ksim_entropy.latency.Latency`. Leave ksim's own ``action_latency_range`` at (0, 0) to use this instead.
    """

    inner: ksim.Actuators = attrs.field(validator=_stateless)
    latency: Latency = attrs.field(validator=_is_latency)

    @classmethod
    def create(
        cls,
        inner: ksim.Actuators,
        *,
        latency_range_s: tuple[float, float],
        dt_s: float,
        jitter_s: float = 0.0,
        hold_prob: float = 0.0,
        buffer_steps: int | None = None,
    ) -> Self:
        """Latency uniform in `latency_range_s` (s), quantised to the physics timestep `dt_s` (s).

        `jitter_s` (s) adds a per-step extra delay uniform in [0, jitter_s] (never reordering commands);
        `hold_prob` is the chance per physics step of repeating the previous output (a dropped command).
        """
        if len(latency_range_s) != 2:
            raise ValueError(f"latency_range_s must be (min_s, max_s), got {latency_range_s!r}")
        lo, hi = latency_range_s
        latency = Latency(
            min_s=lo, max_s=hi, step_s=dt_s, jitter_s=jitter_s, hold_prob=hold_prob, buffer_steps=buffer_steps
        )
        return cls(inner=inner, latency=latency)

    def get_initial_state(self, physics_data: ksim.PhysicsData, rng: PRNGKeyArray) -> DelayLine:
        """A fresh delay line holding the inner default action, with this episode's delay drawn from `rng`."""
        hold = jnp.asarray(self.inner.get_default_action(physics_data))
        line = self.latency.init(hold, rng)
        # A DelayLine outputs v_{max(s − d, 0)}: write the hold value as v_0, so command c_s is v_{s+1} and reads
        # before its arrival return the hold value (the reset value given to `init` alone is never read back).
        # At s = 0 the read age is 0 whatever the jitter or hold variates: the priming step needs no draw.
        _, line = self.latency.step_from_unit(line, hold, jnp.zeros(self.latency.draws_per_step))
        return line

    def get_stateful_ctrl(
        self,
        action: Array,
        physics_data: ksim.PhysicsData,
        actuator_state: DelayLine,
        rng: PRNGKeyArray,
    ) -> tuple[Array, DelayLine]:
        """Push the commanded action, pass the delayed one to the inner actuator; returns (ctrl, new state)."""
        inner_rng, u = hashed_key_and_uniforms(rng, self.latency.draws_per_step)
        delayed, line = self.latency.step_from_unit(actuator_state, jnp.asarray(action), u)
        return self.inner.get_ctrl(delayed, physics_data, inner_rng), line

    def get_default_action(self, physics_data: ksim.PhysicsData) -> Array:
        """The inner actuator's default action (what ksim blends from before the first action)."""
        return self.inner.get_default_action(physics_data)
