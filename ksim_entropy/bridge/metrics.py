"""Sim-vs-real distances per channel and per channel group: entropies, divergences, transport, MMD, MI, paired errors.

Pure functions over arrays (NumPy/SciPy only; never ksim, mujoco, xax or jax). Samples are ``(n, d)`` arrays (n
samples of d channels) or ``(n,)`` for one channel. Per-channel functions return a float for 1-D input and a ``(d,)``
array for 2-D input; multivariate ones treat the d channels jointly and return a float. Entropies, divergences and MI
are in nats; distances are in the units of the channels. Every function validates its input through one helper and
raises :class:`MetricInputError` (a ``ValueError``) naming the argument, channel and problem instead of returning NaN.
``nan_policy="omit"`` drops every row holding a NaN (jointly for time-aligned pairs); ±Inf always raises.
"""

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from ksim_entropy.bridge._metric_core import (
    MetricInputError,
    NanPolicy,
    check_samples,
    covariance,
    dequantize,
    finite,
    fit_logistic,
    kernel_bandwidth,
    kl_gaussian_1d,
    knn_entropy_sorted,
    ks_test_sorted,
    lagged_pearson,
    logdet_pd,
    mmd2_linear_pairs,
    positive,
    rbf_sum,
    sorted_columns,
    sqrtm_psd,
    standardise,
    subsample,
    wp_pow_sorted,
)
from ksim_entropy.constants import HALF_LOG_2PI_E

__all__ = [
    "C2STResult",
    "KSResult",
    "LagResult",
    "MMDTestResult",
    "MetricInputError",
    "NanPolicy",
    "classifier_two_sample_test",
    "compare_channels",
    "compare_groups",
    "cross_correlation_lag",
    "gaussian_entropy",
    "kl_gaussian",
    "kl_knn",
    "knn_entropy",
    "ks_statistic",
    "mean_abs_diff",
    "mmd2_linear",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "mutual_information_gaussian",
    "mutual_information_ksg",
    "pearson_r",
    "r2_score",
    "rmse",
    "sliced_wasserstein",
    "wasserstein_1d",
]

_LOG_2PIE = 2.0 * HALF_LOG_2PI_E


class KSResult(NamedTuple):
    """Two-sample Kolmogorov–Smirnov statistic ``sup|F_x - F_y|`` and its two-sided p-value."""

    statistic: float | np.ndarray
    pvalue: float | np.ndarray


class MMDTestResult(NamedTuple):
    """Unbiased MMD² on the (sub)samples tested and its permutation p-value."""

    mmd2: float
    p_value: float


class LagResult(NamedTuple):
    """Lag maximising the normalised cross-correlation; positive means b lags (is a delayed copy of) a."""

    lag_samples: int | np.ndarray
    lag_s: float | np.ndarray | None
    correlation: float | np.ndarray


class C2STResult(NamedTuple):
    """Held-out accuracy of a sim-vs-real domain classifier and its one-sided binomial p-value against 0.5."""

    accuracy: float
    p_value: float
    n_test: int


def _out(what: str, values: np.ndarray, was_1d: bool) -> float | np.ndarray:
    finite(what, values)
    return float(values[0]) if was_1d else values


# --------------------------------------------------------------------------------------------------- entropy


def gaussian_entropy(x: ArrayLike, *, per_channel: bool = False, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Differential entropy (nats) of the Gaussian fitted to ``x`` (n, d): ``h = ½ log det(2πe Σ̂)``, Σ̂ with ddof=1.

    The maximum entropy of any law with that covariance (Cover & Thomas 2006, Thm 8.6.5). ``per_channel=True``
    returns ``½ log(2πe σ̂_j²)`` for each channel instead of the joint value. Raises on a constant channel or a
    singular covariance (entropy -∞).
    """
    what = "gaussian_entropy"
    (x,), was_1d = check_samples(what, {"x": x}, nan_policy=nan_policy, nonconstant=True)
    if per_channel:
        return _out(what, 0.5 * (_LOG_2PIE + np.log(x.var(axis=0, ddof=1))), was_1d)
    logdet = logdet_pd(what, "x", covariance(x), x.shape[0])
    return float(finite(what, 0.5 * (x.shape[1] * _LOG_2PIE + logdet)))


def knn_entropy(
    x: ArrayLike, k: int = 3, *, per_channel: bool = False, seed: int = 0, nan_policy: NanPolicy = "raise"
) -> float | np.ndarray:
    """Kozachenko–Leonenko kNN differential entropy (nats) of ``x`` (n, d), Euclidean.

    ``ĥ = ψ(n) - ψ(k) + log V_d + (d/n) Σ_i log r_i``, with ``r_i`` the distance from ``x_i`` to its k-th nearest
    other sample (``scipy.spatial.cKDTree``) and ``V_d = π^{d/2}/Γ(d/2+1)`` the unit-ball volume (Kozachenko &
    Leonenko 1987; Kraskov et al. 2004, eq. 20). Consistent for any density; biased by O(n^{-1/d}) near boundaries
    and for densely sampled (time-correlated) trajectories. ``per_channel=True`` returns the 1-D estimate of each
    channel (exact neighbours from the sorted column, O(k·n)). Ties (quantised encoders) would give ``log 0``: a
    channel whose values repeat is dequantised with ``U(±δ/2)`` noise, δ its smallest positive gap, drawn from
    ``seed`` (unused without ties); discrete levels then give ``H(levels) + log δ``.
    """
    what = f"knn_entropy(k={k})"
    positive(what, "k", k, integer=True)
    (x,), was_1d = check_samples(what, {"x": x}, nan_policy=nan_policy, min_samples=k + 1, nonconstant=True)
    (x,) = dequantize([x], seed)  # in sample order, so both paths below see the same noise
    if per_channel:
        return _out(what, knn_entropy_sorted(sorted_columns(x), k, seed), was_1d)
    n, d = x.shape
    r = cKDTree(x).query(x, k=[k + 1])[0][:, 0]
    log_unit_ball = 0.5 * d * np.log(np.pi) - gammaln(0.5 * d + 1.0)
    return float(finite(what, digamma(n) - digamma(k) + log_unit_ball + d * np.mean(np.log(r))))


# --------------------------------------------------------------------------------------------------- divergences


def kl_gaussian(
    x_p: ArrayLike, x_q: ArrayLike, *, per_channel: bool = False, nan_policy: NanPolicy = "raise"
) -> float | np.ndarray:
    """KL(P‖Q) in nats between the Gaussians fitted to ``x_p`` and ``x_q`` (n, d), ddof=1 covariances.

    ``KL = ½ [tr(Σ_q⁻¹Σ_p) + (μ_q-μ_p)ᵀ Σ_q⁻¹ (μ_q-μ_p) - d + log(det Σ_q / det Σ_p)]`` (closed form, e.g. Duchi,
    "Derivations for linear algebra and optimization", §9). ``per_channel=True`` applies the 1-D form per channel.
    Asymmetric; for sim-to-real use ``x_p`` = real, ``x_q`` = sim (penalises sim missing real behaviour).
    """
    what = "kl_gaussian"
    (p, q), was_1d = check_samples(what, {"x_p": x_p, "x_q": x_q}, nan_policy=nan_policy, nonconstant=True)
    if per_channel:
        v_p, v_q = p.var(axis=0, ddof=1), q.var(axis=0, ddof=1)
        return _out(what, kl_gaussian_1d(p.mean(axis=0), v_p, q.mean(axis=0), v_q), was_1d)
    cov_p, cov_q = covariance(p), covariance(q)
    logdet_p, logdet_q = logdet_pd(what, "x_p", cov_p, p.shape[0]), logdet_pd(what, "x_q", cov_q, q.shape[0])
    d = p.shape[1]
    diff = q.mean(axis=0) - p.mean(axis=0)
    sol = np.linalg.solve(cov_q, np.column_stack([cov_p, diff]))
    kl = 0.5 * (np.trace(sol[:, :d]) + diff @ sol[:, d] - d + logdet_q - logdet_p)
    return float(finite(what, max(kl, 0.0)))


def kl_knn(x_p: ArrayLike, x_q: ArrayLike, k: int = 1, *, seed: int = 0, nan_policy: NanPolicy = "raise") -> float:
    """Nearest-neighbour KL(P‖Q) estimate (nats) from ``x_p`` (n, d) and ``x_q`` (m, d) (Wang, Kulkarni & Verdú 2009).

    ``D̂ = (d/n) Σ_i log(ν_k(i)/ρ_k(i)) + log(m/(n-1))``, ``ρ_k(i)`` the distance from ``x_p[i]`` to its k-th nearest
    other point of ``x_p``, ``ν_k(i)`` to its k-th nearest point of ``x_q`` (Euclidean). Consistent, not clipped:
    small negative values mean "no detectable difference". Ties are dequantised as in :func:`knn_entropy`.
    """
    what = f"kl_knn(k={k})"
    positive(what, "k", k, integer=True)
    (p, q), _ = check_samples(
        what, {"x_p": x_p, "x_q": x_q}, nan_policy=nan_policy, min_samples=k + 1, nonconstant=True
    )
    (n, d), m = p.shape, q.shape[0]
    p, q = dequantize([p, q], seed)
    rho = cKDTree(p).query(p, k=[k + 1])[0][:, 0]
    nu = cKDTree(q).query(p, k=[k])[0][:, 0]
    return float(finite(what, d * np.mean(np.log(nu) - np.log(rho)) + np.log(m / (n - 1))))


# --------------------------------------------------------------------------------------------------- transport


def w2_gaussian(x: ArrayLike, y: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float:
    """Exact 2-Wasserstein (Bures–Wasserstein) distance between the Gaussians fitted to ``x`` and ``y`` (n, d).

    ``W2 = sqrt(‖μx-μy‖² + tr(Σx + Σy - 2 (Σy^{1/2} Σx Σy^{1/2})^{1/2}))`` with ddof=1 covariances and matrix square
    roots from symmetric eigendecompositions (Dowson & Landau 1982; Givens & Shortt 1984). Defined for singular
    (e.g. constant-channel) covariances. Units of the channels.
    """
    what = "w2_gaussian"
    (x, y), _ = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    scale = max(np.max(np.abs(x)), np.max(np.abs(y)))  # W2(cx, cy) = c W2(x, y): keeps Σy^½ Σx Σy^½ in range
    if scale == 0.0:
        return 0.0
    x, y = x / scale, y / scale
    cov_x, cov_y = covariance(x), covariance(y)
    root_y = sqrtm_psd(cov_y)
    cross = root_y @ cov_x @ root_y
    tr_cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (cross + cross.T)), 0.0, None)))
    mean_sq = np.sum((x.mean(axis=0) - y.mean(axis=0)) ** 2)
    w2_sq = mean_sq + np.trace(cov_x) + np.trace(cov_y) - 2.0 * tr_cross
    return float(finite(what, scale * np.sqrt(max(w2_sq, 0.0))))


def wasserstein_1d(x: ArrayLike, y: ArrayLike, p: float = 1, *, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Exact p-Wasserstein distance ``W_p`` (not ``W_p^p``) per channel between empirical laws, units of the channel.

    ``W_p = (∫_0^1 |F_x^{-1}(u) - F_y^{-1}(u)|^p du)^{1/p}`` over the empirical quantile functions (Villani 2009,
    Rem. 2.19); sample sizes may differ. For ``p=1`` equals ``scipy.stats.wasserstein_distance``.
    """
    what = f"wasserstein_1d(p={p})"
    positive(what, "p", p, minimum=0.0)
    if p < 1:
        raise MetricInputError(f"{what}: p must be >= 1 for a distance; got {p!r}")
    (x, y), was_1d = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    return _out(what, wp_pow_sorted(sorted_columns(x), sorted_columns(y), p) ** (1.0 / p), was_1d)


def sliced_wasserstein(
    x: ArrayLike,
    y: ArrayLike,
    n_projections: int = 128,
    p: float = 2,
    seed: int = 0,
    projections: ArrayLike | None = None,
    *,
    nan_policy: NanPolicy = "raise",
) -> float:
    """Sliced p-Wasserstein distance ``SW_p = (mean_θ W_p^p(θᵀx, θᵀy))^{1/p}`` over unit directions θ.

    Directions are ``n_projections`` normalised standard-normal draws from ``np.random.default_rng(seed)``, or the
    columns of ``projections`` (d, P) used as given; each 1-D term is exact (:func:`wasserstein_1d`). Same
    convention as ``ot.sliced_wasserstein_distance`` (Bonneel et al. 2015). Units of the channels.
    """
    what = "sliced_wasserstein"
    positive(what, "p", p)
    if p < 1:
        raise MetricInputError(f"{what}: p must be >= 1; got {p!r}")
    (x, y), _ = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    d = x.shape[1]
    if projections is None:
        positive(what, "n_projections", n_projections, integer=True)
        theta = np.random.default_rng(seed).standard_normal((d, n_projections))
        theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    else:
        theta = np.asarray(projections, dtype=np.float64)
        if theta.ndim != 2 or theta.shape[0] != d or theta.shape[1] == 0 or not np.isfinite(theta).all():
            raise MetricInputError(
                f"{what}: projections must be a finite (d={d}, n_projections) array; got shape {theta.shape}"
            )
    px, py = theta.T @ x.T, theta.T @ y.T  # (P, n): one projected sample per contiguous row
    px.sort(axis=1)
    py.sort(axis=1)
    wpp = wp_pow_sorted(px, py, p)
    return float(finite(what, np.mean(wpp) ** (1.0 / p)))


# --------------------------------------------------------------------------------------------------- MMD


def mmd2_unbiased(
    x: ArrayLike, y: ArrayLike, bandwidth: str | float = "median", *, nan_policy: NanPolicy = "raise"
) -> float:
    """Unbiased squared MMD with the Gaussian kernel ``k(a,b) = exp(-‖a-b‖²/(2σ²))`` (Gretton et al. 2012, eq. 3).

    ``MMD²_u = Σ_{i≠j} k(x_i,x_j)/(n(n-1)) + Σ_{i≠j} k(y_i,y_j)/(m(m-1)) - 2 Σ_ij k(x_i,y_j)/(nm)``; can be
    slightly negative when P = Q (so ``mmd2_unbiased(x, x) < 0``). ``bandwidth="median"``: σ = median pairwise
    distance of the pooled sample (≤ 300 evenly spaced points). O((n+m)²) time: subsample large inputs.
    """
    what = "mmd2_unbiased"
    (x, y), _ = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    sigma = float(kernel_bandwidth(what, bandwidth, x, y)[0])
    n, m = x.shape[0], y.shape[0]
    kxx = (rbf_sum(x, x, sigma) - n) / (n * (n - 1))
    kyy = (rbf_sum(y, y, sigma) - m) / (m * (m - 1))
    return float(finite(what, kxx + kyy - 2.0 * rbf_sum(x, y, sigma) / (n * m)))


def mmd_permutation_test(
    x: ArrayLike,
    y: ArrayLike,
    n_permutations: int = 200,
    seed: int = 0,
    max_samples: int = 500,
    bandwidth: str | float = "median",
    *,
    nan_policy: NanPolicy = "raise",
) -> MMDTestResult:
    """Permutation test of P = Q with the unbiased MMD² statistic (Gretton et al. 2012, §5).

    Each side is first subsampled (without replacement, ``seed``) to at most ``max_samples`` rows; the bandwidth is
    fixed on the pooled sample; ``p = (1 + #{perm ≥ observed}) / (1 + n_permutations)`` (Phipson & Smyth 2010). All
    permutations come from one kernel matrix: ``Σ_xx = aᵀKa`` for each label-indicator column ``a``.
    """
    what = "mmd_permutation_test"
    positive(what, "n_permutations", n_permutations, integer=True)
    positive(what, "max_samples", max_samples, integer=True, minimum=1)
    (x, y), _ = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    rng = np.random.default_rng(seed)
    x, y = subsample(x, max_samples, rng), subsample(y, max_samples, rng)
    sigma = float(kernel_bandwidth(what, bandwidth, x, y)[0])
    z = np.concatenate([x, y], axis=0)
    big_n, n, m = z.shape[0], x.shape[0], y.shape[0]
    sq = np.einsum("ij,ij->i", z, z)
    kernel = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0) / (2.0 * sigma**2))
    np.fill_diagonal(kernel, 0.0)
    member = np.zeros((big_n, n_permutations + 1))
    member[:n, 0] = 1.0
    perm = np.argsort(rng.random((n_permutations, big_n)), axis=1)[:, :n]
    member[perm, np.arange(1, n_permutations + 1)[:, None]] = 1.0
    k_member = kernel @ member
    s_xx = np.sum(member * k_member, axis=0)
    s_xy = np.sum((1.0 - member) * k_member, axis=0)
    s_yy = np.sum((1.0 - member) * (kernel.sum(axis=1)[:, None] - k_member), axis=0)
    stat = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    p_value = (1.0 + np.sum(stat[1:] >= stat[0])) / (1.0 + n_permutations)
    return MMDTestResult(float(finite(what, stat[0])), float(p_value))


def mmd2_linear(
    x: ArrayLike,
    y: ArrayLike,
    bandwidth: str | float = "median",
    *,
    per_channel: bool = False,
    nan_policy: NanPolicy = "raise",
) -> float | np.ndarray:
    """Linear-time unbiased MMD² estimate, Gaussian kernel (Gretton et al. 2012, Lemma 14), O(n) for large samples.

    ``MMD²_l = mean_i [k(x_i,x_{i+h}) + k(y_i,y_{i+h}) - k(x_i,y_{i+h}) - k(x_{i+h},y_i)]``, ``h = ⌊min(n,m)/2⌋``.
    Pairs are half a log apart, not consecutive as in the paper: neighbouring time steps are correlated and would
    bias ``k(x_i, x_{i+1})`` upward. Unbiased, with variance O(1/n); bandwidth as in :func:`mmd2_unbiased`.
    ``per_channel=True`` returns the 1-D estimate of each channel, each with its own median bandwidth.
    """
    what = "mmd2_linear"
    (x, y), was_1d = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    sigma = kernel_bandwidth(what, bandwidth, x, y, per_channel=per_channel)
    values = mmd2_linear_pairs(x, y, sigma, per_channel)
    return _out(what, values, was_1d) if per_channel else float(finite(what, values[0]))


# --------------------------------------------------------------------------------------------------- mutual information


def mutual_information_gaussian(x: ArrayLike, y: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float:
    """MI (nats) of the Gaussian fitted to time-aligned ``x`` (n, dx) and ``y`` (n, dy).

    ``I = ½ log(det Σ_x det Σ_y / det Σ_xy)``; for 1-D channels ``-½ log(1 - ρ²)`` (Cover & Thomas 2006, Ex. 8.5).
    A lower bound on the MI of any law with that covariance. Raises when the joint covariance is singular (I = ∞).
    """
    what = "mutual_information_gaussian"
    (x, y), _ = check_samples(
        what, {"x": x, "y": y}, nan_policy=nan_policy, paired=True, same_dim=False, nonconstant=True
    )
    n, dx = x.shape
    cov = covariance(np.hstack([x, y]))
    logdet_x = logdet_pd(what, "x", cov[:dx, :dx], n)
    logdet_y = logdet_pd(what, "y", cov[dx:, dx:], n)
    logdet_xy = logdet_pd(what, "(x, y) jointly", cov, n)
    return float(finite(what, max(0.5 * (logdet_x + logdet_y - logdet_xy), 0.0)))


def mutual_information_ksg(
    x: ArrayLike, y: ArrayLike, k: int = 3, *, seed: int = 0, nan_policy: NanPolicy = "raise"
) -> float:
    """Kraskov–Stögbauer–Grassberger MI estimate (nats), algorithm 1 (Kraskov et al. 2004, eq. 8).

    ``Î = ψ(k) + ψ(n) - ⟨ψ(n_x+1) + ψ(n_y+1)⟩`` with max-norm: ``ε_i`` is the distance to the k-th neighbour in the
    joint space and ``n_x(i)`` counts other points strictly within ``ε_i`` in x (likewise y). Each channel is first
    scaled to unit variance, as in scikit-learn. Not clipped at 0. Ties are dequantised as in :func:`knn_entropy`.
    """
    what = f"mutual_information_ksg(k={k})"
    positive(what, "k", k, integer=True)
    (x, y), _ = check_samples(
        what,
        {"x": x, "y": y},
        nan_policy=nan_policy,
        paired=True,
        same_dim=False,
        min_samples=k + 1,
        nonconstant=True,
    )
    n, dx = x.shape
    z = np.hstack([x, y])
    std = z.std(axis=0)
    if not (std > 0).all():
        raise MetricInputError(f"{what}: a channel's standard deviation underflows to 0; rescale the inputs")
    (z,) = dequantize([z / std], seed)
    x, y = z[:, :dx], z[:, dx:]
    eps = cKDTree(z).query(z, k=[k + 1], p=np.inf)[0][:, 0]
    radius = np.nextafter(eps, 0.0)
    n_x = cKDTree(x).query_ball_point(x, radius, p=np.inf, return_length=True) - 1
    n_y = cKDTree(y).query_ball_point(y, radius, p=np.inf, return_length=True) - 1
    return float(finite(what, digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_y + 1))))


# --------------------------------------------------------------------------------------------------- tests per channel


def ks_statistic(x: ArrayLike, y: ArrayLike, *, nan_policy: NanPolicy = "raise") -> KSResult:
    """Two-sample Kolmogorov–Smirnov test per channel: ``D = sup_t |F_x(t) - F_y(t)|`` and its two-sided p-value.

    The statistic is exact, ties included. The p-value is Smirnov's asymptotic one with effective size
    ``e = round(nm/(n+m))``: ``kstwo.sf(D, e)`` as in ``scipy.stats.ks_2samp(..., method="asymp")`` (Hodges 1958) for
    ``e ≤ 2 000``, above that its Kolmogorov limit ``kstwobign.sf(√e·D)``: conservative, +4 % at most for p ≥ 1e-4
    at e = 2 000 and +1 % at e = 50 000, where ``kstwo`` would cost up to ~50 ms per value.
    """
    what = "ks_statistic"
    (x, y), was_1d = check_samples(what, {"x": x, "y": y}, nan_policy=nan_policy)
    stat, pvalue = ks_test_sorted(sorted_columns(x), sorted_columns(y))
    return KSResult(_out(what, stat, was_1d), _out(what, pvalue, was_1d))


# --------------------------------------------------------------------------------------------------- paired errors


def mean_abs_diff(sim: ArrayLike, real: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Mean absolute error per channel of time-aligned ``sim`` and ``real``: ``mean_t |sim_t - real_t|``."""
    what = "mean_abs_diff"
    (s, r), was_1d = check_samples(what, {"sim": sim, "real": real}, nan_policy=nan_policy, paired=True)
    return _out(what, np.mean(np.abs(s - r), axis=0), was_1d)


def rmse(sim: ArrayLike, real: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Root-mean-square error per channel of time-aligned ``sim`` and ``real``: ``sqrt(mean_t (sim_t - real_t)²)``."""
    what = "rmse"
    (s, r), was_1d = check_samples(what, {"sim": sim, "real": real}, nan_policy=nan_policy, paired=True)
    return _out(what, np.sqrt(np.mean((s - r) ** 2, axis=0)), was_1d)


def pearson_r(sim: ArrayLike, real: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Pearson correlation per channel of time-aligned ``sim`` and ``real``: ``cov(s, r) / (σ_s σ_r)`` in [-1, 1]."""
    what = "pearson_r"
    (s, r), was_1d = check_samples(
        what, {"sim": sim, "real": real}, nan_policy=nan_policy, paired=True, nonconstant=True
    )
    s, r = s - s.mean(axis=0), r - r.mean(axis=0)
    rho = np.sum(s * r, axis=0) / np.sqrt(np.sum(s**2, axis=0) * np.sum(r**2, axis=0))
    return _out(what, np.clip(rho, -1.0, 1.0), was_1d)


def r2_score(sim: ArrayLike, real: ArrayLike, *, nan_policy: NanPolicy = "raise") -> float | np.ndarray:
    """Coefficient of determination per channel of ``sim`` predicting ``real``: ``1 - Σ(r-s)² / Σ(r-r̄)²`` (≤ 1).

    ``real`` is the reference (sklearn's ``y_true``); undefined, hence an error, for a constant real channel.
    """
    what = "r2_score"
    (s, r), was_1d = check_samples(
        what, {"sim": sim, "real": real}, nan_policy=nan_policy, paired=True, nonconstant=("real",)
    )
    return _out(what, 1.0 - np.sum((r - s) ** 2, axis=0) / np.sum((r - r.mean(axis=0)) ** 2, axis=0), was_1d)


def cross_correlation_lag(
    a: ArrayLike,
    b: ArrayLike,
    max_lag: int | None = None,
    dt_s: float | None = None,
    *,
    nan_policy: NanPolicy = "raise",
) -> LagResult:
    """Lag τ in [-max_lag, max_lag] maximising the normalised cross-correlation of time-aligned ``a`` and ``b``.

    ``r(τ)`` is the Pearson correlation of the overlapping segments ``a[t]`` and ``b[t+τ]`` (n - |τ| pairs), all lags
    at once by FFT plus cumulative sums. **Positive τ means b lags a** (b is a copy of a delayed by τ samples, e.g.
    the real response to a sim command). ``max_lag`` defaults to n//4; ``lag_s = τ·dt_s`` if ``dt_s`` is given.
    Per channel for (n, d) input. Lags whose segment is constant are skipped.
    """
    what = "cross_correlation_lag"
    (a, b), was_1d = check_samples(
        what, {"a": a, "b": b}, nan_policy=nan_policy, paired=True, min_samples=3, nonconstant=True
    )
    n, d = a.shape
    max_lag = n // 4 if max_lag is None else max_lag
    if isinstance(max_lag, bool) or not isinstance(max_lag, int | np.integer) or not 0 <= max_lag <= n - 2:
        raise MetricInputError(f"{what}: max_lag must be an integer in [0, n-2={n - 2}]; got {max_lag!r}")
    if dt_s is not None:
        positive(what, "dt_s", dt_s)
    lags, r = lagged_pearson(a, b, max_lag)
    best = np.argmax(r, axis=1)
    corr = r[np.arange(d), best]
    if not np.isfinite(corr).all():
        bad = np.flatnonzero(~np.isfinite(corr)).tolist()
        raise MetricInputError(f"{what}: channel(s) {bad} have a (numerically) constant segment at every lag")
    corr = np.clip(corr, -1.0, 1.0)
    lag = lags[best]
    if was_1d:
        return LagResult(int(lag[0]), None if dt_s is None else float(lag[0] * dt_s), float(corr[0]))
    return LagResult(lag, None if dt_s is None else lag * float(dt_s), corr)


# --------------------------------------------------------------------------------------------------- classifier test


def classifier_two_sample_test(
    x_sim: ArrayLike,
    x_real: ArrayLike,
    seed: int = 0,
    n_folds: int = 5,
    max_samples: int = 5000,
    *,
    nan_policy: NanPolicy = "raise",
) -> C2STResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): held-out accuracy of a sim-vs-real logistic regression.

    ``min(n_sim, n_real, max_samples)`` rows are drawn per side (balanced, ``seed``); features are the pooled-
    standardised channels and their squares (a boundary quadratic per channel, no cross terms); L2-regularised
    logistic regression (λ=1, i.e. sklearn ``C=1``) by Newton's method; stratified ``n_folds``-fold cross-validation
    so every row is predicted once. ``p = P(Binom(2m, ½) ≥ correct)``. Accuracy 0.5 = indistinguishable; for equal-
    covariance Gaussians at Mahalanobis distance Δ the Bayes accuracy is Φ(Δ/2).
    """
    what = "classifier_two_sample_test"
    positive(what, "n_folds", n_folds, integer=True, minimum=1)
    positive(what, "max_samples", max_samples, integer=True, minimum=0)
    (xs, xr), _ = check_samples(what, {"x_sim": x_sim, "x_real": x_real}, nan_policy=nan_policy, min_samples=n_folds)
    rng = np.random.default_rng(seed)
    m = min(xs.shape[0], xr.shape[0], max_samples)
    if m < n_folds:
        raise MetricInputError(f"{what}: max_samples={max_samples} leaves {m} rows per side; needs >= n_folds")
    z = np.concatenate([subsample(xs, m, rng), subsample(xr, m, rng)], axis=0)
    labels = np.repeat([0.0, 1.0], m)
    z = standardise(z)
    feats = np.hstack([z, standardise(z**2)])
    fold = np.concatenate([rng.permutation(m) % n_folds, rng.permutation(m) % n_folds])
    correct = 0
    for f in range(n_folds):
        test = fold == f
        w = fit_logistic(feats[~test], labels[~test])
        correct += int(np.sum((feats[test] @ w[:-1] + w[-1] > 0) == (labels[test] == 1.0)))
    return C2STResult(correct / (2 * m), float(stats.binom.sf(correct - 1, 2 * m, 0.5)), 2 * m)


# --------------------------------------------------------------------------------------------------- reports


def _unique_names(what: str, names: Sequence[str]) -> None:
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise MetricInputError(f"{what}: channel names must be unique; repeated {repeated}")


def compare_channels(
    sim: ArrayLike,
    real: ArrayLike,
    names: Sequence[str],
    *,
    k: int = 3,
    seed: int = 0,
    nan_policy: NanPolicy = "raise",
) -> dict[str, dict[str, float]]:
    """1-D sim-vs-real metrics for every channel of ``sim`` (n, d) and ``real`` (m, d), keyed by channel name.

    Per channel (full samples, no subsampling; each sort shared): ``w1`` (:func:`wasserstein_1d`, channel units),
    ``ks_statistic``/``ks_pvalue`` (:func:`ks_statistic`), ``entropy_{gaussian,knn}_{sim,real}_nats``
    (:func:`gaussian_entropy`, :func:`knn_entropy` with ``k``), ``kl_gaussian_real_sim_nats`` = KL(real‖sim)
    (:func:`kl_gaussian`), ``mmd2_linear`` (:func:`mmd2_linear`, median bandwidth), and ``mean``/``std`` of each side.
    Plain floats, JSON-serialisable. Raises naming the channel if one is constant on either side.
    """
    what = "compare_channels"
    positive(what, "k", k, integer=True)
    _unique_names(what, names)
    (s, r), _ = check_samples(
        what,
        {"sim": sim, "real": real},
        nan_policy=nan_policy,
        min_samples=k + 1,
        nonconstant=True,
        channel_names=list(names),
    )
    s_sorted, r_sorted = sorted_columns(s), sorted_columns(r)
    mean_s, mean_r = s.mean(axis=0), r.mean(axis=0)
    var_s, var_r = s.var(axis=0, ddof=1), r.var(axis=0, ddof=1)
    columns = {
        "w1": wp_pow_sorted(s_sorted, r_sorted, 1),
        **dict(zip(("ks_statistic", "ks_pvalue"), ks_test_sorted(s_sorted, r_sorted), strict=True)),
        "entropy_gaussian_sim_nats": 0.5 * (_LOG_2PIE + np.log(var_s)),
        "entropy_gaussian_real_nats": 0.5 * (_LOG_2PIE + np.log(var_r)),
        "entropy_knn_sim_nats": knn_entropy_sorted(s_sorted, k, seed),
        "entropy_knn_real_nats": knn_entropy_sorted(r_sorted, k, seed),
        "kl_gaussian_real_sim_nats": kl_gaussian_1d(mean_r, var_r, mean_s, var_s),
        "mmd2_linear": mmd2_linear_pairs(s, r, kernel_bandwidth(what, "median", s, r, per_channel=True), True),
        "mean_sim": mean_s,
        "mean_real": mean_r,
        "std_sim": np.sqrt(var_s),
        "std_real": np.sqrt(var_r),
    }
    for metric, values in columns.items():
        finite(f"{what}: {metric}", values)
    return {name: {metric: float(v[j]) for metric, v in columns.items()} for j, name in enumerate(names)}


def compare_groups(
    sim: ArrayLike,
    real: ArrayLike,
    names: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    *,
    seed: int = 0,
    n_projections: int = 128,
    sliced_max_samples: int = 10_000,
    mmd_max_samples: int = 500,
    c2st_max_samples: int = 5000,
    nan_policy: NanPolicy = "raise",
) -> dict[str, dict[str, float]]:
    """Multivariate sim-vs-real metrics per channel group (``groups``: group name → channel names from ``names``).

    Per group: ``w2_gaussian`` (full samples), ``sliced_w2`` (≤ ``sliced_max_samples`` random rows per side,
    ``n_projections``), ``mmd2_unbiased`` and ``mmd_p_value`` (:func:`mmd_permutation_test`, ≤ ``mmd_max_samples``
    rows per side, 200 permutations), ``c2st_accuracy``/``c2st_p_value`` (≤ ``c2st_max_samples`` rows per side),
    ``entropy_gaussian_{sim,real}_nats`` (joint, full samples) and ``n_channels``. Subsamples are drawn without
    replacement from ``seed``. Plain floats, JSON-serialisable; errors name the group.
    """
    what = "compare_groups"
    positive(what, "sliced_max_samples", sliced_max_samples, integer=True, minimum=1)
    _unique_names(what, names)
    (s, r), _ = check_samples(what, {"sim": sim, "real": real}, nan_policy=nan_policy, channel_names=list(names))
    index = {name: j for j, name in enumerate(names)}
    out: dict[str, dict[str, float]] = {}
    for group, members in groups.items():
        missing = [c for c in members if c not in index]
        if missing or not members:
            raise MetricInputError(f"{what}: group {group!r} names unknown channels {missing} (or is empty)")
        cols = [index[c] for c in members]
        gs, gr = s[:, cols], r[:, cols]
        try:
            mmd = mmd_permutation_test(gs, gr, seed=seed, max_samples=mmd_max_samples)
            c2st = classifier_two_sample_test(gs, gr, seed=seed, max_samples=c2st_max_samples)
            rng = np.random.default_rng(seed)
            ss, sr = subsample(gs, sliced_max_samples, rng), subsample(gr, sliced_max_samples, rng)
            out[group] = {
                "n_channels": float(len(cols)),
                "w2_gaussian": w2_gaussian(gs, gr),
                "sliced_w2": sliced_wasserstein(ss, sr, n_projections=n_projections, p=2, seed=seed),
                "mmd2_unbiased": mmd.mmd2,
                "mmd_p_value": mmd.p_value,
                "c2st_accuracy": c2st.accuracy,
                "c2st_p_value": c2st.p_value,
                "entropy_gaussian_sim_nats": gaussian_entropy(gs),
                "entropy_gaussian_real_nats": gaussian_entropy(gr),
            }
        except MetricInputError as exc:
            raise MetricInputError(f"{what}: group {group!r} (channels {list(members)}): {exc}") from exc
    return out
