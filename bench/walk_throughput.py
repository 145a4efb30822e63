"""Throughput, compile time and peak memory of `python -m tasks.walk` at a fixed small config. Prints JSON.

    python bench/walk_throughput.py [--steps N] [--cold] [--out FILE] [key=value ...]

- env_steps_per_s: control steps of all environments per wall-second, after the first (compiling) update, from the
  `num_samples` / `elapsed_time_s` counters xax logs each update (the run's `metrics.jsonl`);
- median_interval_steps_per_s: the median over the intervals between consecutive logged updates of each interval's
  env-steps/s, which a short stall of the machine (another tenant) moves less than the mean;
- compile_s: wall time of the first update (XLA compilation of rollout + update, first validation render);
- xla_compile_s: the XLA backend compile time alone, summed over every jitted function (JAX's own
  "Finished XLA compilation" timings, `JAX_LOG_COMPILES=1`): no tracing, no first step, no render;
- peak_rss_mb: peak resident memory of the training process (getrusage of the child).
`--cold` disables JAX's persistent compilation cache so compile_s is a cold compile. Extra `key=value` arguments
override the benchmark config (e.g. `preset=gpu num_envs=4096` on a GPU machine).
"""

import argparse
import itertools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from emit import emit_json
from pairs import median_pair_ratio, pair_ratio_ci95

from ksim_entropy.progress import METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]

BENCH_CONFIG = [
    "preset=cpu",
    "num_envs=32",
    "batch_size=16",
    "num_passes=2",
    "rollout_length_frames=32",
    "hidden_size=64",
    "depth=1",
    "render_length_seconds=0.2",
    "render_width=64",
    "render_height=48",
    "export_kinfer=false",
]


XLA_COMPILE_LOG = re.compile(r"Finished XLA compilation of \S+ in ([0-9.]+) sec")


def parse_duration_s(text: str) -> float:
    """xax's short timedelta ('1m, 34s', '12s', '0s', '1h, 2m, 3s') in seconds."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(v) * units[u] for v, u in re.findall(r"(\d+(?:\.\d+)?)([dhms])", text))


def json_records(text: str) -> list[dict]:
    """Every JSON object on the lines of `text` that start with "{", several per line included (xax's logging thread
    can write a record before the last one's newline); stops at a line's first part that is not JSON."""
    decoder, records = json.JSONDecoder(), []
    for line in text.splitlines():
        pos = 0
        while pos < len(line) and line[pos] == "{":
            try:
                record, pos = decoder.raw_decode(line, pos)
            except json.JSONDecodeError:
                break
            if isinstance(record, dict):
                records.append(record)
            while pos < len(line) and line[pos].isspace():
                pos += 1
    return records


def run(steps: int, cold: bool, overrides: list[str], base: list[str] = BENCH_CONFIG) -> dict:
    """One `tasks.walk` run of `steps` updates with `base`, then `overrides`; its throughput, compile time, memory."""
    with tempfile.TemporaryDirectory(prefix="walk-bench-") as tmp:
        args = [*base, f"max_steps={steps}", f"exp_dir={tmp}/run", *overrides]
        if cold:
            args.append("compile.cache_dir=null")
        cmd = [sys.executable, "-m", "tasks.walk", *args]
        start = time.perf_counter()
        env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_LOG_COMPILES="1")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
        wall_s = time.perf_counter() - start
        metrics = Path(tmp) / "run" / METRICS_FILE
        records = json_records(metrics.read_text()) if metrics.is_file() else []
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"training failed with exit code {proc.returncode}")

    samples: list[tuple[int, int, float]] = []
    compile_s = None
    for record in records:
        if "state" in record and "elapsed_time_s" in record["state"]:
            s = record["state"]
            samples.append((int(s["num_steps"]), int(s["num_samples"]), float(s["elapsed_time_s"])))
        message = record.get("status", {}).get("message", "")
        if message.startswith("Step 1 time:"):
            compile_s = parse_duration_s(message.split(":", 1)[1])
    # stderr only: xax echoes each log record once more on stdout (a coloured line).
    xla_compile_s = sum(float(t) for t in XLA_COMPILE_LOG.findall(proc.stderr))
    # one line per update after the compiling one (a record may be printed more than once)
    steady = sorted({s[0]: s for s in samples if s[0] >= 2 and s[2] > 0}.values())
    interval_rates = [(b[1] - a[1]) / (b[2] - a[2]) for a, b in itertools.pairwise(steady) if b[2] > a[2]]
    if not interval_rates:
        raise SystemExit(
            f"not enough updates logged to measure throughput ({len(samples)} state lines from {steps} updates; "
            "xax logs state at intervals, so run more updates, e.g. --steps 8)"
        )
    (_, n0, t0), (_, n1, t1) = steady[0], steady[-1]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "benchmark": "tasks.walk throughput",
        "config": [a for a in args if not a.startswith("exp_dir=")],
        "updates": steps,
        "env_steps_per_s": round((n1 - n0) / (t1 - t0), 1),
        "median_interval_steps_per_s": round(statistics.median(interval_rates), 1),
        "measured_updates": steady[-1][0] - steady[0][0],
        "compile_s": compile_s,
        "xla_compile_s": round(xla_compile_s, 1),
        "cold_compile": cold,
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
        "wall_s": round(wall_s, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def _alternate(
    label: str,
    repeats: int,
    steps: int,
    variants: dict[str, list[str]],
    cold: bool,
    extra: Callable[[str], list[str]],
) -> dict[str, list[dict]]:
    """`repeats` rounds of one run per variant; pairs in alternating order (A B, B A, ...) so that a run's place in
    a pair costs both variants alike. `extra(name)` adds `key=value` args per variant."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for i in range(repeats):
        for name in list(variants) if i % 2 == 0 else list(variants)[::-1]:
            print(f"[{label} {i + 1}/{repeats}] {name} ...", file=sys.stderr, flush=True)
            result = run(steps, cold=cold, overrides=[*variants[name], *extra(name)])
            runs[name].append(result)
            print(
                f"    {result['env_steps_per_s']} env-steps/s "
                f"(median interval {result['median_interval_steps_per_s']}), "
                f"compile {result['compile_s']} s (XLA {result['xla_compile_s']} s)",
                file=sys.stderr,
            )
    return runs


def compare(
    steps: int,
    repeats: int,
    variants: dict[str, list[str]],
    overrides: list[str],
    warm_steps: int = 0,
    warm_repeats: int = 0,
) -> dict:
    """Alternating cold runs of two variants (extra `key=value` args each), and ratios second / first.

    The judged ratios compare each variant's best run (highest median-interval throughput, shortest first update):
    on a shared machine, noise only ever adds time, and the best of several runs is the closest to the code's own
    cost (the reasoning behind `timeit`'s minimum). The ratio of medians and the median of the per-pair ratios
    (each pair ran back to back, with its distribution-free 95 % interval from 6 pairs up) are reported beside them.

    With `warm_repeats`, that many further alternating pairs of `warm_steps`-update runs measure throughput only,
    each variant with its own JAX persistent compilation cache (a temporary directory, filled by its first warm run),
    so that a pair costs seconds of compiling instead of minutes and more pairs fit in the same time; the judged
    throughput ratio is then theirs (the cold runs' stays under `ratio_estimators`).
    """
    runs = _alternate("cold", repeats, steps, variants, True, lambda name: overrides)
    warm: dict[str, list[dict]] = {}
    if warm_repeats:
        with tempfile.TemporaryDirectory(prefix="walk-bench-cache-") as cache:
            warm = _alternate(
                "warm",
                warm_repeats,
                warm_steps,
                variants,
                False,
                lambda name: [*overrides, f"compile.cache_dir={cache}/{name}"],
            )
    base, ours = list(variants)

    def ratios(key: str, best: Callable[[list[float]], float], runs: dict[str, list[dict]] = runs) -> dict[str, float]:
        a, b = [r[key] for r in runs[base]], [r[key] for r in runs[ours]]
        return {
            "best_run": round(best(b) / best(a), 3),
            "median_of_runs": round(statistics.median(b) / statistics.median(a), 3),
            "median_of_pairs": median_pair_ratio(b, a),
            "median_of_pairs_ci95": pair_ratio_ci95(b, a),  # None below 6 pairs
        }

    keys = ["env_steps_per_s", "median_interval_steps_per_s", "compile_s", "xla_compile_s"]
    # judged on the warm runs when there are any: more pairs, each of more updates
    throughput = ratios("median_interval_steps_per_s", max, warm or runs)
    cold_throughput = throughput if not warm else ratios("median_interval_steps_per_s", max)
    compile_time = ratios("compile_s", min)
    return {
        "variants": variants,
        "config": [a for a in runs[base][0]["config"] if a not in variants[base]],
        "updates_per_run": steps,
        "repeats": repeats,
        **{name: {key: [r[key] for r in runs[name]] for key in keys} for name in variants},
        "throughput_ratio": throughput["best_run"],
        "throughput_ratio_from": "warm runs" if warm else "cold runs",
        "compile_ratio": compile_time["best_run"],
        "ratio_estimators": {
            "throughput (median interval)": cold_throughput,
            "throughput (whole run)": ratios("env_steps_per_s", max),
            "compile (first update)": compile_time,
            # None when a run logged no XLA compile (a JAX that words the log line differently)
            "compile (XLA only)": (
                ratios("xla_compile_s", min) if all(r["xla_compile_s"] > 0 for r in runs[base]) else None
            ),
        },
        **(
            {
                "warm": {
                    "updates_per_run": warm_steps,
                    "repeats": warm_repeats,
                    **{name: {key: [r[key] for r in warm[name]] for key in keys[:2]} for name in variants},
                    "throughput (median interval)": throughput,
                    "throughput (whole run)": ratios("env_steps_per_s", max, warm),
                }
            }
            if warm
            else {}
        ),
        "machine": runs[base][0]["machine"],
    }


OVERHEAD_TARGETS = {"throughput_ratio_min": 0.97, "compile_ratio_max": 1.1}


def overhead_main(description: str, benchmark: str, variants: dict[str, list[str]]) -> None:
    """Command line of an A/B overhead bench: alternating runs of `variants`, JSON against `OVERHEAD_TARGETS`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="PPO updates per run (the first one compiles)")
    parser.add_argument("--repeats", type=int, default=2, help="cold runs of each variant, alternating")
    parser.add_argument(
        "--warm-repeats", type=int, default=0, help="then this many throughput runs of each variant, compile cached"
    )
    parser.add_argument("--warm-steps", type=int, default=40, help="PPO updates per warm run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()
    if args.steps < 3 or args.repeats < 1 or args.warm_repeats < 0 or (args.warm_repeats and args.warm_steps < 3):
        parser.error("need --steps >= 3, --repeats >= 1, --warm-repeats >= 0 and --warm-steps >= 3")
    result = compare(args.steps, args.repeats, variants, overrides, args.warm_steps, args.warm_repeats)
    targets = OVERHEAD_TARGETS
    summary = {
        "benchmark": benchmark,
        **result,
        "targets": targets,
        "meets_targets": result["throughput_ratio"] >= targets["throughput_ratio_min"]
        and result["compile_ratio"] <= targets["compile_ratio_max"],
    }
    emit_json(summary, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="PPO updates to run (the first one compiles)")
    parser.add_argument("--cold", action="store_true", help="disable JAX's persistent compilation cache")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()
    emit_json(run(args.steps, args.cold, overrides), args.out)


if __name__ == "__main__":
    main()
