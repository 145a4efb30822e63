"""The sim-to-real blocks' cost in ksim's jitted rollout and training step, plain ksim (`sim2real=false`) against
ours (`sim2real=true`), both built, compiled and timed in one process, alternately. Prints JSON.

    python bench/sim2real_paired.py [--steps N] [--repeats R] [--compiles K] [--first plain|sim2real] [--out FILE]
    python bench/sim2real_paired.py --instances K [--batch B] [--repeats R] [--aa] [--seed S] [--out FILE]

`sim2real_overhead.py` times whole training runs, one process each, whose env-steps/s and compile times move ±20 %
from run to run on this shared machine. Here both variants live in one process and every measurement alternates
between them, so a stall hits both and each ratio is a median over pairs (ours / plain). Two pieces of ksim:
- unroll: `_single_unroll` (32 environments, `--steps` control steps, 20 s episodes). lowered_ops (deterministic,
  but compile time does not follow it closely) and ops_by_source (by the Python package or ksim_entropy module that
  emitted them); trace_s and compile_s of one cold compile (the variant built first, `--first`, also pays the process's
  one-time costs); run_ms over `--repeats` calls per variant, paired in alternating order, each call continuing
  from the state the variant's last one ended in; cpu_ms the process's CPU time over the same calls (every thread,
  so less moved than wall time by other processes on a shared machine, but not what a user waits for).
- train_step: ksim's whole `_rl_train_loop_step` (that rollout with rollout_length_frames=32, the PPO update,
  curricula, metrics). Its ops; `--compiles` cold compiles per variant, each from a fresh trace, in alternating order
  (plain first in even rounds, ours first in odd ones); run_ms as for the unroll: the training
  throughput without ksim's host-side loop around it (logging, checkpoints, validation renders). Carry and state
  are donated, as ksim's own jit of the step does (undonated, the bench put ours at 1.044 × plain ksim, not 1.007).
ratios_ci95 gives the run-time and compile-time ratios' 95 % confidence intervals, distribution-free (order statistics
of the pair ratios, from 6 pairs up: `--compiles 6` for the compile times), and train_step_throughput_ratio_ci95 the
same interval for the throughput ratio. judged and meets_targets: the training step's throughput ratio and its
trace-plus-compile ratio (each the median over pairs) against the issue's targets (≥ 0.97 and ≤ 1.1).
Both pieces also report hlo_instructions, the instructions of the optimized (compiled) HLO module: deterministic, and
what XLA's backend turns into machine code, so a closer proxy for compile time than the lowered op count (fusion
duplicates cheap producers into each consumer: every leaf of ksim's carry is a select at each step's reset with its own
copy of the "done" logic); and xla_cost, XLA's static estimate of the compiled program's flops and bytes accessed:
deterministic, and a rough proxy for run time (each loop body is counted once, so it weighs one control step and one
physics substep like the once-per-rollout work). Compiles are cold: JAX's caches are cleared
before each, and its persistent cache is off.

`--instances K` measures the training step differently. Two compiled instances of one program (same config, same
seeds: the same computation) run a few per cent apart in one process (memory placement, thread pools), an offset
that pairing calls of one instance of each variant cannot cancel. So this mode builds K instances per variant, each
with its own task, carry and cold compile (alternating; which variant goes first swaps between processes), `--batch`
per variant in each fresh process (each maps ~5,000 memory regions), and calls every instance of a process once per
round in a shuffled order for `--repeats` rounds. Each instance's offset is the median over rounds of its log time
minus the round's median log time (the machine's drift between rounds cancels); the run-time ratio is the
Hodges-Lehmann estimate between the two groups of offsets, its 95 % interval the one that inverts the exact
Mann-Whitney test (needs K >= 4 for an interval; 6 gives 95.9 %), and the compile ratio the same over the instances'
trace + compile seconds. `spread` is the slowest over the fastest instance of one variant. `--aa` makes the second
group plain ksim too, which tests the method: its interval should contain 1 (at f386381, before the build order
swapped between processes, it gave 1.025, CI 1.003-1.043; at a499434 with K = 8, 0.995, CI 0.970-1.018, and with
the donated step 0.996, CI 0.963-1.004: see docs/benchmarks.md).
"""

import argparse
import collections
import json
import os
import random
import re
import statistics
import subprocess
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

from emit import emit_json  # noqa: E402
from pairs import instance_offsets, median_pair_ratio, pair_ratio_ci95, two_sample_ratio_ci95  # noqa: E402

from ksim_entropy.kbot.walk import KBotWalkingTask  # noqa: E402
from tests.walk_parts import WalkParts, build_walk_parts  # noqa: E402

COMPILE_PARTS = {  # ratio name -> the timed parts of a cold training-step compile it adds up
    "compile_s": ("compile_s",),
    "trace_s": ("trace_s",),
    "trace_and_compile_s": ("trace_s", "compile_s"),
}
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


def xla_cost(compiled: jax.stages.Compiled) -> dict[str, float]:
    """XLA's static cost estimate of an executable: flops and bytes accessed (a loop body counted once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"flops": float(cost["flops"]), "bytes_accessed": float(cost["bytes accessed"])}


HLO_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%\S+ = ", re.M)


def hlo_instructions(compiled: jax.stages.Compiled) -> int:
    """Instructions in an executable's optimized HLO module (all computations, fused ones included)."""
    return len(HLO_INSTRUCTION.findall(compiled.as_text()))


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class Variant:
    """One variant's jitted rollout and training step, and what was measured of them."""

    def __init__(
        self, sim2real: bool, steps: int, exp_dir: str, unroll: bool = True, task_class: type = KBotWalkingTask
    ) -> None:
        """Build the task (`task_class`: the walking task or a subclass), compile and call its unroll once (unless
        `unroll` is false); prepare (not compile) its training step."""
        parts = build_walk_parts(exp_dir, argmax_action=False, sim2real=sim2real, task_class=task_class, **CONFIG)
        self.stats: dict[str, dict] = {}
        if unroll:
            self._compile_unroll(parts, steps)
        task = parts.task
        mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
        constants, carry, state = task.initialize_rl_training(mj_model, task.get_mujoco_model_metadata(mj_model))
        # Carry and state donated, as ksim's own jit of `_rl_train_loop_step` does (inlined in this jit, its
        # donation would not apply); without it XLA writes the whole carry to fresh buffers every call.
        self._step_fn = jax.jit(
            lambda carry, state: task._rl_train_loop_step(carry, constants, state), donate_argnums=(0, 1)
        )
        self._step_args: tuple = (carry, state)
        self._step: jax.stages.Compiled | None = None
        self.step_compiles: list[dict[str, float]] = []

    def _compile_unroll(self, parts: WalkParts, steps: int) -> None:
        """Trace, lower and compile the unroll (timed), describe its program, and call it once."""
        unroll = jax.jit(lambda env, shared: parts.task._single_unroll(parts.constants, env, shared, steps))
        self._unroll_args: tuple = (parts.env_state, parts.shared)
        lowered, trace_s = _timed(lambda: unroll.lower(*self._unroll_args))
        by_source = ops_by_source(lowered.as_text(debug_info=True))
        self._unroll, compile_s = _timed(lowered.compile)
        self.call_unroll()  # first call: allocation, not timed
        self.stats["unroll"] = {
            "lowered_ops": sum(by_source.values()),
            "ops_by_source": by_source,
            "hlo_instructions": hlo_instructions(self._unroll),
            "xla_cost": xla_cost(self._unroll),
            "trace_s": round(trace_s, 2),
            "compile_s": round(compile_s, 2),
        }

    def call_unroll(self) -> None:
        """One rollout, continuing from where the last one ended (as training does: MJX's solver and the resets
        cost what the states ask for, so a fixed input would time one state over and over)."""
        _, _, env_state = jax.block_until_ready(self._unroll(*self._unroll_args))
        self._unroll_args = (env_state, self._unroll_args[1])

    def compile_step(self, describe: bool = True) -> None:
        """Trace, lower and compile the training step afresh (cold), recording the times; the first time, also
        describe its program (unless `describe` is false) and call it once, untimed."""
        jax.clear_caches()  # else JAX hands back the last trace and executable (its in-memory caches)
        lowered, trace_s = _timed(lambda: self._step_fn.lower(*self._step_args))
        self._step, compile_s = _timed(lowered.compile)
        self.step_compiles.append({"trace_s": trace_s, "compile_s": compile_s})
        if len(self.step_compiles) == 1:
            if describe:
                by_source = ops_by_source(lowered.as_text(debug_info=True))
                self.stats["train_step"] = {
                    "lowered_ops": sum(by_source.values()),
                    "ops_by_source": by_source,
                    "hlo_instructions": hlo_instructions(self._step),
                    "xla_cost": xla_cost(self._step),
                }
            self.call_step()  # first call: allocation, not timed

    def hlo_text(self) -> str:
        """The compiled training step's optimized HLO module, as text."""
        if self._step is None:
            raise RuntimeError("compile_step first")
        return self._step.as_text()

    def call_step(self) -> None:
        """One training step (rollout and update), continuing from the last one's carry, like `call_unroll`."""
        if self._step is None:
            raise RuntimeError("compile_step first")
        state, carry, _ = jax.block_until_ready(self._step(*self._step_args))
        self._step_args = (carry, state)


def _summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    values = [scale * v for v in values]
    return {"best": round(min(values), digits), "median": round(statistics.median(values), digits)}


def judge(throughput_ratio: float, compile_ratio: float) -> dict:
    """The issue's targets for the training step (throughput ≥ 0.97 × plain ksim's, trace + compile ≤ 1.1 ×) and
    whether the two ratios meet them."""
    targets = {"throughput_ratio_min": 0.97, "compile_ratio_max": 1.1}
    return {
        "judged": {"throughput_ratio": throughput_ratio, "compile_ratio": compile_ratio},
        "targets": targets,
        "meets_targets": throughput_ratio >= targets["throughput_ratio_min"]
        and compile_ratio <= targets["compile_ratio_max"],
    }


def instance_names(aa: bool) -> list[str]:
    """The two groups of `--instances`: plain ksim, and ours (or plain ksim again for an A/A run)."""
    return ["plain", "plain_copy" if aa else "sim2real"]


def time_instances(args: argparse.Namespace, count: int, seed: int, exp_root: str) -> list[dict]:
    """`count` independently built and cold-compiled training steps per variant in this process (alternating
    plain and ours; an odd `seed` builds ours first), every one called once per round in a shuffled order for
    `--repeats` rounds: one record per instance, its offsets relative to the rounds' medians."""
    names = instance_names(args.aa)
    instances: list[tuple[str, Variant]] = []
    for k in range(count):  # plain first at even k, ours at odd k; an odd seed swaps the two
        for name in names if (k + seed) % 2 == 0 else names[::-1]:
            print(f"{name} instance {k + 1}/{count}: build, compile ...", file=sys.stderr, flush=True)
            variant = Variant(name == "sim2real", args.steps, f"{exp_root}/{name}{k}", unroll=False)
            variant.compile_step(describe=False)
            instances.append((name, variant))
    rng = random.Random(seed)
    wall: list[list[float]] = [[] for _ in instances]
    cpu: list[list[float]] = [[] for _ in instances]
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
        order = list(range(len(instances)))
        rng.shuffle(order)
        for i in order:
            cpu_start = time.process_time()
            _, seconds = _timed(instances[i][1].call_step)
            cpu[i].append(time.process_time() - cpu_start)
            wall[i].append(seconds)
    return [
        {
            "variant": name,
            "trace_and_compile_s": round(sum(variant.step_compiles[0].values()), 2),
            "run_ms_median": round(1e3 * statistics.median(wall_i), 1),
            "run_offset": run_offset,
            "cpu_offset": cpu_offset,
        }
        for (name, variant), wall_i, run_offset, cpu_offset in zip(
            instances, wall, instance_offsets(wall), instance_offsets(cpu), strict=True
        )
    ]


def instance_records(args: argparse.Namespace, exp_root: str) -> list[dict]:
    """`--instances K` records, `--batch` instances per variant at a time, each batch in a fresh process (each
    compiled instance maps ~5,000 memory regions for its machine code, and a process past the kernel's
    vm.max_map_count, 65,530 here, dies in LLVM); a batch's offsets are relative to its own rounds, which hold the
    two variants alike. Batch b's seed is `--seed` + b, so consecutive batches swap which variant is built first."""
    if args.instances <= args.batch:
        return time_instances(args, args.instances, args.seed, exp_root)
    records: list[dict] = []
    for b, start in enumerate(range(0, args.instances, args.batch)):
        count = min(args.batch, args.instances - start)
        print(f"batch {b + 1}: {count} instances per variant, a fresh process ...", file=sys.stderr, flush=True)
        out = Path(exp_root) / f"batch{b}.json"
        command = [sys.executable, __file__, "--instances", str(count), "--batch", str(count)]
        command += ["--repeats", str(args.repeats), "--seed", str(args.seed + b), "--records", str(out)]
        subprocess.run(command + (["--aa"] if args.aa else []), check=True, stdout=subprocess.DEVNULL)
        records += json.loads(out.read_text())
    return records


def summarize_instances(args: argparse.Namespace, records: list[dict]) -> dict:
    """The ratios between the two groups of instances (Hodges-Lehmann, exact Mann-Whitney intervals)."""
    names = instance_names(args.aa)

    def of(name: str, key: str) -> list[float]:
        return [record[key] for record in records if record["variant"] == name]

    per_variant = {
        name: {
            key: [round(v, 3) if "offset" in key else v for v in of(name, key)]
            for key in ("trace_and_compile_s", "run_ms_median", "run_offset", "cpu_offset")
        }
        for name in names
    }
    ratios, ci95 = {}, {}
    for ratio, key in (
        ("train_step_run_ms", "run_offset"),
        ("train_step_cpu_ms", "cpu_offset"),
        ("train_step_trace_and_compile_s", "trace_and_compile_s"),
    ):
        ratios[ratio], ci95[ratio] = two_sample_ratio_ci95(of(names[1], key), of(names[0], key))
    run_ci = ci95["train_step_run_ms"]
    out = {
        "bench": f"walk training step, {names[1]} vs plain ksim, {args.instances} independently compiled instances "
        f"each, {args.batch} per variant per process, shuffled rounds",
        "config": {
            **CONFIG,
            "instances": args.instances,
            "batch": args.batch,
            "rounds": args.repeats,
            "seed": args.seed,
            "aa": args.aa,
        },
        "cpu_count": os.cpu_count(),
        **per_variant,
        "spread": {  # slowest / fastest instance of one variant: what compiling again moves
            name: round(max(of(name, "run_offset")) / min(of(name, "run_offset")), 3) for name in names
        },
        "ratios": ratios,  # Hodges-Lehmann: exp of the median of log(ours_i) - log(plain_j) over all i, j
        "ratios_ci95": ci95,  # inverts the exact Mann-Whitney test over instances
        "train_step_throughput_ratio": round(1.0 / ratios["train_step_run_ms"], 3),
        "train_step_throughput_ratio_ci95": None if run_ci is None else [round(1.0 / r, 3) for r in run_ci[::-1]],
    }
    return out | judge(out["train_step_throughput_ratio"], ratios["train_step_trace_and_compile_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32, help="control steps per unroll")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant and piece, alternating")
    parser.add_argument("--compiles", type=int, default=3, help="cold training-step compiles per variant")
    parser.add_argument("--first", choices=["plain", "sim2real"], default="plain", help="which variant to build first")
    parser.add_argument("--instances", type=int, default=0, help="K compiled instances per variant (see above)")
    parser.add_argument("--aa", action="store_true", help="with --instances: a second group of plain ksim (A/A)")
    parser.add_argument("--batch", type=int, default=3, help="with --instances: instances per variant per process")
    parser.add_argument("--seed", type=int, default=0, help="with --instances: the shuffles, who builds first")
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)  # a batch's records, for its parent
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if min(args.steps, args.repeats, args.compiles) < 1 or args.instances < 0:
        raise SystemExit("error: --steps, --repeats and --compiles must be >= 1, --instances >= 0")
    if args.aa and not args.instances:
        raise SystemExit("error: --aa needs --instances")
    tmp = tempfile.TemporaryDirectory(prefix="sim2real-paired-")  # experiment dirs, removed at exit
    if args.instances:
        if args.batch < 1:
            raise SystemExit("error: --batch must be >= 1")
        records = instance_records(args, tmp.name)
        if args.records is not None:
            args.records.write_text(json.dumps(records))
        else:
            emit_json(summarize_instances(args, records), args.out)
        return
    order = [args.first, *({"plain", "sim2real"} - {args.first})]
    variants: dict[str, Variant] = {}
    for name in order:
        print(f"building {name} and compiling its unroll ...", file=sys.stderr, flush=True)
        variants[name] = Variant(name == "sim2real", args.steps, f"{tmp.name}/{name}")
    for k in range(args.compiles):
        for name in ("plain", "sim2real") if k % 2 == 0 else ("sim2real", "plain"):
            print(f"training step of {name}: compile {k + 1}/{args.compiles} ...", file=sys.stderr, flush=True)
            variants[name].compile_step()
    # Each piece on its own, pairs in alternating order (plain, ours, ours, plain, ...): a call's place in the
    # sequence (what ran just before it, what it has to free) then costs both variants alike.
    wall: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)  # the process's CPU time (all threads)
    for piece in ("unroll", "step"):
        for r in range(args.repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                cpu_start = time.process_time()
                _, seconds = _timed(getattr(variants[name], f"call_{piece}"))
                cpu[name, piece].append(time.process_time() - cpu_start)
                wall[name, piece].append(seconds)
    results = {}
    for name, v in variants.items():
        compiles = v.step_compiles
        results[name] = {
            "unroll": {
                **v.stats["unroll"],
                "run_ms": _summary(wall[name, "unroll"], 1e3),
                "cpu_ms": _summary(cpu[name, "unroll"], 1e3),
            },
            "train_step": {
                **v.stats["train_step"],
                "trace_s": [round(c["trace_s"], 2) for c in compiles],
                "compile_s": [round(c["compile_s"], 2) for c in compiles],
                "run_ms": _summary(wall[name, "step"], 1e3),
                "cpu_ms": _summary(cpu[name, "step"], 1e3),
            },
        }
    ours, plain = results["sim2real"], results["plain"]
    ours_c, plain_c = variants["sim2real"].step_compiles, variants["plain"].step_compiles
    compile_times = {  # ratio name -> (ours, plain): seconds of each cold compile
        key: tuple([sum(c[part] for part in parts) for c in compiles] for compiles in (ours_c, plain_c))
        for key, parts in COMPILE_PARTS.items()
    }
    out = {
        "bench": "walk unroll and training step, sim2real blocks vs plain ksim, one process, alternating",
        "config": {
            **CONFIG,
            "steps": args.steps,
            "repeats": args.repeats,
            "compiles": args.compiles,
            "first": args.first,
        },
        "cpu_count": os.cpu_count(),
        **results,
        "ratios": {  # ours / plain, medians over pairs; run time > 1 is slower (throughput ratio = 1 / run-time ratio)
            "unroll_ops": round(ours["unroll"]["lowered_ops"] / plain["unroll"]["lowered_ops"], 3),
            "train_step_ops": round(ours["train_step"]["lowered_ops"] / plain["train_step"]["lowered_ops"], 3),
            **{
                f"{piece}_hlo_instructions": round(
                    ours[piece]["hlo_instructions"] / plain[piece]["hlo_instructions"], 3
                )
                for piece in ("unroll", "train_step")
            },
            **{
                f"{piece}_xla_{key}": round(ours[piece]["xla_cost"][key] / plain[piece]["xla_cost"][key], 3)
                for piece in ("unroll", "train_step")
                for key in ("flops", "bytes_accessed")
            },
            "unroll_run_ms": median_pair_ratio(wall["sim2real", "unroll"], wall["plain", "unroll"]),
            "train_step_run_ms": median_pair_ratio(wall["sim2real", "step"], wall["plain", "step"]),
            "unroll_cpu_ms": median_pair_ratio(cpu["sim2real", "unroll"], cpu["plain", "unroll"]),
            "train_step_cpu_ms": median_pair_ratio(cpu["sim2real", "step"], cpu["plain", "step"]),
            **{f"train_step_{key}": median_pair_ratio(*times) for key, times in compile_times.items()},
        },
    }
    out["ratios_ci95"] = {  # the medians' 95 % confidence intervals (order statistics of the pair ratios)
        "unroll_run_ms": pair_ratio_ci95(wall["sim2real", "unroll"], wall["plain", "unroll"]),
        "train_step_run_ms": pair_ratio_ci95(wall["sim2real", "step"], wall["plain", "step"]),
        "unroll_cpu_ms": pair_ratio_ci95(cpu["sim2real", "unroll"], cpu["plain", "unroll"]),
        "train_step_cpu_ms": pair_ratio_ci95(cpu["sim2real", "step"], cpu["plain", "step"]),
        **{f"train_step_{key}": pair_ratio_ci95(*times) for key, times in compile_times.items()},
    }
    out["train_step_throughput_ratio"] = round(1.0 / out["ratios"]["train_step_run_ms"], 3)
    step_ci = out["ratios_ci95"]["train_step_run_ms"]
    out["train_step_throughput_ratio_ci95"] = None if step_ci is None else [round(1.0 / r, 3) for r in step_ci[::-1]]
    # judged: the training step's throughput, and its whole cold compile (trace + XLA, what a user waits for before
    # the first update), each the median over pairs
    out |= judge(out["train_step_throughput_ratio"], out["ratios"]["train_step_trace_and_compile_s"])
    emit_json(out, args.out)


if __name__ == "__main__":
    main()
