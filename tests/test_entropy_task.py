"""The entropy-bridged task inside ksim's real PPO (K-Bot walking task, MJX on CPU): the α term is exactly ksim's
fixed-coefficient entropy term at the same value, α and its controller state survive a checkpoint bit for bit,
and the entropy metrics are the closed forms."""

import dataclasses
import io
import tarfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xax
from ksim.task.rl import RLLoopCarry, RLLoopConstants

from ksim_entropy.kbot.walk import KBotWalkingTask
from ksim_entropy.ppo.matching import EntropyTarget, GroupTarget, observation_gap
from ksim_entropy.ppo.mixins import (
    TEMPERATURE_KEY,
    CheckpointAuxError,
    aux_data_blob,
    entropy_metrics,
    read_checkpoint_aux,
    standardize,
)
from ksim_entropy.ppo.temperature import EntropyTemperature, gaussian_entropy
from tests.walk_parts import build_walk_parts


def write_checkpoint(path, parts) -> None:
    """A checkpoint tar with xax's aux_data member (xax writes it with equinox's serialiser, as here)."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, aux_data_blob(parts))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("aux_data")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))


def dual_state_after(updates: int):
    temperature = EntropyTemperature(mode="dual")
    state = temperature.initial_state()
    for h in np.linspace(1.0, -2.0, updates):
        state = temperature.update(state, h)
    return temperature, state


def assert_bitwise_equal(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


# ---------------------------------------------------------------------------------------------- checkpoint parts
def test_aux_parts_round_trip_bit_for_bit_and_read_on_their_own(tmp_path):
    temperature, state = dual_state_after(7)
    widths = {"names_hash": jnp.asarray(12345, jnp.int32), "widths": jnp.linspace(0.1, 1.2, 12, dtype=jnp.float32)}
    path = tmp_path / "ckpt.bin"
    write_checkpoint(path, {TEMPERATURE_KEY: state, "randomization": widths})
    template = temperature.initial_state()
    both = read_checkpoint_aux(path, {TEMPERATURE_KEY: template, "randomization": widths})
    assert_bitwise_equal(both[TEMPERATURE_KEY], state)
    assert_bitwise_equal(both["randomization"], widths)
    # Each part alone (a task with only one of the mixins switched on), in either order of the saved keys.
    assert_bitwise_equal(read_checkpoint_aux(path, {"randomization": widths})["randomization"], widths)
    assert_bitwise_equal(read_checkpoint_aux(path, {TEMPERATURE_KEY: template})[TEMPERATURE_KEY], state)
    # The controller continues exactly where it stopped.
    restored = both[TEMPERATURE_KEY]
    assert_bitwise_equal(temperature.update(restored, -0.3), temperature.update(state, -0.3))
    # A part the checkpoint lacks is absent, not invented.
    assert read_checkpoint_aux(path, {"something_else": widths}) == {}


def test_aux_part_that_does_not_fit_is_refused(tmp_path):
    _, dual = dual_state_after(3)
    path = tmp_path / "ckpt.bin"
    write_checkpoint(path, {TEMPERATURE_KEY: dual})
    damped = EntropyTemperature(mode="damped").initial_state()  # no Adam state: different leaves
    with pytest.raises(CheckpointAuxError, match="entropy_temperature"):
        read_checkpoint_aux(path, {TEMPERATURE_KEY: damped})
    garbage = tmp_path / "garbage.bin"
    with tarfile.open(garbage, "w:gz") as tar:
        info = tarfile.TarInfo("aux_data")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"\x00\x01abc"))
    with pytest.raises(CheckpointAuxError, match="unreadable aux_data"):
        read_checkpoint_aux(garbage, {TEMPERATURE_KEY: damped})


# ---------------------------------------------------------------------------------------------- metrics
def test_entropy_metrics_are_the_closed_forms():
    rng = np.random.default_rng(0)
    joints = rng.normal(0.2, 0.05, size=(4, 50, 3)).astype(np.float32)  # (envs, steps, channels)
    gyro = rng.normal(0.0, 0.3, size=(4, 50, 3)).astype(np.float32)
    obs = {"noisy_joint_position": jnp.asarray(joints), "noisy_imu_gyro": jnp.asarray(gyro)}
    groups = {"joint_angles": "noisy_joint_position", "gyro": "noisy_imu_gyro"}
    target = EntropyTarget(
        groups=(
            GroupTarget(
                group="joint_angles",
                observation="noisy_joint_position",
                channels=("a", "b", "c"),
                mean=(0.1, 0.2, 0.3),
                std=(0.05, 0.1, 0.02),
            ),
        )
    )
    out = entropy_metrics(obs, groups, {"policy_entropy_per_dim": jnp.asarray([-1.0, -0.5])}, target)
    flat = joints.reshape(-1, 3)
    sd = flat.std(axis=0, ddof=1)
    h_joint = np.sum(0.5 * np.log(2 * np.pi * np.e * sd**2))
    h_gyro = np.sum(0.5 * np.log(2 * np.pi * np.e * gyro.reshape(-1, 3).std(axis=0, ddof=1) ** 2))
    assert float(out["obs_entropy_joint_angles"]) == pytest.approx(h_joint / 3, rel=1e-4)
    assert float(out["obs_entropy_per_channel"]) == pytest.approx((h_joint + h_gyro) / 6, rel=1e-4)
    assert float(out["policy_obs_entropy_ratio"]) == pytest.approx(-0.75 / ((h_joint + h_gyro) / 6), rel=1e-4)
    w2 = np.sqrt(np.sum((flat.mean(0) - [0.1, 0.2, 0.3]) ** 2 + (sd - [0.05, 0.1, 0.02]) ** 2))
    assert float(out["target_w2"]) == pytest.approx(w2, rel=1e-4)
    h_real = np.sum(0.5 * np.log(2 * np.pi * np.e * np.array([0.05, 0.1, 0.02]) ** 2))
    assert float(out["target_entropy_ratio"]) == pytest.approx(np.exp((h_joint - h_real) / 3), rel=1e-4)
    with pytest.raises(ValueError, match="3 channels, the profile 2"):
        bad = GroupTarget(group="gyro", observation="noisy_imu_gyro", channels=("x", "y"), mean=(0, 0), std=(1, 1))
        observation_gap(obs, EntropyTarget(groups=(bad,)))


# ---------------------------------------------------------------------------------------------- inside ksim's PPO
@pytest.fixture(scope="module")
def ppo_parts(tmp_path_factory):
    p = build_walk_parts(str(tmp_path_factory.mktemp("bridged")), argmax_action=False, num_passes=1)
    unroll = jax.jit(lambda e, s: p.task._single_unroll(p.constants, e, s, 4))
    trajectories, rewards, _ = unroll(p.env_state, p.shared)
    return p.task, p.constants, p.env_state, p.shared, p.model_arr, p.model_static, trajectories, rewards, p.config


@pytest.mark.slow
def test_alpha_term_equals_ksims_fixed_entropy_term_at_the_same_value(ppo_parts):
    task, _, env_state, _, model_arr, model_static, traj, rewards, base = ppo_parts
    alpha = 0.0123
    on_policy, _ = jax.vmap(task.get_ppo_variables, in_axes=(None, 0, 0, 0))(
        eqx.combine(model_arr, model_static), traj, env_state.model_carry, jax.random.split(jax.random.PRNGKey(3), 2)
    )
    on_policy = jax.tree.map(jax.lax.stop_gradient, on_policy)
    rng = jax.random.PRNGKey(4)
    ours, ours_metrics = jax.jit(
        lambda a: task._ppo_loss_at_alpha(
            model_arr, model_static, traj, rewards, env_state.model_carry, on_policy, rng, a
        )
    )(jnp.float32(alpha))
    # The oracle: ksim's own loss with the same coefficient as its static entropy_coef.
    oracle_task = KBotWalkingTask(KBotWalkingTask.get_config({**base, "entropy_coef": alpha}, use_cli=False))
    theirs, _ = oracle_task._get_ppo_loss_and_metrics(
        model_arr, model_static, traj, rewards, env_state.model_carry, on_policy, rng
    )
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5, abs=1e-7)
    # And the entropy it sees is the analytic Gaussian entropy of the actor's std (not xax's +1.42 nats/dim).
    assert float(jnp.mean(ours_metrics["policy_entropy_per_dim"])) < 1.0


@pytest.mark.slow
def test_minibatch_advantage_normalization_standardises_ksims_gae_over_the_minibatch(ppo_parts):
    task, _, env_state, _, model_arr, model_static, traj, rewards, base = ppo_parts
    model = eqx.combine(model_arr, model_static)
    on_policy, _ = jax.vmap(task.get_ppo_variables, in_axes=(None, 0, 0, 0))(
        model, traj, env_state.model_carry, jax.random.split(jax.random.PRNGKey(3), 2)
    )
    rng, alpha = jax.random.PRNGKey(4), jnp.float32(0.004)

    def loss_with(normalization):
        t = KBotWalkingTask(
            KBotWalkingTask.get_config({**base, "advantage_normalization": normalization}, use_cli=False)
        )
        return jax.jit(
            lambda: t._ppo_loss_at_alpha(
                model_arr, model_static, traj, rewards, env_state.model_carry, on_policy, rng, alpha
            )
        )()

    raw_loss, _ = loss_with("none")
    # "none" is ksim's own loss without normalisation at the same coefficient (the oracle).
    oracle = KBotWalkingTask(
        KBotWalkingTask.get_config({**base, "entropy_coef": 0.004, "normalize_advantages": False}, use_cli=False)
    )
    theirs, _ = oracle._get_ppo_loss_and_metrics(
        model_arr, model_static, traj, rewards, env_state.model_carry, on_policy, rng
    )
    assert float(raw_loss) == pytest.approx(float(theirs), rel=1e-5, abs=1e-7)
    # "minibatch": advantages centred over the minibatch, so the per-trajectory means (what ksim logs) average to 0;
    # "trajectory" (ksim 0.2.10's) leaves them uncentred.
    _, norm = loss_with("minibatch")
    assert abs(float(jnp.mean(norm["advantages"]))) < 1e-5
    _, per_traj = loss_with("trajectory")
    assert abs(float(jnp.mean(per_traj["advantages"]))) > 1e-3


def test_standardize_is_one_scale_over_the_whole_minibatch():
    rng = np.random.default_rng(0)
    adv = rng.normal(0.3, 2.0, size=(4, 32)) * np.array([[1.0], [0.1], [3.0], [0.5]])  # trajectories of unequal scale
    out = np.asarray(standardize(jnp.asarray(adv, dtype=jnp.float32)))
    np.testing.assert_allclose(out, (adv - adv.mean()) / adv.std(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out.std(axis=1), 1.0, atol=0.1)  # the trajectories keep their relative scale
    np.testing.assert_array_equal(np.asarray(standardize(jnp.zeros((2, 3)))), 0.0)  # constant: no division by 0


@pytest.mark.slow
def test_temperature_and_widths_restore_bit_for_bit_from_a_checkpoint(ppo_parts, tmp_path):
    task, constants, env_state, shared, *_ = ppo_parts
    assert TEMPERATURE_KEY in shared.aux_values
    temperature = task.get_entropy_temperature()
    state = shared.aux_values[TEMPERATURE_KEY]
    for h in (0.4, 0.1, -1.7, -0.9):
        state = temperature.update(state, h)
    loop_constants = RLLoopConstants(optimizer=(task.get_optimizer(),), constants=constants)
    carry = RLLoopCarry(opt_state=(), env_states=env_state, shared_state=shared)
    trained = dataclasses.replace(
        carry, shared_state=dataclasses.replace(shared, aux_values=xax.FrozenDict({TEMPERATURE_KEY: state}))
    )
    widths = np.asarray(constants.curriculum.randomization.initial_widths) * 0.8
    trained = dataclasses.replace(trained, env_states=task.with_widths(env_state, constants.curriculum, widths))
    path = tmp_path / "ckpt.bin"
    write_checkpoint(path, task.checkpoint_aux(loop_constants, trained))

    restored = task.restore_checkpoint_aux(loop_constants, carry, xax.State.init_state(), path)
    assert_bitwise_equal(restored.shared_state.aux_values[TEMPERATURE_KEY], state)
    np.testing.assert_array_equal(restored.env_states.curriculum_state.state.widths[0], widths.astype(np.float32))
    # Every environment's physics is redrawn at the restored widths (jitted there): the same draw made op by op.
    randomization = constants.curriculum.randomization
    n = env_state.curriculum_state.state.widths.shape[0]
    rngs = jax.random.split(jax.random.PRNGKey(0), n)  # the restore keys its redraw on state.num_steps (0 here)
    pinned = restored.env_states.curriculum_state.state.pinned
    with jax.disable_jit():
        expected = jax.vmap(lambda r, k: randomization.sample(shared.physics_model, r, widths, k))(rngs, pinned)
    assert expected
    for name, value in expected.items():
        np.testing.assert_allclose(restored.env_states.randomization_dict[name], value, rtol=1e-5, atol=1e-6)
    assert float(gaussian_entropy(1.0)) == pytest.approx(0.5 * np.log(2 * np.pi * np.e))


def test_alpha_on_a_bound_is_warned_every_25_updates_in_a_row(tmp_path, monkeypatch, caplog):
    # The host-side logging hook, fed the metrics of updates whose α sat on its floor for 24, 25 and 50 updates.
    import ksim

    from ksim_entropy.ppo.mixins import EPISODE_COUNT, EPISODE_SECONDS, EPISODE_SUCCESSES
    from tests.walk_parts import walk_task

    monkeypatch.setattr(ksim.RLTask, "log_train_metrics", lambda self, metrics: None)  # no xax logger here
    task = walk_task(tmp_path / "run")

    def metrics(streak):
        train = {
            EPISODE_COUNT: jnp.float32(2),
            EPISODE_SECONDS: jnp.float32(3.0),
            EPISODE_SUCCESSES: jnp.float32(0),
            "temperature_bound_updates": jnp.int32(streak),
            "temperature_alpha": jnp.float32(1e-4),
            "temperature_target_entropy": jnp.float32(-2.0),
            "policy_entropy_per_dim": jnp.float32(-1.5),
        }
        reward = {"_total": jnp.float32(1.0)}
        return ksim.Metrics(train=train, reward=reward, termination={}, curriculum_level=jnp.float32(0.0))

    with caplog.at_level("WARNING", logger="ksim_entropy.ppo.mixins"):
        for streak in (24, 25, 26, 50):
            task.log_train_metrics(metrics(streak))
    warnings = [r.getMessage() for r in caplog.records if "sat on a bound" in r.getMessage()]
    assert len(warnings) == 2
    assert "for 25 updates in a row" in warnings[0] and "for 50 updates in a row" in warnings[1]
    assert "target entropy (-2.000 nats/dim)" in warnings[0] and "policy entropy -1.500" in warnings[0]
    assert task._episode_window.mean_length_s == pytest.approx(1.5)  # 4 updates × 2 episodes of 1.5 s
