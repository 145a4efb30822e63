"""The sim-to-real blocks' cost inside one jitted walk unroll, plain ksim (`sim2real=false`) against ours
(`sim2real=true`), both built and timed in one process. Prints JSON.

    python bench/sim2real_unroll.py [--steps N] [--repeats R] [--first plain|sim2real] [--out FILE]

`sim2real_overhead.py` times whole training runs, whose env-steps/s moves ±20 % from run to run on this shared
machine; here the same two unrolls (ksim's `_single_unroll`, 32 environments, `--steps` control steps, 20 s episodes)
run alternately in one process, so a stall hits both. Reported per variant:
- lowered_ops: MLIR operations of the lowered unroll (deterministic; XLA's compile time grows with it), and
  ops_by_source: the same ops by the Python package (mujoco, ksim, xax, ksim_entropy module) that emitted them;
  train_step_ops(_by_source): the same for ksim's whole training step (rollout_length_frames=32), lowered only;
- trace_s, compile_s: tracing + lowering, and XLA compile (cold: JAX's persistent cache off). The variant built
  first also pays the process's one-time costs (`--first` picks it; run both orders): the judged compile ratio is
  `sim2real_overhead.py`'s, one process per run;
- run_ms: best and median wall time of one unroll over `--repeats` alternating calls, and cpu_ms (all threads).
"""

import argparse
import collections
import operator
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("DISABLE_TENSORBOARD", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)

from walk_throughput import _emit  # noqa: E402

from tasks.walk import KBotWalkingTask  # noqa: E402
from tests.walk_parts import build_walk_parts  # noqa: E402

CONFIG = {"num_envs": 32, "batch_size": 16, "hidden_size": 64, "depth": 1, "episode_length_s": 20.0}
OP_LINE = re.compile(r'^\s*(?:%\S+ = )?"?[a-z_]+\.[a-z_]+\b([^\n]*)$', re.M)
OP_LOC = re.compile(r"loc\((#loc\d+)\)\s*$")
LOC_DEF = re.compile(r"^(#loc\d+) = (.*)$", re.M)
LOC_FILE = re.compile(r'"(/[^"]+\.py)":\d+')


def ops_by_source(mlir: str) -> dict[str, int]:
    """Op counts by the innermost Python file JAX recorded for each op: a package, or a ksim_entropy module."""
    defs = dict(LOC_DEF.findall(mlir))
    memo: dict[str, str] = {}

    def source(ref: str, depth: int = 0) -> str:
        if ref not in memo:
            text = defs.get(ref, "")
            files = LOC_FILE.findall(text)
            if files:
                path = files[0].split("site-packages/")[-1]
                memo[ref] = f"ksim_entropy/{Path(path).name}" if "/ksim_entropy/" in path else path.split("/")[0]
            else:
                refs = re.findall(r"#loc\d+", text)
                memo[ref] = source(refs[0], depth + 1) if refs and depth < 64 else "unknown"
        return memo[ref]

    def op_source(rest: str) -> str:  # an op with a region (a loop) has its location on its closing line
        loc = OP_LOC.search(rest)
        return source(loc.group(1)) if loc else "unknown"

    counts = collections.Counter(op_source(rest) for rest in OP_LINE.findall(mlir))
    return dict(counts.most_common())


def train_step_ops(task: KBotWalkingTask) -> dict[str, int]:
    """Ops of ksim's whole jitted training step (unroll + PPO update + curricula + metrics), lowered only."""
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    constants, carry, state = task.initialize_rl_training(mj_model, task.get_mujoco_model_metadata(mj_model))
    step = jax.jit(lambda carry, state: task._rl_train_loop_step(carry, constants, state))
    return ops_by_source(step.lower(carry, state).as_text(debug_info=True))


def build(sim2real: bool, steps: int, exp_dir: str) -> tuple[dict, Callable[[], None]]:
    parts = build_walk_parts(exp_dir, argmax_action=False, sim2real=sim2real, **CONFIG)
    unroll = jax.jit(lambda env, shared: parts.task._single_unroll(parts.constants, env, shared, steps))
    t = time.perf_counter()
    lowered = unroll.lower(parts.env_state, parts.shared)
    trace_s = time.perf_counter() - t
    by_source = ops_by_source(lowered.as_text(debug_info=True))
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(parts.env_state, parts.shared))  # first call: allocation, not timed
    train = train_step_ops(parts.task)  # after the timed trace and compile, which its tracing would warm

    def call() -> None:
        jax.block_until_ready(compiled(parts.env_state, parts.shared))

    stats = {
        "lowered_ops": sum(by_source.values()),
        "ops_by_source": by_source,
        "train_step_ops": sum(train.values()),
        "train_step_ops_by_source": train,
    }
    return {**stats, "trace_s": round(trace_s, 2), "compile_s": round(compile_s, 2)}, call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32, help="control steps per unroll")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant, alternating")
    parser.add_argument("--first", choices=["plain", "sim2real"], default="plain", help="which variant to build first")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        raise SystemExit("error: --steps and --repeats must be >= 1")
    order = [args.first, *({"plain", "sim2real"} - {args.first})]
    variants = {name: name == "sim2real" for name in order}
    results, calls = {}, {}
    tmp = tempfile.TemporaryDirectory(prefix="sim2real-unroll-")  # experiment dirs, removed at exit
    for name, sim2real in variants.items():
        print(f"building and compiling {name} ...", file=sys.stderr, flush=True)
        results[name], calls[name] = build(sim2real, args.steps, f"{tmp.name}/{name}")
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:
            t, c = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append(1e3 * (time.perf_counter() - t))
            cpu[name].append(1e3 * (time.process_time() - c))
    for name in variants:
        results[name]["run_ms"] = {"best": round(min(wall[name]), 1), "median": round(statistics.median(wall[name]), 1)}
        results[name]["cpu_ms"] = {"best": round(min(cpu[name]), 1), "median": round(statistics.median(cpu[name]), 1)}
    ours, plain = results["sim2real"], results["plain"]
    out = {
        "bench": "one walk unroll, sim2real blocks vs plain ksim, one process",
        "config": {**CONFIG, "steps": args.steps, "repeats": args.repeats, "first": args.first},
        "cpu_count": os.cpu_count(),
        **results,
        "ratios": {  # ours / plain; for run time > 1 is slower (throughput ratio = 1 / run-time ratio)
            "lowered_ops": round(ours["lowered_ops"] / plain["lowered_ops"], 3),
            "train_step_ops": round(ours["train_step_ops"] / plain["train_step_ops"], 3),
            "trace_s": round(ours["trace_s"] / plain["trace_s"], 3),
            "compile_s": round(ours["compile_s"] / plain["compile_s"], 3),
            "run_ms_best": round(ours["run_ms"]["best"] / plain["run_ms"]["best"], 3),
            "run_ms_median": round(ours["run_ms"]["median"] / plain["run_ms"]["median"], 3),
            "cpu_ms_median": round(ours["cpu_ms"]["median"] / plain["cpu_ms"]["median"], 3),
            "median_of_pairs": round(statistics.median(map(operator.truediv, wall["sim2real"], wall["plain"])), 3),
        },
    }
    _emit(out, args.out)


if __name__ == "__main__":
    main()
