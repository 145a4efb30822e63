"""Throughput of `python -m tasks.walk` on 1 device against N (`devices=N`, the same environments). Prints JSON.

    python bench/data_parallel.py [--devices 1,2] [--steps 20] [--out FILE] [key=value ...]

Each count is one `walk_throughput.run` (a fresh `tasks.walk` process, `--steps` updates, its config then the
trailing `key=value`s, e.g. `preset=gpu num_envs=4096` on a GPU machine) with `devices=<count>`. On a CPU-only
machine every run gets `XLA_FLAGS=--xla_force_host_platform_device_count=<largest count>`, so all of them compile
against the same host devices; two host devices on two cores share the same cores, so expect no speed-up there:
the bench is for machines with several GPUs. Reported per count: env-steps/s (after the compiling update), the
median interval rate, compile time and peak memory; and each count's throughput over one device's.
"""

import argparse
import os
import platform
from pathlib import Path

from emit import emit_json
from walk_throughput import run

CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2", help="comma-separated device counts (the first is the baseline)")
    parser.add_argument("--steps", type=int, default=20, help="PPO updates per run (the first one compiles)")
    parser.add_argument("--cpu", action="store_true", help="force host devices even if a GPU is visible")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()
    try:
        counts = [int(c) for c in args.devices.split(",")]
    except ValueError:
        parser.error(f"--devices must be comma-separated integers, got {args.devices!r}")
    if not counts or min(counts) < 1 or args.steps < 3:
        parser.error("need device counts >= 1 and --steps >= 3")
    import jax  # after parsing: -h needs no backend

    forced = args.cpu or jax.default_backend() == "cpu"
    if forced:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICES_FLAG}={max(counts)}".strip()
    runs = {count: run(args.steps, False, [*overrides, f"devices={count}"]) for count in counts}
    base = runs[counts[0]]["env_steps_per_s"]
    emit_json(
        {
            "benchmark": "tasks.walk data-parallel throughput",
            "backend": "cpu (forced host devices)" if forced else jax.default_backend(),
            "devices": {
                str(count): {
                    key: r[key]
                    for key in ("env_steps_per_s", "median_interval_steps_per_s", "compile_s", "peak_rss_mb", "wall_s")
                }
                for count, r in runs.items()
            },
            "throughput_vs_first": {str(count): round(r["env_steps_per_s"] / base, 3) for count, r in runs.items()},
            "config": runs[counts[0]]["config"],
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        },
        args.out,
    )


if __name__ == "__main__":
    main()
