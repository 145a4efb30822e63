"""How much work a compiled XLA program does when it runs: its instructions weighted by the loop trips that run them.

XLA's `cost_analysis()` counts each loop body once, so a rollout's 160 physics substeps weigh like its one
randomization draw. Here each instruction of the optimized HLO counts once per execution: inside a `while` with a
known trip count, that many times; inside a while whose trip count depends on the data (MJX's constraint solver),
`unknown_trips` times (the caller's figure); inside a `conditional`, 1 / (number of branches), since which branch
runs is data. A loop's condition counts n + 1 times, except in a loop of known trip count, which XLA:CPU runs
without evaluating it. On XLA:CPU each counted instruction is one thunk the runtime executes, so `instructions` is
the number of thunk executions, a count a profiled run checks (`tests/test_bench_executed_cost.py`). Pure text
parsing: no JAX import.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
}  # fmt: skip
NOT_EXECUTED = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})
CONTROL = frozenset({"while", "conditional", "call"})
_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\(")
_SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
_TRIPS = re.compile(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string (a tuple's elements added up)."""
    total = 0
    for dtype, dims in _SHAPE.findall(shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * DTYPE_BYTES[dtype]
    return total


def _computations(hlo: str) -> tuple[dict[str, list[str]], str]:
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        if not line.startswith(" ") and (m := _COMPUTATION.match(line)):
            current = m.group(2)
            comps[current] = []
            entry = current if m.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            comps[current].append(line)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text (pass compiled.as_text() of an optimized module)")
    return comps, entry


def _attr(line: str, key: str) -> str:
    m = re.search(key + r"=%([\w.\-]+)", line)
    if m is None:
        raise ValueError(f"HLO instruction without {key}: {line.strip()[:120]}")
    return m.group(1)


def _operands(line: str, start: int) -> list[str]:
    """The %names in the operand list that opens at `start` (just past the opcode's parenthesis)."""
    depth, end = 1, start
    while depth and end < len(line):
        depth += {"(": 1, ")": -1}.get(line[end], 0)
        end += 1
    return re.findall(r"%([\w.\-]+)", line[start:end])


def _branches(line: str) -> list[str]:
    if "branch_computations=" in line:
        return re.findall(r"%([\w.\-]+)", line.split("branch_computations={", 1)[1].split("}", 1)[0])
    return [_attr(line, "true_computation"), _attr(line, "false_computation")]


@dataclass
class ExecutedCost:
    """Executions per call of the program (floats: conditionals and unknown trips weigh fractionally)."""

    instructions: float = 0.0  # executed non-control instructions (XLA:CPU thunks)
    output_bytes: float = 0.0  # bytes they write
    input_bytes: float = 0.0  # bytes of their operands (what they read, at most)
    copies: float = 0.0  # executed `copy` instructions
    copy_bytes: float = 0.0
    unknown_trip_loops: int = 0  # while loops (static count) whose trips came from `unknown_trips`
    by_op: Counter = field(default_factory=Counter)  # executions by HLO opcode

    def as_dict(self) -> dict[str, float]:
        keys = ("instructions", "output_bytes", "input_bytes", "copies", "copy_bytes", "unknown_trip_loops")
        return {k: round(getattr(self, k), 1) for k in keys}


def executed_cost(hlo: str, unknown_trips: float) -> ExecutedCost:
    """The `ExecutedCost` of an optimized HLO module's text (`jax.stages.Compiled.as_text()`)."""
    if unknown_trips < 0:
        raise ValueError(f"unknown_trips must be >= 0, got {unknown_trips}")
    comps, entry = _computations(hlo)
    cost = ExecutedCost()

    def visit(name: str, times: float) -> None:
        sizes = {m.group(1): shape_bytes(m.group(2)) for line in comps[name] if (m := _INSTRUCTION.match(line))}
        for line in comps[name]:
            m = _INSTRUCTION.match(line)
            if m is None or m.group(3) in NOT_EXECUTED:
                continue
            op = m.group(3)
            if op == "while":
                trips = _TRIPS.search(line)
                if trips is None:
                    cost.unknown_trip_loops += 1
                n = int(trips.group(1)) if trips else unknown_trips
                visit(_attr(line, "body"), times * n)
                if trips is None:  # XLA:CPU runs a counted loop without its condition, any other one n + 1 times
                    visit(_attr(line, "condition"), times * (n + 1))
            elif op == "conditional":
                branches = _branches(line)
                for branch in branches:
                    visit(branch, times / len(branches))
            elif op == "call":
                visit(_attr(line, "to_apply"), times)
            else:
                written = shape_bytes(m.group(2))
                cost.instructions += times
                cost.output_bytes += times * written
                cost.input_bytes += times * sum(sizes.get(o, 0) for o in _operands(line, m.end()))
                cost.by_op[op] += times
                if op == "copy":
                    cost.copies += times
                    cost.copy_bytes += times * written

    visit(entry, 1.0)
    return cost
