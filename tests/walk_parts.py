"""The pieces of ksim's rollout for a small K-Bot walking task, built the way ksim's training loop builds them."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import ksim
import xax
from jaxtyping import PyTree
from ksim.task.rl import RolloutConstants, RolloutEnvState, RolloutSharedState

from ksim_entropy.kbot.walk import KBotWalkingTask, preset_config


@dataclass
class WalkParts:
    task: KBotWalkingTask
    config: dict[str, Any]  # the config values the task was built from (WalkConfig fields only)
    constants: RolloutConstants
    env_state: RolloutEnvState
    shared: RolloutSharedState
    model_arr: PyTree
    model_static: PyTree


def walk_task(
    exp_dir: str | Path, *, task_class: type[KBotWalkingTask] = KBotWalkingTask, **values: Any
) -> KBotWalkingTask:
    """The walking task (or a subclass) on the CPU preset with `values` on top (non-WalkConfig keys dropped)."""
    config = preset_config("cpu", exp_dir=str(exp_dir), **values)
    return task_class(task_class.get_config(config, use_cli=False))


def build_walk_parts(
    exp_dir: str, *, argmax_action: bool, task_class: type[KBotWalkingTask] = KBotWalkingTask, **overrides: Any
) -> WalkParts:
    """2 environments, a 16-wide LSTM and 0.1 s episodes, unless `overrides` say otherwise; `task_class` may be a
    subclass of the walking task (a bench swapping one of its hooks)."""
    small = {"num_envs": 2, "batch_size": 2, "episode_length_s": 0.1, "hidden_size": 16}
    config = preset_config("cpu", **{**small, "exp_dir": exp_dir, **overrides})
    task = task_class(task_class.get_config(config, use_cli=False))
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    metadata = task.get_mujoco_model_metadata(mj_model)
    mjx_model = task.get_mjx_model(mj_model)
    model = task.get_model(ksim.InitParams(key=jax.random.PRNGKey(0), physics_model=mj_model))
    model_arr, model_static = eqx.partition(model, task.model_partition_fn)
    constants = task._get_constants(
        metadata=metadata, physics_model=mjx_model, model_statics=(model_static,), argmax_action=argmax_action
    )
    env_state = task._get_env_state(
        rng=jax.random.PRNGKey(1),
        rollout_constants=constants,
        mj_model=mj_model,
        physics_model=mjx_model,
        policy_model=model,
        randomizers=xax.freeze_dict(task.get_physics_randomizers(mjx_model)),
    )
    shared = task._get_shared_state(
        rng=jax.random.PRNGKey(2), mj_model=mj_model, physics_model=mjx_model, model_arrs=(model_arr,)
    )
    return WalkParts(task, config, constants, env_state, shared, model_arr, model_static)
