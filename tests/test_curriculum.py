"""Width schedules on synthetic rollouts: each decision checked against the rule worked out by hand."""

import dataclasses

import jax
import jax.numpy as jnp
import ksim
import numpy as np
import pytest
import xax
from ksim.curriculum import CurriculumState
from mujoco import mjx

from ksim_entropy.curriculum import RandomizationCurriculum
from ksim_entropy.kbot.robot import load_robot_model, resolve_robot_files
from ksim_entropy.randomization import DomainRandomization, Gravity, JointFrictionLoss

T = 10  # control steps per synthetic rollout


@pytest.fixture(scope="module")
def randomization():
    mx = mjx.put_model(load_robot_model(resolve_robot_files("local"), scene="smooth"))
    return DomainRandomization(
        parameters=[
            JointFrictionLoss.create(mx, low=0.5, high=2.0, width=0.5, max_width=1.5),
            Gravity.create(width=0.5, max_width=2.0),
        ]
    )


def initial(curriculum, n):
    return jax.vmap(curriculum.get_initial_state)(jax.random.split(jax.random.PRNGKey(0), n))


def rollout(done, success, reward=None):
    """A trajectory with only the fields the curriculum reads; done/success of shape (envs, T)."""
    n = done.shape[0]
    traj = ksim.Trajectory(
        qpos=jnp.zeros((n, T, 1)),
        qvel=jnp.zeros((n, T, 1)),
        xpos=jnp.zeros((n, T, 1, 3)),
        xquat=jnp.zeros((n, T, 1, 4)),
        ctrl=jnp.zeros((n, T, 1)),
        obs=xax.FrozenDict({}),
        command=xax.FrozenDict({}),
        event_state=xax.FrozenDict({}),
        action=jnp.zeros((n, T, 1)),
        done=jnp.asarray(done),
        success=jnp.asarray(success),
        timestep=jnp.zeros((n, T)),
        termination_components=xax.FrozenDict({}),
        aux_outputs=xax.FrozenDict({}),
    )
    components = {"tracking": jnp.zeros((n, T)) if reward is None else jnp.asarray(reward)}
    return traj, ksim.RewardState(
        total=components["tracking"], components=xax.FrozenDict(components), carry=xax.FrozenDict({})
    )


def with_pins(state, pins):
    return CurriculumState(
        level=state.level, state=state.state.__class__(**{**vars(state.state), "pinned": jnp.asarray(pins, jnp.int32)})
    )


def test_uniform_mode_keeps_the_starting_widths(randomization):
    c = RandomizationCurriculum(randomization=randomization, mode="uniform")
    s = initial(c, 8)
    assert (np.asarray(s.state.pinned) == -1).all()
    traj, rew = rollout(np.ones((8, T), bool), np.zeros((8, T), bool))
    for _ in range(3):
        s = c(traj, rew, None, s)
    np.testing.assert_allclose(s.state.widths, np.tile([0.5, 0.5], (8, 1)))
    # level = mean(width / max_width) = (0.5/1.5 + 0.5/2) / 2
    np.testing.assert_allclose(s.level, (0.5 / 1.5 + 0.25) / 2, rtol=1e-6)


def test_curriculum_mode_ramps_linearly_to_max(randomization):
    c = RandomizationCurriculum(randomization=randomization, mode="curriculum", ramp_updates=4)
    s = initial(c, 3)
    traj, rew = rollout(np.zeros((3, T), bool), np.zeros((3, T), bool))
    seen = []
    for _ in range(6):
        s = c(traj, rew, None, s)
        seen.append(np.asarray(s.state.widths[0]))
    expected = [[0.5 + (1.5 - 0.5) * min(k / 4, 1), 0.5 + (2.0 - 0.5) * min(k / 4, 1)] for k in range(1, 7)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_adaptive_widens_on_success_and_narrows_on_failure(randomization):
    c = RandomizationCurriculum(
        randomization=randomization, mode="adaptive", queue_length=4, step=0.1, threshold_low=0.5, threshold_high=0.8
    )
    s = with_pins(initial(c, 4), [0, 0, 1, -1])
    # Env 0 and 1 pin friction loss: 2 episodes end per env, all successes -> 4 samples, mean 1.0 -> widen by 0.1.
    # Env 2 pins gravity: 2 episodes, both failures -> 2 samples (< queue 4): no decision yet.
    # Env 3 pins nothing: its failures count nowhere.
    done = np.zeros((4, T), bool)
    done[:, [3, 7]] = True
    success = np.zeros((4, T), bool)
    success[[0, 1]] = done[[0, 1]]
    traj, rew = rollout(done, success)
    s = c(traj, rew, None, s)
    np.testing.assert_allclose(s.state.widths[0], [0.6, 0.5], rtol=1e-6)
    np.testing.assert_allclose(s.state.perf_count[0], [0.0, 2.0])  # friction pool cleared, gravity pool half full
    np.testing.assert_allclose(s.state.perf_sum[0], [0.0, 0.0])
    # Another rollout: gravity pool reaches 4 samples, all failures -> narrow by 0.1.
    s = c(traj, rew, None, s)
    np.testing.assert_allclose(s.state.widths[0], [0.7, 0.4], rtol=1e-6)
    assert (np.asarray(s.state.pinned) == [0, 0, 1, -1]).all()  # each env keeps its boundary parameter
    np.testing.assert_allclose(s.level, np.full(4, (0.7 / 1.5 + 0.4 / 2.0) / 2), rtol=1e-6)


def test_adaptive_between_thresholds_holds_and_clips_at_the_limits(randomization):
    c = RandomizationCurriculum(randomization=randomization, mode="adaptive", queue_length=2, step=1.0)
    s = with_pins(initial(c, 2), [0, 1])
    done = np.zeros((2, T), bool)
    done[:, [2, 5]] = True
    success = done.copy()
    success[1, 5] = False  # env 1 (gravity): 1 of 2 succeed -> 0.5, between 0.5 and 0.8 -> hold
    traj, rew = rollout(done, success)
    s = c(traj, rew, None, s)
    np.testing.assert_allclose(s.state.widths[0], [1.5, 0.5], rtol=1e-6)  # 0.5 + 1 = 1.5 = max; gravity held


def test_reward_measure_pools_per_step_values(randomization):
    c = RandomizationCurriculum(
        randomization=randomization,
        mode="adaptive",
        measure="reward:tracking",
        queue_length=T,
        step=0.1,
        threshold_low=0.2,
        threshold_high=0.6,
    )
    s = with_pins(initial(c, 2), [0, 1])
    reward = np.stack([np.full(T, 0.7), np.full(T, 0.1)])
    traj, rew = rollout(np.zeros((2, T), bool), np.zeros((2, T), bool), reward)
    s = c(traj, rew, None, s)
    np.testing.assert_allclose(s.state.widths[0], [0.6, 0.4], rtol=1e-6)
    bad = RandomizationCurriculum(randomization=randomization, mode="adaptive", measure="reward:nope")
    with pytest.raises(KeyError, match="no reward named 'nope'"):
        bad(traj, rew, None, with_pins(initial(bad, 2), [0, 1]))


def test_boundary_fraction_sets_how_many_envs_pin(randomization):
    c = RandomizationCurriculum(randomization=randomization, mode="adaptive", boundary_fraction=0.4)
    pins = np.asarray(initial(c, 4000).state.pinned)
    assert abs((pins >= 0).mean() - 0.4) < 0.03
    assert set(np.unique(pins)) == {-1, 0, 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"threshold_low": 0.9, "threshold_high": 0.5}, "threshold_low <= threshold_high"),
        ({"step": 0.0}, "step must be > 0"),
        ({"measure": "speed"}, "measure must be"),
        ({"boundary_fraction": 1.5}, "boundary_fraction"),
        ({"min_width": 0.9}, "min_width"),
        ({"ramp_updates": 0}, "ramp_updates"),
    ],
)
def test_bad_settings_are_refused(randomization, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomizationCurriculum(randomization=randomization, **kwargs)


def test_matched_mode_follows_the_seed_rule_on_a_real_profile(randomization, tmp_path):
    from ksim_entropy.formats.profile import EntropyProfile, GroupProfile
    from ksim_entropy.ppo.matching import EntropyTarget, MatchRule

    real = GroupProfile(channels=("x", "y"), unit="rad/s", mean=np.zeros(2), std=np.array([0.1, 0.2]), num_samples=9)
    EntropyProfile(groups={"gyro": real}, source="robot").save(tmp_path / "p.json")
    target = EntropyTarget.load(tmp_path / "p.json", {"gyro": "noisy_imu_gyro"})
    rule = MatchRule(every_updates=2)
    c = RandomizationCurriculum(randomization=randomization, mode="matched", target=target, match_rule=rule)
    rng = np.random.default_rng(0)
    widths = [0.5, 0.5]
    for scale, factor in ((2.0, 0.9), (1.0, 1.0), (0.5, 1.1)):  # σ_sim/σ_real: too diverse, matched, too narrow
        gyro = rng.normal(size=(2, T * 50, 2)) * np.array([0.1, 0.2]) * scale
        traj, rew = rollout(np.zeros((2, T * 50), bool), np.zeros((2, T * 50), bool))
        traj = dataclasses.replace(traj, obs=xax.FrozenDict({"noisy_imu_gyro": jnp.asarray(gyro, jnp.float32)}))
        s = initial(c, 2)
        s = c(traj, rew, None, s)  # update 1: not due
        np.testing.assert_allclose(s.state.widths[0], widths, rtol=1e-6)
        s = c(traj, rew, None, s)  # update 2: due
        np.testing.assert_allclose(s.state.widths[0], np.minimum(np.multiply(widths, factor), [1.5, 2.0]), rtol=1e-6)
    with pytest.raises(ValueError, match="no group"):
        EntropyTarget.load(tmp_path / "p.json", {"joint_angles": "noisy_joint_position"})
    with pytest.raises(ValueError, match="needs an entropy target"):
        RandomizationCurriculum(randomization=randomization, mode="matched")
