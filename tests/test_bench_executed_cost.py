"""bench/executed_cost.py against XLA:CPU itself: the thunks a profiled run executes, counted from its trace."""

import glob
import gzip
import importlib.util
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "executed_cost", Path(__file__).resolve().parents[1] / "bench" / "executed_cost.py"
)
executed_cost = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(executed_cost)


def _program(x: jax.Array, stop: jax.Array) -> jax.Array:
    def known(i: jax.Array, x: jax.Array) -> jax.Array:  # 7 trips, known to XLA
        return jnp.cumsum(jnp.sort(-(jnp.sort(x * 1.5 + i))))

    def unknown(c: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:  # trips set by `stop` at run time
        return c[0] + 1, jnp.sort(c[1] + 1.0)

    x = jax.lax.fori_loop(0, 7, known, x)
    return jax.lax.while_loop(lambda c: c[0] < stop, unknown, (jnp.int32(0), x))[1]


def _traced_executions(compiled: jax.stages.Compiled, args: tuple, trace_dir: Path) -> int:
    """Executions of non-control HLO instructions in one profiled call, from XLA:CPU's trace of its thunks (a run of
    events of one instruction, as a sort's buffer copy and the sort itself, is one execution)."""
    opcodes = dict(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(", compiled.as_text(), re.M))
    jax.block_until_ready(compiled(*args))
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        jax.block_until_ready(compiled(*args))
    (path,) = glob.glob(str(trace_dir / "plugins" / "profile" / "*" / "perfetto_trace.json.gz"))
    trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = [e["name"] for e in sorted((e for e in events if e.get("ph") == "X"), key=lambda e: e["ts"])]
    executed = [n for n in names if n in opcodes and opcodes[n] not in executed_cost.CONTROL]
    return sum(1 for i, n in enumerate(executed) if i == 0 or executed[i - 1] != n)


@pytest.mark.parametrize("stop", [3, 9])
def test_counts_the_thunks_a_profiled_run_executes(tmp_path, stop):
    x, stop_arr = jnp.linspace(-1.0, 1.0, 64), jnp.int32(stop)
    compiled = jax.jit(_program).lower(x, stop_arr).compile()
    cost = executed_cost.executed_cost(compiled.as_text(), unknown_trips=stop)
    assert cost.unknown_trip_loops == 1
    assert cost.instructions == _traced_executions(compiled, (x, stop_arr), tmp_path)
    assert cost.by_op["sort"] == 2 * 7 + stop  # two per known trip, one per unknown one


def test_weighs_loops_by_their_trips_and_branches_by_half():
    hlo = """HloModule m

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %i = s32[] get-tuple-element(%p), index=0
  %copy.1 = f32[8]{0} copy(%x)
  ROOT %tuple = (s32[], f32[8]) tuple(%i, %copy.1)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]) parameter(0)
  %a = s32[] get-tuple-element(%p), index=0
  %b = s32[] constant(3)
  ROOT %lt = pred[] compare(%a, %b), direction=LT
}

%yes (y: f32[8]) -> f32[8] {
  %y = f32[8]{0} parameter(0)
  ROOT %sort.2 = f32[8]{0} sort(%y), dimensions={0}, to_apply=%cmp
}

%no (y: f32[8]) -> f32[8] {
  ROOT %y = f32[8]{0} parameter(0)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %while.3 = (s32[], f32[8]) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"10"}}
  %while.4 = (s32[], f32[8]) while((s32[], f32[8]) %t), condition=%cond, body=%body
  ROOT %conditional.5 = f32[8]{0} conditional(%c, %x, %x), true_computation=%yes, false_computation=%no
}
"""
    cost = executed_cost.executed_cost(hlo, unknown_trips=3)
    assert cost.copies == 10 + 3 and cost.copy_bytes == 13 * 8 * 4  # body: 10 known trips, 3 unknown ones
    assert cost.by_op["compare"] == 3 + 1  # the condition: only the unknown-trip loop evaluates it, n + 1 times
    assert cost.by_op["sort"] == 0.5 and cost.instructions == 13 + 4 + 0.5
    # Reads: each copy its f32[8] operand (32 bytes), each compare two s32[] (8), the sort its f32[8] parameter.
    assert cost.input_bytes == 13 * 32 + 4 * 8 + 0.5 * 32
    assert cost.unknown_trip_loops == 1
    with pytest.raises(ValueError, match="unknown_trips"):
        executed_cost.executed_cost(hlo, unknown_trips=-1)
    with pytest.raises(ValueError, match="ENTRY"):
        executed_cost.executed_cost("HloModule m\n", unknown_trips=1)
