"""`.kinfer` export: the file loads in kinfer's Rust runtime and in onnxruntime and matches the JAX policy."""

import datetime

import jax
import jax.numpy as jnp
import ksim
import numpy as np
import pytest
from kinfer.rust_bindings import ModelProviderABC, PyModelRunner

from ksim_entropy.cli.walk import build_config
from ksim_entropy.export import ExportError, KinferPolicy, KinferRunner, KinferSession, export_kinfer
from ksim_entropy.kbot.walk import COMMAND_NAMES, KBotWalkingTask

NUM_STEPS = 100
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def walk_task(tmp_path_factory):
    config = build_config(["preset=cpu", "hidden_size=32", "depth=2", f"exp_dir={tmp_path_factory.mktemp('run')}"])
    return KBotWalkingTask(config)


@pytest.fixture(scope="module")
def policy(walk_task):
    mj_model = walk_task.get_mujoco_model()
    model = walk_task.get_model(ksim.InitParams(key=jax.random.PRNGKey(3), physics_model=mj_model))
    # Random (not freshly initialised) output layer so the LSTM state clearly matters.
    return walk_task.kinfer_policy(model)


@pytest.fixture(scope="module")
def kinfer_file(policy, tmp_path_factory):
    return export_kinfer(policy, tmp_path_factory.mktemp("export") / "policy.kinfer")


def random_inputs(rng: np.random.Generator, policy: KinferPolicy, with_carry: bool) -> dict[str, np.ndarray]:
    names = policy.step_input_names if with_carry else policy.step_input_names[:-1]
    return {name: rng.normal(size=policy.input_shape(name)).astype(np.float32) for name in names}


def test_metadata_and_shapes(kinfer_file, policy):
    session = KinferSession(kinfer_file)
    assert session.metadata["joint_names"] == list(policy.joint_names)
    assert session.metadata["command_names"] == list(COMMAND_NAMES)
    assert session.metadata["carry_size"] == [policy.carry_size]
    assert len(policy.joint_names) == 20
    assert session.input_names == policy.step_input_names
    # The carry is the whole LSTM state: depth 2 × (h, c) × hidden 32.
    assert policy.carry_size == 2 * 2 * 32


def test_onnxruntime_matches_jax_with_random_carry(kinfer_file, policy):
    session = KinferSession(kinfer_file)
    assert np.array_equal(session.init(), np.asarray(policy.init_fn()))
    step = jax.jit(policy.step_fn)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(NUM_STEPS):
        inputs = random_inputs(rng, policy, with_carry=True)
        action, carry = session.step(inputs)
        action_ref, carry_ref = step(*(jnp.asarray(inputs[n]) for n in policy.step_input_names))
        worst = max(worst, float(np.abs(action - action_ref).max()), float(np.abs(carry - carry_ref).max()))
    assert worst <= TOLERANCE, f"max |onnx - jax| = {worst:.3g}"


class RandomInputProvider(ModelProviderABC):
    """Feeds random sensor inputs to kinfer's runner and records what it asks for and the actions it returns."""

    def __new__(cls, *args, **kwargs):  # pyo3 base: __new__ takes no arguments
        return super().__new__(cls)

    def __init__(self, policy: KinferPolicy, seed: int) -> None:
        super().__init__()
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.inputs: list[dict[str, np.ndarray]] = []
        self.actions: list[np.ndarray] = []

    def get_inputs(self, input_types, metadata):
        sample = {
            name: self.rng.normal(size=self.policy.input_shape(name)).astype(np.float32)
            for name in input_types
            if name != "carry"
        }
        self.inputs.append(sample)
        return sample

    def take_action(self, action, metadata):
        self.actions.append(np.asarray(action, dtype=np.float32).copy())


def test_kinfer_rust_runtime_matches_jax(kinfer_file, policy):
    # `run` calls the init function first; kinfer 0.6.1's bare `step_and_take_action` does not (its carry buffer
    # starts as uninitialised memory), so a deploy loop must go through `run` or initialise the carry itself.
    provider = RandomInputProvider(policy, seed=1)
    runner = PyModelRunner(str(kinfer_file), provider, None)
    runner.run(datetime.timedelta(milliseconds=1), total_steps=NUM_STEPS)
    assert len(provider.actions) == NUM_STEPS

    step = jax.jit(policy.step_fn)
    carry = policy.init_fn()
    worst = 0.0
    for inputs, action in zip(provider.inputs, provider.actions, strict=True):
        args = [jnp.asarray(inputs[n]) for n in policy.step_input_names[:-1]]
        action_ref, carry = step(*args, carry)
        worst = max(worst, float(np.abs(action - np.asarray(action_ref)).max()))
    assert worst <= TOLERANCE, f"max |kinfer - jax| = {worst:.3g} over {NUM_STEPS} recurrent steps"
    # The recurrent state is really carried: the last action differs from a fresh-carry step on the same inputs.
    fresh, _ = step(*[jnp.asarray(provider.inputs[-1][n]) for n in policy.step_input_names[:-1]], policy.init_fn())
    assert float(np.abs(np.asarray(fresh) - provider.actions[-1]).max()) > 1e-4


def test_export_refuses_to_overwrite(kinfer_file, policy):
    before = kinfer_file.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        export_kinfer(policy, kinfer_file)
    assert kinfer_file.read_bytes() == before


def test_export_rejects_bad_policies(policy, tmp_path):
    def wrong_name(joint_angles, joint_velocities, carry):
        return joint_angles, carry

    bad = KinferPolicy(policy.init_fn, wrong_name, policy.joint_names, policy.command_names, policy.carry_size)
    with pytest.raises(ExportError, match="joint_velocities"):
        export_kinfer(bad, tmp_path / "a.kinfer")

    def wrong_action(joint_angles, carry):
        return joint_angles[:3], carry

    bad = KinferPolicy(policy.init_fn, wrong_action, policy.joint_names, policy.command_names, policy.carry_size)
    with pytest.raises(ExportError, match="action"):
        export_kinfer(bad, tmp_path / "b.kinfer")
    assert not (tmp_path / "a.kinfer").exists() and not (tmp_path / "b.kinfer").exists()


def test_corrupt_kinfer_file_is_reported(tmp_path):
    path = tmp_path / "broken.kinfer"
    path.write_bytes(b"not a tarball")
    with pytest.raises(ExportError, match="Corrupt"):
        KinferSession(path)


def test_kinfer_runner_starts_from_the_init_carry(tmp_path):
    """kinfer's `step_and_take_action` alone skips the init function; `KinferRunner` must not."""

    def init_fn():
        return jnp.full((2,), 7.0, dtype=jnp.float32)

    def step_fn(joint_angles, carry):
        return joint_angles + carry[0], carry + 1.0

    policy = KinferPolicy(init_fn, step_fn, ("a", "b", "c"), (), carry_size=2)
    path = export_kinfer(policy, tmp_path / "counter.kinfer")
    runner = KinferRunner(path)
    angles = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    for expected_carry in (7.0, 8.0, 9.0):
        np.testing.assert_array_equal(runner.step({"joint_angles": angles}), angles + expected_carry)
