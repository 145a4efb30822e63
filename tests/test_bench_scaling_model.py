"""bench/scaling_model.py: collectives counted from XLA's optimized program against programs whose collectives are known
by construction, the weak-scaling model against its closed form, and the command line on a dump made here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import scaling_model  # noqa: E402

# Two CPU devices, 8 rows split across them. `step`: an outer scan of OUTER, an inner scan of INNER, each inner
# iteration a mean over the split rows of a (WIDTH,) vector (one all-reduce of WIDTH f32), then one all-gather of the
# split (8, WIDTH) array and one all-reduce of a scalar outside the loops.
OUTER, INNER, WIDTH, FRAMES = 3, 5, 100, 7
TOY = f"""
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

mesh = Mesh(np.array(jax.devices()), ("envs",))
split, whole = NamedSharding(mesh, P("envs")), NamedSharding(mesh, P())
x = jax.device_put(jnp.arange(8 * {WIDTH}, dtype=jnp.float32).reshape(8, {WIDTH}), split)
w = jax.device_put(jnp.ones(({WIDTH},)), whole)

def step(x, w):
    def outer(c, _):
        def inner(c, _):
            return c - 0.1 * jnp.mean(x * c, axis=0), None
        return jax.lax.scan(inner, c, None, length={INNER})[0], None
    w = jax.lax.scan(outer, w, None, length={OUTER})[0]
    return w, jnp.sum(x), jax.lax.with_sharding_constraint(x * 2.0, whole)

open(sys.argv[1], "w").write(jax.jit(step).lower(x, w).compile().as_text())

# the gradient of a loss accumulated by a scan over FRAMES steps, each on the split rows: the backward scan sums the
# gradient of the (WIDTH, 3) weights across the devices
frames = jax.device_put(jnp.ones((8, {FRAMES}, {WIDTH})), split)
weights = jax.device_put(jnp.ones(({WIDTH}, 3)), whole)

def loss(weights, frames):
    def one_frame(total, frame):
        return total + jnp.sum(jnp.tanh(frame @ weights)), None
    return jax.lax.scan(one_frame, 0.0, jnp.swapaxes(frames, 0, 1))[0]

open(sys.argv[2], "w").write(jax.jit(jax.grad(loss)).lower(weights, frames).compile().as_text())
"""


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaling")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    paths = [str(out / "toy_after_optimizations.txt"), str(out / "grad_after_optimizations.txt")]
    done = subprocess.run(
        [sys.executable, "-c", TOY, *paths], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def toy_hlo(toy_dir) -> Path:
    return toy_dir / "toy_after_optimizations.txt"


def test_a_backward_scan_sums_its_gradient_every_frame_and_sinking_leaves_one(toy_dir):
    collectives, _ = scaling_model.hlo_collectives((toy_dir / "grad_after_optimizations.txt").read_text())
    backward = [c for c in collectives if c.in_backward_loop]
    # as the CPU compiler leaves it: the (WIDTH, 3) f32 gradient all-reduced once per frame, inside the loop
    assert [(c.bytes, c.runs, c.loop_trip) for c in backward] == [(4 * WIDTH * 3, FRAMES, FRAMES)]
    assert [(c.runs, c.loop_trip) for c in (c.sunk() for c in backward)] == [(1, 1)]
    outside = [c for c in collectives if not c.in_backward_loop]
    assert all(c.sunk() == c for c in outside)


def test_collectives_and_their_runs_per_call_match_the_program_built(toy_hlo):
    collectives, warnings = scaling_model.hlo_collectives(toy_hlo.read_text(), env_dims={8})
    assert warnings == []
    in_loop = [c for c in collectives if c.kind == "all-reduce" and c.bytes == 4 * WIDTH]
    assert len(in_loop) == 1 and in_loop[0].runs == OUTER * INNER and in_loop[0].env_bytes == 0
    assert in_loop[0].loop_trip == INNER and not in_loop[0].in_backward_loop  # a forward loop's: never moved
    scalar = [c for c in collectives if c.kind == "all-reduce" and c.bytes == 4]
    assert len(scalar) == 1 and scalar[0].runs == 1
    gathered = [c for c in collectives if c.kind == "all-gather"]  # led by the 8 rows: grows with them
    assert [(c.bytes, c.env_bytes, c.runs) for c in gathered] == [(0, 4 * 8 * WIDTH, 1)]
    assert len(collectives) == 3
    summary = scaling_model.summarize(collectives)["per_update"]
    runs, size = OUTER * INNER + 1, OUTER * INNER * 4 * WIDTH + 4
    assert summary["all-reduce"] == {"instructions": 2, "runs": runs, "bytes": size, "env_bytes": 0}


def test_shapes_tuples_and_async_starts_are_sized_in_bytes():
    assert scaling_model.array_bytes("f32[128,64]{1,0}") == 128 * 64 * 4
    assert scaling_model.array_bytes("(bf16[3]{0}, s32[], pred[2,2]{1,0}, token[])") == 6 + 4 + 4
    # an async all-gather's result tuple holds its operand and its result: the result is the larger
    text = "ENTRY %m (p: f32[4]) -> f32[8] {\n  %s = (f32[4]{0}, f32[8]{0}) all-gather-start(%p), dimensions={0}\n}\n"
    (gather,), _ = scaling_model.hlo_collectives(text)
    assert (gather.kind, gather.bytes, gather.runs) == ("all-gather", 32, 1)
    (gather,), _ = scaling_model.hlo_collectives(text, env_dims={8})
    assert (gather.bytes, gather.env_bytes) == (0, 32)


def test_a_loop_without_a_trip_count_is_counted_once_and_said():
    text = (
        "%body (p: f32[4]) -> f32[4] {\n  ROOT %r = f32[4]{0} all-reduce(%p), to_apply=%add\n}\n"
        "ENTRY %m (p: f32[4]) -> f32[4] {\n  ROOT %w = f32[4]{0} while(%p), condition=%c, body=%body\n}\n"
    )
    (reduce,), warnings = scaling_model.hlo_collectives(text)
    assert reduce.runs == 1 and "no known trip count" in warnings[0]
    quiet = text.replace("all-reduce(%p), to_apply=%add", "negate(%p)")  # a loop without collectives: nothing to say
    assert scaling_model.hlo_collectives(quiet) == ([], [])
    with pytest.raises(scaling_model.HloError, match="no ENTRY"):
        scaling_model.hlo_collectives("%body (p: f32[4]) -> f32[4] {\n}\n")


def test_weak_scaling_follows_the_ring_closed_form():
    grads = scaling_model.Collective("all-reduce", 2_000_000, 24, "grad")
    data = scaling_model.Collective("all-gather", 0, 1, "gather", env_bytes=1_000_000)
    bandwidth, latency = 400e9, 20e-6
    # N = 4: all-reduce moves 2·3/4 of its bytes per device, all-gather 3/4; the gathered data at 3× the environments
    expected = 24 * (latency + 1.5 * 2e6 / bandwidth) + (latency + 0.75 * 3e6 / bandwidth)
    got = scaling_model.comm_seconds([grads, data], 4, bandwidth, latency, env_scale=3.0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert scaling_model.comm_seconds([grads, data], 1, bandwidth, latency) == 0.0
    # 4096 environments a device, compiled with 48: at 8 devices the gathered data is 8·4096/48 times larger
    table = scaling_model.predict([grads, data], 0.5, 4096, 32, 48, [1, 8], [latency])
    nvlink = table["nvlink_h100_sxm, 20 us"]
    comm = 24 * (latency + 1.75 * 2e6 / 460e9) + (latency + 0.875 * 1e6 * 8 * 4096 / 48 / 460e9)
    assert nvlink["1"]["env_steps_per_s"] == round(4096 * 32 / 0.5)
    assert nvlink["8"]["efficiency"] == pytest.approx(0.5 / (0.5 + comm), abs=1e-4)
    assert nvlink["8"]["env_steps_per_s"] == pytest.approx(8 * 4096 * 32 / (0.5 + comm), abs=1)


def test_a_profile_row_is_read_and_a_missing_one_named(tmp_path):
    profile = tmp_path / "gpu_walk.json"
    rows = [
        {"num_envs": 4096, "median_interval_steps_per_s": 2e5},
        {"num_envs": 8192, "median_interval_steps_per_s": 3e5},
    ]
    profile.write_text(json.dumps({"throughput": rows, "device": {"device_kind": "NVIDIA H100"}}))
    assert scaling_model.read_profile(profile, 4096)[:2] == (4096, 2e5)
    assert scaling_model.read_profile(profile, None)[:2] == (8192, 3e5)  # the fastest
    with pytest.raises(SystemExit, match="no throughput row at 1024 envs"):
        scaling_model.read_profile(profile, 1024)


def test_the_command_reads_a_dump_and_predicts(toy_hlo, tmp_path):
    out = tmp_path / "model.json"
    cmd = [sys.executable, str(ROOT / "bench" / "scaling_model.py"), "--hlo", str(toy_hlo), "--hlo-envs", "8,4"]
    cmd += ["--env-steps-per-s", "300000", "--envs", "4096", "--devices", "1,2", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["collectives"]["per_update"]["all-gather"]["env_bytes"] == 4 * 8 * WIDTH
    assert result["profile"]["update_s"] == pytest.approx(4096 * 32 / 300_000)  # gpu preset: 32 frames per update
    two = result["weak_scaling"]["nvlink_h100_sxm, 10 us"]["2"]
    assert 0.9 < two["efficiency"] < 1.0
    bad = subprocess.run([*cmd[:6], "--envs", "4096"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "give one of --profile and --env-steps-per-s" in bad.stderr
    bad = subprocess.run([*cmd[:4], *cmd[6:]], cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--hlo needs --hlo-envs ENVS,BATCH" in bad.stderr
