"""Building blocks of :mod:`ksim_entropy.bridge.metrics`.

Input validation, Gaussian fits, sorted 1-D kernels, RBF kernel sums, lagged correlation, logistic regression.
Private: the public surface is ``metrics.__all__``. NumPy/SciPy only.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import fft, stats
from scipy.spatial.distance import pdist
from scipy.special import digamma, expit

__all__ = [
    "MetricInputError",
    "NanPolicy",
    "check_samples",
    "covariance",
    "dequantize",
    "finite",
    "fit_logistic",
    "kernel_bandwidth",
    "kl_gaussian_1d",
    "knn_entropy_sorted",
    "knn_radius_sorted",
    "ks_test_sorted",
    "lagged_pearson",
    "logdet_pd",
    "median_bandwidth",
    "mmd2_linear_pairs",
    "positive",
    "rbf_sum",
    "sorted_columns",
    "sqrtm_psd",
    "standardise",
    "subsample",
    "wp_pow_sorted",
]

NanPolicy = Literal["raise", "omit"]

# Pooled points used by the median heuristic: 44 850 pairwise distances, a few % relative error on σ.
MEDIAN_MAX_POINTS = 300
# Largest accepted |value|: squares and sums of squares of up to ~1e8 samples stay finite in float64.
MAX_ABS_VALUE = 1e150
# A correlation-matrix eigenvalue below this marks a covariance as singular (channels linearly dependent).
SINGULAR_EIGENVALUE = 1e-10
# Effective KS sample size up to which the finite-n kstwo law gives the p-value; above it kstwo.sf costs up to
# 30-50 ms a value, and the conservative Kolmogorov limit is within +4 % (p >= 1e-4), shrinking like 1/sqrt(e).
KS_EXACT_MAX_N = 2_000


class MetricInputError(ValueError):
    """Samples or parameters for which the requested metric is undefined; the message names the argument and problem."""


def _channel(j: int, channel_names: Sequence[str] | None) -> str:
    return f"channel {j} ({channel_names[j]!r})" if channel_names is not None else f"channel {j}"


def _channels(cols: np.ndarray, channel_names: Sequence[str] | None) -> str:
    shown = ", ".join(_channel(int(j), channel_names) for j in cols[:5])
    return shown + (f" and {cols.size - 5} more" if cols.size > 5 else "")


def check_samples(
    what: str,
    arrays: dict[str, ArrayLike],
    *,
    nan_policy: NanPolicy = "raise",
    min_samples: int = 2,
    paired: bool = False,
    same_dim: bool = True,
    nonconstant: bool | tuple[str, ...] = False,
    channel_names: Sequence[str] | None = None,
) -> tuple[list[np.ndarray], bool]:
    """Validate named sample arrays and return them as float64 ``(n, d)`` arrays plus "all inputs were 1-D".

    The single validation point of the bridge metrics. Raises :class:`MetricInputError` naming ``what`` (the metric),
    the argument and, where relevant, the channel, for: a non-numeric array, a rank other than 1 or 2, an empty array,
    unequal channel counts (``same_dim``), unequal lengths (``paired``), ±Inf or a magnitude above 1e150 (always),
    NaN (``nan_policy="raise"``; ``"omit"`` drops every row holding a NaN, jointly across ``paired`` arrays), fewer
    than ``min_samples`` rows, and a zero-variance channel (``nonconstant``: every array, or only those named).
    """
    if nan_policy not in ("raise", "omit"):
        raise MetricInputError(f"{what}: nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    out: dict[str, np.ndarray] = {}
    has_nan: set[str] = set()
    spans: dict[str, np.ndarray] = {}  # per-channel max - min, one pass with the finiteness check
    for name, raw in arrays.items():
        try:
            a = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MetricInputError(f"{what}: {name} is not a numeric array ({exc})") from exc
        if a.ndim not in (1, 2):
            raise MetricInputError(f"{what}: {name} must be 1-D (n,) or 2-D (n, d); got shape {a.shape}")
        a = a.reshape(-1, 1) if a.ndim == 1 else a
        if a.size == 0:
            raise MetricInputError(f"{what}: {name} is empty (shape {np.shape(raw)})")
        if channel_names is not None and len(channel_names) != a.shape[1]:
            raise MetricInputError(f"{what}: {len(channel_names)} channel names given but {name} has {a.shape[1]}")
        col_max, col_min = a.max(axis=0), a.min(axis=0)
        peak = max(col_max.max(), -col_min.min())
        spans[name] = col_max - col_min
        if not np.isfinite(peak):
            if np.isinf(a).any():
                cols = np.flatnonzero(np.isinf(a).any(axis=0))
                raise MetricInputError(
                    f"{what}: {name} contains ±Inf in {_channels(cols, channel_names)}; Inf is never dropped"
                )
            if nan_policy == "raise":
                cols = np.flatnonzero(np.isnan(a).any(axis=0))
                raise MetricInputError(
                    f"{what}: {name} contains NaN in {_channels(cols, channel_names)}; "
                    "pass nan_policy='omit' to drop rows holding a NaN"
                )
            has_nan.add(name)
            peak = np.nanmax(np.abs(a), initial=0.0)
        if peak > MAX_ABS_VALUE:
            raise MetricInputError(
                f"{what}: {name} has values up to {peak:.3g}; beyond ±{MAX_ABS_VALUE:.0e} second moments overflow "
                "float64, rescale the channel"
            )
        out[name] = a
    was_1d = all(np.ndim(raw) == 1 for raw in arrays.values())
    first, *rest = out
    for name in rest:
        if same_dim and out[name].shape[1] != out[first].shape[1]:
            raise MetricInputError(
                f"{what}: {first} has {out[first].shape[1]} channels but {name} has {out[name].shape[1]} "
                f"(shapes {out[first].shape} and {out[name].shape})"
            )
        if paired and out[name].shape[0] != out[first].shape[0]:
            raise MetricInputError(
                f"{what}: time-aligned inputs need equal lengths; {first} has {out[first].shape[0]} rows "
                f"but {name} has {out[name].shape[0]}"
            )
    dropped = dict.fromkeys(out, 0)
    if has_nan:
        if paired:
            keep = ~np.logical_or.reduce([np.isnan(a).any(axis=1) for a in out.values()])
            dropped = {name: int((~keep).sum()) for name in out}
            out = {name: a[keep] for name, a in out.items()}
        else:
            keeps = {name: ~np.isnan(a).any(axis=1) for name, a in out.items()}
            dropped = {name: int((~keep).sum()) for name, keep in keeps.items()}
            out = {name: a[keeps[name]] for name, a in out.items()}
    for name, a in out.items():
        if a.shape[0] < min_samples:
            after = f" after dropping {dropped[name]} NaN row(s)" if dropped[name] else ""
            raise MetricInputError(f"{what}: {name} has {a.shape[0]} sample(s){after}; needs at least {min_samples}")
        if nonconstant is True or (nonconstant and name in nonconstant):
            flat = np.flatnonzero((np.ptp(a, axis=0) if name in has_nan else spans[name]) == 0)
            if flat.size:
                raise MetricInputError(
                    f"{what}: {name} {_channels(flat, channel_names)} is constant; "
                    "the metric is undefined for a zero-variance channel"
                )
    return list(out.values()), was_1d


def finite(what: str, value: np.ndarray | float) -> np.ndarray | float:
    """Return ``value`` unchanged, or raise when rounding/overflow made it non-finite (never return NaN)."""
    if not np.all(np.isfinite(value)):
        raise MetricInputError(
            f"{what}: result is not finite ({value}); the samples are numerically degenerate "
            "(values too large, or too close together for float64)"
        )
    return value


def positive(what: str, name: str, value: float, *, integer: bool = False, minimum: float = 0.0) -> None:
    """Raise unless ``value`` is a finite number (an int if ``integer``) strictly above ``minimum``."""
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type or not np.isfinite(value) or value <= minimum:
        kind = "an integer" if integer else "a finite number"
        raise MetricInputError(f"{what}: {name} must be {kind} > {minimum}; got {value!r}")


def covariance(x: np.ndarray) -> np.ndarray:
    """Unbiased (ddof=1) sample covariance ``(d, d)`` of ``x`` (n, d)."""
    centred = x - x.mean(axis=0)
    return centred.T @ centred / (x.shape[0] - 1)


def logdet_pd(what: str, name: str, cov: np.ndarray, n: int) -> float:
    """``log det Σ`` of a covariance estimated from ``n`` samples; raise if ``Σ`` is singular.

    ``log det Σ = Σ_j log σ_j² + log det R`` with ``R`` the correlation matrix, so channels on very different scales
    do not trip the singularity test (smallest eigenvalue of ``R`` ≤ 1e-10).
    """
    var = np.diag(cov)
    zero = np.flatnonzero(~(var > 0))
    if zero.size:
        raise MetricInputError(f"{what}: {name} {_channels(zero, None)} has zero variance")
    std = np.sqrt(var)
    eig, vec = np.linalg.eigh(cov / np.outer(std, std))
    if eig[0] <= SINGULAR_EIGENVALUE:
        worst = np.argsort(-np.abs(vec[:, 0]))[:2]
        raise MetricInputError(
            f"{what}: covariance of {name} is singular (smallest correlation eigenvalue {eig[0]:.2e}, "
            f"n={n}, d={cov.shape[0]}); linearly dependent channels, mostly {_channels(worst, None)}"
        )
    return float(np.sum(np.log(var)) + np.sum(np.log(eig)))


def sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix from its eigendecomposition (negative rounding eigenvalues → 0)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def kl_gaussian_1d(m_p: np.ndarray, v_p: np.ndarray, m_q: np.ndarray, v_q: np.ndarray) -> np.ndarray:
    """``KL(N(m_p, v_p) ‖ N(m_q, v_q)) = ½ [log(v_q/v_p) + (v_p + (m_p-m_q)²)/v_q - 1]``, elementwise, clipped at 0."""
    return np.maximum(0.5 * (np.log(v_q / v_p) + (v_p + (m_p - m_q) ** 2) / v_q - 1.0), 0.0)


def dequantize(arrays: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Break exact ties for kNN estimators by dequantisation (returns the inputs unchanged when there are none).

    A channel whose pooled values repeat is treated as quantised with step ``δ_j`` = its smallest positive gap, and
    ``U(-δ_j/2, δ_j/2)`` noise is added to it (same seed ⇒ same result). The dequantised density is the binned
    original, so kNN entropies approach ``h(X)`` as ``δ → 0``, and purely discrete levels give ``H(Q) + Σ log δ_j``.
    Without this a point with ≥ k duplicates has a zero kNN distance and ``log 0 = -∞``.
    """
    s = np.sort(np.concatenate(arrays, axis=0), axis=0)
    gaps = np.diff(s, axis=0)
    tied = (gaps == 0).any(axis=0)
    if not tied.any():
        return arrays
    step = np.where(gaps > 0, gaps, np.inf).min(axis=0)
    delta = np.where(tied & np.isfinite(step), step, 0.0)
    rng = np.random.default_rng(seed)
    return [a + delta * rng.uniform(-0.5, 0.5, size=a.shape) for a in arrays]


def knn_radius_sorted(s: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point, per row of ``s`` (d, n) sorted along axis 1.

    In 1-D the k nearest neighbours of ``s[i]`` lie in ``s[i-k..i+k]``; with ``L_a = s[i] - s[i-a]`` and
    ``R_b = s[i+b] - s[i]`` both increasing, the k-th smallest of their union is ``min_{a+b=k} max(L_a, R_b)``.
    O(k·n) after the sort, identical to a KD-tree query.
    """
    d, n = s.shape
    ahead = []  # ahead[j-1][:, i] = s[i+j] - s[i] = R_j(i) = L_j(i+j); +inf past the end
    for j in range(1, k + 1):
        step = np.empty((d, n))
        np.subtract(s[:, j:], s[:, : n - j], out=step[:, : n - j])
        step[:, n - j :] = np.inf
        ahead.append(step)
    best = ahead[k - 1].copy()  # a = 0: all k neighbours on the right
    tmp = np.empty((d, n))
    for a in range(1, k + 1):
        cand = ahead[a - 1][:, : n - a]  # L_a at points i >= a (points i < a have L_a = inf)
        if a < k:
            cand = np.maximum(cand, ahead[k - a - 1][:, a:], out=tmp[:, : n - a])
        np.minimum(best[:, a:], cand, out=best[:, a:])
    return best


def sorted_columns(x: np.ndarray) -> np.ndarray:
    """``(d, n)`` C-contiguous array of each channel's sorted samples (always a copy: the caller's data stays as is)."""
    s = np.array(x.T, order="C", copy=True)
    s.sort(axis=1)
    return s


def knn_entropy_sorted(s: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Kozachenko–Leonenko entropy (nats) per row of ``s`` (d, n), each row sorted; 1-D unit ball volume ``V_1 = 2``."""
    tied = (s[:, 1:] == s[:, :-1]).any(axis=1)
    if tied.any():
        s = s.copy()
        s[tied] = np.sort(dequantize([s[tied].T], seed)[0].T, axis=1)
    r = knn_radius_sorted(s, k)
    return digamma(s.shape[1]) - digamma(k) + np.log(2.0) + np.log(r).mean(axis=1)


def wp_pow_sorted(xs: np.ndarray, ys: np.ndarray, p: float) -> np.ndarray:
    """``W_p^p`` per row between sorted samples ``xs`` (c, n) and ``ys`` (c, m), exact via quantile functions.

    ``W_p^p = ∫_0^1 |F^{-1}(u) - G^{-1}(u)|^p du``; both quantile functions are constant between consecutive points of
    ``{i/n} ∪ {j/m}``, handled in integer units of ``1/(n·m)`` so equal breakpoints merge exactly.
    """
    n, m = xs.shape[1], ys.shape[1]
    if n == m:
        return np.mean(np.abs(xs - ys) ** p, axis=1)
    ticks = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    weights = np.diff(ticks, prepend=0) / (n * m)
    ix = (ticks + m - 1) // m - 1
    iy = (ticks + n - 1) // n - 1
    return np.abs(xs[:, ix] - ys[:, iy]) ** p @ weights


def ks_test_sorted(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic ``max_t |F_x(t) - F_y(t)|`` and p-value per row of sorted ``xs`` (c, n), ``ys`` (c, m).

    One stable merge of the two sorted runs per row; the count difference ``m·#{x≤t} - n·#{y≤t}`` (exact integers in
    float64) is read only at the last copy of each pooled value, so ties within and across samples are exact. p-value:
    ``kstwo.sf(D, e)``, ``e = round(nm/(n+m))``, up to ``e = 2 000``, then the limit ``kstwobign.sf(√e·D)``.
    """
    n, m = xs.shape[1], ys.shape[1]
    pooled = np.concatenate([xs, ys], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")  # timsort: a linear merge of two sorted runs
    diff = np.cumsum(order < n, axis=1, dtype=np.int32).astype(np.float64)  # #x <= t; #y <= t = rank - #x
    diff *= n + m
    diff -= n * np.arange(1.0, n + m + 1.0)
    np.abs(diff, out=diff)
    values = np.take_along_axis(pooled, order, axis=1)
    diff[:, :-1] *= values[:, 1:] != values[:, :-1]
    stat = diff.max(axis=1) / (n * m)
    e = np.round(n * m / (n + m))
    return stat, stats.kstwo.sf(stat, e) if e <= KS_EXACT_MAX_N else stats.kstwobign.sf(np.sqrt(e) * stat)


def median_bandwidth(what: str, pooled: np.ndarray, *, per_channel: bool = False) -> np.ndarray:
    """Median heuristic ``σ = median_{i<j} ‖z_i - z_j‖`` over the pooled sample (Gretton et al. 2012, §8).

    Uses at most 300 evenly spaced pooled points (deterministic). Returns ``(1,)``, or ``(d,)`` with
    ``per_channel`` (one 1-D median per channel); raises when a median is 0.
    """
    if pooled.shape[0] > MEDIAN_MAX_POINTS:
        pooled = pooled[np.linspace(0, pooled.shape[0] - 1, MEDIAN_MAX_POINTS).astype(np.int64)]
    if per_channel:
        i, j = np.triu_indices(pooled.shape[0], 1)
        sigma = np.median(np.abs(pooled[i] - pooled[j]), axis=0)
    else:
        sigma = np.array([np.median(pdist(pooled))])
    bad = np.flatnonzero(~(sigma > 0))
    if bad.size:
        where = f" for {_channels(bad, None)}" if per_channel else ""
        raise MetricInputError(
            f"{what}: median-heuristic bandwidth is 0{where} (over half the pooled pairs coincide); "
            "pass a float bandwidth"
        )
    return sigma


def kernel_bandwidth(
    what: str, value: str | float, x: np.ndarray, y: np.ndarray, *, per_channel: bool = False
) -> np.ndarray:
    """Kernel bandwidth σ from ``"median"`` (:func:`median_bandwidth` of the pooled sample) or a positive float.

    Shape ``(1,)``, or ``(d,)`` with ``per_channel``.
    """
    if isinstance(value, str):
        if value != "median":
            raise MetricInputError(f"{what}: bandwidth must be 'median' or a positive float; got {value!r}")
        return median_bandwidth(what, np.concatenate([x, y], axis=0), per_channel=per_channel)
    positive(what, "bandwidth", value)
    return np.full(x.shape[1] if per_channel else 1, float(value))


def rbf_sum(a: np.ndarray, b: np.ndarray, sigma: float, *, block: int = 2048) -> float:
    """``Σ_ij exp(-‖a_i - b_j‖² / (2σ²))`` computed in row blocks (memory O(block·m))."""
    gamma = 0.5 / sigma**2
    b_sq = np.einsum("ij,ij->i", b, b)
    total = 0.0
    for start in range(0, a.shape[0], block):
        ab = a[start : start + block]
        sq = np.einsum("ij,ij->i", ab, ab)[:, None] + b_sq[None, :] - 2.0 * ab @ b.T
        total += float(np.exp(-gamma * np.maximum(sq, 0.0)).sum())
    return total


def mmd2_linear_pairs(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, per_channel: bool) -> np.ndarray:
    """Linear-time MMD² over pairs ``(i, i+h)``, ``h = ⌊min(n,m)/2⌋``; ``(1,)``, or ``(d,)`` 1-D values per channel."""
    h = min(x.shape[0], y.shape[0]) // 2
    x1, x2, y1, y2 = x[:h], x[h : 2 * h], y[:h], y[h : 2 * h]
    scale = -0.5 / sigma**2

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = (a - b) ** 2
        return np.exp(scale * (sq if per_channel else sq.sum(axis=1, keepdims=True)))

    return np.mean(k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1), axis=0)


def lagged_pearson(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``a[t]`` and ``b[t+τ]`` over their overlap for τ in [-max_lag, max_lag].

    ``a``, ``b``: (n, d). Returns ``lags`` (2L+1,) and ``r`` (d, 2L+1), ``-inf`` where a segment is (numerically)
    constant. Cross sums ``Σ_t a_t b_{t+τ}`` come from one zero-padded FFT (no wrap-around: nfft ≥ n + L); segment
    sums are the totals minus the |τ| samples cut from one end, so the cost is O(d·n log n + d·L).
    """
    n, d = a.shape
    a = np.ascontiguousarray((a - a.mean(axis=0)).T)  # (d, n): FFTs along contiguous rows
    b = np.ascontiguousarray((b - b.mean(axis=0)).T)
    nfft = fft.next_fast_len(n + max_lag, real=True)
    cross = fft.irfft(np.conj(fft.rfft(a, nfft, axis=1)) * fft.rfft(b, nfft, axis=1), nfft, axis=1)
    lags = np.arange(-max_lag, max_lag + 1)
    cut, ahead = np.abs(lags), lags >= 0
    count = n - cut

    def overlap_sum(c: np.ndarray, cut_tail: np.ndarray) -> np.ndarray:
        head = np.concatenate([np.zeros((d, 1)), np.cumsum(c[:, :max_lag], axis=1)], axis=1)
        tail = np.concatenate([np.zeros((d, 1)), np.cumsum(c[:, ::-1][:, :max_lag], axis=1)], axis=1)
        return c.sum(axis=1, keepdims=True) - np.where(cut_tail, tail[:, cut], head[:, cut])

    s_a, s_aa = overlap_sum(a, ahead), overlap_sum(a**2, ahead)  # τ >= 0 keeps a[0 : n-τ] ...
    s_b, s_bb = overlap_sum(b, ~ahead), overlap_sum(b**2, ~ahead)  # ... and b[τ : n]
    var_a, var_b = s_aa - s_a**2 / count, s_bb - s_b**2 / count
    ok = (var_a > 1e-12 * count * a.var(axis=1, keepdims=True)) & (var_b > 1e-12 * count * b.var(axis=1, keepdims=True))
    cov = cross[:, lags % nfft] - s_a * s_b / count
    return lags, np.where(ok, cov / np.sqrt(np.where(ok, var_a * var_b, 1.0)), -np.inf)


def standardise(f: np.ndarray) -> np.ndarray:
    """Columns scaled to mean 0 and sd 1; a column with a single value becomes exactly 0 (carries no information)."""
    varies = np.ptp(f, axis=0) > 0
    out = (f - f.mean(axis=0)) / np.where(varies, f.std(axis=0), 1.0)
    out[:, ~varies] = 0.0
    return out


def subsample(x: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_samples`` rows of ``x``, drawn without replacement, in their original order."""
    return x if x.shape[0] <= max_samples else x[np.sort(rng.choice(x.shape[0], max_samples, replace=False))]


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """L2-regularised logistic regression by damped Newton (IRLS); returns ``[w, b]`` (intercept last, unpenalised).

    Minimises ``Σ_i log(1 + exp(f_i)) - t_i f_i + (l2/2)‖w‖²`` with ``f = Xw + b``: the objective of scikit-learn's
    ``LogisticRegression(C=1/l2)``. Strictly convex, so Newton with backtracking converges in ~10 steps.
    """
    x = np.hstack([features, np.ones((features.shape[0], 1))])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0

    def objective(w: np.ndarray) -> float:
        f = x @ w
        return float(np.sum(np.logaddexp(0.0, f) - labels * f) + 0.5 * np.sum(penalty * w**2))

    w = np.zeros(x.shape[1])
    current = objective(w)
    for _ in range(100):
        prob = expit(x @ w)
        grad = x.T @ (prob - labels) + penalty * w
        hess = (x.T * (prob * (1.0 - prob))) @ x + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while (trial := objective(w - scale * step)) > current and scale > 1e-8:
            scale *= 0.5
        if trial > current:  # no descent left: optimum reached up to rounding
            break
        w, current = w - scale * step, trial
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return w
