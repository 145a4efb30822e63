"""Domain-adversarial training (DANN; Ganin et al., JMLR 17(59), 2016) for a policy's encoder, in JAX.

A small domain classifier reads encoder features of simulated and real observations. Between the encoder and the
classifier sits a gradient-reversal layer: the identity going forward, ``−λ ×`` the gradient going back. Minimising
the classifier's cross-entropy then trains the classifier to tell sim from real and, through the reversal, the
encoder to make them indistinguishable. λ follows Ganin et al.'s schedule (their §5.2.2, eq. 14):
``λ(p) = λ_max · (2 / (1 + exp(−γ·p)) − 1)``, with training progress ``p`` from 0 to 1 and γ = 10. λ is a traced
array, so the schedule never recompiles.

Pieces: `gradient_reversal`, `ReversalSchedule`, `DomainClassifier`, `domain_adversarial_loss`.
"""

import math

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

__all__ = [
    "DomainClassifier",
    "DomainLoss",
    "ReversalSchedule",
    "domain_adversarial_loss",
    "gradient_reversal",
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
    classifier: DomainClassifier, sim_features: Array, real_features: Array, reversal: ArrayLike
) -> DomainLoss:
    """Cross-entropy of `classifier` on features behind a gradient reversal of strength `reversal` (λ ≥ 0).

    `sim_features` (N, F) are labelled 0 and `real_features` (M, F) 1; each side's mean counts half, so unequal
    batch sizes do not tilt the classifier. Minimising the loss trains the classifier to separate the domains and,
    through the reversal, whatever produced the features to confuse it.
    """
    if sim_features.ndim != 2 or real_features.ndim != 2 or sim_features.shape[1] != real_features.shape[1]:
        raise ValueError(
            f"domain_adversarial_loss: features must be (N, F) and (M, F); got {sim_features.shape} and "
            f"{real_features.shape}"
        )
    logit_sim = jax.vmap(classifier)(gradient_reversal(sim_features, reversal))
    logit_real = jax.vmap(classifier)(gradient_reversal(real_features, reversal))
    # −log(1 − σ(z)) = softplus(z) for sim (label 0); −log σ(z) = softplus(−z) for real (label 1).
    loss = 0.5 * (jnp.mean(jax.nn.softplus(logit_sim)) + jnp.mean(jax.nn.softplus(-logit_real)))
    accuracy = 0.5 * (jnp.mean(logit_sim < 0) + jnp.mean(logit_real > 0))
    return DomainLoss(loss=loss, accuracy=accuracy)
