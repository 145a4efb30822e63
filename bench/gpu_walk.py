"""One command for a GPU machine: throughput, the sim-to-real blocks' cost, then walking trained in what time is left.

    python bench/gpu_walk.py [--budget-s 540] [--envs 4096,8192] [--steps 12] [--out FILE] [key=value ...]
    python bench/gpu_walk.py --tiny --out /tmp/gpu_walk.json      # the CPU smoke CI runs (a few envs and updates)

On a machine with its own JAX and no index, through the offline wheel folder (issue 31, docs/stack.md):
`python3 bootstrap.py offline gpu-walk --out bench/results/gpu_walk_h100.json`.

Phases, each printed as it goes and all written as one JSON (plus `<out>.png`, the training curve):

1. device: JAX version, backend and device kind (no GPU without `--tiny` is an error, before anything compiles);
2. throughput: env-steps/s of `tasks.walk preset=gpu` at each `--envs` (`walk_throughput.run`: the median over the
   intervals between logged updates after the compiling one; peak host memory of the process);
3. overhead: the same at the first `--envs` with `sim2real=false` (ksim's plain classes), in pairs with the
   sim2real run before it; ratio ours / plain of median-interval throughput (the CPU ratio is 0.993);
4. walking: `tasks.walk preset=gpu` (sim2real on, commands on) for the rest of `--budget-s`, less a reserve for
   export and gate, its curve kept every `--every-s` (`learning.train_one`), then the exported policy through the
   sim-to-sim gate at 0.5 m/s forward (1 ms CPU MuJoCo, kinfer): success rate and tracking error per level.

Targets (issues 31, 32): >= 0.3 M env-steps/s on one H100; walking at 0.5 m/s with tracking error <= 0.15 m/s and gate
success >= 0.8 within 15 min of one GPU. Every phase shares one JAX compilation cache (a temporary folder), so the
walking run starts from the programs the throughput run compiled.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from emit import emit_json
from learning import plot as plot_curve
from learning import train_one
from pairs import median_pair_ratio
from walk_throughput import run as throughput_run

TARGETS = {"env_steps_per_s_min": 300_000, "tracking_error_mps_max": 0.15, "gate_success_min": 0.8}
GATE_COMMAND = (0.5, 0.0, 0.0)
# No validation phase: it renders a video (EGL, which a GPU image may lack) and its time is not training.
NO_VALIDATION = ["valid_first_n_steps=0", "valid_every_n_seconds=null"]
THROUGHPUT_CONFIG = ["export_kinfer=false", "sim2sim_gate=false", *NO_VALIDATION]
# --tiny: the same phases at CPU-smoke size with preset=cpu (CI), so the script never rots
KEEP = ("env_steps_per_s", "median_interval_steps_per_s", "compile_s", "peak_rss_mb", "wall_s")  # per throughput run
TINY = {
    "envs": "8",
    "steps": 30,
    "overrides": ["batch_size=4", "num_passes=1", "hidden_size=16", "depth=1"],
}


def device_info() -> dict:
    """JAX's version, backend and first device, from JAX itself."""
    import jax

    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": getattr(device, "device_kind", device.platform),
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def throughput(envs: list[int], steps: int, overrides: list[str], cache: str, preset: str) -> list[dict]:
    """Throughput of `tasks.walk preset=<preset>` (sim2real on) at each number of envs."""
    rows = []
    for n in envs:
        print(f"[gpu_walk] throughput at {n} envs ({steps} updates) ...", file=sys.stderr, flush=True)
        args = [f"num_envs={n}", f"compile.cache_dir={cache}", *overrides]
        result = throughput_run(steps, cold=False, overrides=args, base=[f"preset={preset}", *THROUGHPUT_CONFIG])
        rows.append({"num_envs": n, **{k: result[k] for k in KEEP}})
        print(f"    {result['median_interval_steps_per_s']:,.0f} env-steps/s", file=sys.stderr, flush=True)
    return rows


def overhead(first: dict, steps: int, pairs: int, overrides: list[str], cache: str, preset: str) -> dict:
    """sim2real=false at `first`'s envs, paired with sim2real runs (the first pair reuses `first`)."""
    n, base = first["num_envs"], [f"preset={preset}", *THROUGHPUT_CONFIG]
    ours, plain = [first["median_interval_steps_per_s"]], []
    for i in range(pairs):
        if i > 0:
            args = [f"num_envs={n}", f"compile.cache_dir={cache}", *overrides]
            ours.append(throughput_run(steps, False, args, base=base)["median_interval_steps_per_s"])
        print(f"[gpu_walk] plain ksim at {n} envs, pair {i + 1}/{pairs} ...", file=sys.stderr, flush=True)
        args = [f"num_envs={n}", "sim2real=false", f"compile.cache_dir={cache}", *overrides]
        plain.append(throughput_run(steps, False, args, base=base)["median_interval_steps_per_s"])
    return {
        "num_envs": n,
        "sim2real_steps_per_s": ours,
        "plain_steps_per_s": plain,
        "ratio_ours_over_plain": median_pair_ratio(ours, plain),
        "pairs": pairs,
    }


def walking(
    seconds: float, updates: int | None, overrides: list[str], out: Path, args: argparse.Namespace, preset: str
) -> dict:
    """Train walking for `seconds` (or `updates`), export, and gate the policy at 0.5 m/s forward."""
    from ksim_entropy.kbot.robot import resolve_robot_files
    from ksim_entropy.sim2real.sim2sim import GateOptions, run_gate

    runs_dir = out.parent / f"{out.stem}_runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    budget = [f"max_steps={updates}"] if updates else []
    learn = argparse.Namespace(
        preset=preset,
        minutes=max(seconds, 1.0) / 60.0,
        every_s=args.every_s,
        standing_every_min=0.0,
        overrides=[*budget, *overrides],
        threshold_s=10.0,
        final_minutes=min(2.0, max(seconds, 1.0) / 60.0),
        settle_updates=20,
    )
    print(f"[gpu_walk] walking: {seconds:.0f} s of training ...", file=sys.stderr, flush=True)
    run = train_one("walk", [], args.seed, learn, runs_dir)  # exports policy.kinfer; the gate runs here, at 0.5 m/s
    policy = runs_dir / f"walk_s{args.seed}" / "policy.kinfer"
    options = GateOptions(episodes=args.gate_episodes, seconds=args.gate_seconds, command=GATE_COMMAND)
    print(f"[gpu_walk] gate at {GATE_COMMAND[0]} m/s: {options.episodes} episodes per level ...", file=sys.stderr)
    gate = run_gate(policy, resolve_robot_files("local"), options=options)
    levels = {
        level.name: {"success_rate": level.success_rate, "tracking_error_mps": level.tracking_error_mps}
        for level in gate.levels
    }
    curve = {"runs": [run], "config": {"threshold_s": 10.0, "preset": preset, "minutes": round(learn.minutes, 2)}}
    plot_curve(curve, out.with_suffix(".png"))
    return {
        "train_seconds": seconds,
        "summary": run["summary"],
        "points": run["points"],
        "policy": str(policy),
        "gate": {"command": list(GATE_COMMAND), "passed": gate.passed, "reasons": gate.reasons, "levels": levels},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall time for the whole command (s)")
    parser.add_argument("--envs", default="4096,8192", help="numbers of envs for the throughput phase")
    parser.add_argument("--steps", type=int, default=12, help="PPO updates per throughput run (first compiles)")
    parser.add_argument("--pairs", type=int, default=1, help="sim2real / plain pairs for the overhead ratio")
    parser.add_argument("--reserve-s", type=float, default=120.0, help="kept from training for export and gate (s)")
    parser.add_argument("--gate-episodes", type=int, default=5, help="per level (--tiny: 1)")
    parser.add_argument("--gate-seconds", type=float, default=10.0, help="per episode (--tiny: 1 s)")
    parser.add_argument("--every-s", type=float, default=5.0, help="training curve resolution (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: a few envs and updates per phase")
    parser.add_argument("--tiny-train-updates", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="JSON path; the curve goes to <out>.png")
    parser.add_argument("overrides", nargs="*", help="key=value for every tasks.walk run")
    args = parser.parse_args()
    start = time.monotonic()
    try:
        envs = [int(n) for n in (TINY["envs"] if args.tiny else args.envs).split(",") if n]
    except ValueError:
        raise SystemExit(f"error: --envs must be integers separated by commas, got {args.envs!r}") from None
    if not envs or min(envs) < 1 or args.steps < 3 or args.pairs < 1:
        raise SystemExit("error: need --envs of positive integers, --steps >= 3 and --pairs >= 1")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise SystemExit(f"error: {bad} are not key=value")
    device = device_info()
    if device["backend"] != "gpu" and not args.tiny:
        raise SystemExit(f"error: JAX runs on {device['backend']} here, not a GPU; --tiny runs the CPU smoke")
    print(f"[gpu_walk] {device}", file=sys.stderr, flush=True)
    preset = "cpu" if args.tiny else "gpu"
    if args.tiny:
        args.gate_episodes, args.gate_seconds = 1, 1.0
    overrides = [*(TINY["overrides"] if args.tiny else []), *args.overrides]
    steps = TINY["steps"] if args.tiny else args.steps
    result = {"bench": "gpu_walk", "command": "python bench/gpu_walk.py " + " ".join(sys.argv[1:]), "device": device}
    with tempfile.TemporaryDirectory(prefix="gpu-walk-cache-") as cache:
        rows = throughput(envs, steps, overrides, cache, preset)
        result["throughput"] = rows
        result["overhead"] = overhead(rows[0], steps, args.pairs, overrides, cache, preset)
        best = max(row["median_interval_steps_per_s"] for row in rows)
        result["targets"] = TARGETS
        result["meets"] = {"throughput": best >= TARGETS["env_steps_per_s_min"], "walking": False}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # throughput is kept if training is cut short
        left = args.budget_s - (time.monotonic() - start) - args.reserve_s
        train_overrides = [f"num_envs={envs[0]}", *NO_VALIDATION, f"compile.cache_dir={cache}"]
        train_overrides += overrides
        if args.tiny:  # a few updates, however long they take
            result["walking"] = walking(600.0, args.tiny_train_updates, train_overrides, args.out, args, preset)
        elif left >= 60.0:
            result["walking"] = walking(left, None, train_overrides, args.out, args, preset)
        else:
            result["walking"] = {"skipped": f"{left:.0f} s left of --budget-s for training (< 60 s)"}
            print(f"[gpu_walk] walking skipped: {result['walking']['skipped']}", file=sys.stderr, flush=True)
    nominal = result["walking"].get("gate", {}).get("levels", {}).get("nominal", {})
    result["meets"]["walking"] = (
        nominal.get("success_rate", 0.0) >= TARGETS["gate_success_min"]
        and nominal.get("tracking_error_mps", float("inf")) <= TARGETS["tracking_error_mps_max"]
    )
    result["wall_s"] = round(time.monotonic() - start, 1)
    emit_json(result, args.out)
    print(json.dumps({"meets": result["meets"], "wall_s": result["wall_s"]}), file=sys.stderr)


if __name__ == "__main__":
    main()
