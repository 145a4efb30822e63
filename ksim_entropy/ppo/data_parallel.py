"""Data-parallel PPO on several devices through JAX's own sharding: environments split, everything else replicated.

ksim 0.2.10 trains on one device. `DataParallelMixin` (config `devices`: "1", the default and the unchanged path,
"auto" for every device JAX sees, or a count) puts the loop carry on a one-axis mesh before the first update: every
array of the environment state whose leading axis is the environment axis is split across the devices, and the
parameters, optimizer state, shared state (physics model, temperature, curriculum and other mixins' state) are
replicated. ksim's jitted rollout and update then run as one SPMD program (GSPMD): each device steps its share of
the environments and computes its share of every minibatch (`batch_size` splits too), and every reduction of the
update (advantage normalisation, losses, gradient means, the temperature's entropy, the curriculum's statistics, the
logged metrics) is taken over all environments, so N devices compute the update one device computes with N× the
environments, to float rounding. The random draws do not depend on the device count either (JAX's partitionable
threefry, on by default since JAX 0.5).

Checkpoints hold host arrays (xax gathers them), so a run saved on N devices resumes on any count. Several hosts:
start every process with the same command after `initialize_distributed()` (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID); `devices=auto` then spans every host's devices.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Generic, TypeVar

import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import xax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree
from ksim.debugging import JitLevel
from ksim.task.rl import RLLoopCarry, RLLoopConstants
from mujoco import mjx
from xax.nn.parallel import set_rank

logger = logging.getLogger(__name__)

ENV_AXIS = "envs"
DISTRIBUTED_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")

Config = TypeVar("Config", bound=ksim.RLConfig)


class DataParallelError(ValueError):
    """A device setting that cannot run: more devices than exist, or environments that do not split evenly."""


def resolve_devices(spec: str | int, num_envs: int | None = None, batch_size: int | None = None) -> list[jax.Device]:
    """The devices `spec` names ("auto": all of them; "N" or N: the first N).

    N must divide `num_envs` and the minibatch's `batch_size` (environments) if given: each device computes its share
    of every minibatch.
    """
    available = jax.devices()
    text = str(spec).strip()
    if text == "auto":
        count = len(available)
    else:
        try:
            count = int(text)
        except ValueError:
            raise DataParallelError(f"devices must be 'auto' or a count >= 1, got {spec!r}") from None
        if count < 1:
            raise DataParallelError(f"devices must be 'auto' or a count >= 1, got {spec!r}")
        if count > len(available):
            kinds = sorted({d.platform for d in available})
            raise DataParallelError(
                f"devices={count}, but JAX sees {len(available)} ({', '.join(kinds)}); "
                "on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N"
            )
    if num_envs is not None and num_envs % count:
        raise DataParallelError(f"num_envs={num_envs} does not split evenly across {count} devices")
    if batch_size is not None and batch_size % count:
        raise DataParallelError(f"batch_size={batch_size} does not split evenly across {count} devices")
    return available[:count]


def env_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A one-axis mesh (`ENV_AXIS`) over `devices`."""
    return Mesh(np.asarray(devices), (ENV_AXIS,))


def put(leaf: jax.Array | np.ndarray, sharding: NamedSharding) -> jax.Array:
    """`jax.device_put`, from a host copy when the sharding spans other processes' devices.

    JAX places only host data onto devices of other processes; every process must hold the same values.
    """
    if isinstance(leaf, jax.Array) and not sharding.is_fully_addressable:
        leaf = np.asarray(leaf)
    return jax.device_put(leaf, sharding)


def shard_env_axis(tree: PyTree, mesh: Mesh, num_envs: int) -> PyTree:
    """Split every array whose leading axis has `num_envs` entries across the mesh; replicate the rest."""
    split, whole = NamedSharding(mesh, PartitionSpec(ENV_AXIS)), NamedSharding(mesh, PartitionSpec())

    def place(leaf: object) -> object:
        if not isinstance(leaf, jax.Array | np.ndarray):
            return leaf
        is_env = leaf.ndim >= 1 and leaf.shape[0] == num_envs
        return put(leaf, split if is_env else whole)

    return jax.tree.map(place, tree)


def split_leading(
    arrays: Sequence[np.ndarray | jax.Array], devices: Sequence[jax.Device]
) -> tuple[list[jax.Array], int]:
    """Arrays with a shared leading axis split across `devices`, padded (with copies of row 0) to a multiple of them.

    Returns the placed arrays and the original row count: keep `[:count]` of each result.
    """
    count = int(arrays[0].shape[0])
    pad = -count % len(devices)
    split = NamedSharding(env_mesh(devices), PartitionSpec(ENV_AXIS))
    placed = []
    for array in arrays:
        array = np.asarray(array)
        if pad:
            array = np.concatenate([array, np.repeat(array[:1], pad, axis=0)])
        placed.append(jax.device_put(array, split))
    return placed, count


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array of `tree` on every device of the mesh."""
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: put(leaf, whole) if isinstance(leaf, jax.Array) else leaf, tree)


def initialize_distributed(environ: dict[str, str] | None = None) -> bool:
    """`jax.distributed.initialize` from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.

    Returns False (and does nothing) when none is set; DataParallelError when only some are, or they are malformed.
    Call it before anything touches a JAX device.
    """
    env = os.environ if environ is None else environ
    found = {name: env[name] for name in DISTRIBUTED_VARIABLES if env.get(name)}
    if not found:
        return False
    missing = [name for name in DISTRIBUTED_VARIABLES if name not in found]
    if missing:
        raise DataParallelError(f"multi-host training needs all of {DISTRIBUTED_VARIABLES}; missing {missing}")
    try:
        count, index = int(found["JAX_NUM_PROCESSES"]), int(found["JAX_PROCESS_ID"])
    except ValueError:
        raise DataParallelError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
    if count < 1 or not 0 <= index < count:
        raise DataParallelError(f"need JAX_NUM_PROCESSES >= 1 and 0 <= JAX_PROCESS_ID < it, got {count}, {index}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices across processes; GPUs use NCCL
    jax.distributed.initialize(
        coordinator_address=found["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index
    )
    set_rank(index)  # xax logs, writes event files and checkpoints on rank 0 only
    return True


def constrain_env_axis(tree: PyTree, sharding: NamedSharding, num_envs: int) -> PyTree:
    """Inside a jitted function: every array whose leading axis has `num_envs` entries held split by `sharding`."""

    def hold(leaf: object) -> object:
        if isinstance(leaf, jax.Array) and leaf.ndim >= 1 and leaf.shape[0] == num_envs:
            return jax.lax.with_sharding_constraint(leaf, sharding)
        return leaf

    return jax.tree.map(hold, tree)


class DataParallelMixin(ksim.RLTask[Config], Generic[Config]):
    """Environments split across `training_device_spec()` devices (default "1": one device, nothing changes)."""

    _carry_shardings: PyTree | None = None  # set when the carry is split across devices: the step holds it there
    _env_sharding: NamedSharding | None = None  # the environment axis split across the mesh, when it is

    def training_device_spec(self) -> str:
        """'1' (one device), 'auto' (all) or a count: the config's `devices` where it has one."""
        return str(getattr(self.config, "devices", "1"))

    def get_mjx_model(self, mj_model: mujoco.MjModel) -> mjx.Model:
        """The MJX model ksim builds, placed on this process's first device.

        MJX puts a model on `jax.devices()[0]`, which in a run across processes is process 0's device: every other
        process would then hold a model it cannot read.
        """
        if jax.process_count() == 1:
            return super().get_mjx_model(mj_model)
        return jax.tree.map(jnp.array, mjx.put_model(mj_model, device=jax.local_devices()[0]))

    def training_devices(self) -> list[jax.Device]:
        """The devices training runs on (DataParallelError when the setting cannot run)."""
        return resolve_devices(self.training_device_spec(), self.config.num_envs, self.config.batch_size)

    def initialize_rl_training(
        self, mj_model: ksim.PhysicsModel, metadata: ksim.Metadata
    ) -> tuple[RLLoopConstants, RLLoopCarry, xax.State]:
        devices = self.training_devices()  # before anything is built: a setting that cannot run stops here
        constants, carry, state = super().initialize_rl_training(mj_model, metadata)
        if len(devices) == 1:
            return constants, carry, state
        mesh = env_mesh(devices)
        carry = replace(
            carry,
            env_states=shard_env_axis(carry.env_states, mesh, self.config.num_envs),
            shared_state=replicate(carry.shared_state, mesh),
            opt_state=replicate(carry.opt_state, mesh),
        )
        share = self.config.num_envs // len(devices)
        logger.info("data-parallel: %d environments on each of %d devices", share, len(devices))
        self._carry_shardings = jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array) else False, carry)
        self._env_sharding = NamedSharding(mesh, PartitionSpec(ENV_AXIS))
        return constants, carry, state

    def _single_step(
        self,
        trajectories: ksim.Trajectory,
        rewards: ksim.RewardState,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        on_policy_variables: ksim.PPOVariables,
        rng: jax.Array,
    ) -> tuple[RLLoopCarry, xax.FrozenDict[str, jax.Array]]:
        """One minibatch update, its environments split across the devices when training runs on several.

        ksim draws a minibatch by gathering shuffled environments from the whole batch. From environments split
        across devices, XLA's partitioner hands every device the whole minibatch, so each device would compute every
        gradient itself: the rollout would scale with devices, the update would not. Held split here, each device
        computes its share of the minibatch and the gradients are summed across devices (one all-reduce the size of
        the parameters per minibatch; `bench/scaling_model.py` reads them from the compiled program).
        """
        if self._env_sharding is not None:
            size = self.config.batch_size
            trajectories, rewards, on_policy_variables = constrain_env_axis(
                (trajectories, rewards, on_policy_variables), self._env_sharding, size
            )
            carry = replace(carry, env_states=constrain_env_axis(carry.env_states, self._env_sharding, size))
        return super()._single_step(
            trajectories=trajectories,
            rewards=rewards,
            constants=constants,
            carry=carry,
            on_policy_variables=on_policy_variables,
            rng=rng,
        )

    def _rl_train_loop_step(
        self, carry: RLLoopCarry, constants: RLLoopConstants, state: xax.State
    ) -> tuple[xax.State, RLLoopCarry, PyTree]:
        """One rollout and update: ksim's on one device, else `_sharded_train_loop_step`."""
        if self._carry_shardings is None:
            return super()._rl_train_loop_step(carry=carry, constants=constants, state=state)
        return self._sharded_train_loop_step(carry=carry, constants=constants, state=state)

    @xax.jit(static_argnames=["self", "constants"], donate_argnames=["carry", "state"], jit_level=JitLevel.OUTER_LOOP)
    def _sharded_train_loop_step(
        self, carry: RLLoopCarry, constants: RLLoopConstants, state: xax.State
    ) -> tuple[xax.State, RLLoopCarry, PyTree]:
        """The loop step of ksim, its output carry held to the shardings the carry was placed with.

        Left to itself XLA may hand the carry back with other shardings than it came in with, and the next call
        compiles the whole step again.
        """
        state, carry, metrics = super()._rl_train_loop_step(carry=carry, constants=constants, state=state)
        carry = jax.tree.map(
            lambda x, s: x if s is False else jax.lax.with_sharding_constraint(x, s), carry, self._carry_shardings
        )
        return state, carry, metrics
