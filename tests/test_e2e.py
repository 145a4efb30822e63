"""End to end through the real command line: train the K-Bot for 2 PPO updates, checkpoint, resume into a new run
directory, export `.kinfer`, load and step it in kinfer's runtime and onnxruntime, and match the JAX policy.

The runs train with domain-adversarial features (DANN, `dann_windows`) on windows of a stand-in robot's log, so the
same two compilations check that path too: its metrics, its classifier beside (not in) the policy, its resume.

Each training run compiles the MJX step (~1.5-3 min cold on 2 CPU cores; JAX's cache makes the resume faster).
"""

import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from kinfer.rust_bindings import ModelProviderABC, PyModelRunner
from mujoco import mjx

from ksim_entropy.bridge.logs import write_ndjson
from ksim_entropy.cli.export import export_checkpoint
from ksim_entropy.cli.windows import make_windows
from ksim_entropy.export import KinferSession
from ksim_entropy.formats.windows import write_windows
from ksim_entropy.kbot.walk import KBotWalkingTask, WalkConfig, preset_config
from ksim_entropy.ppo.checkpoint import CheckpointError, inspect_checkpoint
from ksim_entropy.ppo.domain_adversarial import DANN_KEY, DomainAdversarialState, DomainClassifier
from ksim_entropy.ppo.finetune import SOURCE_KEY
from ksim_entropy.ppo.mixins import read_checkpoint_aux
from ksim_entropy.progress import METRICS_FILE
from ksim_entropy.testing.reality import HiddenRobot, reality_log
from tests.test_checkpoint import write_checkpoint

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "preset=cpu",
    "num_envs=4",
    "batch_size=2",
    "num_passes=1",
    "rollout_length_frames=8",
    "hidden_size=16",
    "depth=1",
    "render_length_seconds=0.2",
    "render_width=64",
    "render_height=48",
]
# Adaptive (ADR) widths that move on every update: every env pins a parameter, and the measure (stay-alive reward,
# always >= -0.5) is above the widening threshold after one sample.
ADAPTIVE = [
    "randomization_mode=adaptive",
    "adr_measure=reward:stay_alive",
    "adr_thresholds=[-1.0,-0.5]",
    "adr_queue_length=1",
    "adr_boundary_fraction=1.0",
]


def walk(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    # A user's shell: no MUJOCO_GL (tests/conftest.py set it in this test process).
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISABLE_TENSORBOARD")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "tasks.walk", *TINY, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def real_windows(tmp_path_factory) -> str:
    """`dann_windows=` for windows of 4 steps of the shipped standing policy on a stand-in robot with a gyro bias."""
    folder = tmp_path_factory.mktemp("real")
    policy = ROOT / "assets" / "policies" / "kbot-stand" / "policy.kinfer"
    log = reality_log(
        HiddenRobot(gyro_bias_rad_s=(0.05, -0.05, 0.0)), seconds=2.0, seed=0, suspended=False, policy=policy
    )
    real = write_ndjson(log, folder / "real.ndjson")
    windows, meta = make_windows([real], KBotWalkingTask(WalkConfig(**preset_config("cpu"))), window_steps=4, stride=2)
    return f"dann_windows={write_windows(folder / 'real_windows.npz', windows, meta)}"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, real_windows) -> Path:
    run_dir = tmp_path_factory.mktemp("e2e") / "first"
    proc = walk("max_steps=2", f"exp_dir={run_dir}", *ADAPTIVE, real_windows)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_dir.parent / "first.stdout").write_text(proc.stdout)
    return run_dir


def saved_widths(ckpt: Path) -> np.ndarray:
    task = KBotWalkingTask.from_checkpoint(ckpt)
    mx = mjx.put_model(task.get_mujoco_model())
    dr = task.get_domain_randomization(mx)
    state = task.load_randomization_state(ckpt, task.get_randomization_curriculum(mx, dr))
    assert state is not None, f"{ckpt} holds no randomization state"
    return np.asarray(state["widths"])


def test_training_writes_checkpoint_logs_and_kinfer(first_run):
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    info = inspect_checkpoint(ckpt)
    assert info.num_steps == 2
    assert info.config["task_id"] == "ksim_entropy.walk.v1"
    assert any(first_run.rglob("events.out.tfevents*")), "no TensorBoard event files"
    session = KinferSession(first_run / "policy.kinfer")
    assert len(session.metadata["joint_names"]) == 20
    # the sim-to-sim gate ran on the exported policy (an untrained policy fails it: it cannot stand)
    gate = json.loads((first_run / "sim2sim.json").read_text())
    assert gate["levels"][0]["name"] == "nominal" and gate["passed"] is False
    assert (first_run / "sim2sim.png").stat().st_size > 10_000


def test_the_console_has_progress_lines_and_the_records_go_to_the_metrics_file(first_run):
    stdout = (first_run.parent / "first.stdout").read_text()
    progress = r"^update \d+ \| .* env-steps \| .*\| DR width [\d.]+ \| α .*\| H nat/dim "
    assert re.search(progress, stdout, re.M), stdout[-2000:]
    assert not [line for line in stdout.splitlines() if line.lstrip().startswith("{")], "JSON records on stdout"
    records = [json.loads(line) for line in (first_run / METRICS_FILE).read_text().splitlines()]
    train = [r for r in records if "state" in r and "train" in r]  # xax writes one every log interval, either phase
    assert train and train[-1]["state"]["num_steps"] == 2, records[-3:]
    assert "temperature_alpha" in train[-1]["train"] and "_total" in train[-1]["reward"]
    assert any(r.get("status", {}).get("message", "").startswith("Step 1 time") for r in records)


def test_dann_logs_its_metrics_and_keeps_its_classifier_beside_the_policy(first_run):
    records = [json.loads(line) for line in (first_run / METRICS_FILE).read_text().splitlines()]
    train = [r["train"] for r in records if "domain_held_out_accuracy" in r.get("train", {})]
    assert train, "no update logged the DANN metrics"
    for key in ("domain_held_out_accuracy", "domain_held_out_loss", "domain_loss", "domain_accuracy", "domain_lambda"):
        assert np.isfinite(train[-1][key]), key
    assert 0.0 <= train[-1]["domain_held_out_accuracy"] <= 1.0
    assert train[0]["domain_lambda"] == 0.0  # Ganin et al.'s schedule starts at 0
    # The classifier (trained: no longer its initial weights) is in the checkpoint's aux data, with its clock.
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    initial = DomainClassifier(jax.random.key(0), num_features=16)
    template = DomainAdversarialState(initial, optax.adam(1e-3).init(initial), jnp.int32(0))
    saved = read_checkpoint_aux(ckpt, {DANN_KEY: template})[DANN_KEY]
    assert int(saved.updates) == 1  # ksim's burn-in update on the validation rollout does not count
    assert not np.allclose(saved.classifier.layers[0].weight, initial.layers[0].weight)
    # The policy is the plain task's: it loads with DANN off.
    task = KBotWalkingTask.from_checkpoint(ckpt)
    assert task.config.dann_windows
    plain = KBotWalkingTask(dataclasses.replace(task.config, dann_windows=""))
    assert plain.load_policy_model(ckpt).actor.head.weight.shape[1] == 16


def test_resume_continues_in_a_new_directory_and_keeps_the_old_one(first_run, tmp_path, real_windows):
    before = tree_digest(first_run)
    resumed = tmp_path / "resumed"
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    # Resumed as a fine-tune: a KL penalty holds the policy near the checkpoint's (ksim_entropy.ppo.finetune), and
    # with the widths moved by a C2ST against the real windows (ksim_entropy.ppo.discriminator) instead of ADR. Its
    # band is set so that every decision widens (×1.1), whatever the test's accuracy.
    args = ("max_steps=4", f"load_from_ckpt_path={ckpt}", f"exp_dir={resumed}", "finetune_kl=0.1")
    c2st = [f"c2st_windows={real_windows.split('=', 1)[1]}", "c2st_every=1", "c2st_band=[0.0,0.0]"]
    proc = walk(*args, *c2st, "c2st_max_spread_ratio=1e9", real_windows)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "its policy is the KL anchor" in proc.stdout + proc.stderr
    records = [json.loads(line) for line in (resumed / METRICS_FILE).read_text().splitlines()]
    kl = [r["train"]["source_kl"] for r in records if "source_kl" in r.get("train", {})]
    assert kl and all(0.0 <= v < 1.0 for v in kl), kl  # nats; the policy starts on its anchor
    tests = [r["train"] for r in records if "c2st_accuracy" in r.get("train", {})]
    assert tests and all(0.0 <= t["c2st_accuracy"] <= 1.0 and t["c2st_factor"] == pytest.approx(1.1) for t in tests)
    # The anchor saved with the resumed run is the first run's policy, not the updated one.
    resumed_task = KBotWalkingTask.from_checkpoint(resumed / "checkpoints" / "ckpt.bin")
    first_model = resumed_task.load_policy_model(ckpt)
    first_arrays = eqx.filter(first_model, eqx.is_inexact_array)
    anchor = read_checkpoint_aux(resumed / "checkpoints" / "ckpt.bin", {SOURCE_KEY: first_arrays})[SOURCE_KEY]
    for a, b in zip(jax.tree.leaves(anchor), jax.tree.leaves(first_arrays), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    updated = jax.tree.leaves(
        eqx.filter(resumed_task.load_policy_model(resumed / "checkpoints" / "ckpt.bin"), eqx.is_inexact_array)
    )
    assert any(not np.array_equal(a, b) for a, b in zip(updated, jax.tree.leaves(first_arrays), strict=True))
    # The curriculum state (ADR widths) is saved with the weights and restored on resume (ksim saves none).
    first = saved_widths(ckpt)
    assert (first > 1.0).any(), f"no width moved in the first run: {first}"
    assert "restored randomization widths" in proc.stdout + proc.stderr
    assert "restored entropy temperature" in proc.stdout + proc.stderr  # α and its controller state
    assert "restored the domain classifier (update 1)" in proc.stdout + proc.stderr
    # The restored ADR widths, ×1.1 at each decision the resumed run took (one per regular update; ksim's burn-in
    # update on the validation rollout goes through no per-update hook).
    resumed_widths = saved_widths(resumed / "checkpoints" / "ckpt.bin")
    decisions = round(float(np.log(resumed_widths[0] / first[0]) / np.log(1.1)))
    assert 1 <= decisions <= 2
    np.testing.assert_allclose(resumed_widths, np.minimum(first * 1.1**decisions, 1.5), rtol=1e-5)
    # Resumed at step 2; ksim's first loop iteration of every run makes two updates (a burn-in update on the
    # validation trajectory, then a regular one), so one iteration reaches 4.
    assert inspect_checkpoint(resumed / "checkpoints" / "ckpt.bin").num_steps == 4
    assert tree_digest(first_run) == before, "resuming modified the earlier run directory"


def test_reusing_a_run_directory_is_refused(first_run):
    before = tree_digest(first_run)
    proc = walk("max_steps=4", f"exp_dir={first_run}")
    assert proc.returncode != 0
    assert "already holds a run" in proc.stderr
    assert tree_digest(first_run) == before


def test_resume_from_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "ckpt.bin"
    bad.write_bytes(b"\x1f\x8b\x08 definitely not a checkpoint")
    proc = walk("max_steps=2", f"load_from_ckpt_path={bad}", f"exp_dir={tmp_path / 'run'}", timeout=300)
    assert proc.returncode != 0
    assert "Corrupt or truncated checkpoint" in proc.stderr


class SensorReplay(ModelProviderABC):
    def __new__(cls, *args, **kwargs):  # pyo3 base: __new__ takes no arguments
        return super().__new__(cls)

    def __init__(self, inputs: list[dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.inputs = inputs
        self.actions: list[np.ndarray] = []

    def get_inputs(self, input_types, metadata):
        return {name: self.inputs[len(self.actions)][name] for name in input_types if name != "carry"}

    def take_action(self, action, metadata):
        self.actions.append(np.asarray(action, dtype=np.float32).copy())


def test_export_command_matches_the_trained_jax_policy(first_run, tmp_path):
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    out = export_checkpoint(ckpt, tmp_path / "policy.kinfer")
    task = KBotWalkingTask.from_checkpoint(ckpt)
    policy = task.kinfer_policy(task.load_policy_model(ckpt))
    step = jax.jit(policy.step_fn)

    rng = np.random.default_rng(0)
    names = policy.step_input_names[:-1]
    inputs = [{n: rng.normal(size=policy.input_shape(n)).astype(np.float32) for n in names} for _ in range(100)]
    provider = SensorReplay(inputs)
    PyModelRunner(str(out), provider, None).run(datetime.timedelta(milliseconds=1), total_steps=len(inputs))

    session = KinferSession(out)
    carry_onnx, carry_jax = session.init(), policy.init_fn()
    worst = 0.0
    for sample, action_rust in zip(inputs, provider.actions, strict=True):
        action_jax, carry_jax = step(*(jnp.asarray(sample[n]) for n in names), carry_jax)
        action_onnx, carry_onnx = session.step({**sample, "carry": carry_onnx})
        worst = max(worst, float(np.abs(action_rust - action_jax).max()), float(np.abs(action_onnx - action_jax).max()))
    assert worst <= 1e-5, worst

    # Never overwrite without being asked.
    digest = sha256(out)
    with pytest.raises(FileExistsError):
        export_checkpoint(ckpt, out)
    assert sha256(out) == digest


def test_export_of_checkpoint_with_broken_weights_is_refused(first_run, tmp_path):
    src = first_run / "checkpoints" / "ckpt.bin"
    broken = tmp_path / "broken.bin"
    with tarfile.open(src, "r:gz") as tar_in, tarfile.open(broken, "w:gz") as tar_out:
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()
            if member.name == "model_0":
                data = data[: len(data) // 3]
            member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))
    with pytest.raises(CheckpointError, match="Cannot load weights"):
        export_checkpoint(broken, tmp_path / "x.kinfer")
    assert not (tmp_path / "x.kinfer").exists()


def test_export_cli_runs_the_sim2sim_gate(first_run, tmp_path):
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    out = tmp_path / "gated" / "policy.kinfer"
    out.parent.mkdir()
    command = [sys.executable, "-m", "tasks.export", str(ckpt), str(out), "--gate-episodes", "1", "--gate-seconds", "1"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out.parent / "sim2sim.json").read_text())
    assert report["options"]["episodes"] == 1 and report["options"]["seconds"] == 1.0
    # exit 0 when the gate passes, 1 when it fails (the policy is written either way)
    assert proc.returncode == (0 if report["passed"] else 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ("sim2sim gate passed" if report["passed"] else "sim2sim gate FAILED") in proc.stdout


def test_export_cli_reports_foreign_checkpoint(tmp_path):
    foreign = write_checkpoint(tmp_path / "foreign.bin", {"num_envs": 4})
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.export", str(foreign)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "not a ksim-entropy task" in proc.stderr


def test_ksim_rollout_log_matches_the_exported_policy(first_run):
    """A rollout in ksim's MJX environment, written in the robot log schema: replaying its logged inputs through the
    exported .kinfer (with its carry) reproduces its logged actions. Checks the log conversion and that training
    and deployment compute the same policy."""
    ckpt = first_run / "checkpoints" / "ckpt.bin"
    task = KBotWalkingTask.from_checkpoint(ckpt)
    log = task.rollout_log(task.load_policy_model(ckpt), seconds=0.3, seed=4)
    assert len(log) == 15
    assert log.group_names == ("joint_angles", "joint_vels", "projected_g", "gyro", "command", "output")
    assert log.group("joint_angles").shape == (15, 20) and log.joint_names[0] == "dof_left_hip_pitch_04"
    assert np.all(np.diff(log.t_us) == 20_000)
    np.testing.assert_allclose(np.linalg.norm(log.group("projected_g"), axis=1), 9.81, rtol=0.15)

    session = KinferSession(first_run / "policy.kinfer")
    carry = session.init()
    names = {
        "joint_angles": "joint_angles",
        "joint_angular_velocities": "joint_vels",
        "projected_gravity": "projected_g",
        "gyroscope": "gyro",
        "command": "command",
    }
    worst = 0.0
    for t in range(len(log)):
        inputs = {k: log.group(g)[t].astype(np.float32) for k, g in names.items()}
        action, carry = session.step({**inputs, "carry": carry})
        worst = max(worst, float(np.abs(action - log.group("output")[t]).max()))
    assert worst <= 1e-4, worst
