"""Run by tests/test_data_parallel.py in a process with two CPU devices: one device against two, on the quadruped.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/data_parallel_probe.py OUT_DIR

Writes OUT_DIR/probe.npz: the trajectories of one rollout on one device and on two, the parameters, optimizer state
and metrics of one PPO update of the *same* trajectories on one device and on two, the two-device update's optimized
program (HLO text), how many devices each array of the sharded run lives on, the parameters after a save on two
devices and a restore on one, and how many carry arrays a whole loop step hands back on other shardings than it was
given (the mixin's step and ksim's own).
"""

import sys
from pathlib import Path

import jax
import ksim
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import quadruped  # noqa: E402

from ksim_entropy.ppo.data_parallel import DataParallelError, env_mesh, resolve_devices, shard_env_axis  # noqa: E402

NUM_ENVS = 8


def build(devices: str, exp_dir: Path, **extra: object) -> quadruped.QuadrupedTask:
    values = {**quadruped.DEFAULTS, "num_envs": NUM_ENVS, "batch_size": 4, "hidden_size": 16}
    values.update(devices=devices, exp_dir=str(exp_dir), **extra)
    return quadruped.QuadrupedTask(quadruped.QuadrupedTask.get_config(values, use_cli=False))


def start(task: quadruped.QuadrupedTask) -> tuple:
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    metadata = task.get_mujoco_model_metadata(mj_model)
    task.update_mj_model(mj_model, metadata)
    return task.initialize_rl_training(mj_model, metadata)


def leaves(prefix: str, tree: object) -> dict[str, np.ndarray]:
    return {
        f"{prefix}/{jax.tree_util.keystr(path)}": np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
    }


def ksim_loop_step(task: quadruped.QuadrupedTask, **kwargs: object) -> tuple:
    """ksim's `_rl_train_loop_step`, passing over the mixin's override."""
    return ksim.RLTask._rl_train_loop_step(task, **kwargs)


def main(out_dir: Path) -> None:
    assert len(jax.devices()) == 2, jax.devices()
    result: dict[str, np.ndarray] = {}
    for name, spec, envs, batch in (("uneven", "2", 7, None), ("too_many", "3", 8, None), ("odd_batch", "2", 8, 3)):
        try:
            resolve_devices(spec, envs, batch)
            result[f"error/{name}"] = np.array("")
        except DataParallelError as err:
            result[f"error/{name}"] = np.array(str(err))
    result["auto_devices"] = np.array(len(resolve_devices("auto", 8)))
    one, two = build("1", out_dir / "one"), build("2", out_dir / "two")
    constants1, carry1, state1 = start(one)
    constants2, carry2, state2 = start(two)

    # The same rollout on one device and on two (split by environment).
    unroll = (constants1.constants, carry1.env_states, carry1.shared_state, one.rollout_length_frames)
    traj1, rewards1, env1 = one._single_unroll(*unroll)
    traj2, _, _ = two._single_unroll(
        constants2.constants, carry2.env_states, carry2.shared_state, two.rollout_length_frames
    )
    result.update(leaves("rollout1", traj1))
    result.update(leaves("rollout2", traj2))
    result["devices/env_state_rng"] = np.array(len(carry2.env_states.rng.sharding.device_set))
    result["devices/env_state_rng_shard_rows"] = np.array(carry2.env_states.rng.addressable_shards[0].data.shape[0])
    result["devices/rollout_qpos"] = np.array(len(traj2.qpos.sharding.device_set))
    result["devices/params"] = np.array(
        min(len(x.sharding.device_set) for x in jax.tree.leaves(carry2.shared_state.model_arrs))
    )
    result["devices/params_replicated"] = np.array(
        all(x.sharding.is_fully_replicated for x in jax.tree.leaves(carry2.shared_state.model_arrs))
    )

    # One PPO update of the same trajectories: on one device, and split across two.
    result.update(leaves("start/params", carry1.shared_state.model_arrs))
    mesh = env_mesh(jax.devices())
    sharded = [shard_env_axis(x, mesh, NUM_ENVS) for x in (traj1, rewards1, env1)]
    update_args = {"env_state": sharded[2], "state": state2, "trajectories": sharded[0], "rewards": sharded[1]}
    # The optimized program of the two-device update (ksim's jitted function, compiled here for its text): which
    # collectives it runs, read by the test with bench/scaling_model.py.
    lowered = jax.jit(ksim.RLTask._single_update.__wrapped__, static_argnames=["self", "constants"]).lower(
        two, carry=carry2, constants=constants2, **update_args
    )
    result["hlo/update"] = np.array(lowered.compile().as_text())
    result["update/minibatch_updates"] = np.array(two.config.num_passes * (NUM_ENVS // two.config.batch_size))
    result["update/frames"] = np.array(two.rollout_length_frames)
    update1 = one._single_update(
        carry=carry1, constants=constants1, env_state=env1, state=state1, trajectories=traj1, rewards=rewards1
    )
    update2 = two._single_update(carry=carry2, constants=constants2, **update_args)
    for name, (_, carry, metrics) in (("update1", update1), ("update2", update2)):
        result.update(leaves(f"{name}/params", carry.shared_state.model_arrs))
        result.update(leaves(f"{name}/opt_state", carry.opt_state))
        result.update(leaves(f"{name}/metrics", metrics.train))
    state2, carry2, _ = update2

    # Saved from two devices, restored on one.
    two._save(constants=constants2, carry=carry2, state=state2)
    ckpt = out_dir / "two" / "checkpoints" / "ckpt.bin"
    resumed = build("1", out_dir / "resumed", load_from_ckpt_path=str(ckpt))
    _, carry3, _ = start(resumed)
    result.update(leaves("resumed/params", carry3.shared_state.model_arrs))

    # A whole loop step (rollout + update) on two devices, through the mixin and through ksim's own step: does the
    # carry come back on the shardings it went in with? (If not, the next call compiles the whole step again.)
    steps = {"mixin": lambda task, **kw: task._rl_train_loop_step(**kw), "ksim": ksim_loop_step}
    for name, step in steps.items():
        task = build("2", out_dir / f"loop_{name}")
        constants, carry, state = start(task)
        before = [x.sharding for x in jax.tree.leaves(carry) if isinstance(x, jax.Array)]
        _, carry, _ = step(task, carry=carry, constants=constants, state=state)
        after = [x for x in jax.tree.leaves(carry) if isinstance(x, jax.Array)]
        # zero-size arrays (MJX's empty fields) hold nothing to place, and XLA hands them back as it likes
        pairs = [(x, s) for x, s in zip(after, before, strict=True) if x.size]
        changed = sum(not x.sharding.is_equivalent_to(s, x.ndim) for x, s in pairs)
        result[f"loop/{name}_changed"], result[f"loop/{name}_arrays"] = np.array(changed), np.array(len(pairs))
    np.savez(out_dir / "probe.npz", **result)
    print("probe done", len(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
