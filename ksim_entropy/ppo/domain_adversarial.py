"""Domain-adversarial training (DANN; Ganin et al., JMLR 17(59), 2016) for a policy's encoder, in JAX.

A small domain classifier reads encoder features of simulated and real observations. Between the encoder and the
classifier sits a gradient-reversal layer: the identity going forward, ``−λ ×`` the gradient going back. Minimising
the classifier's cross-entropy then trains the classifier to tell sim from real and, through the reversal, the
encoder to make them indistinguishable. λ follows Ganin et al.'s schedule (their §5.2.2, eq. 14):
``λ(p) = λ_max · (2 / (1 + exp(−γ·p)) − 1)``, with training progress ``p`` from 0 to 1 and γ = 10. λ is a traced
array, so the schedule never recompiles.

Pieces: `gradient_reversal`, `ReversalSchedule`, `DomainClassifier`, `domain_adversarial_loss`.
"""

import functools
import math
from dataclasses import replace
from pathlib import Path
from typing import Generic

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import ksim
import numpy as np
import optax
import xax
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree
from ksim.task.rl import RLLoopCarry, RLLoopConstants, RolloutEnvState, RolloutSharedState

from ksim_entropy.formats.windows import check_window_array
from ksim_entropy.ppo.mixins import AutoTemperatureMixin, PPOConfigT, metric_value

__all__ = [
    "DomainAdversarial",
    "DomainAdversarialMixin",
    "DomainAdversarialState",
    "DomainClassifier",
    "DomainLoss",
    "ReversalSchedule",
    "domain_adversarial_loss",
    "gradient_reversal",
    "sample_windows",
]


@jax.custom_vjp
def gradient_reversal(x: Array, scale: ArrayLike) -> Array:
    """Identity on `x`; its gradient comes back multiplied by ``−scale`` (no gradient flows to `scale`)."""
    return x


def _reversal_fwd(x: Array, scale: ArrayLike) -> tuple[Array, Array]:
    return x, jnp.asarray(scale, dtype=x.dtype)


def _reversal_bwd(scale: Array, g: Array) -> tuple[Array, Array]:
    return -scale * g, jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


@attrs.frozen
class ReversalSchedule:
    """Ganin et al.'s λ schedule over `updates` PPO updates, then held at `max_lambda`; never negative.

    ``λ(u) = max_lambda · (2 / (1 + exp(−gamma · min(u / updates, 1))) − 1)``; `updates` = 0 holds `max_lambda`
    from the start.
    """

    max_lambda: float = 1.0
    updates: int = 1000
    gamma: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.max_lambda) and self.max_lambda >= 0):
            raise ValueError(f"ReversalSchedule: max_lambda must be finite and >= 0, got {self.max_lambda}")
        if isinstance(self.updates, bool) or not isinstance(self.updates, int) or self.updates < 0:
            raise ValueError(f"ReversalSchedule: updates must be an integer >= 0, got {self.updates!r}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(
                f"ReversalSchedule: gamma must be finite and > 0 (gamma <= 0 makes λ negative or 0), got {self.gamma}"
            )

    def __call__(self, update: ArrayLike) -> Array:
        """λ at PPO update `update` (a count from 0; traced or not), float32."""
        u = jnp.asarray(update, dtype=jnp.float32)
        if self.updates == 0:
            return jnp.full_like(u, self.max_lambda)
        p = jnp.clip(u / self.updates, 0.0, 1.0)
        return self.max_lambda * (2.0 / (1.0 + jnp.exp(-self.gamma * p)) - 1.0)


class DomainClassifier(eqx.Module):
    """P(real | features): an MLP with ELU hidden layers and one logit out."""

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, key: PRNGKeyArray, *, num_features: int, hidden_size: int = 64, depth: int = 2) -> None:
        if num_features < 1 or hidden_size < 1 or depth < 0:
            raise ValueError(
                f"DomainClassifier: need num_features >= 1, hidden_size >= 1, depth >= 0; got {num_features}, "
                f"{hidden_size}, {depth}"
            )
        sizes = [num_features] + [hidden_size] * depth + [1]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True))

    def __call__(self, features: Array) -> Array:
        """The logit of "real" for one feature vector (vmap for a batch)."""
        x = features
        for layer in self.layers[:-1]:
            x = jax.nn.elu(layer(x))
        return self.layers[-1](x)[0]


class DomainLoss(eqx.Module):
    """The classifier's balanced binary cross-entropy (nats) and accuracy on one batch of sim and real features."""

    loss: Array
    accuracy: Array


def domain_adversarial_loss(
    classifier: DomainClassifier,
    sim_features: Array,
    real_features: Array,
    reversal: ArrayLike,
    sim_weights: Array | None = None,
) -> DomainLoss:
    """Cross-entropy of `classifier` on features behind a gradient reversal of strength `reversal` (λ ≥ 0).

    `sim_features` (N, F) are labelled 0 and `real_features` (M, F) 1; each side's mean counts half, so unequal
    batch sizes do not tilt the classifier. `sim_weights` (N,) ≥ 0 weight the sim rows (e.g. 0 for a window that
    crosses an episode reset). Minimising the loss trains the classifier to separate the domains and, through the
    reversal, whatever produced the features to confuse it.
    """
    if sim_features.ndim != 2 or real_features.ndim != 2 or sim_features.shape[1] != real_features.shape[1]:
        raise ValueError(
            f"domain_adversarial_loss: features must be (N, F) and (M, F); got {sim_features.shape} and "
            f"{real_features.shape}"
        )
    logit_sim = jax.vmap(classifier)(gradient_reversal(sim_features, reversal))
    logit_real = jax.vmap(classifier)(gradient_reversal(real_features, reversal))
    # −log(1 − σ(z)) = softplus(z) for sim (label 0); −log σ(z) = softplus(−z) for real (label 1).
    w = jnp.ones(logit_sim.shape, logit_sim.dtype) if sim_weights is None else sim_weights.astype(logit_sim.dtype)
    total = jnp.maximum(jnp.sum(w), 1e-6)
    loss = 0.5 * (jnp.sum(w * jax.nn.softplus(logit_sim)) / total + jnp.mean(jax.nn.softplus(-logit_real)))
    accuracy = 0.5 * (jnp.sum(w * (logit_sim < 0)) / total + jnp.mean(logit_real > 0))
    return DomainLoss(loss=loss, accuracy=accuracy)


def sample_windows(obs: Array, done: Array, window: int, count: int, key: PRNGKeyArray) -> tuple[Array, Array]:
    """`count` windows of `window` consecutive steps from `obs` (B, T, D), with weight 0 where one crosses a reset.

    `done` (B, T) is ksim's: True at the last step of an episode, so a window starting at step s lies within one
    episode when done[s : s + window − 1] is all False.
    """
    num_envs, num_steps = done.shape
    if window > num_steps:
        raise ValueError(f"sample_windows: a window of {window} steps does not fit trajectories of {num_steps}")
    env_key, start_key = jax.random.split(key)
    env = jax.random.randint(env_key, (count,), 0, num_envs)
    start = jax.random.randint(start_key, (count,), 0, num_steps - window + 1)
    steps = start[:, None] + jnp.arange(window)[None, :]
    windows = obs[env[:, None], steps]
    crossed = jnp.any(done[env[:, None], steps[:, :-1]], axis=-1) if window > 1 else jnp.zeros((count,), bool)
    return windows, (~crossed).astype(obs.dtype)


@attrs.frozen(eq=False)
class DomainAdversarial:
    """DANN for a PPO task: real observation windows (the policy's own inputs) and the loss's settings.

    `real_windows` (N, W, D) float32: N windows of W control steps of the actor's input vector, computed from real
    logs by the same function the policy's observations go through. A fixed `held_out_fraction` of them (drawn with
    `seed`) is never trained on and measures the classifier's held-out accuracy every update. `weight` scales the
    domain loss in the PPO loss; the classifier has its own Adam at `classifier_learning_rate` (faster than the
    policy's: a classifier slower than the encoder it reverses into is pushed into confidently wrong answers while
    the features stay separable; tests/test_domain_adversarial.py).
    """

    real_windows: np.ndarray
    schedule: ReversalSchedule = ReversalSchedule()
    weight: float = 1.0
    classifier_learning_rate: float = 1e-3
    windows_per_update: int = 64
    held_out_fraction: float = 0.2
    hidden_size: int = 64
    depth: int = 2
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        check_window_array(self.real_windows, "DomainAdversarial")
        x = self.real_windows
        held_out = self.num_held_out
        if not 0.0 < self.held_out_fraction < 1.0 or held_out < 1 or held_out >= x.shape[0]:
            raise ValueError(
                f"DomainAdversarial: held_out_fraction={self.held_out_fraction} of {x.shape[0]} windows must leave at "
                "least one window on each side"
            )
        for name in ("weight", "classifier_learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"DomainAdversarial: {name} must be finite and > 0, got {value}")
        if self.windows_per_update < 1 or self.hidden_size < 1 or self.depth < 0:
            raise ValueError(
                "DomainAdversarial: need windows_per_update >= 1, hidden_size >= 1, depth >= 0; got "
                f"{self.windows_per_update}, {self.hidden_size}, {self.depth}"
            )

    @property
    def window_steps(self) -> int:
        """W, control steps per window."""
        return int(self.real_windows.shape[1])

    @property
    def num_held_out(self) -> int:
        """Real windows never trained on."""
        return round(self.held_out_fraction * self.real_windows.shape[0])

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(training windows, held-out windows), float32, the same for a given `seed`."""
        order = np.random.default_rng(self.seed).permutation(self.real_windows.shape[0])
        x = self.real_windows.astype(np.float32)
        return x[order[self.num_held_out :]], x[order[: self.num_held_out]]

    def optimizer(self) -> optax.GradientTransformation:
        """The classifier's optimizer."""
        return optax.adam(self.classifier_learning_rate)


DANN_KEY = "domain_adversarial"  # shared_state.aux_values and checkpoint aux_data key: classifier, Adam, updates
DANN_REAL_KEY = "domain_adversarial/real"  # shared_state.aux_values: (training, held-out) real windows


class DomainAdversarialState(eqx.Module):
    """What DANN carries between updates (and saves in checkpoints)."""

    classifier: DomainClassifier
    opt_state: optax.OptState
    updates: Array  # PPO updates so far (int32): the schedule's clock


class DomainAdversarialMixin(AutoTemperatureMixin[PPOConfigT], Generic[PPOConfigT]):
    """PPO with DANN on the actor's encoder: `get_domain_adversarial` switches it on (None: off, nothing changes).

    A task implements `policy_input_sequences` (the actor's inputs along a batch of trajectories), `domain_features`
    (the encoder's output after a window, from a zero recurrent state) and `domain_feature_size`.
    Every PPO minibatch adds ``weight · L_domain`` to the loss, with sim windows drawn from the minibatch's
    trajectories (a window across an episode reset weighs 0) and real windows from the training split; the policy's
    gradient from it passes the reversal (−λ), the classifier's own gradient goes to its Adam. Logged every update:
    `domain_loss`, `domain_accuracy` (training batches), `domain_held_out_accuracy` (the classifier and encoder as
    they were before the update, on windows of the new rollout and the held-out real windows) and `domain_lambda`.
    The classifier is not part of the policy: the exported policy is unchanged in shape.
    """

    def get_domain_adversarial(self) -> DomainAdversarial | None:
        """DANN's settings and real windows; None (default) switches it off."""
        return None

    def domain_features(self, model: PyTree, windows: Array) -> Array:
        """The actor encoder's features (N, F) at the last step of each window (N, W, D), from a zero state."""
        raise NotImplementedError(f"{type(self).__name__} uses DANN but does not implement domain_features")

    def domain_feature_size(self) -> int:
        """F, the size of `domain_features`' output."""
        raise NotImplementedError(f"{type(self).__name__} uses DANN but does not implement domain_feature_size")

    @functools.cached_property
    def _domain_adversarial(self) -> DomainAdversarial | None:
        return self.get_domain_adversarial()

    def _get_shared_state(self, **kwargs: object) -> RolloutSharedState:
        shared = super()._get_shared_state(**kwargs)
        dann = self._domain_adversarial
        if dann is None:
            return shared
        train, held_out = dann.split()
        classifier = DomainClassifier(
            jax.random.key(dann.seed),
            num_features=self.domain_feature_size(),
            hidden_size=dann.hidden_size,
            depth=dann.depth,
        )
        state = DomainAdversarialState(classifier, dann.optimizer().init(classifier), jnp.int32(0))
        aux = {**shared.aux_values, DANN_KEY: state, DANN_REAL_KEY: (jnp.asarray(train), jnp.asarray(held_out))}
        return replace(shared, aux_values=xax.FrozenDict(aux))

    # ------------------------------------------------------------------ the loss (AutoTemperatureMixin's hooks)
    def auxiliary_parameters(self, carry: RLLoopCarry) -> dict[str, PyTree]:
        params = super().auxiliary_parameters(carry)
        if self._domain_adversarial is not None:
            params[DANN_KEY] = carry.shared_state.aux_values[DANN_KEY].classifier
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
        dann = self._domain_adversarial
        if dann is None:
            return loss, metrics
        state: DomainAdversarialState = carry.shared_state.aux_values[DANN_KEY]
        train, _ = carry.shared_state.aux_values[DANN_REAL_KEY]
        sim_key, real_key = jax.random.split(own_rng)
        observations = self.policy_input_sequences(model, trajectories)
        sim, weights = sample_windows(
            observations, trajectories.done, dann.window_steps, dann.windows_per_update, sim_key
        )
        real = train[jax.random.randint(real_key, (dann.windows_per_update,), 0, train.shape[0])]
        out = domain_adversarial_loss(
            params[DANN_KEY],
            self.domain_features(model, sim),
            self.domain_features(model, real),
            dann.schedule(state.updates),
            weights,
        )
        metrics = {**metrics, "domain_loss": out.loss, "domain_accuracy": out.accuracy}
        return loss + dann.weight * out.loss, metrics

    def apply_auxiliary_gradients(self, carry: RLLoopCarry, grads: dict[str, PyTree]) -> RLLoopCarry:
        carry = super().apply_auxiliary_gradients(carry, grads)
        dann = self._domain_adversarial
        if dann is None:
            return carry
        aux = carry.shared_state.aux_values
        state: DomainAdversarialState = aux[DANN_KEY]
        updates, opt_state = dann.optimizer().update(grads[DANN_KEY], state.opt_state, state.classifier)
        state = replace(state, classifier=eqx.apply_updates(state.classifier, updates), opt_state=opt_state)
        shared = replace(carry.shared_state, aux_values=xax.FrozenDict({**aux, DANN_KEY: state}))
        return replace(carry, shared_state=shared)

    # ------------------------------------------------------------------ per update: held-out accuracy, the clock
    def _single_update(
        self,
        carry: RLLoopCarry,
        constants: RLLoopConstants,
        env_state: RolloutEnvState,
        state: xax.State,
        trajectories: ksim.Trajectory,
        rewards: ksim.RewardState,
    ) -> tuple[xax.State, RLLoopCarry, ksim.Metrics]:
        dann = self._domain_adversarial
        held_out_metrics = {} if dann is None else self._held_out_metrics(dann, constants, carry, trajectories)
        new_state, new_carry, metrics = super()._single_update(
            carry=carry,
            constants=constants,
            env_state=env_state,
            state=state,
            trajectories=trajectories,
            rewards=rewards,
        )
        if dann is None:
            return new_state, new_carry, metrics
        aux = new_carry.shared_state.aux_values
        clock: DomainAdversarialState = aux[DANN_KEY]
        clock = replace(clock, updates=clock.updates + 1)
        shared = replace(new_carry.shared_state, aux_values=xax.FrozenDict({**aux, DANN_KEY: clock}))
        train = xax.FrozenDict({**metrics.train, **held_out_metrics})
        return new_state, replace(new_carry, shared_state=shared), replace(metrics, train=train)

    def _held_out_metrics(
        self,
        dann: DomainAdversarial,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
    ) -> dict[str, Array]:
        """The classifier before this update on the new rollout's windows and the held-out real windows."""
        aux = carry.shared_state.aux_values
        state: DomainAdversarialState = aux[DANN_KEY]
        _, held_out = aux[DANN_REAL_KEY]
        model = eqx.combine(carry.shared_state.model_arrs[0], constants.constants.model_statics[0])
        key = jax.random.fold_in(jax.random.key(dann.seed + 1), state.updates)
        observations = self.policy_input_sequences(model, trajectories)
        sim, weights = sample_windows(observations, trajectories.done, dann.window_steps, held_out.shape[0], key)
        out = domain_adversarial_loss(
            state.classifier, self.domain_features(model, sim), self.domain_features(model, held_out), 0.0, weights
        )
        return {
            "domain_held_out_accuracy": out.accuracy,
            "domain_held_out_loss": out.loss,
            "domain_lambda": dann.schedule(state.updates),
        }

    def progress_values(self, metrics: ksim.Metrics) -> dict[str, float]:
        values = super().progress_values(metrics)
        if "domain_held_out_accuracy" in metrics.train:
            values["DANN acc"] = metric_value(metrics.train["domain_held_out_accuracy"])
        return values

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_aux(self, constants: RLLoopConstants, carry: RLLoopCarry) -> dict[str, PyTree]:
        return {**super().checkpoint_aux(constants, carry), **self.saved_aux_values(carry, DANN_KEY)}

    def restore_checkpoint_aux(
        self, constants: RLLoopConstants, carry: RLLoopCarry, state: xax.State, ckpt_path: Path
    ) -> RLLoopCarry:
        carry = super().restore_checkpoint_aux(constants, carry, state, ckpt_path)
        return self.restore_aux_value(
            carry,
            ckpt_path,
            DANN_KEY,
            restored=lambda saved: f"restored the domain classifier (update {int(saved.updates)})",
            missing="no domain classifier; DANN starts a new one",
        )
