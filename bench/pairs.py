"""Ratios of paired measurements (ours / base, each pair taken back to back) and how sure they are."""

import operator
import statistics

import scipy.stats


def median_pair_ratio(ours: list[float], base: list[float]) -> float:
    """The median of the per-pair ratios ours[i] / base[i], rounded to 3 decimals."""
    return round(statistics.median(map(operator.truediv, ours, base)), 3)


def pair_ratio_ci95(ours: list[float], base: list[float]) -> list[float] | None:
    """A distribution-free 95 % confidence interval for the median pair ratio: the order statistics x_(k) and
    x_(n+1-k), k the largest with P(Binomial(n, 1/2) <= k - 1) <= 2.5 %; None below 6 pairs (no such k)."""
    ratios = sorted(map(operator.truediv, ours, base))
    k = int(scipy.stats.binom.ppf(0.025, len(ratios), 0.5))
    if scipy.stats.binom.cdf(k - 1, len(ratios), 0.5) > 0.025:
        k -= 1
    return None if k < 1 else [round(ratios[k - 1], 3), round(ratios[len(ratios) - k], 3)]
