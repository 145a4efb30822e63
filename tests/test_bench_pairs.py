"""The benches' ratio statistics (bench/pairs.py) against scipy: the sign-test interval for a paired median, the
exact Mann-Whitney test for two independent samples; and the walk bench's reading of xax's JSON log lines."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

_SPEC = importlib.util.spec_from_file_location("pairs", Path(__file__).resolve().parents[1] / "bench" / "pairs.py")
pairs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pairs)


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 10, 17, 40, 41])
def test_pair_ratio_ci95_is_the_sign_test_interval(n: int) -> None:
    rng = np.random.default_rng(n)
    base = rng.uniform(50.0, 130.0, n)  # e.g. compile seconds of plain ksim
    ours = base * rng.lognormal(0.05, 0.1, n)
    ratios = ours / base
    oracle = scipy.stats.quantile_test(ratios, q=1.0, p=0.5).confidence_interval(0.95)
    got = pairs.pair_ratio_ci95(list(ours), list(base))
    if not np.isfinite([oracle.low, oracle.high]).all():  # too few pairs for a 95 % interval
        assert n < 6 and got is None
    else:
        assert got == [round(oracle.low, 3), round(oracle.high, 3)]
    assert pairs.median_pair_ratio(list(ours), list(base)) == round(float(np.median(ratios)), 3)


def test_pair_ratio_ci95_covers_the_true_median_at_least_95_percent() -> None:
    rng = np.random.default_rng(0)
    n, trials, covered = 12, 4000, 0
    for _ in range(trials):
        base = rng.uniform(1.0, 2.0, n)
        ours = base * rng.lognormal(0.0, 0.2, n)  # true median ratio exp(0) = 1
        low, high = pairs.pair_ratio_ci95(list(ours), list(base))
        covered += low <= 1.0 <= high
    exact = 1.0 - 2.0 * scipy.stats.binom.cdf(2, n, 0.5)  # k = 3 at n = 12: 0.961
    assert abs(covered / trials - exact) < 0.012
    assert covered / trials >= 0.945


@pytest.mark.parametrize(("n", "m"), [(6, 6), (8, 8), (5, 7), (10, 4), (3, 3)])
def test_two_sample_ratio_ci95_inverts_scipys_exact_mann_whitney_test(n: int, m: int) -> None:
    rng = np.random.default_rng(10 * n + m)
    base = rng.lognormal(0.0, 0.05, m) * 900.0  # e.g. ms per training step of independently compiled instances
    ours = rng.lognormal(0.03, 0.05, n) * 900.0
    estimate, ci = pairs.two_sample_ratio_ci95(list(ours), list(base))
    diffs = np.subtract.outer(np.log(ours), np.log(base))
    assert estimate == round(float(np.exp(np.median(diffs))), 3)
    if ci is None:  # no interval at 95 %: even the most extreme ordering is not rejected
        assert scipy.stats.mannwhitneyu(np.arange(n) + 1e3, np.arange(m), method="exact").pvalue > 0.05
        assert (n, m) == (3, 3)
        return
    low, high = np.log(ci)
    log_ours, log_base = np.log(ours), np.log(base)

    def p_value(shift: float) -> float:  # exact test of "ours / exp(shift) and base come from one distribution"
        return scipy.stats.mannwhitneyu(log_ours - shift, log_base, method="exact").pvalue

    gap = 2e-3  # the bounds are rounded to 3 decimals of the ratio
    assert p_value(low + gap) > 0.05 and p_value(high - gap) > 0.05  # inside: not rejected
    assert p_value(low - gap) <= 0.05 and p_value(high + gap) <= 0.05  # outside: rejected


def test_two_sample_ratio_ci95_covers_the_true_ratio_at_least_95_percent() -> None:
    rng = np.random.default_rng(1)
    trials, covered = 3000, 0
    for _ in range(trials):
        base = rng.lognormal(0.0, 0.03, 6)
        ours = rng.lognormal(0.0, 0.03, 6) * 1.02  # true ratio 1.02
        _, (low, high) = pairs.two_sample_ratio_ci95(list(ours), list(base))
        covered += low <= 1.02 <= high
    null = scipy.stats.mannwhitneyu(np.arange(6) + 1e3, np.arange(6), method="exact")  # smallest p at 6 / 6
    assert null.pvalue < 0.05  # so an interval exists
    assert abs(covered / trials - 0.959) < 0.015  # 1 - 2 P(U <= 5) = 1 - 2 · 19 / 924 for 6 and 6
    with pytest.raises(ValueError, match="positive"):
        pairs.two_sample_ratio_ci95([1.0, 0.0], [1.0])


def test_instance_offsets_recover_per_instance_factors_under_round_drift() -> None:
    rng = np.random.default_rng(3)
    factors = np.array([1.0, 1.03, 0.97, 1.01, 0.99])  # each compiled instance's own speed
    drift = rng.lognormal(0.0, 0.2, 9)  # the machine: every call of a round slowed alike
    times = np.outer(factors, drift) * 850.0
    offsets = np.array(pairs.instance_offsets(times.tolist()))
    np.testing.assert_allclose(offsets, factors / np.median(factors), rtol=1e-12)  # relative to the median instance
    noisy = times * rng.lognormal(0.0, 0.01, times.shape)
    np.testing.assert_allclose(pairs.instance_offsets(noisy.tolist()), offsets, rtol=0.02)
    with pytest.raises(ValueError, match="rounds"):
        pairs.instance_offsets([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="rounds"):
        pairs.instance_offsets([])


def test_walk_bench_reads_every_json_record_on_a_line_and_skips_the_rest() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from walk_throughput import json_records
    finally:
        sys.path.pop(0)
    text = "\n".join(
        [
            '{"state": {"num_steps": 2}}{"ping": {"message": "x"}}',  # two records, no newline between (seen in a run)
            '{"state": {"num_steps": 3}} {"status": {"message": "Step 1 time: 1m, 41s"}}',
            "\x1b[1;32mSTATUS\x1b[0m a coloured line",
            '{"state": {"num_steps": 4}}{"truncated": ',  # a cut record: the complete one before it is kept
            "[1, 2]",
        ]
    )
    assert json_records(text) == [
        {"state": {"num_steps": 2}},
        {"ping": {"message": "x"}},
        {"state": {"num_steps": 3}},
        {"status": {"message": "Step 1 time: 1m, 41s"}},
        {"state": {"num_steps": 4}},
    ]
