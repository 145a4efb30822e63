"""Data-parallel training (`ksim_entropy.ppo.data_parallel`): one device against two, in a process with two CPU devices.

The probe (`tests/data_parallel_probe.py`, the quadruped example) rolls out and updates on one device and on two. The
PPO update of the same trajectories must agree (every reduction global across the devices), a checkpoint saved on two
devices must restore on one, and the arrays must really live split and replicated. Rollouts agree at the first steps
only to float rounding: the per-device batch differs, XLA's kernels round differently, and contact dynamics amplify
it within a few steps, so whole rollouts are not compared.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ksim_entropy.ppo.checkpoint import inspect_checkpoint, read_member_arrays
from ksim_entropy.ppo.data_parallel import DataParallelError, initialize_distributed, resolve_devices
from ksim_entropy.progress import METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import scaling_model  # noqa: E402


def run_on_two_devices(script: str, out: Path) -> None:
    """Run tests/<script> OUT in a process with two CPU devices; fail with its output's tail if it fails."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel")
    run_on_two_devices("data_parallel_probe.py", out)
    return np.load(out / "probe.npz")


def group(probe, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: probe[key] for key in probe.files if key.startswith(prefix + "/")}


def test_environments_are_split_and_parameters_replicated(probe):
    assert int(probe["devices/env_state_rng"]) == 2
    assert int(probe["devices/env_state_rng_shard_rows"]) == 4  # 8 environments, 4 on each device
    assert int(probe["devices/rollout_qpos"]) == 2  # the rollout ran split, its output stays split
    assert int(probe["devices/params"]) == 2 and bool(probe["devices/params_replicated"])


def test_a_loop_step_hands_the_carry_back_on_its_own_shardings(probe):
    """ksim's step lets XLA choose the output carry's shardings, and the next call compiled the step again (measured
    with JAX_LOG_COMPILES on tasks.walk: two compilations of the step with 2 devices, one with the mixin's pin)."""
    assert int(probe["loop/mixin_arrays"]) == int(probe["loop/ksim_arrays"]) > 10
    assert int(probe["loop/mixin_changed"]) == 0
    # what the pin is for: ksim's step hands the per-environment copies of the curriculum state back replicated
    assert int(probe["loop/ksim_changed"]) > 0


def test_each_device_computes_its_share_of_every_minibatch(probe):
    """ksim gathers each minibatch from shuffled environments; left to XLA every device received the whole minibatch
    and computed every gradient itself (measured on the K-Bot: no gradient all-reduce in the program, only the
    minibatch's data). Split, each device computes its share and the program sums the gradients across the devices:
    all-reduces under the backward pass (`transpose(jvp(...))`) of exactly the parameters' bytes, once per minibatch
    update, or (as the CPU compiler leaves it) once per step of the backward scan over the recurrent policy's frames.
    The minibatch's data is still all-reduced once per minibatch update (led by its 4 environments)."""
    collectives, _ = scaling_model.hlo_collectives(str(probe["hlo/update"]), env_dims={4, 8})
    gradients = [c for c in collectives if c.kind == "all-reduce" and "transpose(" in c.op_name]
    parameter_bytes = sum(array.nbytes for array in group(probe, "start/params").values())
    updates, frames = int(probe["update/minibatch_updates"]), int(probe["update/frames"])
    assert parameter_bytes > 1000 and updates == 4  # quadruped: 2 passes × 8 / 4 environments
    assert sum(c.bytes for c in gradients) == parameter_bytes and sum(c.env_bytes for c in gradients) == 0
    assert {c.runs for c in gradients} <= {updates, updates * frames}
    data = [c for c in collectives if c.env_bytes and "gather" in c.op_name]
    assert data and {c.runs for c in data} == {updates}


@pytest.mark.parametrize("part", ["params", "opt_state", "metrics"])
def test_two_devices_compute_the_same_update_as_one(probe, part):
    one, two = group(probe, f"update1/{part}"), group(probe, f"update2/{part}")
    assert one.keys() == two.keys() and len(one) > 3
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if part == "params":  # the update moved them: the comparison is not of two untouched copies
        start = group(probe, "start/params")
        assert max(float(np.abs(one[key] - start[key]).max()) for key in one) > 1e-5


def test_a_checkpoint_saved_on_two_devices_resumes_on_one(probe):
    saved, resumed = group(probe, "update2/params"), group(probe, "resumed/params")
    assert saved.keys() == resumed.keys()
    for key in saved:
        np.testing.assert_array_equal(resumed[key], saved[key], err_msg=key)


def test_rollouts_start_alike_and_differ_only_by_rounding_at_first(probe):
    one, two = probe["rollout1/.qpos"], probe["rollout2/.qpos"]
    assert one.shape == two.shape == (8, one.shape[1], one.shape[2])
    np.testing.assert_array_equal(two[:, 0], one[:, 0])
    np.testing.assert_allclose(two[:, 1], one[:, 1], atol=1e-4)


def test_bad_device_settings_name_the_problem(probe):
    assert str(probe["error/uneven"]) == "num_envs=7 does not split evenly across 2 devices"
    assert str(probe["error/odd_batch"]) == "batch_size=3 does not split evenly across 2 devices"
    assert str(probe["error/too_many"]).startswith("devices=3, but JAX sees 2 (cpu)")
    assert int(probe["auto_devices"]) == 2
    with pytest.raises(DataParallelError, match="JAX sees 1"):
        resolve_devices("2", 8)
    for bad in ("0", "-1", "two"):
        with pytest.raises(DataParallelError, match="'auto' or a count >= 1"):
            resolve_devices(bad, 8)
    assert len(resolve_devices("auto", 7)) == 1


def test_multi_host_variables_all_or_none():
    assert initialize_distributed({}) is False
    with pytest.raises(DataParallelError, match=r"missing \['JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'\]"):
        initialize_distributed({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"})
    with pytest.raises(DataParallelError, match="must be integers"):
        initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "x"})
    with pytest.raises(DataParallelError, match="0 <= JAX_PROCESS_ID < it"):
        initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TWO_HOSTS = """
import sys
import numpy as np
import jax
from ksim_entropy.ppo.data_parallel import env_mesh, initialize_distributed, shard_env_axis

assert initialize_distributed()
x = np.arange(8, dtype=np.float32) ** 2  # the same host array on every process: 8 "environments"
split = shard_env_axis({"x": x}, env_mesh(jax.devices()), 8)["x"]
normalised = jax.jit(lambda a: (a - a.mean()) / a.std())(split)  # an advantage normalisation over every environment
(shard,) = normalised.addressable_shards
np.save(sys.argv[1], np.asarray(shard.data))
print(jax.process_index(), jax.device_count(), jax.local_device_count(), shard.index)
"""


def run_two_processes(args: list[str], out: Path, timeout_s: float) -> list[str]:
    """`python ARGS OUT/rank<i>` as processes 0 and 1 of a JAX run on 127.0.0.1; their outputs (both must succeed)."""
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, *args, str(out / f"rank{rank}")],
            cwd=ROOT,
            env={**env, "JAX_PROCESS_ID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=timeout_s)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [output[-3000:] for output in outputs]
    return outputs


def test_two_processes_on_localhost_split_the_environments_and_reduce_over_all(tmp_path):
    outputs = run_two_processes(["-c", TWO_HOSTS], tmp_path, timeout_s=300)
    x = np.arange(8, dtype=np.float32) ** 2
    expected = (x - x.mean()) / x.std()
    got = np.concatenate([np.load(tmp_path / f"rank{rank}.npy") for rank in (0, 1)])  # np.save adds .npy
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # each process holds 4 rows, normalised over all 8
    assert "0 2 1" in outputs[0] and "1 2 1" in outputs[1]


@pytest.mark.real_time  # the processes meet in gloo collectives with a 30 s deadline: run on a quiet machine
def test_a_training_run_across_two_processes_matches_one_process_with_two_devices(tmp_path):
    """The quadruped trained through xax's launcher by two processes on 127.0.0.1 (one CPU device each), against
    one process with two CPU devices: the same SPMD program, so the same parameters and optimizer state after two
    updates (here bit for bit; allowed 1e-6). Only process 0 writes a checkpoint and metrics."""
    outputs = run_two_processes([str(ROOT / "tests" / "multi_host_train_probe.py")], tmp_path, timeout_s=1200)
    assert all("4 environments on each of 2 devices" in out for out in outputs)
    run_on_two_devices("multi_host_train_probe.py", tmp_path / "one_process")

    across, within = (tmp_path / name / "checkpoints" / "ckpt.bin" for name in ("rank0", "one_process"))
    assert inspect_checkpoint(across).num_steps == inspect_checkpoint(within).num_steps == 3
    for member in ("model_0", "opt_state_0"):
        got, expected = read_member_arrays(across, member), read_member_arrays(within, member)
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=member)
    adam_count = got[0]  # opt_state_0's first leaf
    assert adam_count.dtype == np.int32 and int(adam_count) > 0  # the optimizer really stepped
    assert not (tmp_path / "rank1" / "checkpoints").exists()  # xax's rank: only process 0 writes checkpoints
    assert (tmp_path / "rank0" / METRICS_FILE).stat().st_size > 0  # ... and the metrics (global, the same in both)
    assert not (tmp_path / "rank1" / METRICS_FILE).exists()


@pytest.fixture(scope="module")
def fit_probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit_devices")
    run_on_two_devices("fit_devices_probe.py", out)
    return json.loads((out / "fit_devices.json").read_text()), [np.load(out / f"after_{d}.npy") for d in "12"]


def test_the_fit_with_its_candidates_on_two_devices_finds_what_one_device_finds(fit_probe):
    results, (after_one, after_two) = fit_probe
    one, two = results["1"], results["2"]
    assert one["loss_history"] == two["loss_history"] and len(one["loss_history"]) >= 3
    for fitted in (one["fitted"], two["fitted"]):
        fitted["coverage"].pop("fit_seconds")  # the only field allowed to differ
    assert one["fitted"] == two["fitted"]
    assert after_one.shape == after_two.shape and after_one.size > 0
    np.testing.assert_allclose(after_two, after_one, rtol=1e-6, atol=1e-7)  # 5 candidates per batch, padded to 6
