"""Discriminator-guided randomization (`ksim_entropy.ppo.discriminator`): its C2ST against scikit-learn, the bridge's
C2ST and the Bayes accuracy of Gaussians; the rule's decisions; bad settings. The K-Bot task runs it in
tests/test_e2e.py (the resumed run)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import LogisticRegression

from ksim_entropy.bridge.metrics import classifier_two_sample_test
from ksim_entropy.ppo.discriminator import (
    DiscriminatorGuidance,
    DiscriminatorRule,
    c2st_accuracy,
    fit_logistic,
    window_features,
)


def test_logistic_regression_is_scikit_learns_with_sample_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    labels = (x @ rng.normal(size=6) + rng.normal(size=300) > 0).astype(float)
    weights = rng.uniform(0.0, 2.0, 300)
    ours = np.asarray(fit_logistic(jnp.asarray(x, jnp.float32), jnp.asarray(labels), jnp.asarray(weights), l2=1.0))
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(x, labels, sample_weight=weights)
    np.testing.assert_allclose(ours[:-1], ref.coef_[0], atol=2e-3)
    assert ours[-1] == pytest.approx(ref.intercept_[0], abs=2e-3)


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (1.0, 1.0), (0.0, 3.0)])
def test_c2st_accuracy_against_the_bridge_and_the_bayes_accuracy(shift, scale):
    rng = np.random.default_rng(1)
    m, d = 512, 4
    sim = rng.normal(size=(m, d)) * scale
    real = rng.normal(size=(m, d)) + np.r_[shift, np.zeros(d - 1)]
    accuracy, spread = (float(v) for v in c2st_accuracy(jnp.asarray(sim), jnp.asarray(real), jax.random.key(0)))
    bridge = classifier_two_sample_test(sim, real, seed=0, n_folds=2).accuracy
    assert accuracy == pytest.approx(bridge, abs=0.05)  # the same test, other folds
    if scale == 1.0:  # equal covariances at Mahalanobis distance Δ: Bayes accuracy Φ(Δ/2), the most any test reaches
        bayes = scipy.stats.norm.cdf(shift / 2)
        assert bayes - 0.06 <= accuracy <= bayes + 0.04
    else:  # a spread difference only: the squared features see it
        assert accuracy > 0.75
    assert spread == pytest.approx(scale**2, rel=0.15)


def test_windows_across_a_reset_weigh_nothing():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(64, 3))
    sim = rng.normal(size=(64, 3))
    sim_far = sim.copy()
    sim_far[:32] += 50.0  # these rows would make sim trivially separable, but weigh 0
    weights = jnp.asarray(np.r_[np.zeros(32), np.ones(32)])
    same, _ = c2st_accuracy(jnp.asarray(sim), jnp.asarray(real), jax.random.key(3), weights)
    masked, _ = c2st_accuracy(jnp.asarray(sim_far), jnp.asarray(real), jax.random.key(3), weights)
    assert float(masked) < 0.7 and abs(float(masked) - float(same)) < 0.1


def test_window_features_are_means_and_rms_changes():
    windows = jnp.asarray([[[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]])
    np.testing.assert_allclose(np.asarray(window_features(windows)), [[2.0, 1.0, 2.0, 0.0]])


def test_the_rule_widens_when_told_apart_narrows_when_not_or_when_too_wide():
    rule = DiscriminatorRule(band=(0.6, 0.75), factors=(0.9, 1.1), max_spread_ratio=2.0)
    cases = {(0.9, 1.0): 1.1, (0.9, 3.0): 0.9, (0.5, 1.0): 0.9, (0.7, 1.0): 1.0, (0.7, 5.0): 1.0}
    for (accuracy, spread), factor in cases.items():
        assert float(rule.factor(jnp.float32(accuracy), jnp.float32(spread))) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"band": (0.8, 0.6)}, "band must be 0 <= low <= high <= 1"),
        ({"factors": (1.2, 1.1)}, r"factors must be \(narrow in \(0, 1\], widen >= 1\)"),
        ({"every_updates": 0}, "every_updates >= 1"),
        ({"max_spread_ratio": 0.0}, "max_spread_ratio must be finite and > 0"),
    ],
)
def test_bad_rules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiscriminatorRule(**kwargs)


def test_bad_guidance_is_refused():
    windows = np.zeros((8, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"float array \(N, W >= 2, D\), got shape \(8, 3\)"):
        DiscriminatorGuidance(real_windows=np.zeros((8, 3), np.float32))
    with pytest.raises(ValueError, match="1 non-finite values"):
        DiscriminatorGuidance(real_windows=np.where(np.arange(96).reshape(8, 4, 3) == 5, np.nan, windows))
    guidance = DiscriminatorGuidance(real_windows=windows, parameters=("body_mass_scale", "gyro"))
    with pytest.raises(ValueError, match=r"no randomized parameters \['gyro'\]; this task has"):
        guidance.mask(["body_mass_scale", "joint_friction"])
    assert DiscriminatorGuidance(real_windows=windows).mask(["a", "b"]).tolist() == [True, True]
    assert DiscriminatorGuidance(real_windows=windows, parameters=("b",)).mask(["a", "b"]).tolist() == [False, True]
