"""What N devices would give data-parallel PPO: the training step's collectives, read from XLA's own program, against
the time one device takes per update. Prints JSON.

    python bench/scaling_model.py --profile bench/results/gpu_walk_h100.json [--devices 2,4,8] [--out FILE]
    python bench/scaling_model.py --env-steps-per-s 300000 --envs 4096 [...]   # a throughput given by hand
    python bench/scaling_model.py --hlo DUMP_DIR [...]                         # collectives from an existing dump

1. Collectives. `tasks.walk` is compiled for two devices (CPU host devices, forced) at the profiled preset's PPO
   structure (network, passes, minibatches per update, rollout length) with a few environments per device, and XLA
   dumps its optimized program. Every all-reduce, all-gather, reduce-scatter, collective-permute and all-to-all of
   the training step is counted with how often it runs per update (the trip counts XLA annotates on its while loops)
   and its size. The gradient all-reduces do not depend on the environment count, only on the parameters and the
   number of minibatch updates. `--hlo` reads a dump made elsewhere instead (`XLA_FLAGS="--xla_dump_to=DIR
   --xla_dump_hlo_as_text"`), e.g. a GPU's, whose combiner may merge collectives differently.
2. Model, weak scaling (each device keeps the profiled number of environments):
   t_N = t_1 + Σ_c n_c · (latency + f_c(N) · bytes_c / bus_bandwidth), with f = 2(N−1)/N for all-reduce and
   (N−1)/N for all-gather, reduce-scatter and all-to-all, 1 for collective-permute (nccl-tests' bus-bandwidth
   convention); no overlap of communication with compute (XLA runs these in the step's order), so it errs slow.
   t_1 = envs × rollout_length_frames / env-steps/s of one device. Throughput_N = N · envs · frames / t_N.

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
from dataclasses import dataclass
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
DEVICE_ENVS = 8  # environments per device in the compiled program (its collectives' sizes do not depend on it)

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
    """One collective instruction: its kind, result size (bytes), runs per call of the program, and JAX's op name."""

    kind: str
    bytes: int
    runs: int
    op_name: str


def array_bytes(shape: str) -> int:
    """Bytes of an HLO shape: one array (`f32[128,64]{1,0}`) or a tuple of them; tokens and layouts count 0."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            continue
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        total += count * DTYPE_BYTES[dtype]
    return total


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


def hlo_collectives(text: str) -> tuple[list[Collective], list[str]]:
    """The collectives of an optimized HLO module with how often each runs per call, and warnings.

    A while loop's body runs its annotated trip count (`known_trip_count`) times; a loop without one is counted once
    and named in the warnings, and so is a conditional (each branch counted as if it ran).
    """
    computations, entry = parse_computations(text)
    found: list[Collective] = []
    warnings: list[str] = []

    def visit(name: str, runs: int, depth: int) -> None:
        if depth > 64:
            raise HloError(f"computations nest deeper than 64 levels at {name}")
        for line in computations.get(name, []):
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            shape, rest = _split_shape(match.group(1))
            opcode = rest.split("(", 1)[0].strip()
            kind = opcode.removesuffix("-start")
            if kind in COLLECTIVES:
                op_name = _OP_NAME.search(rest)
                found.append(Collective(kind, _result_bytes(kind, opcode, shape), runs, op_name[1] if op_name else ""))
            times = 1
            if opcode == "while":
                trip = _TRIP_COUNT.search(rest)
                if trip is None:
                    warnings.append(f"a while loop in {name} has no known trip count: its body is counted once")
                times = int(trip[1]) if trip else 1
            elif opcode == "conditional":
                warnings.append(f"a conditional in {name}: every branch counted as if it ran")
            for role, callee in _CALLEE.findall(rest):
                if role == "to_apply" and kind in COLLECTIVES:
                    continue  # a collective's reducer
                visit(callee, runs * (times if role == "body" else 1), depth + 1)
            for group in _BRANCHES.findall(rest):
                for callee in group.split(","):
                    visit(callee.strip().lstrip("%"), runs, depth + 1)

    visit(entry, 1, 0)
    return found, warnings


def _result_bytes(kind: str, opcode: str, shape: str) -> int:
    """Bytes of a collective's result; an async `-start`'s shape also holds its operands, so take the largest array."""
    if not opcode.endswith("-start") or not shape.startswith("("):
        return array_bytes(shape)
    return max((array_bytes(array.group(0)) for array in _ARRAY.finditer(shape)), default=0)


def summarize(collectives: list[Collective]) -> dict:
    """Per update: runs and bytes of each kind, and the op names that move the most bytes."""
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"instructions": 0, "runs": 0, "bytes": 0})
    by_name: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in collectives:
        kinds[c.kind]["instructions"] += 1
        kinds[c.kind]["runs"] += c.runs
        kinds[c.kind]["bytes"] += c.runs * c.bytes
        by_name[c.op_name][0] += c.runs
        by_name[c.op_name][1] += c.runs * c.bytes
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:8]
    return {
        "per_update": dict(kinds),
        "largest": [{"op_name": name[-160:], "runs": runs, "bytes": size} for name, (runs, size) in top],
    }


def comm_seconds(collectives: list[Collective], devices: int, bus_bytes_per_s: float, latency_s: float) -> float:
    """Time of one update's collectives on `devices` devices: Σ n_c · (latency + f_c(N) · bytes_c / bandwidth)."""
    if devices == 1:
        return 0.0
    return sum(c.runs * (latency_s + BUS_FACTOR[c.kind](devices) * c.bytes / bus_bytes_per_s) for c in collectives)


def predict(
    collectives: list[Collective],
    update_s: float,
    env_steps_per_update: int,
    devices: list[int],
    latencies_s: list[float],
) -> dict:
    """Weak scaling per link and latency: update time, env-steps/s and efficiency (t_1 / t_N) at each device count."""
    table: dict = {}
    for link, bandwidth in LINKS.items():
        for latency in latencies_s:
            rows = {}
            for n in devices:
                comm = comm_seconds(collectives, n, bandwidth, latency)
                t_n = update_s + comm
                rows[str(n)] = {
                    "update_s": round(t_n, 5),
                    "comm_s": round(comm, 6),
                    "env_steps_per_s": round(n * env_steps_per_update / t_n),
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
    optimized programs into `dump_dir`. Returns the structure compiled."""
    structure = preset_structure(preset)
    minibatches = int(structure["minibatches"])
    num_envs = 2 * DEVICE_ENVS
    if num_envs % minibatches:
        num_envs = 2 * minibatches  # the smallest count that splits into the minibatches and across two devices
    overrides = [f"{key}={structure[key]}" for key in STRUCTURE_KEYS]
    args = ["preset=cpu", *overrides, f"num_envs={num_envs}", f"batch_size={num_envs // minibatches}", "devices=2"]
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
    return {**structure, "compiled_num_envs": num_envs, "compiled_devices": 2}


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
    with tempfile.TemporaryDirectory(prefix="scaling-dump-") as tmp:
        if args.hlo is None:
            structure = compile_and_dump(args.preset, Path(tmp))
        try:
            module = step_module(args.hlo or Path(tmp))
            collectives, warnings = hlo_collectives(module.read_text())
        except (HloError, OSError) as err:
            raise SystemExit(f"scaling_model: {err}") from None
    env_steps_per_update = envs * int(structure["rollout_length_frames"])
    update_s = env_steps_per_update / rate
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
            "weak_scaling": predict(collectives, update_s, env_steps_per_update, devices, latencies),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
