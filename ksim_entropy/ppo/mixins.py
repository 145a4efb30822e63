"""Task mixins for ksim 0.2.10 RL tasks.

`DomainRandomizationMixin` turns a task's `DomainRandomization` into randomization that is redrawn at every
episode reset (ksim draws its physics randomization once per environment for the whole run), with widths that live
in the curriculum state — traced arrays, so a width change never recompiles — scheduled by a
`RandomizationCurriculum`, logged every update (per-parameter widths, entropy in nats, npd) and saved in checkpoints
(ksim saves no curriculum state).

Use it before ksim's task in the bases: ``class MyTask(DomainRandomizationMixin[Config], ksim.PPOTask[Config])``
and implement `get_domain_randomization` (optionally `get_randomization_curriculum`).

ksim 0.2.10 has no public hook for what these mixins change (the per-step physics, the PPO loss's entropy term,
the per-update metrics and the checkpoint's extra data), so they override five private methods, all in this module
and listed in `KSIM_PRIVATE_OVERRIDES` with the parameters they were checked against; tests/test_ksim_overrides.py
fails, naming the method, when an installed ksim's differ.
"""

import functools
import json
import logging
import sys
import time
import zlib
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import ksim
import mujoco.mjx as mjx
import numpy as np
import xax
from jaxtyping import PyTree
from ksim.curriculum import CurriculumState
from ksim.debugging import JitLevel
from ksim.task.ppo import PPOInputs, compute_ppo_inputs, compute_ppo_loss
from ksim.task.rl import RLLoopCarry, RLLoopConstants, RolloutConstants, RolloutEnvState, RolloutSharedState
from ksim.types import Histogram

from ksim_entropy.curriculum import RandomizationCurriculum, WidthState
from ksim_entropy.draws import key_and_uniforms
from ksim_entropy.ppo.checkpoint import CheckpointError, inspect_checkpoint, read_member_arrays
from ksim_entropy.ppo.data_parallel import DataParallelMixin
from ksim_entropy.ppo.matching import (
    EntropyTarget,
    MatchRule,
    RandomizationTarget,
    load_target,
    observation_entropy,
    observation_gap,
)
from ksim_entropy.ppo.temperature import EntropyTemperature, TemperatureState
from ksim_entropy.progress import METRICS_FILE, EpisodeWindow, ProgressLine
from ksim_entropy.randomization import DomainRandomization, actuator_joint_names

__all__ = [
    "ADVANTAGE_NORMALIZATIONS",
    "AdvantageNormalization",
    "AutoTemperatureMixin",
    "CheckpointAuxError",
    "DomainRandomizationMixin",
    "EntropyBridgedConfig",
    "EntropyBridgedTask",
    "RandomizationCheckpointError",
    "TrainingStateMixin",
    "entropy_metrics",
    "metric_value",
    "randomization_metrics",
    "read_checkpoint_aux",
    "standardize",
]

logger = logging.getLogger(__name__)

# ksim's private methods the mixins below override -> their parameters in ksim 0.2.10 (checked on every test run).
KSIM_PRIVATE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "RLTask._single_unroll": ("self", "constants", "env_state", "shared_state", "num_steps"),  # per-step physics
    "RLTask._get_shared_state": ("self", "rng", "mj_model", "physics_model", "model_arrs"),  # α in the shared state
    "RLTask._single_update": ("self", "carry", "constants", "env_state", "state", "trajectories", "rewards"),
    "RLTask._save": ("self", "constants", "carry", "state"),  # randomization + temperature state in the checkpoint
    "PPOTask._single_step": ("self", "trajectories", "rewards", "constants", "carry", "on_policy_variables", "rng"),
}

Config = TypeVar("Config", bound=ksim.RLConfig)

EPISODE_COUNT = "episodes_ended"  # per-update sums, folded into the episode window on the host
EPISODE_SECONDS = "episode_seconds_sum"
EPISODE_SUCCESSES = "episode_successes"
RANDOMIZER_KEY = "domain_randomization"
RANDOMIZATION_AUX = "randomization"  # checkpoint aux_data key
AUX_FORMAT = "ksim-entropy/aux-v1"
CURRENT_DRAW_KEY = "packed_draw/current"  # inside an unroll: this episode's draw, packed (see `_single_unroll`)
NEXT_DRAW_KEY = "packed_draw/next"  # inside an unroll: the next episode's draw, packed


@attrs.frozen
class DrawLayout:
    """Where each model field a `DomainRandomization` writes sits in one flat float32 vector per environment.

    Inside an unroll the draws travel packed: each leaf of ksim's carry costs a select at every step (its episode
    reset) with XLA's own copy of the "done" logic fused into it, so one vector instead of a leaf per field keeps
    the compiled step smaller.
    """

    names: tuple[str, ...]  # model fields (dotted paths allowed), sorted
    shapes: tuple[tuple[int, ...], ...]  # per environment

    @classmethod
    def of(cls, randomization: DomainRandomization, model: ksim.PhysicsModel) -> "DrawLayout":
        """The layout of `randomization`'s draws on `model` (traced shapes only: nothing is sampled)."""
        u = jnp.full(randomization.num_draws, 0.5, dtype=jnp.float32)
        spec = jax.eval_shape(lambda: randomization.sample_from_unit(model, u, randomization.initial_widths))
        names = tuple(sorted(spec))
        not_f32 = [n for n in names if spec[n].dtype != jnp.float32]
        if not_f32:
            raise TypeError(f"randomized model fields {not_f32} are not float32; DrawLayout packs float32 only")
        return cls(names=names, shapes=tuple(tuple(spec[n].shape) for n in names))

    def pack(self, fields: Mapping[str, jax.Array]) -> jax.Array:
        """One environment's fields as a flat vector (in `names` order)."""
        return jnp.concatenate([jnp.ravel(fields[n]) for n in self.names])

    def unpack(self, flat: jax.Array) -> dict[str, jax.Array]:
        """The inverse of `pack`."""
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return {
            n: flat[int(a) : int(a) + size].reshape(shape)
            for n, shape, size, a in zip(self.names, self.shapes, sizes, starts[:-1], strict=True)
        }


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


class CheckpointAuxError(ValueError):
    """A checkpoint's extra training state (aux_data) does not fit this task."""


def aux_data_blob(parts: Mapping[str, PyTree]) -> dict[str, PyTree]:
    """What to pass as xax's `aux_data`: the parts plus a manifest, so each part can be read back on its own."""
    counts = {name: len(jax.tree.leaves(parts[name])) for name in sorted(parts)}
    manifest = json.dumps({"format": AUX_FORMAT, "parts": counts}).encode()
    return {"manifest": jnp.frombuffer(manifest, dtype=jnp.uint8), "parts": dict(parts)}


def read_checkpoint_aux(ckpt_path: str | Path, templates: Mapping[str, PyTree]) -> dict[str, PyTree]:
    """The parts named in `templates` that a checkpoint's aux_data holds, each rebuilt on its template's structure.

    Parts the checkpoint lacks are left out ({} for a checkpoint without aux_data, e.g. a plain ksim run); a part
    whose saved leaves do not fit its template raises `CheckpointAuxError`.
    """
    try:
        leaves = read_member_arrays(ckpt_path, "aux_data")  # dict keys sorted
        if leaves is None:
            return {}
        manifest = json.loads(leaves[0].tobytes().decode())
        if manifest.get("format") != AUX_FORMAT:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        counts: dict[str, int] = manifest["parts"]
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, AttributeError) as err:
        raise CheckpointAuxError(f"{ckpt_path}: unreadable aux_data ({err})") from err
    found, offset = {}, 1
    for name in sorted(counts):
        part = leaves[offset : offset + counts[name]]
        offset += counts[name]
        if name not in templates:
            continue
        like, treedef = jax.tree.flatten(templates[name])
        shapes = [tuple(x.shape) for x in part]
        if shapes != [tuple(np.shape(x)) for x in like]:
            raise CheckpointAuxError(
                f"{ckpt_path}: its {name!r} state has leaf shapes {shapes}, this task's {[np.shape(x) for x in like]}"
            )
        found[name] = jax.tree.unflatten(
            treedef, [jnp.asarray(x, dtype=jnp.asarray(t).dtype) for x, t in zip(part, like, strict=True)]
        )
    return found


def saved_min_alpha(ckpt_path: str | Path, default: float) -> float:
    """The lower α bound of the run that wrote a checkpoint (its config's `alpha_bounds`); `default` if it has none.

    Older checkpoints, from before signed temperatures, saved positive ones only; their bounds read back as saved.
    """
    try:
        bounds = inspect_checkpoint(ckpt_path).config.get("alpha_bounds")
        return float(bounds[0])
    except (CheckpointError, TypeError, IndexError, ValueError):
        return default


def set_widths(env_states: RolloutEnvState, curriculum: RandomizationCurriculum, widths: jax.Array) -> RolloutEnvState:
    """Environment states with the randomization widths `widths` (P,) and ksim's level to match (traceable)."""
    cs = env_states.curriculum_state
    n = cs.state.widths.shape[0]
    state = replace(cs.state, widths=jnp.broadcast_to(widths, (n, widths.shape[0])))
    level = jnp.broadcast_to(curriculum.level(widths), cs.level.shape)
    return replace(env_states, curriculum_state=CurriculumState(level=level, state=state))


def _writes_to_console(impl: object) -> bool:
    """Whether an xax logger writes metrics to the console (its `StdoutLogger`, or a `JsonLogger` on stdout)."""
    if isinstance(impl, xax.StdoutLogger):
        return True
    return isinstance(impl, xax.JsonLogger) and impl.log_stream in (sys.stdout, sys.__stdout__)


def metric_value(value: jax.Array | Histogram) -> float:
    """One logged metric as a float: the mean of an array, or of a ksim `Histogram` (what ksim logs as the scalar)."""
    return float(value.mean) if isinstance(value, Histogram) else float(np.mean(np.asarray(value)))


class TrainingStateMixin(ksim.RLTask[Config], Generic[Config]):
    """Extra training state (controllers, curricula), stepped every update, checkpointed and restored on resume.

    ksim saves only models, optimisers and the step counters. Mixins extend, each calling super() first:
    `after_update` (step their state in the carry, add train metrics), `checkpoint_aux` (what to save, a dict of
    named pytrees) and `restore_checkpoint_aux` (how to put it back into the loop carry).

    It also keeps what a learning curve needs: the episodes that ended over the last updates
    (`ksim_entropy.progress.EpisodeWindow`, logged as `episode_length_s` and `episode_success`), a console line
    every `progress_every_s()` seconds (`progress_values` says what it shows), and an optional wall-clock limit
    (`train_time_limit_s()`, counted from the start of `run_training`, compilation included).
    """

    def train_time_limit_s(self) -> float | None:
        """Stop training (checkpoint, export) once this many seconds of wall time have passed; None: no limit."""
        return None

    def progress_every_s(self) -> float:
        """Seconds between two console progress lines."""
        return 10.0

    def progress_values(self, metrics: ksim.Metrics) -> dict[str, float]:
        """The named numbers of the console progress line (mixins add theirs after super())."""
        window = self._episode_window
        return {"episode s": window.mean_length_s, "reward": metric_value(metrics.reward["_total"])}

    @functools.cached_property
    def _episode_window(self) -> EpisodeWindow:
        return EpisodeWindow()

    @functools.cached_property
    def _progress(self) -> ProgressLine:
        return ProgressLine(every_s=self.progress_every_s())

    def after_update(
        self,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
        metrics: Mapping[str, jax.Array],
    ) -> tuple[RLLoopCarry, dict[str, jax.Array]]:
        return carry, dict(metrics)

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
        new_carry, train = self.after_update(constants, new_carry, trajectories, metrics.train)
        done = trajectories.done.astype(jnp.float32)
        train[EPISODE_COUNT] = jnp.sum(done)
        train[EPISODE_SECONDS] = jnp.sum(done * trajectories.timestep)
        train[EPISODE_SUCCESSES] = jnp.sum(done * trajectories.success.astype(jnp.float32))
        return new_state, new_carry, replace(metrics, train=xax.FrozenDict(train))

    def log_train_metrics(self, metrics: ksim.Metrics) -> None:
        train = dict(metrics.train)
        counts = [metric_value(train.pop(k)) for k in (EPISODE_COUNT, EPISODE_SECONDS, EPISODE_SUCCESSES)]
        window = self._episode_window
        window.add(*counts)
        if window.count:
            train["episode_length_s"] = jnp.float32(window.mean_length_s)
            train["episode_success"] = jnp.float32(window.success_fraction)
        metrics = replace(metrics, train=train)
        self._last_progress_values = self.progress_values(metrics)
        super().log_train_metrics(metrics)

    def log_state_timers(self, state: xax.State) -> None:
        super().log_state_timers(state)
        values = getattr(self, "_last_progress_values", None)
        if values is None or not self._progress.due():
            return
        print(
            self._progress.format(
                update=int(state.num_steps), env_steps=int(state.num_samples), values=values, eta_s=self._eta_s(state)
            ),
            flush=True,
        )

    def _eta_s(self, state: xax.State) -> float | None:
        elapsed = time.monotonic() - self._progress.start_s
        etas = []
        limit = self.train_time_limit_s()
        if limit is not None:
            etas.append(limit - elapsed)
        steps, max_steps = int(state.num_steps), self.config.max_steps
        if max_steps is not None and steps > 0:
            etas.append(elapsed / steps * (max_steps - steps))
        return min(etas) if etas else None

    def is_training_over(self, state: xax.State) -> bool:
        limit = self.train_time_limit_s()
        if limit is not None and time.monotonic() - self._progress.start_s >= limit:
            if not getattr(self, "_time_limit_reached", False):
                logger.info("wall-clock limit of %.0f s reached after %d updates", limit, int(state.num_steps))
            self._time_limit_reached = True
            return True
        return super().is_training_over(state)

    @property
    def time_limit_reached(self) -> bool:
        """Whether training stopped on `train_time_limit_s` (rather than `max_steps`)."""
        return getattr(self, "_time_limit_reached", False)

    def on_training_end(self, state: xax.State) -> xax.State:
        self._final_num_steps = int(state.num_steps)
        return super().on_training_end(state)

    def run_training(self) -> None:
        """Run ksim's loop, which catches any exception, saves and returns; here a run cut short raises instead.

        Stopping on `max_steps`, on `train_time_limit_s` or by the user (Ctrl-C) is not a failure.
        """
        self._progress.start_s = time.monotonic()
        self._final_num_steps = -1
        try:
            super().run_training()
        finally:
            stream = getattr(self, "_metrics_stream", None)
            if stream is not None:
                stream.close()
        max_steps = self.config.max_steps
        interrupted = not getattr(self, "_is_running", True)
        if max_steps is not None and self._final_num_steps < max_steps and not (interrupted or self.time_limit_reached):
            raise RuntimeError(
                f"Training stopped at step {self._final_num_steps} of {max_steps}: see the exception printed above"
            )

    def set_loggers(self) -> None:
        """The loggers of xax, with its console metrics logger moved to `<run dir>/metrics.jsonl` (`METRICS_FILE`).

        xax puts a metrics table (a terminal) or a JSON record of every metric (a pipe) on stdout every log interval,
        and echoes each log event there once more as JSON; here the console keeps one line per log event and the
        progress line, and every record goes to the file (appended, one JSON object per line, flushed as written).
        In a run across processes only process 0 (xax's rank) writes the file: the metrics are global, the same in
        every process.
        """
        super().set_loggers()
        loggers = self.logger.loggers
        loggers[:] = [lg for lg in loggers if not _writes_to_console(lg)]
        previous = getattr(self, "_metrics_stream", None)
        if previous is not None:
            previous.close()
        self._metrics_stream = None
        if not xax.is_master():
            return
        self._metrics_stream = (Path(self.exp_dir) / METRICS_FILE).open("a", encoding="utf-8")
        loggers.append(
            xax.JsonLogger(
                log_stream=self._metrics_stream,
                flush_immediately=True,
                log_interval_seconds=self.config.log_interval_seconds,
            )
        )

    def checkpoint_aux(self, constants: RLLoopConstants, carry: RLLoopCarry) -> dict[str, PyTree]:
        return {}

    def restore_checkpoint_aux(
        self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State, ckpt_path: Path
    ) -> RLLoopCarry:
        return carry

    def saved_aux_values(self, carry: RLLoopCarry, *keys: str) -> dict[str, PyTree]:
        """The carry's aux values under `keys` that this run keeps (for `checkpoint_aux`)."""
        aux = carry.shared_state.aux_values
        return {key: aux[key] for key in keys if key in aux}

    def restore_aux_value(
        self,
        carry: RLLoopCarry,
        ckpt_path: Path,
        key: str,
        *,
        restored: Callable[[PyTree], str],
        missing: str,
        missing_level: int = logging.WARNING,
        adopt: Callable[[PyTree], PyTree] | None = None,
    ) -> RLLoopCarry:
        """Put the checkpoint's aux data under `key` back into the carry, when this run keeps such a value.

        `adopt` turns the saved value into this run's terms first. Logs ``restored(value) from <ckpt>``, or `missing`
        at `missing_level` when the checkpoint has none.
        """
        aux = carry.shared_state.aux_values
        if key not in aux:
            return carry
        saved = read_checkpoint_aux(ckpt_path, {key: aux[key]}).get(key)
        if saved is None:
            logger.log(missing_level, "%s: %s", ckpt_path, missing)
            return carry
        if adopt is not None:
            saved = adopt(saved)
        logger.info("%s from %s", restored(saved), ckpt_path)
        shared = replace(carry.shared_state, aux_values=xax.FrozenDict({**aux, key: saved}))
        return replace(carry, shared_state=shared)

    def _save(self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State) -> None:
        aux = self.checkpoint_aux(constants, carry)
        if not aux:
            super()._save(constants=constants, carry=carry, state=state)
            return
        model = eqx.combine(carry.shared_state.model_arrs, constants.constants.model_statics)
        models = list(model) if isinstance(model, tuple) else [model]
        self.save_checkpoint(
            models=models,
            optimizers=constants.optimizer,
            opt_states=carry.opt_state,
            aux_data=aux_data_blob(aux),
            state=state,
        )

    def initialize_rl_training(
        self, mj_model: ksim.PhysicsModel, metadata: ksim.Metadata
    ) -> tuple[RLLoopConstants, RLLoopCarry, xax.State]:
        constants, carry, state = super().initialize_rl_training(mj_model, metadata)
        ckpt_path = self.get_init_ckpt_path()
        if ckpt_path is not None:
            carry = self.restore_checkpoint_aux(constants, carry, state, Path(ckpt_path))
        return constants, carry, state


class DomainRandomizationMixin(TrainingStateMixin[Config], Generic[Config]):
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

    def check_randomization_hooks(self, physics_model: ksim.PhysicsModel) -> None:
        """Refuse a task whose own `get_physics_randomizers` or `get_curriculum` silently turns half the mixin off.

        The mixin needs both of its hooks: the randomizer (the initial draw, ksim's) and the curriculum (redraws,
        widths, metrics, checkpoints). A task may replace both (opting out, as `tasks.walk`'s `sim2real=false`
        does), not one; called before anything compiles.
        """
        randomizers = self.get_physics_randomizers(physics_model)
        curriculum = self.get_curriculum(physics_model)
        has_randomizer = isinstance(randomizers.get(RANDOMIZER_KEY), DomainRandomization)
        has_curriculum = isinstance(curriculum, RandomizationCurriculum)
        name = type(self).__name__
        if has_curriculum and not has_randomizer:
            raise TypeError(
                f"{name}.get_physics_randomizers drops DomainRandomizationMixin's randomizer, so no physics is "
                "randomized: return {**super().get_physics_randomizers(physics_model), ...your own...}"
            )
        if has_randomizer and not has_curriculum:
            raise TypeError(
                f"{name}.get_curriculum returns a {type(curriculum).__name__}, not the RandomizationCurriculum "
                "DomainRandomizationMixin needs (per-episode redraws, widths, metrics, checkpoints): override "
                "get_randomization_curriculum instead"
            )

    def initialize_rl_training(
        self, mj_model: ksim.PhysicsModel, metadata: ksim.Metadata
    ) -> tuple[RLLoopConstants, RLLoopCarry, xax.State]:
        self.check_randomization_hooks(mj_model)
        return super().initialize_rl_training(mj_model, metadata)

    # Jitted like ksim's: ksim calls it directly for the validation rollout, where an unjitted draw ran op by op and
    # XLA compiled each op on its own (131 more small compiles before the first update's validation unroll).
    @xax.jit(static_argnames=["self", "constants", "num_steps"], jit_level=JitLevel.UNROLL)
    def _single_unroll(
        self,
        constants: RolloutConstants,
        env_state: RolloutEnvState,
        shared_state: RolloutSharedState,
        num_steps: int,
    ) -> tuple[ksim.Trajectory, ksim.RewardState, RolloutEnvState]:
        """Run ksim's unroll, drawing each environment's next physics once up front instead of at every step.

        The draw (at the widths in the curriculum state, which change only between unrolls) rides along in the
        randomization dict while the scan runs, packed into one vector per environment like the current draw
        (`DrawLayout`), and is swapped in by `step_engine` when an episode ends; the fields are unpacked again
        before returning, so the carry ksim sees keeps its structure. An environment that finishes more than one
        episode within one unroll reuses the draw; across unrolls, and across environments, draws are independent.
        """
        curriculum = constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum) or not isinstance(shared_state.physics_model, mjx.Model):
            return super()._single_unroll(constants, env_state, shared_state, num_steps)
        randomization = curriculum.randomization
        rngs, u = jax.vmap(lambda k: key_and_uniforms(k, randomization.num_draws))(env_state.rng)
        width_state: WidthState = env_state.curriculum_state.state
        model = shared_state.physics_model
        draws = jax.vmap(lambda u, w, p: randomization.sample_from_unit(model, u, w, p))(
            u, width_state.widths, width_state.pinned
        )
        layout = DrawLayout.of(randomization, model)
        others = {k: v for k, v in env_state.randomization_dict.items() if k not in draws}
        current = {k: v for k, v in env_state.randomization_dict.items() if k in draws}
        packed = {CURRENT_DRAW_KEY: jax.vmap(layout.pack)(current), NEXT_DRAW_KEY: jax.vmap(layout.pack)(draws)}
        env_state = replace(env_state, randomization_dict=xax.FrozenDict({**others, **packed}), rng=rngs)
        trajectory, rewards, env_state = super()._single_unroll(constants, env_state, shared_state, num_steps)
        staged = dict(env_state.randomization_dict)
        fields = jax.vmap(layout.unpack)(staged.pop(CURRENT_DRAW_KEY))
        staged.pop(NEXT_DRAW_KEY)
        return trajectory, rewards, replace(env_state, randomization_dict=xax.FrozenDict({**staged, **fields}))

    def step_engine(
        self,
        constants: RolloutConstants,
        env_states: RolloutEnvState,
        shared_state: RolloutSharedState,
    ) -> tuple[ksim.Trajectory, RolloutEnvState]:
        """Run ksim's step; an environment whose episode ended gets a fresh physics draw (at the current widths).

        Inside `_single_unroll` the draw was made up front and the swap is one select of the packed vector; called
        on its own (ksim's viewer) the draw is sampled here. The reset state itself was computed by ksim with the
        previous episode's model; positions and velocities do not depend on it, and the first physics step of the
        new episode already runs on the new model.
        """
        curriculum = constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum):
            return super().step_engine(constants, env_states, shared_state)
        staged = dict(env_states.randomization_dict)
        if CURRENT_DRAW_KEY in staged:
            layout = DrawLayout.of(curriculum.randomization, shared_state.physics_model)
            current, next_draw = staged.pop(CURRENT_DRAW_KEY), staged.pop(NEXT_DRAW_KEY)
            fields = xax.FrozenDict({**staged, **layout.unpack(current)})
            transition, next_env_state = super().step_engine(
                constants, replace(env_states, randomization_dict=fields), shared_state
            )
            swapped = {CURRENT_DRAW_KEY: jnp.where(transition.done, next_draw, current), NEXT_DRAW_KEY: next_draw}
            return transition, replace(next_env_state, randomization_dict=xax.FrozenDict({**staged, **swapped}))
        transition, next_env_state = super().step_engine(constants, env_states, shared_state)
        rng, u = key_and_uniforms(next_env_state.rng, curriculum.randomization.num_draws)
        width_state: WidthState = env_states.curriculum_state.state
        next_draw = curriculum.randomization.sample_from_unit(
            shared_state.physics_model, u, width_state.widths, width_state.pinned
        )
        merged = {k: jnp.where(transition.done, next_draw[k], v) if k in next_draw else v for k, v in staged.items()}
        return transition, replace(next_env_state, randomization_dict=xax.FrozenDict(merged), rng=rng)

    def after_update(
        self,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
        metrics: Mapping[str, jax.Array],
    ) -> tuple[RLLoopCarry, dict[str, jax.Array]]:
        carry, metrics = super().after_update(constants, carry, trajectories, metrics)
        curriculum = constants.constants.curriculum
        if isinstance(curriculum, RandomizationCurriculum):
            widths = carry.env_states.curriculum_state.state.widths[0]
            metrics = {**metrics, **randomization_metrics(curriculum.randomization, widths)}
        return carry, metrics

    # ------------------------------------------------------------------ width control
    def progress_values(self, metrics: ksim.Metrics) -> dict[str, float]:
        """Adds "DR width": the mean of the parameters' widths (1 = the configured ranges; a curriculum ramps it)."""
        values = super().progress_values(metrics)
        widths = [metric_value(v) for k, v in metrics.train.items() if k.startswith("dr_width_")]
        if widths:
            values["DR width"] = sum(widths) / len(widths)
        return values

    def with_widths(
        self, env_states: RolloutEnvState, curriculum: RandomizationCurriculum, widths: np.ndarray | list[float]
    ) -> RolloutEnvState:
        """Environment states whose randomization widths are `widths` (validated; takes effect at each next reset)."""
        return set_widths(env_states, curriculum, jnp.asarray(curriculum.randomization.check_widths(widths)))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_aux(self, constants: RLLoopConstants, carry: RLLoopCarry) -> dict[str, PyTree]:
        aux = super().checkpoint_aux(constants, carry)
        curriculum = constants.constants.curriculum
        if isinstance(curriculum, RandomizationCurriculum):
            width_state: WidthState = carry.env_states.curriculum_state.state
            aux[RANDOMIZATION_AUX] = {
                "names_hash": jnp.asarray(_names_hash(curriculum.randomization.names), dtype=jnp.int32),
                "widths": width_state.widths[0],
                "perf_sum": width_state.perf_sum[0],
                "perf_count": width_state.perf_count[0],
                "num_updates": width_state.num_updates[0],
            }
        return aux

    def load_randomization_state(
        self, ckpt_path: str | Path, curriculum: RandomizationCurriculum
    ) -> dict[str, jax.Array] | None:
        """The randomization state saved in a checkpoint, or None if it has none (e.g. a plain ksim run)."""
        p = curriculum.num_parameters
        zeros = jnp.zeros(p, dtype=jnp.float32)
        count = jnp.zeros((), dtype=jnp.int32)
        template = {"names_hash": count, "widths": zeros, "perf_sum": zeros, "perf_count": zeros, "num_updates": count}
        try:
            saved = read_checkpoint_aux(ckpt_path, {RANDOMIZATION_AUX: template})
        except CheckpointAuxError as err:
            raise RandomizationCheckpointError(
                f"{ckpt_path}: its randomization state does not fit this task's {curriculum.num_parameters} "
                f"parameters {curriculum.randomization.names} ({err})"
            ) from err
        if RANDOMIZATION_AUX not in saved:
            return None
        state = saved[RANDOMIZATION_AUX]
        if int(state["names_hash"]) != _names_hash(curriculum.randomization.names):
            raise RandomizationCheckpointError(
                f"{ckpt_path} was saved with different randomization parameters than {curriculum.randomization.names}"
            )
        return state

    def restore_checkpoint_aux(
        self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State, ckpt_path: Path
    ) -> RLLoopCarry:
        carry = super().restore_checkpoint_aux(constants, carry, state, ckpt_path)
        curriculum = constants.constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum):
            return carry
        saved = self.load_randomization_state(ckpt_path, curriculum)
        if saved is None:
            logger.warning("%s has no randomization state; widths start from their initial values", ckpt_path)
            return carry
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
        model = carry.shared_state.physics_model
        rngs = jax.random.split(jax.random.PRNGKey(int(state.num_steps)), n)
        draw = jax.vmap(curriculum.randomization.sampler(model), in_axes=(None, 0, 0, 0))
        fresh = draw(model, rngs, width_state.widths, width_state.pinned)
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
        return replace(carry, env_states=env_states)


# ====================================================================== auto-tuned entropy temperature
TEMPERATURE_KEY = "entropy_temperature"  # shared_state.aux_values and checkpoint aux_data key
BOUND_WARNING_UPDATES = 25  # warn each time α has sat on a bound for this many more updates in a row
PPOConfigT = TypeVar("PPOConfigT", bound=ksim.PPOConfig)
AdvantageNormalization = Literal["trajectory", "minibatch", "none"]
ADVANTAGE_NORMALIZATIONS: tuple[AdvantageNormalization, ...] = ("trajectory", "minibatch", "none")


def standardize(x: jax.Array) -> jax.Array:
    """(x − mean) / std over all of x (std floored at 1e-6): one scale for a whole minibatch of advantages."""
    return (x - jnp.mean(x)) / jnp.maximum(jnp.std(x), 1e-6)


class AutoTemperatureMixin(TrainingStateMixin[PPOConfigT], ksim.PPOTask[PPOConfigT], Generic[PPOConfigT]):
    """PPO whose entropy bonus −α·Σ_dims H has a temperature α tuned toward a target entropy (nats/dim).

    α lives in the loop carry (``shared_state.aux_values``), so it changes without recompiling, and is saved with
    the checkpoint and restored on resume. The loss is ksim's (`compute_ppo_inputs`, `compute_ppo_loss`) with the
    fixed `entropy_coef` term replaced by the α term. `get_ppo_variables` must return the policy's entropy in nats
    per action dimension (see `ksim_entropy.ppo.temperature.gaussian_entropy`).
    """

    def get_entropy_temperature(self) -> EntropyTemperature | None:
        """The temperature controller; None keeps ksim's fixed `entropy_coef`."""
        return None

    def _get_shared_state(self, **kwargs: object) -> RolloutSharedState:
        shared = super()._get_shared_state(**kwargs)  # type: ignore[arg-type]
        temperature = self.get_entropy_temperature()
        if temperature is None:
            return shared
        aux = {**shared.aux_values, TEMPERATURE_KEY: temperature.initial_state()}
        return replace(shared, aux_values=xax.FrozenDict(aux))

    def get_advantage_normalization(self) -> AdvantageNormalization:
        """How advantages are normalized: "trajectory", "minibatch" or "none".

        "trajectory" is ksim 0.2.10's (each trajectory ÷ its own std), "minibatch" centres them and divides by one std
        over the whole minibatch (upstream ksim since 8beee15b, and most PPO codes).
        """
        return "trajectory" if self.config.normalize_advantages else "none"

    def _ppo_loss_at_alpha(
        self,
        model_arr: PyTree,
        model_static: PyTree,
        trajectories: ksim.Trajectory,
        rewards: ksim.RewardState,
        init_carry: PyTree,
        on_policy_variables: ksim.PPOVariables,
        rng: jax.Array,
        alpha: jax.Array,
    ) -> tuple[jax.Array, xax.FrozenDict[str, jax.Array]]:
        model = eqx.combine(model_arr, model_static)
        cfg = self.config
        normalization = self.get_advantage_normalization()
        if normalization not in ADVANTAGE_NORMALIZATIONS:
            raise ValueError(
                f"advantage normalization must be one of {ADVANTAGE_NORMALIZATIONS}, got {normalization!r}"
            )

        def variables_and_inputs(
            trajectory: ksim.Trajectory, reward: ksim.RewardState, carry: PyTree, key: jax.Array
        ) -> tuple[ksim.PPOVariables, PPOInputs]:
            off_policy, _ = self.get_ppo_variables(model, trajectory, carry, key)
            if off_policy.entropy is None:
                raise ValueError("the auto-tuned temperature needs get_ppo_variables to return the policy entropy")
            inputs = compute_ppo_inputs(
                values_t=jax.lax.stop_gradient(off_policy.values),
                rewards_t=reward.total,
                dones_t=trajectory.done,
                successes_t=trajectory.success,
                decay_gamma=cfg.gamma,
                gae_lambda=cfg.lam,
                normalize_advantages=normalization == "trajectory",
                monte_carlo_returns=cfg.monte_carlo_returns,
            )
            return off_policy, inputs

        keys = jax.random.split(rng, rewards.total.shape[0])
        off_policy_bt, inputs_bt = jax.vmap(variables_and_inputs)(trajectories, rewards, init_carry, keys)
        if normalization == "minibatch":
            inputs_bt = replace(inputs_bt, advantages_t=standardize(inputs_bt.advantages_t))

        def one_trajectory(
            trajectory: ksim.Trajectory,
            inputs: PPOInputs,
            on_policy: ksim.PPOVariables,
            off_policy: ksim.PPOVariables,
        ) -> tuple[jax.Array, xax.FrozenDict[str, jax.Array]]:
            losses = dict(
                compute_ppo_loss(
                    ppo_inputs=inputs,
                    on_policy_variables=on_policy,
                    off_policy_variables=replace(off_policy, entropy=None),
                    clip_param=cfg.clip_param,
                    value_loss_coef=cfg.value_loss_coef,
                    entropy_coef=0.0,
                    kl_coef=cfg.kl_coef,
                    log_clip_value=cfg.log_clip_value,
                    use_clipped_value_loss=cfg.use_clipped_value_loss,
                )
            )
            losses["entropy"] = -alpha * off_policy.entropy.sum(axis=-1)
            metrics = dict(self.get_ppo_metrics(losses, inputs, on_policy, off_policy))
            metrics["policy_entropy_per_dim"] = jnp.mean(off_policy.entropy)
            num_valid = jnp.sum(~trajectory.done)
            loss = jnp.stack(list(losses.values()), axis=-1).sum() / (num_valid + 1e-6)
            return loss, xax.FrozenDict(metrics)

        loss, metrics = jax.vmap(one_trajectory)(trajectories, inputs_bt, on_policy_variables, off_policy_bt)
        return loss.mean(), metrics

    def _single_step(
        self,
        trajectories: ksim.Trajectory,
        rewards: ksim.RewardState,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        on_policy_variables: ksim.PPOVariables,
        rng: jax.Array,
    ) -> tuple[RLLoopCarry, xax.FrozenDict[str, jax.Array]]:
        temperature = self.get_entropy_temperature()
        aux_params = self.auxiliary_parameters(carry)
        if temperature is None and not aux_params:
            return super()._single_step(
                trajectories=trajectories,
                rewards=rewards,
                constants=constants,
                carry=carry,
                on_policy_variables=on_policy_variables,
                rng=rng,
            )
        if temperature is None:  # an auxiliary loss with ksim's fixed coefficient
            alpha = jnp.float32(self.config.entropy_coef)
        else:
            alpha = jax.lax.stop_gradient(temperature.alpha(carry.shared_state.aux_values[TEMPERATURE_KEY]))
        model_arr = carry.shared_state.model_arrs[0]
        model_static = constants.constants.model_statics[0]
        if aux_params:
            rng, aux_rng = jax.random.split(rng)

        def loss_fn(arr: PyTree, params: dict[str, PyTree]) -> tuple[jax.Array, xax.FrozenDict[str, jax.Array]]:
            loss, metrics = self._ppo_loss_at_alpha(
                arr,
                model_static,
                trajectories,
                rewards,
                carry.env_states.model_carry,
                on_policy_variables,
                rng,
                alpha,
            )
            if not params:
                return loss, metrics
            model = eqx.combine(arr, model_static)
            extra, extra_metrics = self.auxiliary_loss(model, params, trajectories, carry, aux_rng)
            return loss + extra, xax.FrozenDict({**metrics, **extra_metrics})

        (grads, aux_grads), metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(model_arr, aux_params)
        carry = self.apply_auxiliary_gradients(carry, aux_grads)
        updates, opt_state = constants.optimizer[0].update(grads, carry.opt_state[0], model_arr)
        model_arr = eqx.apply_updates(model_arr, updates)
        shared = replace(carry.shared_state, model_arrs=xax.tuple_insert(carry.shared_state.model_arrs, 0, model_arr))
        return replace(carry, shared_state=shared, opt_state=xax.tuple_insert(carry.opt_state, 0, opt_state)), metrics

    # Auxiliary losses beside PPO's, off by default. A mixin that adds one extends all three, calling super() first
    # and keeping to its own key of the dicts (ksim_entropy.ppo.domain_adversarial does).
    def auxiliary_parameters(self, carry: RLLoopCarry) -> dict[str, PyTree]:
        """Per auxiliary loss, the parameters outside the policy it trains (kept in the carry; `()` for none).

        An empty dict: no auxiliary loss, PPO's alone.
        """
        return {}

    def auxiliary_loss(
        self,
        model: PyTree,
        params: dict[str, PyTree],
        trajectories: ksim.Trajectory,
        carry: RLLoopCarry,
        rng: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The auxiliary losses summed on one minibatch, and their metrics; gradients reach the policy and `params`."""
        return jnp.float32(0.0), {}

    def apply_auxiliary_gradients(self, carry: RLLoopCarry, grads: dict[str, PyTree]) -> RLLoopCarry:
        """Step each auxiliary loss's parameters with their gradient (their own optimizers)."""
        return carry

    def policy_input_sequences(self, model: PyTree, trajectories: ksim.Trajectory) -> jax.Array:
        """The actor's input vectors (B, T, D) along trajectories (B, T): what auxiliary losses on windows read."""
        raise NotImplementedError(f"{type(self).__name__} has an auxiliary loss but no policy_input_sequences")

    def after_update(
        self,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
        metrics: Mapping[str, jax.Array],
    ) -> tuple[RLLoopCarry, dict[str, jax.Array]]:
        carry, metrics = super().after_update(constants, carry, trajectories, metrics)
        temperature = self.get_entropy_temperature()
        if temperature is None:
            return carry, metrics
        aux = carry.shared_state.aux_values
        before: TemperatureState = aux[TEMPERATURE_KEY]
        entropy = jnp.mean(metrics["policy_entropy_per_dim"])
        after = temperature.update(before, entropy)
        shared = replace(carry.shared_state, aux_values=xax.FrozenDict({**aux, TEMPERATURE_KEY: after}))
        extra = {
            "policy_entropy_per_dim": entropy,
            "temperature_alpha": temperature.alpha(before),
            "temperature_target_entropy": temperature.target(after),
            "temperature_rate": after.rate,
            "temperature_bound_updates": after.bound_updates,
        }
        return replace(carry, shared_state=shared), {**metrics, **extra}

    def log_train_metrics(self, metrics: ksim.Metrics) -> None:
        super().log_train_metrics(metrics)
        streak = metrics.train.get("temperature_bound_updates")
        if streak is None:
            return
        n = int(metric_value(streak))
        temperature = self.get_entropy_temperature() if n and n % BOUND_WARNING_UPDATES == 0 else None
        if temperature is not None:
            alpha = metric_value(metrics.train["temperature_alpha"])
            logger.warning(
                "entropy temperature α=%.3g has sat on a bound of %s for %d updates in a row: the target entropy "
                "(%.3f nats/dim) is out of the controller's reach (policy entropy %.3f nats/dim)",
                alpha,
                (temperature.min_alpha, temperature.max_alpha),
                n,
                metric_value(metrics.train["temperature_target_entropy"]),
                metric_value(metrics.train["policy_entropy_per_dim"]),
            )

    def progress_values(self, metrics: ksim.Metrics) -> dict[str, float]:
        values = super().progress_values(metrics)
        for key, name in (("temperature_alpha", "α"), ("policy_entropy_per_dim", "H nat/dim")):
            if key in metrics.train:
                values[name] = metric_value(metrics.train[key])
        return values

    def checkpoint_aux(self, constants: RLLoopConstants, carry: RLLoopCarry) -> dict[str, PyTree]:
        return {**super().checkpoint_aux(constants, carry), **self.saved_aux_values(carry, TEMPERATURE_KEY)}

    def restore_checkpoint_aux(
        self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State, ckpt_path: Path
    ) -> RLLoopCarry:
        carry = super().restore_checkpoint_aux(constants, carry, state, ckpt_path)
        temperature = self.get_entropy_temperature()  # None: no temperature state in the carry, nothing restored
        return self.restore_aux_value(
            carry,
            ckpt_path,
            TEMPERATURE_KEY,
            restored=lambda saved: f"restored entropy temperature α={float(temperature.alpha(saved)):.6g}",
            missing="no entropy temperature state; α starts from its initial value",
            adopt=lambda saved: temperature.adopt(saved, saved_min_alpha(ckpt_path, temperature.min_alpha)),
        )


# ====================================================================== the entropy-bridged task
@jax.tree_util.register_dataclass
@dataclass
class EntropyBridgedConfig(ksim.PPOConfig):
    """Switches and defaults of `EntropyBridgedTask` (sources: ../shared/docs/sim2real-anchors.md §4)."""

    auto_temperature: bool = xax.field(
        value=True, help="Entropy bonus through this package's loss with α from temperature_mode (false: ksim's own)."
    )
    target_entropy: float = xax.field(value=-1.0, help="Target policy entropy (nats per action dim); SAC's −1.")
    target_entropy_anneal_updates: int = xax.field(
        value=1000, help="> 0: the target starts at the first update's entropy, reaches target_entropy after this many."
    )
    initial_alpha: float = xax.field(value=4e-3, help="Starting α (kbot-joystick's entropy_coef).")
    alpha_bounds: tuple[float, float] = xax.field(
        value=(1e-4, 1e-1), help="α is clamped to [min, max] (ALF). min <= 0: signed (pi mode), α < 0 penalises entropy"
    )
    temperature_mode: str = xax.field(
        value="pi", help="pi | damped (ALF-style steps) | dual (SAC, Adam on log α) | fixed (α = initial_alpha)."
    )
    temperature_pi_gains: tuple[float, float] = xax.field(
        value=(2.0, 0.3), help="pi: (proportional, integral) gain on log α per nat/dim of entropy error."
    )
    temperature_tolerance: float = xax.field(
        value=0.05, help="Dead band (nats/dim): α holds while the entropy is within this of the target."
    )
    temperature_rate: float = xax.field(value=0.6931, help="damped: step on log α (ln 2, ALF).")
    temperature_rate_decay: float = xax.field(value=1.0, help="damped: step × this at each target crossing (ALF).")
    temperature_min_rate: float = xax.field(value=0.01, help="damped: smallest step on log α (ALF).")
    temperature_dual_lr: float = xax.field(value=0.05, help="dual: Adam learning rate on log α per update.")
    entropy_target_path: str | None = xax.field(
        value=None, help="Matching target: a real-log entropy profile (ksim-bridge profile) or a fitted.json."
    )
    entropy_match_band: tuple[float, float] = xax.field(value=(0.7, 1.5), help="Entropy ratio band kept as is.")
    entropy_match_factors: tuple[float, float] = xax.field(value=(0.9, 1.1), help="Width × (shrink, grow).")
    entropy_match_every: int = xax.field(value=10, help="PPO updates between entropy-matching decisions.")
    entropy_match_controller: str = xax.field(
        value="band", help="band (the seed's rule) | smooth (fitted targets: a fraction of the way to the W2 optimum)."
    )
    entropy_match_rate: float = xax.field(value=0.2, help="smooth: fraction of the way to the optimum per decision.")
    entropy_metrics: bool = xax.field(value=True, help="Log observation entropy per group every update.")
    advantage_normalization: str = xax.field(
        value="trajectory", help="trajectory (ksim 0.2.10) | minibatch (centred, one std per minibatch) | none."
    )
    max_train_seconds: float | None = xax.field(
        value=None, help="Stop training after this much wall time (s, compilation included); None: max_steps only."
    )
    devices: str = xax.field(
        value="1", help="Devices the environments are split across: 1 (unchanged), auto (all JAX sees) or a count."
    )


BridgedConfigT = TypeVar("BridgedConfigT", bound=EntropyBridgedConfig)


class EntropyBridgedTask(
    DataParallelMixin[BridgedConfigT],
    AutoTemperatureMixin[BridgedConfigT],
    DomainRandomizationMixin[BridgedConfigT],
    Generic[BridgedConfigT],
):
    """PPO with an auto-tuned temperature, per-episode entropy-aware randomization and entropy-matched widths.

    ``class MyTask(EntropyBridgedTask[MyConfig], ksim.PPOTask[MyConfig])`` with ``MyConfig(EntropyBridgedConfig)``.
    Config fields switch each piece: `auto_temperature`, `entropy_target_path` (a profile switches the
    randomization curriculum to entropy matching), `devices` (environments split across devices,
    `ksim_entropy.ppo.data_parallel`). Override `get_action_entropy_range` (to refuse unreachable
    targets) and `get_entropy_observations` (profile group → observation key; also the groups whose rollout
    entropy is logged). Logged every update: policy entropy, α, observation entropy per group, the
    policy-to-observation entropy ratio, randomization npd and widths, and with a target the W2 distance and
    entropy ratio to it.
    """

    def get_action_entropy_range(self) -> tuple[float, float] | None:
        """Per-dimension entropies (nats) the policy's action distribution can reach; None if unknown."""
        return None

    def get_entropy_observations(self) -> dict[str, str]:
        """Profile group → observation key of the signals the policy sees (for logging and matching)."""
        return {}

    def get_entropy_temperature(self) -> EntropyTemperature | None:
        cfg = self.config
        if not cfg.auto_temperature:
            return None
        low, high = cfg.alpha_bounds
        return EntropyTemperature(
            target_entropy=cfg.target_entropy,
            initial_alpha=cfg.initial_alpha,
            min_alpha=low,
            max_alpha=high,
            mode=cfg.temperature_mode,  # type: ignore[arg-type]
            initial_rate=cfg.temperature_rate,
            rate_decay=cfg.temperature_rate_decay,
            min_rate=cfg.temperature_min_rate,
            dual_learning_rate=cfg.temperature_dual_lr,
            pi_gains=tuple(cfg.temperature_pi_gains),
            anneal_updates=cfg.target_entropy_anneal_updates,
            tolerance=cfg.temperature_tolerance,
            entropy_range=self.get_action_entropy_range(),
        )

    def get_advantage_normalization(self) -> AdvantageNormalization:
        return self.config.advantage_normalization  # type: ignore[return-value]

    def train_time_limit_s(self) -> float | None:
        return self.config.max_train_seconds

    def get_entropy_target(
        self, physics_model: ksim.PhysicsModel, randomization: DomainRandomization
    ) -> EntropyTarget | RandomizationTarget | None:
        """The matching target in `entropy_target_path`: a real-log profile or a fitted randomization."""
        path = self.config.entropy_target_path
        if path is None:
            return None
        return load_target(path, self.get_entropy_observations(), randomization, actuator_joint_names(physics_model))

    def get_curriculum(self, physics_model: ksim.PhysicsModel) -> ksim.Curriculum:
        curriculum = super().get_curriculum(physics_model)
        if self.config.entropy_target_path is None or not isinstance(curriculum, RandomizationCurriculum):
            return curriculum
        cfg = self.config
        (low, high), (shrink, grow) = cfg.entropy_match_band, cfg.entropy_match_factors
        rule = MatchRule(
            low=low,
            high=high,
            shrink=shrink,
            grow=grow,
            every_updates=cfg.entropy_match_every,
            controller=cfg.entropy_match_controller,  # type: ignore[arg-type]
            rate=cfg.entropy_match_rate,
        )
        target = self.get_entropy_target(physics_model, curriculum.randomization)
        return attrs.evolve(curriculum, mode="matched", target=target, match_rule=rule)

    def after_update(
        self,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
        metrics: Mapping[str, jax.Array],
    ) -> tuple[RLLoopCarry, dict[str, jax.Array]]:
        carry, metrics = super().after_update(constants, carry, trajectories, metrics)
        curriculum = constants.constants.curriculum
        extra = entropy_metrics(
            trajectories.obs,
            self.get_entropy_observations() if self.config.entropy_metrics else {},
            metrics,
            getattr(curriculum, "target", None),
            carry.env_states.curriculum_state.state.widths[0]
            if isinstance(curriculum, RandomizationCurriculum)
            else None,
        )
        return carry, {**metrics, **extra}


def entropy_metrics(
    obs: Mapping[str, jax.Array],
    groups: Mapping[str, str],
    train_metrics: Mapping[str, jax.Array],
    target: EntropyTarget | RandomizationTarget | None,
    widths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Observation entropy per group (nats/channel), the policy-to-observation entropy ratio, the gap to a target.

    A fitted-randomization target is compared at the randomization `widths`: `target_w2` in total and, per fitted
    randomizer, `target_<name>_w2` and `target_<name>_entropy_ratio`.
    """
    out: dict[str, jax.Array] = {}
    if groups:
        entropies = observation_entropy(obs, groups)
        channels = {g: _channel_count(obs[k]) for g, k in groups.items()}
        for g, h in entropies.items():
            out[f"obs_entropy_{g}"] = h / channels[g]
        per_channel = sum(entropies.values()) / sum(channels.values())
        out["obs_entropy_per_channel"] = per_channel
        if "policy_entropy_per_dim" in train_metrics:
            out["policy_obs_entropy_ratio"] = jnp.mean(train_metrics["policy_entropy_per_dim"]) / per_channel
    if isinstance(target, RandomizationTarget):
        if widths is None:
            raise ValueError("a fitted-randomization target is compared at the randomization widths; none given")
        gap = target.gap(widths)
        out["target_w2"] = gap.pop("w2")
        out |= {f"target_{k.replace('/', '_')}": v for k, v in gap.items()}
    elif target is not None:
        gap = observation_gap(obs, target)
        out["target_w2"] = gap["w2"]
        out["target_entropy_ratio"] = gap["entropy_ratio"]
        for g in target.groups:
            out[f"target_w2_{g.group}"] = gap[f"{g.group}/w2"]
    return out


def _channel_count(x: jax.Array) -> int:
    return int(x.shape[-1]) if x.ndim > 2 else 1
