"""Task mixins for ksim 0.2.10 RL tasks.

`DomainRandomizationMixin` turns a task's `DomainRandomization` into randomization that is redrawn at every
episode reset (ksim draws its physics randomization once per environment for the whole run), with widths that live
in the curriculum state — traced arrays, so a width change never recompiles — scheduled by a
`RandomizationCurriculum`, logged every update (per-parameter widths, entropy in nats, npd) and saved in checkpoints
(ksim saves no curriculum state).

Use it before ksim's task in the bases: ``class MyTask(DomainRandomizationMixin[Config], ksim.PPOTask[Config])``
and implement `get_domain_randomization` (optionally `get_randomization_curriculum`).
"""

import io
import logging
import tarfile
import zlib
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import ksim
import mujoco.mjx as mjx
import numpy as np
import xax
from ksim.curriculum import CurriculumState
from ksim.task.rl import RLLoopCarry, RLLoopConstants, RolloutConstants, RolloutEnvState, RolloutSharedState

from ksim_entropy.curriculum import RandomizationCurriculum, WidthState
from ksim_entropy.randomization import DomainRandomization

__all__ = ["DomainRandomizationMixin", "RandomizationCheckpointError", "randomization_metrics"]

logger = logging.getLogger(__name__)

Config = TypeVar("Config", bound=ksim.RLConfig)

RANDOMIZER_KEY = "domain_randomization"
NEXT_DRAW_PREFIX = "next_draw/"  # staged next-episode draws inside an unroll (see `_single_unroll`)


class RandomizationCheckpointError(ValueError):
    """A checkpoint's randomization state does not fit this task's randomization."""


def _names_hash(names: list[str]) -> int:
    return zlib.crc32("\x00".join(names).encode()) & 0x7FFFFFFF


def randomization_metrics(randomization: DomainRandomization, widths: jax.Array) -> dict[str, jax.Array]:
    """Scalars to log each update: total entropy (nats), npd, normalised npd, and every parameter's width."""
    metrics = {
        "dr_entropy_nats": jnp.sum(randomization.entropies(widths)),
        "dr_npd": randomization.npd(widths),
        "dr_normalized_npd": randomization.normalized_npd(widths),
    }
    for i, name in enumerate(randomization.names):
        metrics[f"dr_width_{name}"] = widths[i]
    return metrics


class DomainRandomizationMixin(ksim.RLTask[Config], Generic[Config]):
    """Per-episode physics randomization with traced, scheduled, logged and checkpointed widths."""

    @abstractmethod
    def get_domain_randomization(self, physics_model: ksim.PhysicsModel) -> DomainRandomization:
        """The randomized physical parameters, in the order they are applied."""

    def get_randomization_curriculum(
        self, physics_model: ksim.PhysicsModel, randomization: DomainRandomization
    ) -> RandomizationCurriculum:
        """How widths change during training; fixed widths ("uniform") unless overridden."""
        return RandomizationCurriculum(randomization=randomization, mode="uniform")

    # ------------------------------------------------------------------ ksim hooks
    def get_physics_randomizers(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.PhysicsRandomizer]:
        return {RANDOMIZER_KEY: self.get_domain_randomization(physics_model)}

    def get_curriculum(self, physics_model: ksim.PhysicsModel) -> ksim.Curriculum:
        return self.get_randomization_curriculum(physics_model, self.get_domain_randomization(physics_model))

    def _single_unroll(
        self,
        constants: RolloutConstants,
        env_state: RolloutEnvState,
        shared_state: RolloutSharedState,
        num_steps: int,
    ) -> tuple[ksim.Trajectory, ksim.RewardState, RolloutEnvState]:
        """Run ksim's unroll, drawing each environment's next physics once up front instead of at every step.

        The draw (at the widths in the curriculum state, which change only between unrolls) rides along in the
        randomization dict under `NEXT_DRAW_PREFIX` keys while the scan runs, is swapped in by `step_engine` when an
        episode ends, and is removed again before returning, so the carry ksim sees keeps its structure. An
        environment that finishes more than one episode within one unroll reuses the draw; across unrolls, and
        across environments, draws are independent.
        """
        curriculum = constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum) or not isinstance(shared_state.physics_model, mjx.Model):
            return super()._single_unroll(constants, env_state, shared_state, num_steps)
        keys = jax.vmap(jax.random.split)(env_state.rng)
        width_state: WidthState = env_state.curriculum_state.state
        model = shared_state.physics_model
        draws = jax.vmap(lambda k, w, p: curriculum.randomization.sample(model, k, w, p))(
            keys[:, 1], width_state.widths, width_state.pinned
        )
        staged = {**env_state.randomization_dict, **{NEXT_DRAW_PREFIX + k: v for k, v in draws.items()}}
        env_state = replace(env_state, randomization_dict=xax.FrozenDict(staged), rng=keys[:, 0])
        trajectory, rewards, env_state = super()._single_unroll(constants, env_state, shared_state, num_steps)
        current = {k: v for k, v in env_state.randomization_dict.items() if not k.startswith(NEXT_DRAW_PREFIX)}
        return trajectory, rewards, replace(env_state, randomization_dict=xax.FrozenDict(current))

    def step_engine(
        self,
        constants: RolloutConstants,
        env_states: RolloutEnvState,
        shared_state: RolloutSharedState,
    ) -> tuple[ksim.Trajectory, RolloutEnvState]:
        """Run ksim's step; an environment whose episode ended gets a fresh physics draw (at the current widths).

        Inside `_single_unroll` the draw was made up front (a select per step); called on its own (ksim's viewer)
        it is sampled here. The reset state itself was computed by ksim with the previous episode's model;
        positions and velocities do not depend on it, and the first physics step of the new episode already runs
        on the new model.
        """
        curriculum = constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum):
            return super().step_engine(constants, env_states, shared_state)
        staged = env_states.randomization_dict
        n = len(NEXT_DRAW_PREFIX)
        next_draw = {k[n:]: v for k, v in staged.items() if k.startswith(NEXT_DRAW_PREFIX)}
        current = xax.FrozenDict({k: v for k, v in staged.items() if not k.startswith(NEXT_DRAW_PREFIX)})
        transition, next_env_state = super().step_engine(
            constants, replace(env_states, randomization_dict=current), shared_state
        )
        rng = next_env_state.rng
        if not next_draw:
            rng, sample_rng = jax.random.split(rng)
            width_state: WidthState = env_states.curriculum_state.state
            next_draw = curriculum.randomization.sample(
                shared_state.physics_model, sample_rng, width_state.widths, width_state.pinned
            )
            staged = {}
        merged = {k: jnp.where(transition.done, next_draw[k], v) if k in next_draw else v for k, v in current.items()}
        merged.update({k: v for k, v in staged.items() if k.startswith(NEXT_DRAW_PREFIX)})
        return transition, replace(next_env_state, randomization_dict=xax.FrozenDict(merged), rng=rng)

    def _single_update(
        self,
        carry: RLLoopCarry,
        constants: RLLoopConstants,
        env_state: RolloutEnvState,
        state: xax.State,
        trajectories: ksim.Trajectory,
        rewards: ksim.RewardState,
    ) -> tuple[xax.State, RLLoopCarry, ksim.Metrics]:
        new_state, new_carry, metrics = super()._single_update(
            carry=carry,
            constants=constants,
            env_state=env_state,
            state=state,
            trajectories=trajectories,
            rewards=rewards,
        )
        curriculum = constants.constants.curriculum
        if isinstance(curriculum, RandomizationCurriculum):
            widths = new_carry.env_states.curriculum_state.state.widths[0]
            extra = randomization_metrics(curriculum.randomization, widths)
            metrics = replace(metrics, train=xax.FrozenDict({**metrics.train, **extra}))
        return new_state, new_carry, metrics

    # ------------------------------------------------------------------ width control
    def with_widths(
        self, env_states: RolloutEnvState, curriculum: RandomizationCurriculum, widths: np.ndarray | list[float]
    ) -> RolloutEnvState:
        """Environment states whose randomization widths are `widths` (validated; takes effect at each next reset)."""
        w = jnp.asarray(curriculum.randomization.check_widths(widths))
        cs = env_states.curriculum_state
        n = cs.state.widths.shape[0]
        new = replace(cs.state, widths=jnp.broadcast_to(w, (n, w.shape[0])))
        level = jnp.broadcast_to(curriculum.level(w), cs.level.shape)
        return replace(env_states, curriculum_state=CurriculumState(level=level, state=new))

    # ------------------------------------------------------------------ checkpoints
    def _randomization_aux(self, curriculum: RandomizationCurriculum, width_state: WidthState) -> dict[str, jax.Array]:
        return {
            "names_hash": jnp.asarray(_names_hash(curriculum.randomization.names), dtype=jnp.int32),
            "widths": width_state.widths[0],
            "perf_sum": width_state.perf_sum[0],
            "perf_count": width_state.perf_count[0],
            "num_updates": width_state.num_updates[0],
        }

    def _save(self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State) -> None:
        curriculum = constants.constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum):
            super()._save(constants=constants, carry=carry, state=state)
            return
        model = eqx.combine(carry.shared_state.model_arrs, constants.constants.model_statics)
        models = list(model) if isinstance(model, tuple) else [model]
        self.save_checkpoint(
            models=models,
            optimizers=constants.optimizer,
            opt_states=carry.opt_state,
            aux_data={"randomization": self._randomization_aux(curriculum, carry.env_states.curriculum_state.state)},
            state=state,
        )

    def load_randomization_state(
        self, ckpt_path: str | Path, curriculum: RandomizationCurriculum
    ) -> dict[str, jax.Array] | None:
        """The randomization state saved in a checkpoint, or None if it has none (e.g. a plain ksim run)."""
        p = curriculum.num_parameters
        zeros = jnp.zeros(p, dtype=jnp.float32)
        count = jnp.zeros((), dtype=jnp.int32)
        template = {
            "randomization": {
                "names_hash": count,
                "widths": zeros,
                "perf_sum": zeros,
                "perf_count": zeros,
                "num_updates": count,
            }
        }
        with tarfile.open(ckpt_path, "r:gz") as tar:
            names = tar.getnames()
            if "aux_data" not in names:
                return None
            member = tar.extractfile("aux_data")
            raw = member.read() if member is not None else b""
        try:
            saved = eqx.tree_deserialise_leaves(io.BytesIO(raw), template)["randomization"]
        except Exception as err:  # equinox raises several types on a shape mismatch
            raise RandomizationCheckpointError(
                f"{ckpt_path}: its randomization state does not fit this task's {curriculum.num_parameters} "
                f"parameters {curriculum.randomization.names} ({err})"
            ) from err
        if int(saved["names_hash"]) != _names_hash(curriculum.randomization.names):
            raise RandomizationCheckpointError(
                f"{ckpt_path} was saved with different randomization parameters than {curriculum.randomization.names}"
            )
        return saved

    def initialize_rl_training(
        self, mj_model: ksim.PhysicsModel, metadata: ksim.Metadata
    ) -> tuple[RLLoopConstants, RLLoopCarry, xax.State]:
        constants, carry, state = super().initialize_rl_training(mj_model, metadata)
        curriculum = constants.constants.curriculum
        ckpt_path = self.get_init_ckpt_path()
        if not isinstance(curriculum, RandomizationCurriculum) or ckpt_path is None:
            return constants, carry, state
        saved = self.load_randomization_state(ckpt_path, curriculum)
        if saved is None:
            logger.warning("%s has no randomization state; widths start from their initial values", ckpt_path)
            return constants, carry, state
        curriculum.randomization.check_widths(np.asarray(saved["widths"]))
        env_states = carry.env_states
        n = env_states.curriculum_state.state.widths.shape[0]
        p = curriculum.num_parameters

        def tile(x: jax.Array) -> jax.Array:
            return jnp.broadcast_to(x, (n, *x.shape))

        width_state = replace(
            env_states.curriculum_state.state,
            widths=tile(saved["widths"]).reshape(n, p),
            perf_sum=tile(saved["perf_sum"]).reshape(n, p),
            perf_count=tile(saved["perf_count"]).reshape(n, p),
            num_updates=tile(saved["num_updates"]),
        )
        level = jnp.broadcast_to(curriculum.level(saved["widths"]), (n,))
        # Redraw every environment's physics at the restored widths.
        mjx_model = self.get_mjx_model(mj_model)
        rngs = jax.random.split(jax.random.PRNGKey(int(state.num_steps)), n)
        fresh = jax.vmap(lambda r, w, k: curriculum.randomization.sample(mjx_model, r, w, k))(
            rngs, width_state.widths, width_state.pinned
        )
        old = env_states.randomization_dict
        merged = xax.FrozenDict({k: fresh.get(k, v) for k, v in old.items()})
        env_states = replace(
            env_states,
            curriculum_state=CurriculumState(level=level, state=width_state),
            randomization_dict=merged,
        )
        logger.info(
            "restored randomization widths %s from %s", np.asarray(saved["widths"]).round(3).tolist(), ckpt_path
        )
        return constants, replace(carry, env_states=env_states), state
