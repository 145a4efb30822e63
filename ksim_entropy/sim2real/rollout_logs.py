"""Simulated logs from ksim itself, in the real robot's log schema.

A policy is rolled out in the task's MJX environment; what it saw and did is written as a `StepLog` (the kinfer
NDJSON fields). ksim 0.2.10 has no public rollout API, so this uses the same private steps as its `collect_dataset`.

The rollout uses the task's own physics randomization, sensor noise, pushes and resets, as in training. A log step
holds the observations the policy received (the noisy ones, as a robot's sensors would report them), the command
and the action, like one line of kinfer's runtime log.
"""

from collections.abc import Mapping

import equinox as eqx
import jax
import ksim
import numpy as np
import xax
from jaxtyping import PyTree

from ksim_entropy.formats.schema import CHANNEL_GROUPS, StepLog

__all__ = ["ksim_rollout", "trajectory_to_step_log"]


# ksim 0.2.10 has no public rollout: `ksim_rollout` calls these private methods of its RLTask, with these parameters
# (tests/test_ksim_overrides.py fails, naming the method, when an installed ksim's differ).
KSIM_PRIVATE_CALLS: dict[str, tuple[str, ...]] = {
    "RLTask._get_constants": ("self", "metadata", "physics_model", "model_statics", "argmax_action"),
    "RLTask._get_env_state": (
        "self",
        "rng",
        "rollout_constants",
        "mj_model",
        "physics_model",
        "policy_model",
        "randomizers",
    ),
    "RLTask._get_shared_state": ("self", "rng", "mj_model", "physics_model", "model_arrs"),
    "RLTask._single_unroll": ("self", "constants", "env_state", "shared_state", "num_steps"),
}


def ksim_rollout(
    task: ksim.PPOTask, model: PyTree, *, num_steps: int, seed: int = 0, argmax: bool = True
) -> ksim.Trajectory:
    """Roll `model` out for `num_steps` control steps in `task.config.num_envs` MJX environments.

    Returns ksim's `Trajectory` with leading axes (num_envs, num_steps). `argmax` uses the policy's mean action (as
    the exported policy does); otherwise actions are sampled.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    metadata = task.get_mujoco_model_metadata(mj_model)
    task.update_mj_model(mj_model, metadata)
    mjx_model = task.get_mjx_model(mj_model)
    randomizers = xax.freeze_dict(task.get_physics_randomizers(mjx_model))
    model_arr, model_static = eqx.partition(model, task.model_partition_fn)
    constants = task._get_constants(
        metadata=metadata, physics_model=mjx_model, model_statics=(model_static,), argmax_action=argmax
    )
    env_rng, shared_rng = jax.random.split(jax.random.PRNGKey(seed))
    env_state = task._get_env_state(
        rng=env_rng,
        rollout_constants=constants,
        mj_model=mj_model,
        physics_model=mjx_model,
        policy_model=model,
        randomizers=randomizers,
    )
    shared_state = task._get_shared_state(
        rng=shared_rng, mj_model=mj_model, physics_model=mjx_model, model_arrs=(model_arr,)
    )
    trajectory, _, _ = task._single_unroll(constants, env_state, shared_state, num_steps)
    return trajectory


def trajectory_to_step_log(
    trajectory: ksim.Trajectory,
    *,
    env_index: int,
    ctrl_dt_s: float,
    observation_keys: Mapping[str, str],
    command_key: str | None,
    joint_names: tuple[str, ...] | None = None,
    source: str = "ksim",
) -> StepLog:
    """One environment of a ksim `Trajectory` as a `StepLog`.

    `observation_keys` maps log groups (joint_angles, joint_vels, projected_g, accel, gyro) to observation names in
    `trajectory.obs`; `output` is the action and `command` is `trajectory.command[command_key]`. Time is the control
    step index × `ctrl_dt_s` (ksim's `timestep` restarts at every reset, a robot's clock does not).
    """
    unknown = sorted(set(observation_keys) - set(CHANNEL_GROUPS))
    if unknown:
        raise ValueError(f"unknown log groups {unknown}; choose from {list(CHANNEL_GROUPS)}")
    missing = sorted(k for k in observation_keys.values() if k not in trajectory.obs)
    if missing:
        raise ValueError(f"observations {missing} not in the trajectory; it has {sorted(trajectory.obs)}")
    num_envs = trajectory.done.shape[0]
    if not 0 <= env_index < num_envs:
        raise ValueError(f"env_index {env_index} out of range for {num_envs} environments")

    def pick(array: object) -> np.ndarray:
        values = np.asarray(array)[env_index]
        return values.reshape(values.shape[0], -1).astype(np.float64)

    groups = {group: pick(trajectory.obs[key]) for group, key in observation_keys.items()}
    if command_key is not None:
        groups["command"] = pick(trajectory.command[command_key])
    groups["output"] = pick(trajectory.action)
    return StepLog.from_arrays(**groups, dt_s=ctrl_dt_s, joint_names=joint_names, source=source)
