"""Oracle tests for ksim_entropy.bridge.metrics.

Every value is checked against an independent reference: a closed form worked out here with plain NumPy (inv/det,
never the module's eigh/solve path), scipy, POT or scikit-learn. Statistical tolerances are ~4 standard deviations of
the estimator, measured over 20 seeds at the sample size used (numbers in the comments); seeds are fixed, so every
test is deterministic.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("POT_BACKEND_DISABLE_JAX", "1")  # keep jax out of this process: POT would import it
os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
os.environ.setdefault("POT_BACKEND_DISABLE_TENSORFLOW", "1")

import numpy as np
import ot
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from sklearn.feature_selection import mutual_info_regression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score as sk_r2_score

from ksim_entropy.bridge import metrics as M
from ksim_entropy.bridge._metric_core import fit_logistic, knn_radius_sorted, lagged_pearson

ROOT = Path(__file__).resolve().parents[2]
A3 = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 0.7]])
C3 = A3 @ A3.T  # a non-diagonal 3x3 covariance


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def h_gauss(cov) -> float:
    """Closed form h(N(mu, C)) = 1/2 log det(2 pi e C), via np.linalg.det."""
    cov = np.atleast_2d(cov)
    return 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))


def kl_gauss(m0, s0, m1, s1) -> float:
    """Closed form KL(N0 || N1) via inv/det."""
    s0, s1 = np.atleast_2d(s0), np.atleast_2d(s1)
    inv1 = np.linalg.inv(s1)
    dm = np.atleast_1d(m1 - m0)
    return 0.5 * (np.trace(inv1 @ s0) + dm @ inv1 @ dm - len(dm) + math.log(np.linalg.det(s1) / np.linalg.det(s0)))


def mmd2_gauss(m1, s1, m2, s2, sigma) -> float:
    """Closed-form MMD^2 between N(m1,S1) and N(m2,S2) under k = exp(-|a-b|^2 / (2 sigma^2)).

    For independent X ~ N(a, A), Y ~ N(b, B): E k(X, Y) = det(I + (A+B)/s^2)^(-1/2) exp(-1/2 dm^T (A+B+s^2 I)^-1 dm).
    """

    def ek(dm, cov):
        eye = np.eye(len(dm))
        return np.linalg.det(eye + cov / sigma**2) ** -0.5 * math.exp(
            -0.5 * dm @ np.linalg.inv(cov + sigma**2 * eye) @ dm
        )

    zero = np.zeros(len(m1))
    return ek(zero, 2 * s1) + ek(zero, 2 * s2) - 2 * ek(m1 - m2, s1 + s2)


def exactly_whitened(g: np.ndarray) -> np.ndarray:
    """Samples whose ddof=1 sample mean is 0 and sample covariance is exactly I (up to rounding)."""
    g = g - g.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(g, rowvar=False))
    return np.linalg.solve(chol, g.T).T


# ------------------------------------------------------------------------------------------------------------- entropy


def test_gaussian_entropy_matches_scipy_on_fitted_params():
    x = rng().standard_normal((500, 3)) @ A3.T + [1.0, -2.0, 0.5]
    # scipy computes the entropy of the fitted N(mean, cov) through its own PSD eigendecomposition: rounding only.
    oracle = stats.multivariate_normal(mean=x.mean(axis=0), cov=np.cov(x, rowvar=False)).entropy()
    assert M.gaussian_entropy(x) == pytest.approx(oracle, rel=1e-12)


def test_gaussian_entropy_per_channel_matches_scipy_norm():
    x = rng().standard_normal((400, 3)) * [0.1, 1.0, 30.0]
    oracle = [stats.norm(scale=x[:, j].std(ddof=1)).entropy() for j in range(3)]
    np.testing.assert_allclose(M.gaussian_entropy(x, per_channel=True), oracle, rtol=1e-12)
    assert M.gaussian_entropy(x[:, 1], per_channel=True) == pytest.approx(oracle[1], rel=1e-12)


def test_gaussian_entropy_converges_to_closed_form():
    # n = 200k: the plug-in estimator's sd is sqrt(d/(2n)) = 0.003 nats; tolerance 5 sd.
    x = rng().standard_normal((200_000, 3)) @ A3.T
    assert M.gaussian_entropy(x) == pytest.approx(h_gauss(C3), abs=0.015)


@pytest.mark.parametrize(
    ("d", "tol"),
    [(1, 0.06), (3, 0.09)],  # 20 seeds at n=5000: 1-D sd 0.013, bias +0.002; 3-D sd 0.018, bias -0.02 (≈2 % of 4.2)
)
def test_knn_entropy_gaussian_closed_form(d, tol):
    a = A3[:d, :d]
    x = rng(1).standard_normal((5000, d)) @ a.T
    assert M.knn_entropy(x) == pytest.approx(h_gauss(a @ a.T), abs=tol)


def test_knn_entropy_uniform_closed_form():
    # U[0, e]^2 has h = 2 log e = 2 nats; 20 seeds at n=5000: sd 0.011, boundary bias +0.013.
    x = rng(2).uniform(0.0, math.e, (5000, 2))
    assert M.knn_entropy(x) == pytest.approx(2.0, abs=0.06)


def test_knn_entropy_matches_scipy_differential_entropy_1d():
    # scipy's Vasicek spacing estimator is a different consistent estimator; their gap has sd 0.012 over 20 seeds.
    x = rng(3).standard_normal(5000) * 2.0 + 1.0
    assert M.knn_entropy(x) == pytest.approx(stats.differential_entropy(x), abs=0.05)


def test_per_channel_metrics_leave_the_callers_arrays_untouched():
    # Regression: an F-ordered (n, d) array (e.g. a column slice of a bigger one) was sorted in place by the
    # per-channel estimators, which silently destroyed the caller's joint samples.
    x = np.asfortranarray(rng(7).standard_normal((500, 3)))
    y = np.asfortranarray(rng(8).standard_normal((500, 3)))
    x0, y0 = x.copy(), y.copy()
    M.knn_entropy(x, per_channel=True)
    M.wasserstein_1d(x, y)
    M.ks_statistic(x, y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_knn_radius_sorted_matches_kdtree_with_ties(k):
    # Integer data has many ties; the k-th neighbour distance is still unique and cKDTree is the oracle.
    x = rng(4).integers(0, 40, size=(300, 4)).astype(float)
    s = np.sort(x.T, axis=1)
    oracle = np.stack([cKDTree(col[:, None]).query(col[:, None], k=[k + 1])[0][:, 0] for col in s])
    np.testing.assert_array_equal(knn_radius_sorted(s, k), oracle)


def test_knn_entropy_per_channel_matches_kdtree_path():
    x = rng(5).standard_normal((2000, 3)) * [1.0, 0.2, 5.0]
    joint_1d = [M.knn_entropy(x[:, j], k=4) for j in range(3)]  # cKDTree path on each single channel
    np.testing.assert_allclose(M.knn_entropy(x, k=4, per_channel=True), joint_1d, rtol=1e-12)


def test_knn_entropy_dequantises_ties():
    # Encoder-like quantisation (step 0.01) would give zero kNN distances; dequantised, the estimate stays within the
    # 1-D tolerance of h(N(0,1)) (20 seeds: sd 0.016, bias -0.003), and both code paths agree on the same noise.
    x = np.round(rng(6).standard_normal(5000), 2)
    assert M.knn_entropy(x) == pytest.approx(h_gauss(1.0), abs=0.07)
    assert M.knn_entropy(x, per_channel=True) == pytest.approx(M.knn_entropy(x), rel=1e-12)


def test_knn_entropy_discrete_levels_give_shannon_entropy():
    # Levels {0, 1} with P(1)=0.3, step 1: dequantised entropy = H(Bernoulli(0.3)) + log 1 (dequantize docstring).
    x = (rng(7).random(5000) < 0.3).astype(float)
    shannon = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert M.knn_entropy(x) == pytest.approx(shannon, abs=0.05)


# --------------------------------------------------------------------------------------------------------- divergences


def test_kl_gaussian_closed_form_on_fitted_params():
    p = rng(8).standard_normal((400, 3)) @ A3.T + [0.5, 0.0, -1.0]
    q = rng(9).standard_normal((300, 3)) * [1.2, 0.8, 1.5]
    oracle = kl_gauss(p.mean(0), np.cov(p, rowvar=False), q.mean(0), np.cov(q, rowvar=False))
    assert M.kl_gaussian(p, q) == pytest.approx(oracle, rel=1e-10)


def test_kl_gaussian_monte_carlo():
    # E_p[log p - log q] under the fitted Gaussians with scipy logpdf; tolerance 5 Monte-Carlo standard errors.
    p = rng(10).standard_normal((500, 2)) @ A3[:2, :2].T
    q = rng(11).standard_normal((500, 2)) + np.array([0.7, -0.2])
    fp = stats.multivariate_normal(p.mean(0), np.cov(p, rowvar=False))
    fq = stats.multivariate_normal(q.mean(0), np.cov(q, rowvar=False))
    z = fp.rvs(400_000, random_state=12)
    log_ratio = fp.logpdf(z) - fq.logpdf(z)
    assert M.kl_gaussian(p, q) == pytest.approx(log_ratio.mean(), abs=5 * log_ratio.std() / math.sqrt(len(z)))


def test_kl_gaussian_per_channel_1d_closed_form():
    p = rng(13).standard_normal((300, 2)) * [1.0, 2.0] + [0.3, -1.0]
    q = rng(14).standard_normal((200, 2)) * [1.5, 0.5]
    m0, m1, s0, s1 = p.mean(0), q.mean(0), p.std(0, ddof=1), q.std(0, ddof=1)
    oracle = np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5
    np.testing.assert_allclose(M.kl_gaussian(p, q, per_channel=True), oracle, rtol=1e-12)


@pytest.mark.parametrize(("k", "tol"), [(1, 0.15), (3, 0.1)])  # 20 seeds at n=5000: sd 0.036 (k=1), 0.022 (k=3)
def test_kl_knn_closed_form(k, tol):
    mu, cov = np.array([0.5, -0.3]), np.array([[1.5, 0.3], [0.3, 0.8]])
    r = rng(15)
    p, q = r.multivariate_normal(mu, cov, 5000), r.standard_normal((5000, 2))
    assert M.kl_knn(p, q, k=k) == pytest.approx(kl_gauss(mu, cov, np.zeros(2), np.eye(2)), abs=tol)


# ----------------------------------------------------------------------------------------------------------- transport


def test_w2_gaussian_matches_pot_bures_wasserstein():
    x = rng(16).standard_normal((600, 3)) @ A3.T
    y = rng(17).standard_normal((500, 3)) @ A3[::-1].T + 1.0  # non-commuting covariances
    oracle = ot.gaussian.bures_wasserstein_distance(
        x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    )
    assert M.w2_gaussian(x, y) == pytest.approx(float(oracle), rel=1e-8)


def test_w2_gaussian_commuting_closed_form():
    # Fitted covariances exactly diag(a^2), diag(b^2): W2^2 = |dmu|^2 + sum (a - b)^2.
    a, b = np.array([0.5, 1.0, 2.0]), np.array([1.5, 1.0, 0.25])
    x = exactly_whitened(rng(18).standard_normal((200, 3))) * a + [1.0, 0.0, 0.0]
    y = exactly_whitened(rng(19).standard_normal((300, 3))) * b + [0.0, 2.0, 0.0]
    assert M.w2_gaussian(x, y) == pytest.approx(math.sqrt(1 + 4 + np.sum((a - b) ** 2)), rel=1e-10)


def test_wasserstein_1d_matches_scipy_with_ties_and_unequal_sizes():
    x = rng(20).integers(0, 10, size=(37, 3)).astype(float)
    y = rng(21).integers(2, 14, size=(53, 3)).astype(float) * 0.5
    oracle = [stats.wasserstein_distance(x[:, j], y[:, j]) for j in range(3)]
    np.testing.assert_allclose(M.wasserstein_1d(x, y), oracle, rtol=1e-12)
    assert M.wasserstein_1d(x[:, 0], y[:, 0]) == pytest.approx(oracle[0], rel=1e-12)


@pytest.mark.parametrize("p", [2, 3])
def test_wasserstein_1d_p_matches_pot(p):
    x, y = rng(22).standard_normal(101), rng(23).exponential(size=77)
    # ot.wasserstein_1d returns W_p^p
    assert M.wasserstein_1d(x, y, p=p) == pytest.approx(float(ot.wasserstein_1d(x, y, p=p)) ** (1 / p), rel=1e-10)


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_matches_pot_with_same_projections(p):
    x = rng(24).standard_normal((300, 4)) @ np.diag([1.0, 2.0, 0.5, 1.0])
    y = rng(25).standard_normal((250, 4)) + 0.5
    theta = rng(26).standard_normal((4, 64))
    theta /= np.linalg.norm(theta, axis=0)
    oracle = ot.sliced_wasserstein_distance(x, y, projections=theta, p=p)
    assert M.sliced_wasserstein(x, y, p=p, projections=theta) == pytest.approx(float(oracle), rel=1e-10)


def test_sliced_wasserstein_seeded_projections_match_pot():
    x, y = rng(27).standard_normal((200, 3)), rng(28).standard_normal((150, 3)) * 2.0
    theta = rng(5).standard_normal((3, 50))  # the documented draw for seed=5, n_projections=50
    theta /= np.linalg.norm(theta, axis=0)
    oracle = ot.sliced_wasserstein_distance(x, y, projections=theta, p=2)
    assert M.sliced_wasserstein(x, y, n_projections=50, seed=5) == pytest.approx(float(oracle), rel=1e-10)


def test_sliced_wasserstein_in_1d_equals_exact_w2():
    x, y = rng(29).standard_normal((80, 1)), rng(30).standard_normal((60, 1)) + 1.0
    assert M.sliced_wasserstein(x, y, projections=np.ones((1, 1))) == pytest.approx(
        M.wasserstein_1d(x[:, 0], y[:, 0], p=2), rel=1e-12
    )


# ----------------------------------------------------------------------------------------------------------------- MMD


def brute_force_mmd2_u(x, y, sigma):
    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd2_unbiased_matches_brute_force_double_loop():
    x, y = rng(31).standard_normal((30, 3)), rng(32).standard_normal((25, 3)) + 0.4
    assert M.mmd2_unbiased(x, y, bandwidth=1.3) == pytest.approx(brute_force_mmd2_u(x, y, 1.3), rel=1e-10)
    pooled = np.vstack([x, y])
    median = np.median(
        [np.linalg.norm(pooled[i] - pooled[j]) for i in range(len(pooled)) for j in range(i + 1, len(pooled))]
    )
    assert M.mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2_u(x, y, median), rel=1e-10)


M1, S1 = np.zeros(2), np.eye(2)
M2, S2 = np.array([0.5, 0.0]), np.diag([1.5, 0.7])
SIGMA = 1.5
MMD2_TRUE = mmd2_gauss(M1, S1, M2, S2, SIGMA)  # = 0.0315


def draw_pair(seed: int, n: int):
    r = rng(seed)
    return r.multivariate_normal(M1, S1, n), r.multivariate_normal(M2, S2, n)


def test_mmd2_unbiased_matches_gaussian_closed_form():
    # U-statistic at n=2000: sd 0.0047 over seeds; mean of 5 seeds has sd 0.0021, tolerance 4 sd.
    values = [M.mmd2_unbiased(*draw_pair(s, 2000), bandwidth=SIGMA) for s in range(5)]
    assert np.mean(values) == pytest.approx(MMD2_TRUE, abs=0.009)


def test_mmd2_linear_is_unbiased():
    # Linear estimator at n=20000: sd 0.004 per draw, mean of 50 draws has sd 0.00056; tolerance 4.5 sd.
    values = [M.mmd2_linear(*draw_pair(100 + s, 20_000), bandwidth=SIGMA) for s in range(50)]
    assert np.mean(values) == pytest.approx(MMD2_TRUE, abs=0.0025)


def test_mmd2_linear_matches_definition_and_is_zero_on_identical_inputs():
    x, y = rng(33).standard_normal((11, 2)), rng(34).standard_normal((9, 2))
    h = 4  # floor(min(11, 9) / 2): pairs (i, i + h)

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / 2.0)

    oracle = np.mean([k(x[i], x[i + h]) + k(y[i], y[i + h]) - k(x[i], y[i + h]) - k(x[i + h], y[i]) for i in range(h)])
    assert M.mmd2_linear(x, y, bandwidth=1.0) == pytest.approx(oracle, rel=1e-12)
    assert M.mmd2_linear(x, x) == 0.0


def test_mmd2_linear_per_channel_matches_single_channel_calls():
    x, y = rng(35).standard_normal((1000, 3)), rng(36).standard_normal((800, 3)) * [1.0, 2.0, 0.5]
    single = [M.mmd2_linear(x[:, j], y[:, j]) for j in range(3)]
    np.testing.assert_allclose(M.mmd2_linear(x, y, per_channel=True), single, rtol=1e-12)


def test_mmd_permutation_test_null_and_shift():
    # Under P = Q the p-value is ~U(0, 1): the mean over 30 independent data sets must lie in (0.3, 0.7).
    null = [
        M.mmd_permutation_test(rng(40 + s).standard_normal((100, 2)), rng(80 + s).standard_normal((100, 2)), seed=s)
        for s in range(30)
    ]
    assert 0.3 < np.mean([t.p_value for t in null]) < 0.7
    x, y = rng(41).standard_normal((200, 2)), rng(42).standard_normal((200, 2)) + np.array([1.0, 0.0])
    result = M.mmd_permutation_test(x, y)
    assert result.p_value < 0.01
    assert result.p_value >= 1 / 201  # the observed statistic counts as one permutation
    # Without subsampling the statistic is the U-statistic itself (oracle: the brute-force-checked mmd2_unbiased).
    assert result.mmd2 == pytest.approx(M.mmd2_unbiased(x, y), rel=1e-10)


# ------------------------------------------------------------------------------------------------------------------ MI


def correlated(seed: int, n: int, rho: float):
    r = rng(seed)
    x = r.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho**2) * r.standard_normal(n)


def test_mutual_information_gaussian_1d_closed_form():
    x, y = correlated(43, 500, 0.6)
    rho = np.corrcoef(x, y)[0, 1]
    assert M.mutual_information_gaussian(x, y) == pytest.approx(-0.5 * math.log(1 - rho**2), rel=1e-10)


def test_mutual_information_gaussian_multivariate_via_scipy_entropies():
    xy = rng(44).standard_normal((800, 3)) @ A3.T
    x, y = xy[:, :2], xy[:, 2]
    cov = np.cov(xy, rowvar=False)

    def h(c):
        return stats.multivariate_normal(cov=c).entropy()

    oracle = h(cov[:2, :2]) + h(cov[2:, 2:]) - h(cov)  # I = H(X) + H(Y) - H(X, Y)
    assert M.mutual_information_gaussian(x, y) == pytest.approx(oracle, rel=1e-10)


def test_mutual_information_ksg_closed_form_and_sklearn():
    x, y = correlated(45, 5000, 0.6)
    # Closed form -1/2 log(1 - 0.36) = 0.223; 20 seeds at n=5000: sd 0.013, bias +0.004.
    assert M.mutual_information_ksg(x, y) == pytest.approx(-0.5 * math.log(1 - 0.36), abs=0.06)
    # sklearn runs the same algorithm 1 after scaling and 1e-10 jitter: agreement to 1e-3 (observed < 1e-6).
    oracle = mutual_info_regression(x[:, None], y, n_neighbors=3, random_state=0)[0]
    assert M.mutual_information_ksg(x, y) == pytest.approx(oracle, abs=1e-3)


def test_mutual_information_ksg_multivariate_closed_form():
    r = rng(46)
    x = r.standard_normal((4000, 2))
    y = x @ [0.6, 0.4] + 0.5 * r.standard_normal(4000)
    cov = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.4], [0.6, 0.4, 0.52 + 0.25]])  # true joint covariance
    truth = 0.5 * math.log(np.linalg.det(cov[:2, :2]) * cov[2, 2] / np.linalg.det(cov))
    assert M.mutual_information_ksg(x, y) == pytest.approx(truth, abs=0.08)


# ------------------------------------------------------------------------------------------------------------------ KS


def test_ks_statistic_matches_scipy_with_ties():
    x = rng(47).integers(0, 30, size=(300, 2)).astype(float)
    y = rng(48).integers(3, 33, size=(200, 2)).astype(float)
    result = M.ks_statistic(x, y)
    for j in range(2):
        oracle = stats.ks_2samp(x[:, j], y[:, j], method="asymp")
        assert result.statistic[j] == pytest.approx(oracle.statistic, rel=1e-12)
        assert result.pvalue[j] == pytest.approx(oracle.pvalue, rel=1e-10)


def test_ks_statistic_large_samples_use_kolmogorov_limit():
    x, y = rng(49).standard_normal(30_000), rng(50).standard_normal(25_000) + 0.02
    result, oracle = M.ks_statistic(x, y), stats.ks_2samp(x, y, method="asymp")
    assert result.statistic == pytest.approx(oracle.statistic, rel=1e-12)
    # Above e = 2 000 the p-value is the Kolmogorov limit: conservative, within +2 % of kstwo at e = 13 636, p ~ 0.1.
    assert oracle.pvalue <= result.pvalue <= 1.02 * oracle.pvalue


# -------------------------------------------------------------------------------------------------------------- paired


def test_paired_errors_match_numpy_scipy_sklearn():
    real = rng(51).standard_normal((400, 3)) * [1.0, 3.0, 0.2]
    sim = 0.8 * real + 0.3 * rng(52).standard_normal((400, 3)) + 0.1
    np.testing.assert_allclose(M.mean_abs_diff(sim, real), np.mean(np.abs(sim - real), axis=0), rtol=1e-12)
    np.testing.assert_allclose(M.rmse(sim, real), np.sqrt(np.mean((sim - real) ** 2, axis=0)), rtol=1e-12)
    pearson = [stats.pearsonr(sim[:, j], real[:, j]).statistic for j in range(3)]
    np.testing.assert_allclose(M.pearson_r(sim, real), pearson, rtol=1e-12)
    np.testing.assert_allclose(M.r2_score(sim, real), sk_r2_score(real, sim, multioutput="raw_values"), rtol=1e-12)
    assert M.rmse(real[:, 0], real[:, 0]) == 0.0
    assert M.pearson_r(real[:, 1], real[:, 1]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------- lag


def smooth_noise(seed: int, n: int) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -0.9], rng(seed).standard_normal(n))  # AR(1), correlation time ~10 samples


@pytest.mark.parametrize("shift", [7, -12])
def test_cross_correlation_lag_recovers_known_shift(shift):
    base, n, pad = smooth_noise(53, 3000), 2000, 100
    a = base[pad : pad + n]
    b = base[pad - shift : pad - shift + n] + 0.3 * rng(54).standard_normal(n)  # b_t = a_{t - shift} + noise
    result = M.cross_correlation_lag(a, b, max_lag=50, dt_s=0.02)
    assert result.lag_samples == shift  # positive: b lags a
    assert result.lag_s == pytest.approx(shift * 0.02)
    # The returned value is the Pearson correlation of the overlapping segments a[t], b[t + shift] (scipy oracle).
    seg_a, seg_b = (a[: n - shift], b[shift:]) if shift >= 0 else (a[-shift:], b[: n + shift])
    assert result.correlation == pytest.approx(stats.pearsonr(seg_a, seg_b).statistic, rel=1e-9)


def test_lagged_pearson_matches_scipy_at_every_lag():
    a, b = smooth_noise(56, 400)[:, None], smooth_noise(57, 400)[:, None]
    lags, r = lagged_pearson(a, b, max_lag=30)
    for lag in (-30, -7, 0, 1, 30):
        seg_a, seg_b = (a[: 400 - lag, 0], b[lag:, 0]) if lag >= 0 else (a[-lag:, 0], b[: 400 + lag, 0])
        assert r[0, lags == lag][0] == pytest.approx(stats.pearsonr(seg_a, seg_b).statistic, rel=1e-9), lag


def test_cross_correlation_lag_per_channel_and_identity():
    base = smooth_noise(55, 3000)
    a = np.stack([base[100:2100], base[200:2200]], axis=1)
    b = np.stack([base[97:2097], base[205:2205]], axis=1)  # channel 0: b lags by 3; channel 1: b leads by 5
    result = M.cross_correlation_lag(a, b, max_lag=20)
    np.testing.assert_array_equal(result.lag_samples, [3, -5])
    assert result.lag_s is None
    same = M.cross_correlation_lag(base, base)
    assert (same.lag_samples, same.correlation) == (0, pytest.approx(1.0))


# ---------------------------------------------------------------------------------------------------------------- C2ST


def test_c2st_chance_on_identical_distributions():
    # Null accuracy over 5 seeds: mean 0.503, sd 0.004 at 5000 per side; tolerance 0.025.
    result = M.classifier_two_sample_test(rng(56).standard_normal((5000, 2)), rng(57).standard_normal((5000, 2)))
    assert result.accuracy == pytest.approx(0.5, abs=0.025)
    assert result.p_value > 1e-3
    assert result.n_test == 10_000


@pytest.mark.parametrize(
    ("cov", "shift"),
    [(np.eye(2), np.array([1.0, 0.0])), (np.array([[1.0, 0.5], [0.5, 1.0]]), np.array([1.0, -0.5]))],
)
def test_c2st_matches_bayes_accuracy(cov, shift):
    # Equal-covariance Gaussians at Mahalanobis distance D: Bayes accuracy Phi(D/2). Observed sd 0.003 (5 seeds);
    # tolerance 0.025 covers that plus the small cost of the (unneeded) quadratic features.
    delta = math.sqrt(shift @ np.linalg.inv(cov) @ shift)
    r = rng(58)
    x, y = r.multivariate_normal(np.zeros(2), cov, 5000), r.multivariate_normal(shift, cov, 5000)
    result = M.classifier_two_sample_test(x, y)
    assert result.accuracy == pytest.approx(stats.norm.cdf(delta / 2), abs=0.025)
    assert result.p_value < 1e-10


def test_fit_logistic_matches_sklearn():
    r = rng(59)
    feats = r.standard_normal((600, 4))
    labels = (feats @ [1.0, -2.0, 0.5, 0.0] + 0.3 + r.standard_normal(600) > 0).astype(float)
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(feats, labels)
    np.testing.assert_allclose(fit_logistic(feats, labels), [*ref.coef_[0], ref.intercept_[0]], atol=1e-5)


# ------------------------------------------------------------------------------------------------------------ identity


def test_identity_distances_are_zero():
    x = rng(60).standard_normal((500, 3)) @ A3.T
    assert M.w2_gaussian(x, x) == pytest.approx(0.0, abs=1e-6)  # sqrt of a rounding-level trace difference
    np.testing.assert_array_equal(M.wasserstein_1d(x, x), 0.0)
    assert M.sliced_wasserstein(x, x) == 0.0
    assert M.kl_gaussian(x, x) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(M.kl_gaussian(x, x, per_channel=True), 0.0)
    ks = M.ks_statistic(x, x)
    np.testing.assert_array_equal(ks.statistic, 0.0)
    np.testing.assert_array_equal(ks.pvalue, 1.0)
    # With y = x the U-statistic is 2 (S - n^2) / (n^2 (n - 1)) <= 0, S = sum of the full kernel matrix (scipy cdist).
    n, sigma = len(x), 1.7
    full = np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2)).sum()
    assert M.mmd2_unbiased(x, x, bandwidth=sigma) == pytest.approx(2 * (full - n**2) / (n**2 * (n - 1)), rel=1e-9)


# ----------------------------------------------------------------------------------------------------------- bad input

GOOD = rng(61).standard_normal((50, 2))
ONE_ARG = {
    "gaussian_entropy": M.gaussian_entropy,
    "knn_entropy": M.knn_entropy,
}
TWO_ARG = {
    "kl_gaussian": M.kl_gaussian,
    "kl_knn": M.kl_knn,
    "w2_gaussian": M.w2_gaussian,
    "wasserstein_1d": M.wasserstein_1d,
    "sliced_wasserstein": M.sliced_wasserstein,
    "mmd2_unbiased": M.mmd2_unbiased,
    "mmd2_linear": M.mmd2_linear,
    "mmd_permutation_test": M.mmd_permutation_test,
    "mutual_information_gaussian": M.mutual_information_gaussian,
    "mutual_information_ksg": M.mutual_information_ksg,
    "ks_statistic": M.ks_statistic,
    "mean_abs_diff": M.mean_abs_diff,
    "rmse": M.rmse,
    "pearson_r": M.pearson_r,
    "r2_score": M.r2_score,
    "cross_correlation_lag": M.cross_correlation_lag,
    "classifier_two_sample_test": M.classifier_two_sample_test,
}
ALL = [(name, f, 1) for name, f in ONE_ARG.items()] + [(name, f, 2) for name, f in TWO_ARG.items()]
# Metrics undefined on a zero-variance channel (entropy, KL, MI, correlation).
NEEDS_VARIANCE = {
    "gaussian_entropy",
    "knn_entropy",
    "kl_gaussian",
    "kl_knn",
    "mutual_information_gaussian",
    "mutual_information_ksg",
    "pearson_r",
    "cross_correlation_lag",
}


def call(f, n_args, first, second=GOOD, **kwargs):
    return f(first, **kwargs) if n_args == 1 else f(first, second, **kwargs)


@pytest.mark.parametrize(("name", "f", "n_args"), ALL)
def test_bad_input_raises_named_errors(name, f, n_args):
    with pytest.raises(M.MetricInputError, match="is empty"):
        call(f, n_args, np.empty((0, 2)))
    with pytest.raises(M.MetricInputError, match=r"has 1 sample\(s\); needs at least"):
        call(f, n_args, GOOD[:1], GOOD[:1])
    with pytest.raises(M.MetricInputError, match="contains NaN in channel 1"):
        call(f, n_args, np.where(np.arange(50)[:, None] == 3, [0.0, np.nan], GOOD))
    with pytest.raises(M.MetricInputError, match="contains ±Inf in channel 0"):
        call(f, n_args, np.where(np.arange(50)[:, None] == 3, [np.inf, 0.0], GOOD))
    with pytest.raises(M.MetricInputError, match="1-D"):
        call(f, n_args, GOOD[None])
    with pytest.raises(M.MetricInputError, match="nan_policy"):
        call(f, n_args, GOOD, nan_policy="drop")
    with pytest.raises(M.MetricInputError, match="rescale"):
        call(f, n_args, GOOD * 1e200)
    if name in NEEDS_VARIANCE:
        with pytest.raises(M.MetricInputError, match="channel 1 is constant"):
            call(f, n_args, np.column_stack([GOOD[:, 0], np.full(50, 3.0)]))
    if n_args == 2 and name not in {"mutual_information_gaussian", "mutual_information_ksg"}:
        with pytest.raises(M.MetricInputError, match="has 2 channels but .* has 3"):
            f(GOOD, rng().standard_normal((50, 3)))


@pytest.mark.parametrize("name", ["mean_abs_diff", "rmse", "pearson_r", "r2_score", "mutual_information_gaussian"])
def test_time_aligned_metrics_need_equal_lengths(name):
    with pytest.raises(M.MetricInputError, match="time-aligned inputs need equal lengths"):
        TWO_ARG[name](GOOD, GOOD[:40])


def test_constant_channels_name_the_argument():
    with pytest.raises(M.MetricInputError, match="r2_score: real channel 0 is constant"):
        M.r2_score(GOOD[:, 0], np.zeros(50))
    assert M.r2_score(np.zeros(50), GOOD[:, 0]) < 0  # a constant prediction is fine
    with pytest.raises(M.MetricInputError, match="singular"):
        M.gaussian_entropy(np.column_stack([GOOD, GOOD[:, 0] - 2 * GOOD[:, 1]]))
    with pytest.raises(M.MetricInputError, match=r"\(x, y\) jointly is singular"):
        M.mutual_information_gaussian(GOOD[:, 0], 2 * GOOD[:, 0] + 1)
    assert M.w2_gaussian(np.column_stack([GOOD[:, 0], np.ones(50)]), GOOD) > 0  # W2 is defined for degenerate laws


def test_knn_needs_more_than_k_samples():
    with pytest.raises(M.MetricInputError, match=r"knn_entropy\(k=3\): x has 3 sample\(s\); needs at least 4"):
        M.knn_entropy(GOOD[:3], k=3)
    with pytest.raises(M.MetricInputError, match="after dropping 1 NaN row"):
        M.knn_entropy(np.vstack([GOOD[:3], [np.nan, 0.0]]), k=3, nan_policy="omit")


@pytest.mark.parametrize(
    ("call_bad", "match"),
    [
        (lambda: M.knn_entropy(GOOD, k=0), "k must be an integer > 0"),
        (lambda: M.kl_knn(GOOD, GOOD, k=1.5), "k must be an integer"),
        (lambda: M.mmd2_unbiased(GOOD, GOOD, bandwidth=-1.0), "bandwidth must be a finite number > 0"),
        (lambda: M.mmd2_unbiased(GOOD, GOOD, bandwidth="silverman"), "bandwidth must be 'median'"),
        (lambda: M.mmd2_unbiased(np.zeros((20, 1)), np.zeros((20, 1))), "median-heuristic bandwidth is 0"),
        (lambda: M.wasserstein_1d(GOOD, GOOD, p=0.5), "p must be >= 1"),
        (lambda: M.sliced_wasserstein(GOOD, GOOD, projections=np.ones((3, 4))), "projections must be"),
        (lambda: M.cross_correlation_lag(GOOD, GOOD, max_lag=49), r"max_lag must be an integer in \[0, n-2=48\]"),
        (lambda: M.cross_correlation_lag(GOOD, GOOD, dt_s=0.0), "dt_s must be"),
        (lambda: M.classifier_two_sample_test(GOOD, GOOD, n_folds=1), "n_folds must be an integer > 1"),
        (lambda: M.mmd_permutation_test(GOOD, GOOD, n_permutations=0), "n_permutations"),
        (lambda: M.gaussian_entropy([["a", "b"], ["c", "d"]]), "not a numeric array"),
        (lambda: M.sliced_wasserstein(GOOD, GOOD, p="2"), "p must be a finite number"),
        (lambda: M.compare_channels(GOOD, GOOD, ["hip", "hip"]), r"unique; repeated \['hip'\]"),
        (lambda: M.compare_channels(GOOD, GOOD, ["hip"]), "1 channel names given but sim has 2"),
    ],
)
def test_bad_parameters_raise(call_bad, match):
    with pytest.raises(M.MetricInputError, match=match):
        call_bad()


def test_nan_omit_drops_rows_independently_or_jointly():
    x, y = rng(62).standard_normal((60, 2)), rng(63).standard_normal((60, 2)) + 0.5
    x_nan, y_nan = x.copy(), y.copy()
    x_nan[[3, 10], 1] = np.nan
    y_nan[[10, 20], 0] = np.nan
    keep_x, keep_y = np.ones(60, bool), np.ones(60, bool)
    keep_x[[3, 10]], keep_y[[10, 20]] = False, False
    # Unpaired: each sample loses its own NaN rows.
    assert M.w2_gaussian(x_nan, y_nan, nan_policy="omit") == M.w2_gaussian(x[keep_x], y[keep_y])
    # Time-aligned: a row is dropped from both when either side has a NaN there.
    joint = keep_x & keep_y
    np.testing.assert_array_equal(M.rmse(x_nan, y_nan, nan_policy="omit"), M.rmse(x[joint], y[joint]))


def test_bridge_metrics_import_no_simulator_or_jax():
    code = (
        "import sys, ksim_entropy.bridge.metrics; "
        "print(sorted(m for m in ('jax', 'ksim', 'mujoco', 'xax', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------------- reports

NAMES = ["hip", "knee", "ankle"]


def test_compare_channels_matches_the_individual_metrics_and_is_json():
    sim = rng(64).standard_normal((3000, 3)) * [1.0, 2.0, 0.5]
    real = rng(65).standard_normal((2500, 3)) * [1.1, 2.0, 0.4] + [0.1, 0.0, -0.2]
    out = M.compare_channels(sim, real, NAMES)
    json.dumps(out)
    assert list(out) == NAMES
    ks = M.ks_statistic(sim, real)
    expected = {
        "w1": M.wasserstein_1d(sim, real),
        "ks_statistic": ks.statistic,
        "ks_pvalue": ks.pvalue,
        "entropy_gaussian_sim_nats": M.gaussian_entropy(sim, per_channel=True),
        "entropy_gaussian_real_nats": M.gaussian_entropy(real, per_channel=True),
        "entropy_knn_sim_nats": M.knn_entropy(sim, per_channel=True),
        "entropy_knn_real_nats": M.knn_entropy(real, per_channel=True),
        "kl_gaussian_real_sim_nats": M.kl_gaussian(real, sim, per_channel=True),
        "mmd2_linear": M.mmd2_linear(sim, real, per_channel=True),
        "mean_sim": sim.mean(0),
        "std_real": real.std(0, ddof=1),
    }
    for metric, values in expected.items():
        got = [out[name][metric] for name in NAMES]
        assert all(type(v) is float for v in got)
        np.testing.assert_allclose(got, values, rtol=1e-12, err_msg=metric)


def test_compare_channels_names_a_constant_channel():
    sim = rng(66).standard_normal((100, 3))
    sim[:, 1] = 0.25
    with pytest.raises(M.MetricInputError, match=r"sim channel 1 \('knee'\) is constant"):
        M.compare_channels(sim, rng(67).standard_normal((100, 3)), NAMES)


def test_compare_groups_matches_the_individual_metrics_and_is_json():
    sim = rng(68).standard_normal((800, 3)) @ A3.T
    real = rng(69).standard_normal((700, 3)) @ A3.T + 0.3
    out = M.compare_groups(sim, real, NAMES, {"leg": ["hip", "knee", "ankle"], "foot": ["ankle"]})
    json.dumps(out)
    leg = out["leg"]
    assert all(type(v) is float for v in leg.values())
    # Same functions on the same rows (column copies may change BLAS rounding in the last bit).
    mmd = M.mmd_permutation_test(sim, real)
    expected = {
        "w2_gaussian": M.w2_gaussian(sim, real),
        "sliced_w2": M.sliced_wasserstein(sim, real),  # both sides are below sliced_max_samples
        "mmd2_unbiased": mmd.mmd2,
        "mmd_p_value": mmd.p_value,
        "c2st_accuracy": M.classifier_two_sample_test(sim, real).accuracy,
        "entropy_gaussian_sim_nats": M.gaussian_entropy(sim),
        "entropy_gaussian_real_nats": M.gaussian_entropy(real),
    }
    for metric, value in expected.items():
        assert leg[metric] == pytest.approx(value, rel=1e-12), metric
    assert out["foot"]["n_channels"] == 1.0
    with pytest.raises(M.MetricInputError, match=r"group 'arm' names unknown channels \['elbow'\]"):
        M.compare_groups(sim, real, NAMES, {"arm": ["elbow"]})
    flat = sim.copy()
    flat[:, 2] = 1.0
    with pytest.raises(M.MetricInputError, match="group 'foot'.*channel 0 is constant"):
        M.compare_groups(flat, real, NAMES, {"foot": ["ankle"]})


# ---------------------------------------------------------------------------------------------------------------- fuzz


@st.composite
def sample_pairs(draw):
    """Two arrays of one shape (n, d), n in [0, 24], d in [1, 3], with any finite float64 values."""
    shape = draw(st.tuples(st.integers(0, 24), st.integers(1, 3)))
    elements = st.floats(allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(np.float64, shape, elements=elements)), draw(
        hnp.arrays(np.float64, shape, elements=elements)
    )


FUZZ_EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "40"))
FUZZED = {
    "gaussian_entropy": lambda x, y: M.gaussian_entropy(x),
    "gaussian_entropy_per_channel": lambda x, y: M.gaussian_entropy(x, per_channel=True),
    "knn_entropy": lambda x, y: M.knn_entropy(x, k=2),
    "knn_entropy_per_channel": lambda x, y: M.knn_entropy(x, k=2, per_channel=True),
    "kl_gaussian": M.kl_gaussian,
    "kl_knn": M.kl_knn,
    "w2_gaussian": M.w2_gaussian,
    "wasserstein_1d": lambda x, y: M.wasserstein_1d(x, y, p=2),
    "sliced_wasserstein": lambda x, y: M.sliced_wasserstein(x, y, n_projections=8),
    "mmd2_unbiased": M.mmd2_unbiased,
    "mmd2_linear": lambda x, y: M.mmd2_linear(x, y, per_channel=True),
    "mmd_permutation_test": lambda x, y: M.mmd_permutation_test(x, y, n_permutations=20),
    "mutual_information_gaussian": M.mutual_information_gaussian,
    "mutual_information_ksg": lambda x, y: M.mutual_information_ksg(x, y, k=2),
    "ks_statistic": M.ks_statistic,
    "pearson_r": M.pearson_r,
    "r2_score": M.r2_score,
    "cross_correlation_lag": M.cross_correlation_lag,
    "classifier_two_sample_test": lambda x, y: M.classifier_two_sample_test(x, y, n_folds=2),
}


def numbers(result) -> np.ndarray:
    parts = result if isinstance(result, tuple) else (result,)
    return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in parts if v is not None])


@pytest.mark.parametrize("name", list(FUZZED))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=sample_pairs())
def test_fuzz_finite_or_metric_input_error(name, pair):
    # Any finite input gives a finite result or a MetricInputError: never NaN, never another exception.
    with np.errstate(all="ignore"):
        try:
            result = FUZZED[name](*pair)
        except M.MetricInputError:
            return
    assert np.isfinite(numbers(result)).all(), result
