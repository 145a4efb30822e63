"""Wall time of every bridge metric on a 100 000-step x 45-channel sim/real pair, as a report calls it. Prints JSON.

    python bench/bridge_metrics.py [--steps N] [--repeat R] [--out bench/results/bridge_metrics.json]

Data (not timed): 45 AR(1) channels (correlation time ~10 steps) mixed by a random matrix, so channels correlate;
real = 1.1 * sim delayed by 3 steps + 0.1 + 0.2 * noise. Groups: joint_pos (20), joint_vel (20), imu_gyro (3),
imu_gravity_xy (2). Each metric is timed `--repeat` times; the median is reported, in seconds.

- `channel/*`: all 45 channels on the full samples (one vectorised call), except `mutual_information_ksg`: sim vs
  real of each channel (time-aligned), 45 calls on the same 1 000 random rows.
- `group/*`: each of the 4 groups. Full samples: w2_gaussian, mmd2_linear, gaussian_entropy, kl_gaussian,
  mutual_information_gaussian (sim group vs time-aligned real group). Bounded random subsamples per side (the
  compare_groups defaults): sliced_wasserstein 10 000 rows (128 projections), mmd2_unbiased and mmd_permutation_test
  500 rows (200 permutations), classifier_two_sample_test 5 000 rows; knn_entropy and kl_knn 1 000 rows (kNN search
  in 20-D is close to brute force, O(n^2)).
- `total_s` sums every metric's median wall time and `meets_target` judges it; `total_cpu_s` is the same sum in
  process CPU time, which other jobs on the machine do not inflate. The wrappers `compare_channels` and
  `compare_groups` (which share sorts) are reported under `wrappers`, not added to the total.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


# BLAS threads are fixed before NumPy loads (--blas-threads, default 1): on this shared 2-core VM, 2 OpenBLAS threads
# competing with other processes made small products (the C2ST Newton steps) 5-10x slower than one thread.
def _blas_threads(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--blas-threads="):
            return arg.split("=", 1)[1]
        if arg == "--blas-threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "1"


BLAS_THREADS = _blas_threads(sys.argv)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = BLAS_THREADS

import numpy as np  # noqa: E402 (after the BLAS environment)
import scipy  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emit import emit_json  # noqa: E402

from ksim_entropy.bridge import metrics as M  # noqa: E402

TARGET_S = 5.0
GROUP_SIZES = {"joint_pos": 20, "joint_vel": 20, "imu_gyro": 3, "imu_gravity_xy": 2}
SUBSAMPLE = {"sliced": 10_000, "mmd": 500, "c2st": 5_000, "knn": 1_000, "ksg": 1_000}


def make_data(steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    d, delay, pad = sum(GROUP_SIZES.values()), 3, 10
    mix = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    base = lfilter([1.0], [1.0, -0.9], rng.standard_normal((steps + pad, d)), axis=0) @ mix.T
    sim = base[pad:]
    real = 1.1 * base[pad - delay : pad - delay + steps] + 0.1 + 0.2 * rng.standard_normal((steps, d))
    names, groups = [], {}
    for group, size in GROUP_SIZES.items():
        groups[group] = [f"{group}_{i}" for i in range(size)]
        names += groups[group]
    return sim, real, names, groups


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and median process-CPU seconds of ``repeat`` calls (CPU time is immune to other processes)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def build_calls(
    sim: np.ndarray, real: np.ndarray, groups: dict[str, list[str]], names: list[str]
) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(1)

    def rows(x: np.ndarray, size: int) -> np.ndarray:
        return x[np.sort(rng.choice(len(x), min(size, len(x)), replace=False))]

    d = sim.shape[1]
    ksg_rows = np.sort(rng.choice(len(sim), min(SUBSAMPLE["ksg"], len(sim)), replace=False))
    calls: dict[str, Callable[[], object]] = {
        "channel/wasserstein_1d": lambda: M.wasserstein_1d(sim, real),
        "channel/ks_statistic": lambda: M.ks_statistic(sim, real),
        "channel/gaussian_entropy_sim_and_real": lambda: (
            M.gaussian_entropy(sim, per_channel=True),
            M.gaussian_entropy(real, per_channel=True),
        ),
        "channel/knn_entropy_sim_and_real": lambda: (
            M.knn_entropy(sim, per_channel=True),
            M.knn_entropy(real, per_channel=True),
        ),
        "channel/kl_gaussian": lambda: M.kl_gaussian(real, sim, per_channel=True),
        "channel/mmd2_linear": lambda: M.mmd2_linear(sim, real, per_channel=True),
        "channel/mean_abs_diff": lambda: M.mean_abs_diff(sim, real),
        "channel/rmse": lambda: M.rmse(sim, real),
        "channel/pearson_r": lambda: M.pearson_r(sim, real),
        "channel/r2_score": lambda: M.r2_score(sim, real),
        "channel/cross_correlation_lag": lambda: M.cross_correlation_lag(sim, real, max_lag=50, dt_s=0.02),
        "channel/mutual_information_ksg": lambda: [
            M.mutual_information_ksg(sim[ksg_rows, j], real[ksg_rows, j]) for j in range(d)
        ],
    }
    index = {name: j for j, name in enumerate(names)}
    per_group: dict[str, list[Callable[[], object]]] = {}
    for members in groups.values():
        cols = [index[c] for c in members]
        gs, gr = sim[:, cols], real[:, cols]
        sub = {key: (rows(gs, size), rows(gr, size)) for key, size in SUBSAMPLE.items() if key != "ksg"}
        for name, fn in {
            "w2_gaussian": lambda gs=gs, gr=gr: M.w2_gaussian(gs, gr),
            "sliced_wasserstein": lambda s=sub["sliced"]: M.sliced_wasserstein(*s),
            "mmd2_unbiased": lambda s=sub["mmd"]: M.mmd2_unbiased(*s),
            "mmd_permutation_test": lambda s=sub["mmd"]: M.mmd_permutation_test(*s),
            "mmd2_linear": lambda gs=gs, gr=gr: M.mmd2_linear(gs, gr),
            "classifier_two_sample_test": lambda s=sub["c2st"]: M.classifier_two_sample_test(*s),
            "gaussian_entropy_sim_and_real": lambda gs=gs, gr=gr: (M.gaussian_entropy(gs), M.gaussian_entropy(gr)),
            "kl_gaussian": lambda gs=gs, gr=gr: M.kl_gaussian(gr, gs),
            "knn_entropy_sim_and_real": lambda s=sub["knn"]: (M.knn_entropy(s[0]), M.knn_entropy(s[1])),
            "kl_knn": lambda s=sub["knn"]: M.kl_knn(s[1], s[0]),
            "mutual_information_gaussian": lambda gs=gs, gr=gr: M.mutual_information_gaussian(gs, gr),
        }.items():
            per_group.setdefault(f"group/{name}", []).append(fn)
    for name, fns in per_group.items():
        calls[name] = lambda fns=fns: [fn() for fn in fns]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--blas-threads", default="1", help="BLAS threads, set before NumPy loads")
    args = parser.parse_args()

    sim, real, names, groups = make_data(args.steps)
    load_before = os.getloadavg()[0]
    result: dict[str, object] = {}
    cpu_s: dict[str, float] = {}
    for name, fn in build_calls(sim, real, groups, names).items():
        wall, cpu_s[name] = timed(fn, args.repeat)
        result[name] = round(wall, 4)
    total = sum(v for v in result.values() if isinstance(v, float))
    total_cpu = sum(cpu_s.values())
    wrappers = {
        "compare_channels_s": round(timed(lambda: M.compare_channels(sim, real, names), args.repeat)[0], 4),
        "compare_groups_s": round(timed(lambda: M.compare_groups(sim, real, names, groups), args.repeat)[0], 4),
    }
    result |= {
        "total_s": round(total, 3),
        "total_cpu_s": round(total_cpu, 3),
        "target_s": TARGET_S,
        "meets_target": total <= TARGET_S,
        "wrappers": wrappers,
        "cpu_s": {name: round(v, 4) for name, v in cpu_s.items()},
        "data": {"steps": args.steps, "channels": sim.shape[1], "groups": GROUP_SIZES, "subsample_rows": SUBSAMPLE},
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "repeat": args.repeat,
            "blas_threads": BLAS_THREADS,
        },
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
