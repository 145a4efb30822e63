"""The benches' ratio statistics (bench/pairs.py) against scipy's sign-test interval for a paired median, and the
walk bench's reading of xax's JSON log lines."""

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
