"""Ratios of paired measurements (ours / base, each pair taken back to back) or of two independent samples, and how
sure they are."""

import math
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


def _mann_whitney_null_counts(n: int, m: int) -> list[int]:
    """How many of the C(n + m, n) orderings of two untied samples give each Mann-Whitney U = 0 .. n·m (the
    Gaussian binomial coefficient's terms, counted by the recursion on which sample holds the largest value)."""
    table = {(0, j): [1] for j in range(m + 1)} | {(i, 0): [1] for i in range(n + 1)}
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            top_in_first = [0] * j + table[i - 1, j]  # the largest value is in the first sample: it beats all j
            top_in_second = table[i, j - 1] + [0] * i  # it beats none (U then runs to i·(j - 1), not i·j)
            table[i, j] = [a + b for a, b in zip(top_in_first, top_in_second, strict=True)]
    return table[n, m]


def two_sample_ratio_ci95(ours: list[float], base: list[float]) -> tuple[float, list[float] | None]:
    """The ratio between two independent samples of positive values (not pairs) and its 95 % confidence interval:
    the Hodges-Lehmann estimate, exp of the median of all log(ours[i]) - log(base[j]), and the interval of
    order statistics k and n·m + 1 - k of those differences that inverts the exact two-sided Mann-Whitney test
    (k the largest with P(U <= k - 1) <= 2.5 %). The interval is None when the samples are too small for one."""
    if min(len(ours), len(base)) < 1 or min(ours + base) <= 0.0:
        raise ValueError("two_sample_ratio_ci95 needs non-empty samples of positive values")
    diffs = sorted(math.log(a) - math.log(b) for a in ours for b in base)
    estimate = round(math.exp(statistics.median(diffs)), 3)
    counts = _mann_whitney_null_counts(len(ours), len(base))
    total, cumulative, k = sum(counts), 0, 0
    for u, count in enumerate(counts):  # k - 1 = the largest u with P(U <= u) <= 2.5 %
        cumulative += count
        if cumulative / total > 0.025:
            break
        k = u + 1
    if k < 1:
        return estimate, None
    return estimate, [round(math.exp(diffs[k - 1]), 3), round(math.exp(diffs[len(diffs) - k]), 3)]


def instance_offsets(times: list[list[float]]) -> list[float]:
    """Each instance's typical time relative to the others, from times[i][r] (instance i's call in round r, every
    instance called once per round): exp of the median over rounds of log times[i][r] minus the median over
    instances of log times[.][r], so a slow or fast round (the machine's drift) cancels out."""
    rounds = len(times[0]) if times else 0
    if rounds == 0 or any(len(row) != rounds for row in times):
        raise ValueError("instance_offsets needs the same number (≥ 1) of rounds for every instance")
    logs = [[math.log(t) for t in row] for row in times]
    typical = [statistics.median(row[r] for row in logs) for r in range(rounds)]
    return [math.exp(statistics.median(row[r] - typical[r] for r in range(rounds))) for row in logs]
