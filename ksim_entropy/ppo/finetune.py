"""Fine-tuning without forgetting: a KL penalty that holds a policy near the one it started from.

Continuing a trained policy on a new robot model (e.g. `randomization=fitted.json` after `tasks.fit`) with a lower
learning rate can still drift away from what worked. `SourceKLMixin` keeps a frozen copy of the policy the run
started from (the weights `load_from_ckpt_path` loaded) and adds, on every PPO minibatch,

    kl_coef · mean over windows of Σ_dims KL(π_source(·|w) ‖ π_θ(·|w))   (nats)

for windows w of the minibatch's own trajectories, both actors run over each window from a zero state (the same
windows as `ksim_entropy.ppo.domain_adversarial`). For diagonal Gaussians, per dimension,
``KL(p ‖ q) = log(σ_q / σ_p) + (σ_p² + (μ_p − μ_q)²) / (2 σ_q²) − ½``. The source is saved in checkpoints and
restored on resume, so a resumed fine-tune keeps its original anchor. Logged: `source_kl` (nats per window, summed
over action dims).
"""

import functools
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Generic

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import ksim
import xax
from jaxtyping import Array, PRNGKeyArray, PyTree
from ksim.task.rl import RLLoopCarry, RLLoopConstants, RolloutSharedState

from ksim_entropy.ppo.domain_adversarial import sample_windows
from ksim_entropy.ppo.mixins import AutoTemperatureMixin, PPOConfigT

__all__ = ["SOURCE_KEY", "SourceKL", "SourceKLMixin", "gaussian_kl"]


SOURCE_KEY = "source_policy"  # shared_state.aux_values and checkpoint aux_data key: the frozen source's arrays


def gaussian_kl(mean_p: Array, std_p: Array, mean_q: Array, std_q: Array) -> Array:
    """KL(p ‖ q) per dimension (nats) between diagonal Gaussians p = N(mean_p, std_p²), q = N(mean_q, std_q²)."""
    return jnp.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5


@attrs.frozen
class SourceKL:
    """The penalty's settings: `coef` (> 0) times the KL, on `windows_per_update` windows of `window_steps` steps."""

    coef: float
    window_steps: int = 8
    windows_per_update: int = 64

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.coef) and self.coef > 0):
            raise ValueError(f"SourceKL: coef must be finite and > 0, got {self.coef}")
        if self.window_steps < 1 or self.windows_per_update < 1:
            raise ValueError(
                f"SourceKL: need window_steps >= 1 and windows_per_update >= 1, got {self.window_steps} and "
                f"{self.windows_per_update}"
            )


class SourceKLMixin(AutoTemperatureMixin[PPOConfigT], Generic[PPOConfigT]):
    """PPO with a KL penalty to the policy the run started from; `get_source_kl` switches it on (None: off).

    A task implements `policy_input_sequences` (the actor's inputs along trajectories; shared with DANN) and
    `policy_over_windows` (action mean and std at each window's last step, from a zero state).
    """

    def get_source_kl(self) -> SourceKL | None:
        """The penalty's settings; None (default) switches it off."""
        return None

    def policy_over_windows(self, model: PyTree, windows: Array) -> tuple[Array, Array]:
        """Action mean and std (N, A) at the last step of each window (N, W, D), from a zero state."""
        raise NotImplementedError(f"{type(self).__name__} uses a source KL but does not implement policy_over_windows")

    @functools.cached_property
    def _source_kl(self) -> SourceKL | None:
        return self.get_source_kl()

    def _get_shared_state(self, **kwargs: object) -> RolloutSharedState:
        shared = super()._get_shared_state(**kwargs)
        if self._source_kl is None:
            return shared
        source = jax.tree.map(jnp.copy, shared.model_arrs[0])  # the weights this run starts from
        return replace(shared, aux_values=xax.FrozenDict({**shared.aux_values, SOURCE_KEY: source}))

    def auxiliary_parameters(self, carry: RLLoopCarry) -> dict[str, PyTree]:
        params = super().auxiliary_parameters(carry)
        if self._source_kl is not None:
            params[SOURCE_KEY] = ()  # a loss with no parameters of its own
        return params

    def auxiliary_loss(
        self,
        model: PyTree,
        params: dict[str, PyTree],
        trajectories: ksim.Trajectory,
        carry: RLLoopCarry,
        rng: PRNGKeyArray,
    ) -> tuple[Array, dict[str, Array]]:
        rng, own_rng = jax.random.split(rng)
        loss, metrics = super().auxiliary_loss(model, params, trajectories, carry, rng)
        kl = self._source_kl
        if kl is None:
            return loss, metrics
        _, static = eqx.partition(model, self.model_partition_fn)
        source = eqx.combine(jax.lax.stop_gradient(carry.shared_state.aux_values[SOURCE_KEY]), static)
        observations = self.policy_input_sequences(model, trajectories)
        windows, weights = sample_windows(
            observations, trajectories.done, kl.window_steps, kl.windows_per_update, own_rng
        )
        mean_p, std_p = self.policy_over_windows(source, windows)
        mean_q, std_q = self.policy_over_windows(model, windows)
        per_window = jnp.sum(gaussian_kl(mean_p, std_p, mean_q, std_q), axis=-1)
        value = jnp.sum(weights * per_window) / jnp.maximum(jnp.sum(weights), 1e-6)
        return loss + kl.coef * value, {**metrics, "source_kl": value}

    def checkpoint_aux(self, constants: RLLoopConstants, carry: RLLoopCarry) -> dict[str, PyTree]:
        return {**super().checkpoint_aux(constants, carry), **self.saved_aux_values(carry, SOURCE_KEY)}

    def restore_checkpoint_aux(
        self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State, ckpt_path: Path
    ) -> RLLoopCarry:
        carry = super().restore_checkpoint_aux(constants, carry, state, ckpt_path)
        return self.restore_aux_value(
            carry,
            ckpt_path,
            SOURCE_KEY,
            restored=lambda _: "restored the source policy (the KL anchor)",
            missing="a plain checkpoint: its policy is the KL anchor",  # fine-tuning from a trained run
            missing_level=logging.INFO,
        )
