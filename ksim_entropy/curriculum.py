"""Schedules for randomization widths, as a ksim `Curriculum` whose state holds the widths (traced, checkpointed).

Three modes over a `DomainRandomization`'s parameters (one width scale each):

- ``uniform``: the widths stay at the parameters' starting `width` (plain domain randomization).
- ``curriculum``: widths grow linearly from the starting width to `max_width` over `ramp_updates` PPO updates.
- ``matched``: entropy matching (`ksim_entropy.ppo.matching`), one decision every `match_rule.every_updates` updates.
  With a real-log profile (`EntropyTarget`) the rollout's observation entropy is compared with the profile's; all
  widths shrink ×0.9 when the simulation is more diverse than the robot (entropy ratio > 1.5) and grow ×1.1 when it
  is less (< 0.7). With a fitted randomization (`RandomizationTarget`) each fitted randomizer's own range is
  compared with its fitted range: the same band rule on its entropy ratio, or (``smooth``) a fixed fraction of the
  way to its W2-optimal width; the other widths stay as they are.
- ``adaptive``: entropy-maximising ADR (OpenAI, arXiv 1910.07113; DeXtreme's open implementation). A fixed
  `boundary_fraction` of environments each *pin* one parameter at the boundary of its current range (every
  dimension at its low or high bound, drawn per episode). Their performance is pooled per parameter; once a pool
  holds `queue_length` samples its mean is compared with the thresholds: at or above `threshold_high` the
  parameter's width grows by `step`, below `threshold_low` it shrinks by `step` (within [min_width, max_width]),
  and the pool is cleared. Like DORAEMON's constraint P(success) ≥ α, the widths (and so the entropy) keep growing
  while the policy still succeeds at the edges.

Performance measures (`measure`): ``"survival"`` is the fraction of finished episodes that ended without a failure
termination (ksim's `success` flag; a time-out counts as success), one sample per finished episode; ``"reward:NAME"``
is the per-step value of reward component NAME, one sample per control step.

ksim's `curriculum_level` (which scales ksim's own noise, latency and curriculum-scaled rewards) is set to the mean
of width / max_width. The state lives in every environment's `curriculum_state`; the task mixin
(`ksim_entropy.ppo.mixins.DomainRandomizationMixin`) reads the widths at each episode reset and saves the state in
checkpoints.
"""

from dataclasses import dataclass
from typing import Literal

import attrs
import jax
import jax.numpy as jnp
import ksim
import xax
from jaxtyping import Array, PRNGKeyArray
from ksim.curriculum import CurriculumState

from ksim_entropy.ppo.matching import EntropyTarget, MatchRule, RandomizationTarget, observation_gap
from ksim_entropy.randomization import DomainRandomization

__all__ = ["Mode", "RandomizationCurriculum", "WidthState"]

Mode = Literal["uniform", "curriculum", "adaptive", "matched"]
MODES: tuple[Mode, ...] = ("uniform", "curriculum", "adaptive", "matched")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class WidthState:
    """Curriculum state of one environment (ksim batches it over environments)."""

    widths: Array  # (P,) width scale per parameter, the same in every environment
    pinned: Array  # int32 (): the parameter this environment pins to its boundary, −1 for none
    perf_sum: Array  # (P,) pooled performance of boundary episodes per parameter
    perf_count: Array  # (P,) number of samples pooled
    num_updates: Array  # int32 (): curriculum steps taken (PPO updates)


@attrs.define(frozen=True, kw_only=True)
class RandomizationCurriculum(ksim.Curriculum[WidthState]):
    """Width schedule for a `DomainRandomization`: "uniform", "curriculum" or "adaptive" (see the module doc)."""

    randomization: DomainRandomization = attrs.field()
    mode: Mode = attrs.field(default="uniform")
    ramp_updates: int = attrs.field(default=1000)
    measure: str = attrs.field(default="survival")
    threshold_low: float = attrs.field(default=0.5)
    threshold_high: float = attrs.field(default=0.8)
    step: float = attrs.field(default=0.05)
    min_width: float = attrs.field(default=0.0)
    boundary_fraction: float = attrs.field(default=0.4)
    queue_length: int = attrs.field(default=64)
    target: EntropyTarget | RandomizationTarget | None = attrs.field(default=None)
    match_rule: MatchRule = attrs.field(factory=MatchRule)

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.ramp_updates < 1:
            raise ValueError(f"ramp_updates must be >= 1, got {self.ramp_updates}")
        if not (self.measure == "survival" or (self.measure.startswith("reward:") and len(self.measure) > 7)):
            raise ValueError(f"measure must be 'survival' or 'reward:<component name>', got {self.measure!r}")
        if not self.threshold_low <= self.threshold_high:
            raise ValueError(f"need threshold_low <= threshold_high, got {self.threshold_low}, {self.threshold_high}")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if not 0.0 <= self.boundary_fraction <= 1.0:
            raise ValueError(f"boundary_fraction must be in [0, 1], got {self.boundary_fraction}")
        if (self.mode == "matched") != (self.target is not None):
            raise ValueError("mode 'matched' needs an entropy target, and a target needs mode 'matched'")
        if self.match_rule.controller == "smooth" and not isinstance(self.target, RandomizationTarget):
            raise ValueError("the 'smooth' match controller needs a fitted randomization target (fitted.json)")
        if isinstance(self.target, RandomizationTarget):
            names = self.randomization.names
            wrong = [t.name for t in self.target.parameters if t.index >= len(names) or names[t.index] != t.name]
            if wrong:
                raise ValueError(f"the fitted target's parameters {wrong} are not this randomization's ({names})")
        if self.queue_length < 1:
            raise ValueError(f"queue_length must be >= 1, got {self.queue_length}")
        if self.min_width < 0 or any(self.min_width > w for w in self.randomization.initial_widths.tolist()):
            raise ValueError(f"min_width must be in [0, every starting width], got {self.min_width}")

    @property
    def num_parameters(self) -> int:
        return len(self.randomization.parameters)

    def level(self, widths: Array) -> Array:
        """The level ksim sees: mean over parameters of width / max_width (1 where max_width is 0)."""
        max_w = jnp.asarray(self.randomization.max_widths)
        return jnp.mean(jnp.where(max_w > 0, widths / jnp.where(max_w > 0, max_w, 1.0), 1.0))

    def initial_widths(self) -> Array:
        return jnp.asarray(self.randomization.initial_widths)

    def get_initial_state(self, rng: PRNGKeyArray) -> CurriculumState[WidthState]:
        widths = self.initial_widths()
        pin_rng, which_rng = jax.random.split(rng)
        pins = (self.mode == "adaptive") & jax.random.bernoulli(pin_rng, self.boundary_fraction)
        pinned = jnp.where(pins, jax.random.randint(which_rng, (), 0, self.num_parameters), -1).astype(jnp.int32)
        zeros = jnp.zeros(self.num_parameters, dtype=jnp.float32)
        state = WidthState(
            widths=widths,
            pinned=pinned,
            perf_sum=zeros,
            perf_count=zeros,
            num_updates=jnp.zeros((), dtype=jnp.int32),
        )
        return CurriculumState(level=self.level(widths), state=state)

    def performance(self, trajectory: ksim.Trajectory, rewards: ksim.RewardState) -> tuple[Array, Array]:
        """(sum, count) of performance samples per environment over one rollout, each of shape (num_envs,)."""
        if self.measure == "survival":
            done = trajectory.done.astype(jnp.float32)
            return jnp.sum(done * trajectory.success.astype(jnp.float32), axis=-1), jnp.sum(done, axis=-1)
        name = self.measure.removeprefix("reward:")
        if name not in rewards.components:
            raise KeyError(
                f"curriculum measure {self.measure!r}: no reward named {name!r}; have {list(rewards.components)}"
            )
        values = rewards.components[name]
        return jnp.sum(values, axis=-1), jnp.full(values.shape[:-1], values.shape[-1], dtype=jnp.float32)

    def __call__(
        self,
        trajectory: ksim.Trajectory,
        rewards: ksim.RewardState,
        training_state: xax.State,
        prev_state: CurriculumState[WidthState],
    ) -> CurriculumState[WidthState]:
        state = prev_state.state  # batched: (num_envs, ...) leaves
        widths = state.widths[0]
        num_updates = state.num_updates[0] + 1
        perf_sum, perf_count = state.perf_sum[0], state.perf_count[0]
        initial, max_w = self.initial_widths(), jnp.asarray(self.randomization.max_widths)

        if self.mode == "curriculum":
            progress = jnp.minimum(num_updates.astype(jnp.float32) / self.ramp_updates, 1.0)
            widths = initial + (max_w - initial) * progress
        elif self.mode == "adaptive":
            env_sum, env_count = self.performance(trajectory, rewards)
            one_hot = jax.nn.one_hot(state.pinned, self.num_parameters, dtype=jnp.float32)  # −1 → all zeros
            perf_sum = perf_sum + one_hot.T @ env_sum
            perf_count = perf_count + one_hot.T @ env_count
            ready = perf_count >= self.queue_length
            mean = perf_sum / jnp.maximum(perf_count, 1.0)
            delta = jnp.where(
                mean >= self.threshold_high, self.step, jnp.where(mean < self.threshold_low, -self.step, 0.0)
            )
            widths = jnp.where(ready, jnp.clip(widths + delta, self.min_width, max_w), widths)
            perf_sum = jnp.where(ready, 0.0, perf_sum)
            perf_count = jnp.where(ready, 0.0, perf_count)
        elif self.mode == "matched" and self.target is not None:
            if isinstance(self.target, RandomizationTarget):
                proposed = self.target.next_widths(widths, self.match_rule)
            else:
                ratio = observation_gap(trajectory.obs, self.target)["entropy_ratio"]
                proposed = widths * self.match_rule.factor(ratio)
            due = num_updates % self.match_rule.every_updates == 0
            widths = jnp.where(due, jnp.clip(proposed, self.min_width, max_w), widths)

        n = state.pinned.shape[0]
        new_state = WidthState(
            widths=jnp.broadcast_to(widths, (n, self.num_parameters)),
            pinned=state.pinned,
            perf_sum=jnp.broadcast_to(perf_sum, (n, self.num_parameters)),
            perf_count=jnp.broadcast_to(perf_count, (n, self.num_parameters)),
            num_updates=jnp.broadcast_to(num_updates, (n,)),
        )
        return CurriculumState(level=jnp.broadcast_to(self.level(widths), (n,)), state=new_state)
