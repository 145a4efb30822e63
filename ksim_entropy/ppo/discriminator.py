"""Discriminator-guided randomization: a classifier two-sample test against real windows steers the widths.

Every `every_updates` PPO updates, a classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017) compares
windows of the rollout's policy inputs with windows of a real robot's (the `tasks.windows` file DANN reads). It is the
bridge's C2ST (`ksim_entropy.bridge.metrics.classifier_two_sample_test`: an L2 logistic regression, λ = 1, on pooled-
standardised features and their squares, Newton's method, held-out accuracy) written again in JAX, because training
never imports the bridge. A window's features are, per input channel, its mean over the window and the RMS of its
one-step differences: levels (biases, offsets, posture) and fast variation (noise, dynamics).

The rule (`DiscriminatorRule`), on the held-out accuracy `a` of two folds:

- `a` above the band: the simulator is told apart from the robot. If the sim windows' features are no more spread
  than the real ones (median over features of the variance ratio ≤ `max_spread_ratio`), the ranges widen
  (× `factors[1]`) so that the robot falls inside them; if they are already more spread, the classifier is seeing
  too much randomization, and they narrow (× `factors[0]`).
- `a` below the band: sim and robot are indistinguishable; the ranges narrow, giving back robustness not needed.
- inside the band: unchanged.

Only the randomizers named in `parameters` change (e.g. those the bridge's diagnosis points at), all when it is
empty; widths stay within [min_width, max_width] of the `RandomizationCurriculum`. `parameters_from_report` reads
the names a gap report's diagnosis points at (`ksim-bridge gap`'s report.json, "diagnosis" → "randomizers").
Logged every update: `c2st_accuracy`, `c2st_spread_ratio` and `c2st_factor` (the factor applied, 1 between
decisions).
"""

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Generic

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import ksim
import numpy as np
import xax
from jaxtyping import Array, PRNGKeyArray
from ksim.curriculum import CurriculumState
from ksim.task.rl import RLLoopCarry, RLLoopConstants, RolloutSharedState

from ksim_entropy.curriculum import RandomizationCurriculum
from ksim_entropy.formats.windows import check_window_array
from ksim_entropy.ppo.domain_adversarial import sample_windows
from ksim_entropy.ppo.mixins import AutoTemperatureMixin, PPOConfigT, metric_value, set_widths

__all__ = [
    "DiscriminatorGuidance",
    "DiscriminatorGuidedMixin",
    "DiscriminatorRule",
    "c2st_accuracy",
    "fit_logistic",
    "window_features",
]

C2ST_REAL_KEY = "c2st/real"  # shared_state.aux_values: the real windows' features


def window_features(windows: Array) -> Array:
    """(N, 2D) features of windows (N, W, D): per channel the window's mean, then the RMS of its one-step changes."""
    mean = jnp.mean(windows, axis=1)
    change = jnp.sqrt(jnp.mean(jnp.diff(windows, axis=1) ** 2, axis=1))
    return jnp.concatenate([mean, change], axis=-1)


def fit_logistic(features: Array, labels: Array, weights: Array, l2: float = 1.0, steps: int = 12) -> Array:
    """Weighted L2 logistic regression by Newton's method; returns [w, b] (intercept last, not penalised).

    Minimises ``Σ_i s_i (log(1 + exp(f_i)) − t_i f_i) + (l2/2)‖w‖²``, f = Xw + b: scikit-learn's
    ``LogisticRegression(C=1/l2)`` with ``sample_weight=s``. `steps` Newton steps from zero (strictly convex: a
    dozen reach the optimum to float32 for standardised features).
    """
    x = jnp.concatenate([features, jnp.ones((features.shape[0], 1), features.dtype)], axis=1)
    penalty = jnp.full((x.shape[1],), l2, features.dtype).at[-1].set(0.0)

    def newton(w: Array, _: None) -> tuple[Array, None]:
        prob = jax.nn.sigmoid(x @ w)
        grad = x.T @ (weights * (prob - labels)) + penalty * w
        hess = (x.T * (weights * prob * (1.0 - prob))) @ x + jnp.diag(penalty + 1e-6)
        return w - jnp.linalg.solve(hess, grad), None

    w, _ = jax.lax.scan(newton, jnp.zeros((x.shape[1],), features.dtype), None, length=steps)
    return w


def _standardise(x: Array, weights: Array) -> Array:
    total = jnp.maximum(jnp.sum(weights), 1.0)
    mean = jnp.sum(weights[:, None] * x, axis=0) / total
    std = jnp.sqrt(jnp.sum(weights[:, None] * (x - mean) ** 2, axis=0) / total)
    return (x - mean) / jnp.maximum(std, 1e-6)


def c2st_accuracy(
    sim: Array, real: Array, key: PRNGKeyArray, sim_weights: Array | None = None, l2: float = 1.0
) -> tuple[Array, Array]:
    """(held-out accuracy, spread ratio) of a two-fold C2ST between feature rows `sim` (m, F) and `real` (m, F).

    Each side is split in two halves at random (`key`); a logistic regression on the pooled-standardised features
    and their standardised squares (the bridge's features) trains on one half of both sides and predicts the other,
    then the other way round. Accuracy counts each held-out row by its weight (`sim_weights`, e.g. 0 for a window
    across an episode reset; real rows weigh 1): 0.5 means indistinguishable. The spread ratio is the median over
    features of var(sim) / var(real) (sim rows weighted likewise; each variance plus 10⁻³ of their sum).
    """
    m = sim.shape[0]
    if real.shape[0] != m or m < 4:
        raise ValueError(f"c2st_accuracy: need as many sim as real rows, at least 4; got {m} and {real.shape[0]}")
    w_sim = jnp.ones((m,), sim.dtype) if sim_weights is None else sim_weights.astype(sim.dtype)
    weights = jnp.concatenate([w_sim, jnp.ones((m,), sim.dtype)])
    z = _standardise(jnp.concatenate([sim, real]), weights)
    feats = jnp.concatenate([z, _standardise(z**2, weights)], axis=1)
    labels = jnp.concatenate([jnp.zeros((m,)), jnp.ones((m,))]).astype(sim.dtype)
    sim_key, real_key = jax.random.split(key)
    fold = jnp.concatenate([jax.random.permutation(sim_key, m) % 2, jax.random.permutation(real_key, m) % 2])
    correct = total = jnp.float32(0.0)
    for held in (0, 1):
        train = jnp.where(fold == held, 0.0, weights)
        w = fit_logistic(feats, labels, train, l2)
        right = ((feats @ w[:-1] + w[-1] > 0).astype(sim.dtype) == labels).astype(sim.dtype)
        test = jnp.where(fold == held, weights, 0.0)
        correct, total = correct + jnp.sum(test * right), total + jnp.sum(test)
    w_total = jnp.maximum(jnp.sum(w_sim), 1.0)
    sim_mean = jnp.sum(w_sim[:, None] * sim, axis=0) / w_total
    sim_var = jnp.sum(w_sim[:, None] * (sim - sim_mean) ** 2, axis=0) / w_total
    real_var = jnp.var(real, axis=0)
    floor = 1e-6 + 1e-3 * (sim_var + real_var)  # a channel constant on one side (a command) counts, but finitely
    ratio = jnp.median((sim_var + floor) / (real_var + floor))
    return correct / jnp.maximum(total, 1.0), ratio


@attrs.frozen
class DiscriminatorRule:
    """When and how the widths move (see the module docstring). `band` = (low, high) held-out accuracy."""

    every_updates: int = 10
    band: tuple[float, float] = (0.6, 0.75)
    factors: tuple[float, float] = (0.9, 1.1)  # (narrow, widen) multipliers of a width
    max_spread_ratio: float = 2.0
    windows_per_test: int = 256

    def __attrs_post_init__(self) -> None:
        low, high = self.band
        if self.every_updates < 1 or self.windows_per_test < 4:
            raise ValueError(
                f"DiscriminatorRule: need every_updates >= 1 and windows_per_test >= 4, got {self.every_updates}, "
                f"{self.windows_per_test}"
            )
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"DiscriminatorRule: band must be 0 <= low <= high <= 1 (an accuracy), got {self.band}")
        shrink, grow = self.factors
        if not (0.0 < shrink <= 1.0 <= grow and math.isfinite(grow)):
            raise ValueError(f"DiscriminatorRule: factors must be (narrow in (0, 1], widen >= 1), got {self.factors}")
        if not (math.isfinite(self.max_spread_ratio) and self.max_spread_ratio > 0):
            raise ValueError(f"DiscriminatorRule: max_spread_ratio must be finite and > 0, got {self.max_spread_ratio}")

    def factor(self, accuracy: Array, spread_ratio: Array) -> Array:
        """The multiplier for the guided widths at a decision."""
        shrink, grow = self.factors
        low, high = self.band
        separable = jnp.where(spread_ratio <= self.max_spread_ratio, grow, shrink)
        return jnp.where(accuracy > high, separable, jnp.where(accuracy < low, shrink, 1.0))


@attrs.frozen(eq=False)
class DiscriminatorGuidance:
    """Real windows (N, W, D) of the policy's inputs, the rule, and the randomizers it moves (empty: all)."""

    real_windows: np.ndarray
    rule: DiscriminatorRule = DiscriminatorRule()
    parameters: tuple[str, ...] = ()
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        check_window_array(self.real_windows, "DiscriminatorGuidance", min_steps=2)
        x = self.real_windows
        if x.shape[0] < 4:
            raise ValueError(f"DiscriminatorGuidance: {x.shape[0]} real windows; the test needs at least 4")

    @property
    def window_steps(self) -> int:
        return int(self.real_windows.shape[1])

    @property
    def rows_per_side(self) -> int:
        """Windows per side in each test: `windows_per_test`, or all the real ones if fewer."""
        return min(self.rule.windows_per_test, self.real_windows.shape[0])

    def mask(self, names: list[str]) -> np.ndarray:
        """Which of the randomization's parameters (by name) the test moves; ValueError naming unknown ones."""
        unknown = [p for p in self.parameters if p not in names]
        if unknown:
            raise ValueError(f"discriminator guidance: no randomized parameters {unknown}; this task has {names}")
        return np.array([not self.parameters or name in self.parameters for name in names])


def parameters_from_report(path: str | Path) -> tuple[str, ...]:
    """The randomized parameters a gap report's diagnosis points at (empty: it points at none, so all move).

    Reads `ksim-bridge gap`'s report.json (`diagnosis.randomizers.names`, written by
    `ksim_entropy.bridge.diagnose.pointed_randomizers`) as plain JSON: training never imports the bridge. ValueError
    naming the problem for a missing or unreadable file, a report without a diagnosis, or a malformed list.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no gap report at {path} (ksim-bridge gap writes report.json)")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable JSON gap report: {err}") from err
    diagnosis = report.get("diagnosis") if isinstance(report, dict) else None
    if not isinstance(diagnosis, dict):
        raise ValueError(f"{path} has no diagnosis; is it ksim-bridge gap's report.json?")
    if not diagnosis.get("available", False):
        raise ValueError(f"{path}: the report's diagnosis did not run ({diagnosis.get('reason', 'no reason given')})")
    names = diagnosis.get("randomizers", {}).get("names") if isinstance(diagnosis.get("randomizers"), dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: diagnosis.randomizers.names must be a list of names (a report older than it?)")
    return tuple(names)


class DiscriminatorGuidedMixin(AutoTemperatureMixin[PPOConfigT], Generic[PPOConfigT]):
    """Randomization widths moved by a C2ST against real windows (`get_discriminator_guidance`; None: off).

    Needs a `RandomizationCurriculum` in "uniform" mode (the test is the only thing moving its widths, from
    `DomainRandomizationMixin`) and the task's `policy_input_sequences` (the actor's inputs along trajectories, as the
    real windows hold them).
    """

    def get_discriminator_guidance(self) -> DiscriminatorGuidance | None:
        """The guidance's real windows and rule; None (default) switches it off."""
        return None

    @functools.cached_property
    def _guidance(self) -> DiscriminatorGuidance | None:
        return self.get_discriminator_guidance()

    def _get_shared_state(self, **kwargs: object) -> RolloutSharedState:
        shared = super()._get_shared_state(**kwargs)
        guidance = self._guidance
        if guidance is None:
            return shared
        real = np.asarray(window_features(jnp.asarray(guidance.real_windows, jnp.float32)))
        return replace(shared, aux_values=xax.FrozenDict({**shared.aux_values, C2ST_REAL_KEY: jnp.asarray(real)}))

    def after_update(
        self,
        constants: RLLoopConstants,
        carry: RLLoopCarry,
        trajectories: ksim.Trajectory,
        metrics: Mapping[str, Array],
    ) -> tuple[RLLoopCarry, dict[str, Array]]:
        guidance = self._guidance
        if guidance is None:
            return super().after_update(constants, carry, trajectories, metrics)
        curriculum = constants.constants.curriculum
        if not isinstance(curriculum, RandomizationCurriculum) or curriculum.mode != "uniform":
            raise TypeError(
                "discriminator guidance moves the widths of a RandomizationCurriculum in 'uniform' mode; this task's "
                f"curriculum is {type(curriculum).__name__} ({getattr(curriculum, 'mode', '-')})"
            )
        mask = jnp.asarray(guidance.mask(curriculum.randomization.names))
        cs: CurriculumState = carry.env_states.curriculum_state
        updates = cs.state.num_updates[0]
        model = eqx.combine(carry.shared_state.model_arrs[0], constants.constants.model_statics[0])
        rows = guidance.rows_per_side
        key = jax.random.fold_in(jax.random.key(guidance.seed), updates)
        window_key, real_key, test_key = jax.random.split(key, 3)
        inputs = self.policy_input_sequences(model, trajectories)
        sim, weights = sample_windows(inputs, trajectories.done, guidance.window_steps, rows, window_key)
        real_all = carry.shared_state.aux_values[C2ST_REAL_KEY]
        real = real_all[jax.random.choice(real_key, real_all.shape[0], (rows,), replace=False)]
        accuracy, spread = c2st_accuracy(window_features(sim), real, test_key, weights)
        due = updates % guidance.rule.every_updates == 0
        factor = jnp.where(due, guidance.rule.factor(accuracy, spread), 1.0)
        widths = cs.state.widths[0]
        max_w = jnp.asarray(curriculum.randomization.max_widths)
        widths = jnp.where(mask, jnp.clip(widths * factor, curriculum.min_width, max_w), widths)
        env_states = set_widths(carry.env_states, curriculum, widths)
        carry, metrics = super().after_update(constants, replace(carry, env_states=env_states), trajectories, metrics)
        return carry, {**metrics, "c2st_accuracy": accuracy, "c2st_spread_ratio": spread, "c2st_factor": factor}

    def progress_values(self, metrics: ksim.Metrics) -> dict[str, float]:
        values = super().progress_values(metrics)
        if "c2st_accuracy" in metrics.train:
            values["C2ST"] = metric_value(metrics.train["c2st_accuracy"])
        return values
