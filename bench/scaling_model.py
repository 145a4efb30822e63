"""What N devices would give data-parallel PPO: the training step's collectives, read from XLA's own program, against
the time one device takes per update. Prints JSON.

    python bench/scaling_model.py --profile bench/results/gpu_walk_h100.json [--devices 2,4,8] [--out FILE]
    python bench/scaling_model.py --env-steps-per-s 300000 --envs 4096 [...]   # a throughput given by hand
    python bench/scaling_model.py --hlo DUMP --hlo-envs 48,6 [...]            # collectives of a dump made elsewhere

1. Collectives. `tasks.walk` is compiled for two devices (CPU host devices, forced) with the profiled preset's PPO
   structure (network, passes, minibatches per update, rollout length) and `COMPILED_BATCH` environments per
   minibatch; XLA dumps its optimized program. Every all-reduce, all-gather, reduce-scatter, collective-permute and
   all-to-all of the training step is counted with how often it runs per update (the trip counts XLA annotates on
   its while loops) and its size, split into arrays led by an environment count (they grow with the environments)
   and the rest (gradients, statistics). `--hlo` reads a dump made elsewhere instead (`XLA_FLAGS="--xla_dump_to=DIR
   --xla_dump_hlo_as_text"`, e.g. a GPU's, whose passes may merge or move collectives differently; `--hlo-envs` says
   its environment count and minibatch size).
2. Model, weak scaling (each device keeps the profiled number of environments E):
   t_N = t_1 + Σ_c n_c · (latency + f_c(N) · (bytes_c + env_bytes_c · N·E / compiled envs) / bus_bandwidth), with
   f = 2(N−1)/N for all-reduce, (N−1)/N for all-gather, reduce-scatter and all-to-all, 1 for collective-permute
   (nccl-tests' bus-bandwidth convention). No overlap of communication with compute is assumed, so it errs slow.
   t_1 = E × rollout_length_frames / env-steps/s of one device; throughput_N = N · E · frames / t_N.
   `weak_scaling` is the program as compiled; `weak_scaling_sunk` the same with every all-reduce inside a loop of the
   backward pass run once after its loop instead of once per iteration. XLA's GPU compiler has a pass for that
   (while-loop-all-reduce-code-motion, in its collective optimizations); the CPU compiler, which made the program
   here, leaves the gradient sum of the recurrent policy's backward scan inside it: once per frame.

Bus bandwidths (`LINKS`): nccl-tests all_reduce_perf at large sizes, 8×H100 SXM5 over NVLink-4/NVSwitch 460–480 GB/s,
8×H100 PCIe without NVSwitch 35–45 GB/s (docs.alayanew.com, "NCCL-tests in practice", 2026-05-06); the lower ends are
used. The per-collective latency is an assumption (`--latency-us`, default 10 and 50 µs), not a measurement.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from emit import emit_json

ROOT = Path(__file__).resolve().parents[1]

LINKS = {"nvlink_h100_sxm": 460e9, "pcie_h100_no_nvswitch": 35e9}  # bus bandwidth, bytes/s (module doc)
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
BUS_FACTOR = {  # f_c(N): bytes each device moves per byte of the collective's result, over the bus bandwidth
    "all-reduce": lambda n: 2 * (n - 1) / n,
    "all-gather": lambda n: (n - 1) / n,
    "reduce-scatter": lambda n: (n - 1) / n,
    "all-to-all": lambda n: (n - 1) / n,
    "collective-permute": lambda n: 1.0,
}
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4}
DTYPE_BYTES |= {"f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
STEP_MODULE = "sharded_train_loop_step"  # DataParallelMixin's jitted loop step (ksim_entropy.ppo.data_parallel)
STRUCTURE_KEYS = ("num_passes", "rollout_length_frames", "hidden_size", "depth", "iterations", "ls_iterations")
# Environments per minibatch in the compiled program: even (split across two devices) and unlike any other leading
# dimension of the K-Bot's arrays (parameters: 128, 40, 1; frames: 32), so that a collective's arrays led by it or by
# the environment count are known to grow with the environments.
COMPILED_BATCH = 6

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_CALLEE = re.compile(r"\b(body|calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


class HloError(ValueError):
    """An HLO dump this model cannot read: no such file, no entry computation, no training step."""


@dataclass(frozen=True)
class Collective:
    """One collective instruction: its kind, how often it runs per call of the program, JAX's op name, and its result's
    size in bytes: `env_bytes` of arrays whose leading axis counts environments (they grow with the environments),
    `bytes` of the rest."""

    kind: str
    bytes: int
    runs: int
    op_name: str
    env_bytes: int = 0
    loop_trip: int = 1  # trip count of the innermost while loop it sits in (1: none)

    @property
    def in_backward_loop(self) -> bool:
        """An all-reduce inside a loop of the backward pass (JAX names it `transpose(...)/.../while/body`): the
        per-step gradient sums of a scan, which XLA's GPU compiler sinks out of the loop
        (while-loop-all-reduce-code-motion) when the loop only accumulates them."""
        backward = self.op_name.find("transpose(")
        return self.kind == "all-reduce" and backward >= 0 and "while/body" in self.op_name[backward:]

    def sunk(self) -> "Collective":
        """This collective as it would run with a backward loop's all-reduce moved after the loop."""
        if not self.in_backward_loop or self.loop_trip <= 1:
            return self
        return replace(self, runs=self.runs // self.loop_trip, loop_trip=1)


def array_sizes(shape: str) -> list[tuple[int, int | None]]:
    """(bytes, leading dimension or None for a scalar) of every array in an HLO shape: one (`f32[128,64]{1,0}`) or a
    tuple; tokens and layouts count nothing."""
    sizes = []
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            continue
        extents = [int(d) for d in dims.split(",") if d]
        count = 1
        for extent in extents:
            count *= extent
        sizes.append((count * DTYPE_BYTES[dtype], extents[0] if extents else None))
    return sizes


def array_bytes(shape: str) -> int:
    """Bytes of an HLO shape: one array or a tuple of them."""
    return sum(size for size, _ in array_sizes(shape))


def _split_shape(rest: str) -> tuple[str, str]:
    """(shape, the rest) of an instruction's right-hand side; a tuple shape is a balanced parenthesis group."""
    if not rest.startswith("("):
        shape, _, tail = rest.partition(" ")
        return shape, tail
    depth = 0
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return rest[: i + 1], rest[i + 1 :].lstrip()
    return rest, ""


def parse_computations(text: str) -> tuple[dict[str, list[str]], str]:
    """Every computation's instruction lines, by name, and the entry computation's name."""
    computations: dict[str, list[str]] = {}
    entry, current = "", None
    for line in text.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match:
                current = match.group(1)
                computations[current] = []
                if line.startswith("ENTRY"):
                    entry = current
        elif line.strip() == "}":
            current = None
        else:
            computations[current].append(line)
    if not entry:
        raise HloError("no ENTRY computation: not an HLO module's text")
    return computations, entry


def _sized(kind: str, opcode: str, shape: str, env_dims: set[int]) -> tuple[int, int]:
    """(bytes, env_bytes) of a collective's result. An async `-start`'s shape also holds its operands: its largest
    array is taken as the result."""
    sizes = array_sizes(shape)
    if opcode.endswith("-start") and shape.startswith("(") and sizes:
        sizes = [max(sizes)]
    env = sum(size for size, lead in sizes if lead in env_dims)
    return sum(size for size, _ in sizes) - env, env


def hlo_collectives(text: str, env_dims: set[int] | None = None) -> tuple[list[Collective], list[str]]:
    """The collectives of an optimized HLO module with how often each runs per call, and warnings.

    A while loop's body runs its annotated trip count (`known_trip_count`) times. A loop without one that holds
    collectives is counted once, and a conditional that holds them counts every branch as if it ran; both are named
    in the warnings. Arrays whose leading dimension is in `env_dims` (the compiled program's environment counts) are
    sized as `env_bytes`.
    """
    computations, entry = parse_computations(text)
    env_dims = env_dims or set()
    found: list[Collective] = []
    warnings: list[str] = []

    def visit(name: str, runs: int, depth: int, trip: int = 1) -> int:
        if depth > 64:
            raise HloError(f"computations nest deeper than 64 levels at {name}")
        before = len(found)
        for line in computations.get(name, []):
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            shape, rest = _split_shape(match.group(1))
            opcode = rest.split("(", 1)[0].strip()
            kind = opcode.removesuffix("-start")
            if kind in COLLECTIVES:
                op_name = _OP_NAME.search(rest)
                fixed, env = _sized(kind, opcode, shape, env_dims)
                found.append(Collective(kind, fixed, runs, op_name[1] if op_name else "", env, trip))
            known = _TRIP_COUNT.search(rest) if opcode == "while" else None
            times = int(known[1]) if known else 1
            inside = 0
            for role, callee in _CALLEE.findall(rest):
                if role == "to_apply" and kind in COLLECTIVES:
                    continue  # a collective's reducer
                if role == "body":
                    inside += visit(callee, runs * times, depth + 1, times)
                else:
                    inside += visit(callee, runs, depth + 1, trip)
            for group in _BRANCHES.findall(rest):
                for callee in group.split(","):
                    inside += visit(callee.strip().lstrip("%"), runs, depth + 1, trip)
            if inside and opcode == "while" and known is None:
                warnings.append(f"a while loop in {name} holds collectives but no known trip count: counted once")
            if inside and opcode == "conditional":
                warnings.append(f"a conditional in {name} holds collectives: every branch counted as if it ran")
        return len(found) - before

    visit(entry, 1, 0)
    return found, warnings


def summarize(collectives: list[Collective]) -> dict:
    """Per update: runs and bytes of each kind (env_bytes: the part that grows with the environments), and the op
    names that move the most bytes."""
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"instructions": 0, "runs": 0, "bytes": 0, "env_bytes": 0})
    by_name: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in collectives:
        kinds[c.kind]["instructions"] += 1
        kinds[c.kind]["runs"] += c.runs
        kinds[c.kind]["bytes"] += c.runs * c.bytes
        kinds[c.kind]["env_bytes"] += c.runs * c.env_bytes
        by_name[c.op_name][0] += c.runs
        by_name[c.op_name][1] += c.runs * (c.bytes + c.env_bytes)
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:8]
    return {
        "per_update": dict(kinds),
        "largest": [{"op_name": name[-160:], "runs": runs, "bytes": size} for name, (runs, size) in top],
    }


def comm_seconds(
    collectives: list[Collective], devices: int, bus_bytes_per_s: float, latency_s: float, env_scale: float = 1.0
) -> float:
    """Time of one update's collectives on `devices` devices: Σ n_c · (latency + f_c(N) · size_c / bandwidth), with
    size_c = bytes_c + env_scale · env_bytes_c (env_scale: environments now / environments compiled)."""
    if devices == 1:
        return 0.0
    return sum(
        c.runs * (latency_s + BUS_FACTOR[c.kind](devices) * (c.bytes + env_scale * c.env_bytes) / bus_bytes_per_s)
        for c in collectives
    )


def predict(
    collectives: list[Collective],
    update_s: float,
    envs_per_device: int,
    frames: int,
    compiled_envs: int,
    devices: list[int],
    latencies_s: list[float],
) -> dict:
    """Weak scaling per link and latency: update time, env-steps/s and efficiency (t_1 / t_N) at each device count,
    `envs_per_device` environments on each of N devices (the program was compiled with `compiled_envs` in all)."""
    table: dict = {}
    for link, bandwidth in LINKS.items():
        for latency in latencies_s:
            rows = {}
            for n in devices:
                comm = comm_seconds(collectives, n, bandwidth, latency, n * envs_per_device / compiled_envs)
                t_n = update_s + comm
                rows[str(n)] = {
                    "update_s": round(t_n, 5),
                    "comm_s": round(comm, 6),
                    "env_steps_per_s": round(n * envs_per_device * frames / t_n),
                    "efficiency": round(update_s / t_n, 4),
                }
            table[f"{link}, {latency * 1e6:g} us"] = rows
    return table


def read_profile(path: Path, envs: int | None) -> tuple[int, float, str]:
    """(environments, env-steps/s, source) of one device from a bench JSON: gpu_walk's throughput rows (the row with
    `envs` environments, else the fastest), or walk_throughput's single run."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--profile {path}: {err}") from None
    rows = data.get("throughput")
    if isinstance(rows, list) and rows:
        chosen = [r for r in rows if r.get("num_envs") == envs] if envs else rows
        if not chosen:
            raise SystemExit(f"--profile {path} has no throughput row at {envs} envs: {[r['num_envs'] for r in rows]}")
        row = max(chosen, key=lambda r: r["median_interval_steps_per_s"])
        device = data.get("device", {}).get("device_kind", "")
        return int(row["num_envs"]), float(row["median_interval_steps_per_s"]), f"{path} ({device})"
    config = dict(arg.split("=", 1) for arg in data.get("config", []) if "=" in arg)
    if "median_interval_steps_per_s" in data and "num_envs" in config:
        return int(config["num_envs"]), float(data["median_interval_steps_per_s"]), str(path)
    raise SystemExit(f"--profile {path}: neither gpu_walk's throughput rows nor a walk_throughput result")


def preset_structure(preset: str) -> dict[str, object]:
    """What of a `tasks.walk` preset sets its collectives: minibatches per update and STRUCTURE_KEYS."""
    from ksim_entropy.kbot.walk import PRESETS

    if preset not in PRESETS:
        raise SystemExit(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    values = PRESETS[preset]
    minibatches = int(values["num_envs"]) // int(values["batch_size"])
    return {"minibatches": minibatches, **{key: values[key] for key in STRUCTURE_KEYS}}


def compile_and_dump(preset: str, dump_dir: Path) -> dict[str, object]:
    """Compile and run one update of `tasks.walk` on two CPU devices with `preset`'s PPO structure; XLA dumps its
    optimized programs into `dump_dir`. Returns the structure compiled, with its environment counts."""
    structure = preset_structure(preset)
    minibatches = int(structure["minibatches"])
    num_envs = COMPILED_BATCH * minibatches
    overrides = [f"{key}={structure[key]}" for key in STRUCTURE_KEYS]
    args = ["preset=cpu", *overrides, f"num_envs={num_envs}", f"batch_size={COMPILED_BATCH}", "devices=2"]
    args += ["max_steps=1", "export_kinfer=false", "sim2sim_gate=false", "valid_first_n_steps=0"]
    args += ["valid_every_n_seconds=null", "compile.cache_dir=null"]  # a cached program is not compiled, nor dumped
    flags = f"--xla_force_host_platform_device_count=2 --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
    flags += f" --xla_dump_hlo_module_re=.*{STEP_MODULE}.*"
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip(), PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="scaling-model-") as tmp:
        cmd = [sys.executable, "-m", "tasks.walk", *args, f"exp_dir={tmp}/run"]
        print(f"[scaling_model] compiling on two CPU devices: {' '.join(args)}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"tasks.walk failed with exit code {proc.returncode}")
    return {**structure, "compiled_num_envs": num_envs, "compiled_batch_size": COMPILED_BATCH, "compiled_devices": 2}


def step_module(path: Path) -> Path:
    """The optimized HLO text of the training step in a dump folder (or `path` itself if it is a file)."""
    if path.is_file():
        return path
    candidates = sorted(path.glob(f"*{STEP_MODULE}*after_optimizations.txt"))
    if not candidates:
        raise HloError(
            f"no '*{STEP_MODULE}*after_optimizations.txt' in {path}: was the step compiled with devices > 1?"
        )
    return max(candidates, key=lambda p: p.stat().st_size)  # the step itself, not a helper jitted inside it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=Path, help="gpu_walk or walk_throughput JSON of one device")
    parser.add_argument("--env-steps-per-s", type=float, help="one device's throughput, instead of --profile")
    parser.add_argument("--envs", type=int, help="environments per device (the profile row; needed with the above)")
    parser.add_argument("--preset", default="gpu", help="whose PPO structure is compiled (default gpu)")
    parser.add_argument("--hlo", type=Path, help="an XLA dump folder or file instead of compiling")
    parser.add_argument(
        "--hlo-envs", help="with --hlo: 'ENVS,BATCH', the dumped program's environments and minibatch size"
    )
    parser.add_argument("--devices", default="1,2,4,8", help="device counts to predict")
    parser.add_argument("--latency-us", default="10,50", help="per-collective latencies, µs (assumed)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    try:
        devices = [int(n) for n in args.devices.split(",")]
        latencies = [float(us) * 1e-6 for us in args.latency_us.split(",")]
    except ValueError:
        parser.error("--devices and --latency-us take comma-separated numbers")
    if min(devices) < 1 or min(latencies) < 0:
        parser.error("device counts must be >= 1 and latencies >= 0")
    if (args.profile is None) == (args.env_steps_per_s is None):
        parser.error("give one of --profile and --env-steps-per-s")
    if args.env_steps_per_s is not None and not args.envs:
        parser.error("--env-steps-per-s needs --envs")
    if args.profile is not None:
        envs, rate, source = read_profile(args.profile, args.envs)
    else:
        envs, rate, source = args.envs, args.env_steps_per_s, "given by hand (--env-steps-per-s)"

    structure = preset_structure(args.preset)
    if args.hlo is not None:
        if args.hlo_envs is None:
            parser.error("--hlo needs --hlo-envs ENVS,BATCH: which collectives grow with the environments")
        try:
            compiled_envs, batch = (int(n) for n in args.hlo_envs.split(","))
        except ValueError:
            parser.error(f"--hlo-envs takes two integers 'ENVS,BATCH', got {args.hlo_envs!r}")
        structure = {**structure, "compiled_num_envs": compiled_envs, "compiled_batch_size": batch}
    with tempfile.TemporaryDirectory(prefix="scaling-dump-") as tmp:
        if args.hlo is None:
            structure = compile_and_dump(args.preset, Path(tmp))
        env_dims = {int(structure["compiled_num_envs"]), int(structure["compiled_batch_size"])}
        try:
            module = step_module(args.hlo or Path(tmp))
            collectives, warnings = hlo_collectives(module.read_text(), env_dims)
        except (HloError, OSError) as err:
            raise SystemExit(f"scaling_model: {err}") from None
    backward = [c for c in collectives if c.in_backward_loop]
    sunk = [c.sunk() for c in collectives]
    frames = int(structure["rollout_length_frames"])
    update_s = envs * frames / rate
    compiled = int(structure["compiled_num_envs"])
    emit_json(
        {
            "bench": "scaling_model",
            "command": "python bench/scaling_model.py " + " ".join(sys.argv[1:]),
            "profile": {"source": source, "envs_per_device": envs, "env_steps_per_s": rate, "update_s": update_s},
            "structure": structure,
            "hlo": str(args.hlo) if args.hlo else "compiled here (module doc)",
            "collectives": summarize(collectives),
            "warnings": sorted(set(warnings)),
            "bus_bandwidth_bytes_per_s": LINKS,
            "weak_scaling": predict(collectives, update_s, envs, frames, compiled, devices, latencies),
            "backward_loop_all_reduces": {
                "instructions": len(backward),
                "runs_as_compiled": sum(c.runs for c in backward),
                "runs_sunk_out_of_the_loop": sum(c.sunk().runs for c in backward),
            },
            "weak_scaling_sunk": predict(sunk, update_s, envs, frames, compiled, devices, latencies),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
