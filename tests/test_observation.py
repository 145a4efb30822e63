"""DelayedObservation / SensorNoise on the real K-Bot, driven through ksim's own observation helpers.

Known values are written into real MJX states of the K-Bot (joint positions and velocities, the IMU gyro and the
IMU frame quaternion); outputs are checked against those values, against MuJoCo's own quaternion maths and against
closed-form noise statistics (scipy.stats for the distribution tests).
"""

import ksim_entropy  # noqa: F401, I001  (headless configuration before mujoco / jax are used)

import functools

import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
import scipy.stats
import xax
from ksim.curriculum import CurriculumState
from ksim.task.rl import RolloutEnvState, get_initial_obs_carry, get_observation
from ksim.utils.mujoco import get_sensor_data_idxs_by_name
from mujoco import mjx

from ksim_entropy.latency import Latency
from ksim_entropy.observation import DelayedObservation, DelayedObservationCarry, SensorNoise
from ksim_entropy.kbot.robot import load_robot_model, resolve_robot_files

CTRL_DT = 0.02
NUM_JOINTS = 20
N_ENVS = 64
EP1, EP2 = 11, 13  # steps in the two episodes of the main rollout
EP2_OFFSET = 1000.0  # values of the second episode start here: nothing below it may show up after the reset
LEVEL = 0.5  # curriculum level fed to the rollouts (noise without scale_with_curriculum must ignore it)


# --------------------------------------------------------------------------------------------------------------------
# Real K-Bot states and a ksim-like rollout (get_initial_obs_carry at each reset, get_observation every step)


@pytest.fixture(scope="module")
def kbot():
    mj = load_robot_model(resolve_robot_files("local"), scene="smooth")
    data = mujoco.MjData(mj)
    mujoco.mj_forward(mj, data)
    mjx_model = mjx.put_model(mj)
    idx = get_sensor_data_idxs_by_name(mjx_model)
    layout = (int(idx["imu_gyro"][0]), int(idx["imu_site_quat"][0]))
    assert mj.nq == 7 + NUM_JOINTS and mj.nv == 6 + NUM_JOINTS
    return mj, mjx_model, mjx.put_data(mj, data), layout


def _write(data, u, layout):
    """Physics data with joints at u (rad), joint velocities u + 0.5 (rad/s), gyro u[:3] + 0.25, IMU rolled 0.05 u0."""
    gyro0, quat0 = layout
    half = 0.05 * u[0] / 2
    quat = jnp.stack([jnp.cos(half), jnp.sin(half), jnp.zeros(()), jnp.zeros(())])
    sensordata = data.sensordata.at[gyro0 : gyro0 + 3].set(u[:3] + 0.25).at[quat0 : quat0 + 4].set(quat)
    return data.replace(qpos=data.qpos.at[7:].set(u), qvel=data.qvel.at[6:].set(u + 0.5), sensordata=sensordata)


def _physics_state(data):
    return ksim.PhysicsState(
        data=data,
        most_recent_action=jnp.zeros(NUM_JOINTS),
        event_states=xax.FrozenDict({}),
        actuator_state=None,
        action_latency=jnp.zeros(()),
    )


def _env_state(physics_state, obs_carry, level, rng):
    return RolloutEnvState(
        commands=xax.FrozenDict({}),
        physics_state=physics_state,
        randomization_dict=xax.FrozenDict({}),
        model_carry=None,
        reward_carry=xax.FrozenDict({}),
        obs_carry=obs_carry,
        curriculum_state=CurriculumState(level=level, state=None),
        rng=rng,
    )


@functools.partial(jax.jit, static_argnames=("observations", "layout"))
def _rollout(observations, layout, base_data, values, resets, rngs, level):
    """Per env (vmapped over rngs): for each step t, re-init the carry if resets[t] (as ksim does on termination,
    on the new reset state), then ksim's get_observation. Returns (observations, carries), each (N, T, ...)."""

    def one_env(rng):
        init_rng, rng = jax.random.split(rng)
        carry0 = get_initial_obs_carry(init_rng, _physics_state(_write(base_data, values[0], layout)), observations)

        def step(carry, xs):
            t, u, reset = xs
            ps = _physics_state(_write(base_data, u, layout))
            carry_rng, obs_rng = jax.random.split(jax.random.fold_in(rng, t))
            carry = jax.lax.cond(reset, lambda: get_initial_obs_carry(carry_rng, ps, observations), lambda: carry)
            obs, carry = get_observation(_env_state(ps, carry, level, obs_rng), observations, carry, level, obs_rng)
            return carry, (obs, carry)

        _, out = jax.lax.scan(step, carry0, (jnp.arange(values.shape[0]), values, resets))
        return out

    return jax.vmap(one_env)(rngs)


def _step_values(steps, offset=0.0):
    """u_s[c] = offset + s + 0.01 c (float32): channel 0 is the step index itself."""
    s = np.arange(steps, dtype=np.float64)[:, None]
    return (offset + s + 0.01 * np.arange(NUM_JOINTS)[None, :]).astype(np.float32)


def _gravity_oracle(mj, u0):
    """Gravity in the IMU frame for an IMU rolled by 0.05 u0 about x, with MuJoCo's quaternion maths."""
    out = []
    for angle in np.float32(0.05) * np.asarray(u0, dtype=np.float32):
        quat = np.array([np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0])
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, quat)
        out.append(mat.reshape(3, 3).T @ mj.opt.gravity)
    return np.array(out)


def _lat(lo_steps, hi_steps, **kw):
    return Latency(min_s=lo_steps * CTRL_DT, max_s=hi_steps * CTRL_DT, step_s=CTRL_DT, **kw)


GYRO_NOISE = SensorNoise(gaussian_std=(0.0, 0.05, 0.2), uniform_mag=(0.1, 0.0, 0.3), bias_mag=(0.0, 0.02, 0.5))


@pytest.fixture(scope="module")
def main_rollout(kbot):
    mj, mjx_model, base_data, layout = kbot
    gyro = ksim.SensorObservation.create(physics_model=mjx_model, sensor_name="imu_gyro")
    grav = ksim.ProjectedGravityObservation.create(physics_model=mjx_model, framequat_name="imu_site_quat")
    grav_lag = ksim.ProjectedGravityObservation.create(
        physics_model=mjx_model, framequat_name="imu_site_quat", min_lag=0.5, max_lag=0.5
    )
    observations = xax.FrozenDict(
        {
            "pos": DelayedObservation.create(
                ksim.JointPositionObservation(), ctrl_dt_s=CTRL_DT, latency_range_s=(0, 0.08)
            ),
            "vel": DelayedObservation(observation=ksim.JointVelocityObservation(), latency=_lat(1, 3)),
            "gyro": DelayedObservation(observation=gyro, latency=_lat(0, 2)),
            "grav": DelayedObservation(observation=grav, latency=_lat(0, 4)),
            "grav_now": grav,
            "grav_lag": DelayedObservation(observation=grav_lag, latency=_lat(2, 2)),
            "pos_double": DelayedObservation(
                observation=ksim.DelayedJointPositionObservation(delay_steps=2), latency=_lat(0, 2)
            ),
            "gyro_noisy": DelayedObservation(observation=gyro, sensor_noise=GYRO_NOISE),
            "pos_bias": DelayedObservation(
                observation=ksim.JointPositionObservation(), latency=_lat(0, 3), sensor_noise=SensorNoise(bias_mag=0.1)
            ),
            "pos_order": DelayedObservation(
                observation=ksim.JointPositionObservation(),
                latency=_lat(3, 3),
                sensor_noise=SensorNoise(gaussian_std=0.01),
            ),
        }
    )
    values = np.concatenate([_step_values(EP1), _step_values(EP2, EP2_OFFSET)])
    resets = np.zeros(EP1 + EP2, dtype=bool)
    resets[[0, EP1]] = True
    rngs = jax.random.split(jax.random.key(0), N_ENVS)
    obs, carry = _rollout(observations, layout, base_data, values, resets, rngs, jnp.float32(LEVEL))
    return {
        "mj": mj,
        "values": values,
        "obs": jax.tree.map(np.asarray, obs),
        "carry": jax.tree.map(np.asarray, carry),
    }


def _episodes():
    return [(0, EP1), (EP1, EP1 + EP2)]


def _delays(carry, name):
    """The per-episode delay of each env, (N_ENVS, 2), checking it is constant within each episode."""
    delay = carry[name].line.delay
    out = []
    for start, end in _episodes():
        assert (delay[:, start:end] == delay[:, start : start + 1]).all()
        out.append(delay[:, start])
    return np.stack(out, axis=1)


def _delayed_index(delays, start, end):
    """Index (N_ENVS, end - start) of the value each step must show: start + max(t - start - d, 0)."""
    t = np.arange(end - start)[None, :]
    return start + np.maximum(t - delays[:, None], 0)


# --------------------------------------------------------------------------------------------------------------------
# Exactness of the delay, episode resets, stateful inner observations


@pytest.mark.parametrize(
    ("name", "truth_fn", "delay_set"),
    [
        ("pos", lambda v: v, {0, 1, 2, 3, 4}),
        ("vel", lambda v: v + np.float32(0.5), {1, 2, 3}),
        ("gyro", lambda v: v[:, :3] + np.float32(0.25), {0, 1, 2}),
        ("pos_double", None, {0, 1, 2}),
    ],
)
def test_output_is_exactly_the_value_d_steps_ago_across_resets(main_rollout, name, truth_fn, delay_set):
    values, obs = main_rollout["values"], main_rollout["obs"][name]
    delays = _delays(main_rollout["carry"], name)
    assert set(np.unique(delays)) == delay_set  # every possible delay was drawn in the 128 episodes
    assert (delays[:, 0] != delays[:, 1]).any()  # redrawn at the reset
    for ep, (start, end) in enumerate(_episodes()):
        idx = _delayed_index(delays[:, ep], start, end)
        if name == "pos_double":  # ksim's own DelayedJointPositionObservation(2) inside: the delays add up
            idx = start + np.maximum(np.arange(end - start)[None, :] - 2 - delays[:, ep, None], 0)
            expected = values[idx]
        else:
            expected = np.stack([truth_fn(values[i]) for i in idx])
        np.testing.assert_array_equal(obs[:, start:end], expected)
    # Nothing from the first episode leaks into the second: every value there is >= the offset.
    assert (obs[:, EP1:, 0] >= EP2_OFFSET).all()
    assert (obs[:, :EP1, 0] < EP2_OFFSET).all()


def test_projected_gravity_delayed_exactly_and_matches_mujoco(main_rollout):
    mj, values, obs = main_rollout["mj"], main_rollout["values"], main_rollout["obs"]
    np.testing.assert_allclose(
        obs["grav_now"], np.broadcast_to(_gravity_oracle(mj, values[:, 0]), obs["grav_now"].shape), atol=1e-4
    )
    delays = _delays(main_rollout["carry"], "grav")
    assert set(np.unique(delays)) == {0, 1, 2, 3, 4}
    for ep, (start, end) in enumerate(_episodes()):
        idx = _delayed_index(delays[:, ep], start, end)
        expected = np.take_along_axis(obs["grav_now"], idx[:, :, None], axis=1)
        np.testing.assert_array_equal(obs["grav"][:, start:end], expected)


def test_stateful_inner_observation_carry_is_threaded(main_rollout):
    """ksim's ProjectedGravityObservation with lag 0.5 is an EMA whose state starts at 0 at every reset."""
    mj, values, obs = main_rollout["mj"], main_rollout["values"], main_rollout["obs"]["grav_lag"]
    gravity = _gravity_oracle(mj, values[:, 0])
    for start, end in _episodes():
        ema, x = [], np.zeros(3)
        for s in range(start, end):
            x = 0.5 * x + 0.5 * gravity[s]
            ema.append(x)
        ema = np.array(ema)
        expected = ema[np.maximum(np.arange(end - start) - 2, 0)]
        np.testing.assert_allclose(obs[:, start:end], np.broadcast_to(expected, obs[:, start:end].shape), atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# Per-episode delay: distribution and quantisation


@functools.partial(jax.jit, static_argnames=("wrapper",))
def _drawn_delays(wrapper, physics_state, rngs):
    return jax.vmap(lambda k: wrapper.initial_carry(physics_state, k).line.delay)(rngs)


def test_delay_is_uniform_over_the_quantised_range(kbot):
    state = _physics_state(kbot[2])
    wrapper = DelayedObservation.create(ksim.JointPositionObservation(), ctrl_dt_s=CTRL_DT, latency_range_s=(0.02, 0.1))
    delays = np.asarray(_drawn_delays(wrapper, state, jax.random.split(jax.random.key(1), 5000)))
    values, counts = np.unique(delays, return_counts=True)
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    # A clearly non-uniform sample fails the same check (the test can fail).
    assert scipy.stats.chisquare(np.array([1200, 1000, 1000, 1000, 800])).pvalue < 1e-3


@pytest.mark.parametrize(
    ("range_s", "expected"),
    [
        ((0.03, 0.05), {2}),  # 1.5 -> 2 and 2.5 -> 2: Python rounds halves to even
        ((0.01, 0.07), {0, 1, 2, 3, 4}),  # 0.5 -> 0; 0.07 / 0.02 = 3.5000000000000004 -> 4
        ((0.029, 0.031), {1, 2}),  # 1.45 -> 1, 1.55 -> 2
    ],
)
def test_latency_in_seconds_is_rounded_to_steps(kbot, range_s, expected):
    wrapper = DelayedObservation.create(ksim.JointPositionObservation(), ctrl_dt_s=CTRL_DT, latency_range_s=range_s)
    assert {wrapper.latency.min_steps, wrapper.latency.max_steps} <= expected
    delays = np.asarray(_drawn_delays(wrapper, _physics_state(kbot[2]), jax.random.split(jax.random.key(2), 400)))
    assert set(np.unique(delays)) == expected


def test_a_delay_line_without_holds_carries_only_its_buffer_and_counters(kbot):
    """Without holds the line keeps only its buffer and one array of counters (every carry leaf costs a select per
    step); with holds, the last output comes back."""
    ps = _physics_state(kbot[2])
    leaves = {}
    for name, latency in {
        "fixed": _lat(1, 2),
        "jitter": _lat(1, 2, jitter_s=CTRL_DT),
        "hold": _lat(1, 2, hold_prob=0.1),
    }.items():
        wrapper = DelayedObservation(observation=ksim.JointPositionObservation(), latency=latency)
        line = wrapper.initial_carry(ps, jax.random.PRNGKey(0)).line
        state = ksim.ObservationInput(
            commands=xax.FrozenDict({}), physics_state=ps, obs_carry=wrapper.initial_carry(ps, jax.random.PRNGKey(0))
        )
        _, carry = wrapper.observe_stateful(state, jnp.float32(1.0), jax.random.PRNGKey(1))
        assert jax.tree.structure(carry.line) == jax.tree.structure(line)  # a step keeps the carry's structure
        leaves[name] = len(jax.tree.leaves(line))
    assert leaves == {"fixed": 2, "jitter": 2, "hold": 3}


# --------------------------------------------------------------------------------------------------------------------
# Jitter and hold


HOLD_PROB = 0.3
LONG_T = 200


@pytest.fixture(scope="module")
def jitter_rollout(kbot):
    _, _, base_data, layout = kbot
    pos = ksim.JointPositionObservation()
    observations = xax.FrozenDict(
        {
            "hold": DelayedObservation(observation=pos, latency=_lat(2, 2, hold_prob=HOLD_PROB)),
            "jitter": DelayedObservation(observation=pos, latency=_lat(1, 3, jitter_s=2 * CTRL_DT)),
            "both": DelayedObservation(observation=pos, latency=_lat(0, 2, jitter_s=CTRL_DT, hold_prob=0.5)),
        }
    )
    values = _step_values(LONG_T)
    resets = np.zeros(LONG_T, dtype=bool)
    resets[0] = True
    obs, carry = _rollout(
        observations, layout, base_data, values, resets, jax.random.split(jax.random.key(3), N_ENVS), jnp.float32(1.0)
    )
    return values, jax.tree.map(np.asarray, obs), jax.tree.map(np.asarray, carry)


@pytest.mark.parametrize("name", ["hold", "jitter", "both"])
def test_jitter_and_hold_output_written_values_never_going_back(jitter_rollout, name):
    values, obs, _ = jitter_rollout
    out = obs[name]
    read = np.rint(out[:, :, 0]).astype(int)  # channel 0 is the step index
    np.testing.assert_array_equal(out, values[read])  # always a value that was written, whole rows
    assert (read <= np.arange(LONG_T)[None, :]).all()  # never from the future
    assert (np.diff(read, axis=1) >= 0).all()  # never goes back


def test_hold_repeats_the_previous_output_with_hold_prob(jitter_rollout):
    _, obs, _ = jitter_rollout
    read = np.rint(obs["hold"][:, :, 0]).astype(int)
    t = np.arange(LONG_T)[None, :]
    # With d = 2 and no jitter, for t >= 3 the read index t - 2 always advances, so a repeat is a hold.
    repeated = read[:, 3:] == read[:, 2:-1]
    n = repeated.size
    assert abs(repeated.mean() - HOLD_PROB) < 5 * np.sqrt(HOLD_PROB * (1 - HOLD_PROB) / n)
    # A step that is not held catches up to exactly t - d.
    assert (read[:, 3:][~repeated] == (t - 2)[:, 3:].repeat(N_ENVS, 0)[~repeated]).all()


def test_jitter_adds_zero_to_jitter_steps_of_delay(jitter_rollout):
    _, obs, carry = jitter_rollout
    read = np.rint(obs["jitter"][:, :, 0]).astype(int)
    delay = carry["jitter"].line.delay[:, :1]
    lag = np.arange(LONG_T)[None, :] - read
    steady = lag[:, 10:] - delay  # past the start (t >= d + jitter), lag - d is the effective jitter
    assert steady.min() == 0 and steady.max() == 2
    assert set(np.unique(steady)) == {0, 1, 2}


# --------------------------------------------------------------------------------------------------------------------
# Noise inside the rollout: order, bias per episode, per-channel magnitudes


def test_noise_is_added_before_the_delay(main_rollout):
    values, out = main_rollout["values"], main_rollout["obs"]["pos_order"]
    for start, end in _episodes():
        # The first d + 1 = 4 outputs all show the same noisy reset sample (noise added after the delay would differ).
        assert (out[:, start : start + 4] == out[:, start : start + 1]).all()
        noise = out[:, start + 4 : end] - values[start + 1 : end - 3]
        assert 0.0095 < noise.std() < 0.0105  # 0.01 rad, ~20000 samples
        assert abs(noise.mean()) < 5 * 0.01 / np.sqrt(noise.size)


def test_bias_is_constant_within_an_episode_and_redrawn_across(main_rollout):
    values, out = main_rollout["values"], main_rollout["obs"]["pos_bias"]
    bias = main_rollout["carry"]["pos_bias"].bias  # (N, T, 20)
    delays = _delays(main_rollout["carry"], "pos_bias")
    per_episode = []
    for ep, (start, end) in enumerate(_episodes()):
        b = bias[:, start]
        assert (bias[:, start:end] == b[:, None]).all()
        idx = _delayed_index(delays[:, ep], start, end)
        np.testing.assert_array_equal(out[:, start:end], values[idx] + b[:, None, :])
        per_episode.append(b)
    assert (np.abs(np.stack(per_episode)) <= 0.1).all()
    assert (per_episode[0] != per_episode[1]).all()  # redrawn at the reset
    assert len(np.unique(per_episode[0][:, 0])) == N_ENVS  # and per env


def test_per_channel_noise_in_the_rollout(main_rollout):
    values, out = main_rollout["values"], main_rollout["obs"]["gyro_noisy"]
    bias = main_rollout["carry"]["gyro_noisy"].bias
    truth = values[:, :3] + np.float32(0.25)
    noise = (out - truth[None] - bias).reshape(-1, 3).astype(np.float64)
    n = noise.shape[0]
    # Channel 0: uniform 0.1 only, no bias. Channel 1: Gaussian 0.05 + bias 0.02. Channel 2: all three.
    expected_var = np.array([0.1**2 / 3, 0.05**2, 0.2**2 + 0.3**2 / 3])
    np.testing.assert_allclose(noise.var(axis=0), expected_var, rtol=5 * np.sqrt(2 / n))  # level 0.5 is ignored
    assert np.abs(noise[:, 0]).max() <= 0.1 + 1e-4  # float32 rounding at values ~1000
    assert (bias[..., 0] == 0).all() and (np.abs(bias[..., 1]) <= 0.02).all() and (np.abs(bias[..., 2]) <= 0.5).all()
    assert np.abs(bias[..., 2]).max() > 0.3


# --------------------------------------------------------------------------------------------------------------------
# SensorNoise on its own: closed-form moments, distributions, curriculum scaling, broadcasting


@functools.partial(jax.jit, static_argnames=("noise", "shape", "n"))
def _noise_samples(noise, shape, n, bias, level, seed):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.vmap(lambda k: noise.add(jnp.zeros(shape), bias, k, level))(keys)


def _check_moments(x, var):
    n = x.shape[0]
    sd = np.sqrt(var)
    assert (np.abs(x.mean(axis=0)) <= 5 * sd / np.sqrt(n) + 1e-12).all()
    np.testing.assert_allclose(x.var(axis=0), var, rtol=5 * np.sqrt(2 / n))


N_SAMPLES = 20000


def test_gaussian_noise_moments_and_distribution():
    noise = SensorNoise(gaussian_std=(0.1, 0.5, 0.0))
    x = np.asarray(_noise_samples(noise, (3,), N_SAMPLES, jnp.zeros(3), jnp.float32(1.0), 0), dtype=np.float64)
    _check_moments(x[:, :2], np.array([0.01, 0.25]))
    assert (x[:, 2] == 0).all()
    for c, std in enumerate((0.1, 0.5)):
        assert scipy.stats.kstest(x[:, c], scipy.stats.norm(scale=std).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(x[:, 0], scipy.stats.norm(scale=0.12).cdf).pvalue < 1e-3  # the check can fail


def test_uniform_noise_moments_and_distribution():
    noise = SensorNoise(uniform_mag=(0.2, 1.0))
    x = np.asarray(_noise_samples(noise, (2,), N_SAMPLES, jnp.zeros(2), jnp.float32(1.0), 1), dtype=np.float64)
    _check_moments(x, np.array([0.2, 1.0]) ** 2 / 3)
    for c, mag in enumerate((0.2, 1.0)):
        assert np.abs(x[:, c]).max() <= mag * (1 + 1e-6)
        assert scipy.stats.kstest(x[:, c], scipy.stats.uniform(loc=-mag, scale=2 * mag).cdf).pvalue > 1e-3


def test_combined_noise_variance_matches_closed_form():
    noise = SensorNoise(gaussian_std=0.1, uniform_mag=0.3)
    np.testing.assert_allclose(noise.variance, 0.1**2 + 0.3**2 / 3)
    np.testing.assert_allclose(noise.std, np.sqrt(0.04))
    x = np.asarray(_noise_samples(noise, (4,), N_SAMPLES, jnp.zeros(4), jnp.float32(1.0), 2), dtype=np.float64)
    _check_moments(x, np.full(4, 0.04))
    per_channel = SensorNoise(gaussian_std=(0.1, 0.0), uniform_mag=(0.0, 0.3), bias_mag=(0.3, 0.0))
    np.testing.assert_allclose(per_channel.variance, [0.01, 0.03])
    np.testing.assert_allclose(per_channel.bias_variance, [0.03, 0.0])


def test_bias_is_uniform_per_channel():
    noise = SensorNoise(bias_mag=(0.0, 0.1, 2.0))
    keys = jax.random.split(jax.random.key(4), 5000)
    b = np.asarray(jax.vmap(lambda k: noise.sample_bias(k, (3,)))(keys), dtype=np.float64)
    assert (b[:, 0] == 0).all()
    for c, mag in ((1, 0.1), (2, 2.0)):
        assert np.abs(b[:, c]).max() <= mag
        assert scipy.stats.kstest(b[:, c], scipy.stats.uniform(loc=-mag, scale=2 * mag).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(b[:, 1], scipy.stats.uniform(loc=-0.12, scale=0.24).cdf).pvalue < 1e-3
    # A (4, 3) observation: the per-channel magnitudes go along the last axis.
    b2 = np.asarray(noise.sample_bias(jax.random.key(5), (4, 3)))
    assert b2.shape == (4, 3) and (b2[:, 0] == 0).all() and len(np.unique(b2[:, 2])) == 4


def test_curriculum_scaling_is_opt_in():
    bias = jnp.array([1.0, -2.0])
    plain = SensorNoise(gaussian_std=0.2)
    scaled = SensorNoise(gaussian_std=0.2, scale_with_curriculum=True)
    half = np.asarray(_noise_samples(plain, (2,), N_SAMPLES, bias, jnp.float32(0.5), 6), dtype=np.float64)
    full = np.asarray(_noise_samples(plain, (2,), N_SAMPLES, bias, jnp.float32(1.0), 6), dtype=np.float64)
    np.testing.assert_array_equal(half, full)
    x = np.asarray(_noise_samples(scaled, (2,), N_SAMPLES, bias, jnp.float32(0.5), 6), dtype=np.float64)
    _check_moments(x - 0.5 * np.asarray(bias), np.full(2, (0.5 * 0.2) ** 2))  # bias and noise both halved


# --------------------------------------------------------------------------------------------------------------------
# ksim integration, jit / vmap, names


def test_ksim_helpers_thread_the_carry(kbot):
    _, mjx_model, base_data, layout = kbot
    gyro = ksim.SensorObservation.create(physics_model=mjx_model, sensor_name="imu_gyro")
    wrapper = DelayedObservation(
        observation=gyro,
        latency=_lat(1, 1),
        sensor_noise=SensorNoise(bias_mag=0.01),
        noise=ksim.AdditiveGaussianNoise(std=0.5),  # ksim's own noise on the wrapper: added after the delay
    )
    observations = xax.FrozenDict({"delayed": wrapper, "plain": ksim.JointPositionObservation()})
    states = [_physics_state(_write(base_data, jnp.asarray(_step_values(1, 10.0 * s)[0]), layout)) for s in range(3)]
    carry = get_initial_obs_carry(jax.random.key(7), states[0], observations)
    assert isinstance(carry["delayed"], DelayedObservationCarry) and carry["plain"] is None
    outs = []
    for s, ps in enumerate(states):
        rng = jax.random.key(10 + s)
        obs, new_carry = get_observation(_env_state(ps, carry, jnp.float32(1.0), rng), observations, carry, 1.0, rng)
        assert set(obs) == {"delayed", "noisy_delayed", "plain"}
        assert obs["delayed"].shape == obs["noisy_delayed"].shape == (3,)
        # Same structure, shapes and dtypes as the initial carry: ksim's lax.cond on termination needs it.
        assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
        assert jax.tree.map(lambda a: (a.shape, a.dtype), new_carry) == jax.tree.map(
            lambda a: (a.shape, a.dtype), carry
        )
        outs.append(np.asarray(obs["delayed"] - new_carry["delayed"].bias))
        carry = new_carry
    gyro_truth = [np.asarray(ps.data.sensordata[layout[0] : layout[0] + 3]) for ps in states]
    np.testing.assert_allclose(outs, [gyro_truth[0], gyro_truth[0], gyro_truth[1]], atol=1e-5)
    assert int(carry["delayed"].line.age) == 1  # read v_1 at step 2


def test_neither_a_step_nor_a_reset_calls_threefry(kbot):
    """A step's inner key, noise and jitter and a reset's bias and delay are all hashed from the key's words
    (`hashed_key_and_uniforms`, `hashed_uniforms`): no threefry, each of which is a loop XLA compiles on its own;
    the step still draws (its noise changes with the key)."""
    _, mjx_model, base_data, _ = kbot
    gyro = ksim.SensorObservation.create(physics_model=mjx_model, sensor_name="imu_gyro")
    ps = _physics_state(base_data)
    rng = jax.random.PRNGKey(0)

    def draws(wrapper):
        reset = str(jax.make_jaxpr(wrapper.initial_carry)(ps, rng))
        carry = wrapper.initial_carry(ps, rng)
        state = ksim.ObservationInput(commands=xax.FrozenDict({}), physics_state=ps, obs_carry=carry)
        step = str(jax.make_jaxpr(lambda k: wrapper.observe_stateful(state, jnp.float32(1.0), k))(rng))
        return [sum(t.count(p) for p in ("random_split", "random_bits", "random_fold_in")) for t in (reset, step)]

    busy = DelayedObservation(
        observation=gyro, latency=_lat(1, 3, jitter_s=CTRL_DT, hold_prob=0.1), sensor_noise=GYRO_NOISE
    )
    assert draws(busy) == [0, 0]
    assert draws(DelayedObservation(observation=gyro, latency=_lat(2, 2))) == [0, 0]
    state = ksim.ObservationInput(commands=xax.FrozenDict({}), physics_state=ps, obs_carry=busy.initial_carry(ps, rng))
    first, second = (busy.observe_stateful(state, jnp.float32(1.0), jax.random.PRNGKey(k))[0] for k in (1, 2))
    assert not np.allclose(first, second)  # the noise follows the step's key


def test_jit_and_vmap_over_envs_give_batched_shapes(main_rollout):
    obs, carry = main_rollout["obs"], main_rollout["carry"]
    steps = EP1 + EP2
    assert obs["pos"].shape == (N_ENVS, steps, NUM_JOINTS)
    assert obs["gyro"].shape == (N_ENVS, steps, 3)
    assert obs["grav"].shape == (N_ENVS, steps, 3)
    assert carry["pos"].line.buffer.shape == (N_ENVS, steps, 5, NUM_JOINTS)
    assert carry["gyro_noisy"].line is None and carry["pos"].bias is None
    assert obs["pos"].dtype == np.float32


def test_wrapper_is_hashable_and_named(kbot):
    gyro = ksim.SensorObservation.create(physics_model=kbot[1], sensor_name="imu_gyro")
    a = DelayedObservation(observation=gyro, latency=_lat(0, 2), sensor_noise=SensorNoise(gaussian_std=[0.1, 0.2, 0.3]))
    b = DelayedObservation(observation=gyro, latency=_lat(0, 2), sensor_noise=SensorNoise(gaussian_std=(0.1, 0.2, 0.3)))
    assert a == b and hash(a) == hash(b)  # lists become tuples: ksim jits with observations as static arguments
    assert a.get_name() == "delayed_sensor_observation_imu_gyro"
    assert (
        DelayedObservation(observation=ksim.JointVelocityObservation()).get_name()
        == "delayed_joint_velocity_observation"
    )


# --------------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gaussian_std": -0.1},
        {"uniform_mag": float("nan")},
        {"bias_mag": float("inf")},
        {"gaussian_std": (0.1, float("nan"))},
        {"uniform_mag": (0.1, -1.0, 0.2)},
    ],
)
def test_bad_magnitudes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        SensorNoise(**kwargs)


def test_bad_magnitude_shapes_are_rejected():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        SensorNoise(gaussian_std=())
    with pytest.raises(ValueError, match="non-empty 1-D"):
        SensorNoise(gaussian_std=[[0.1, 0.2]])
    with pytest.raises(TypeError, match="float or a sequence"):
        SensorNoise(bias_mag="0.1")


def test_mismatched_channel_count_is_rejected(kbot):
    gyro = ksim.SensorObservation.create(physics_model=kbot[1], sensor_name="imu_gyro")
    state = _physics_state(kbot[2])
    for noise in (SensorNoise(gaussian_std=(0.1, 0.2)), SensorNoise(bias_mag=(0.1, 0.2, 0.3, 0.4))):
        wrapper = DelayedObservation(observation=gyro, sensor_noise=noise)
        with pytest.raises(ValueError, match=r"cannot broadcast against an observation of shape \(3,\)"):
            wrapper.initial_carry(state, jax.random.key(0))
    # Magnitudes may not add axes to the observation either.
    with pytest.raises(ValueError, match=r"observation of shape \(1,\)"):
        SensorNoise(uniform_mag=(0.1, 0.2, 0.3)).add(jnp.zeros(1), jnp.zeros(1), jax.random.key(0), 1.0)
    with pytest.raises(ValueError, match=r"observation of shape \(\)"):
        SensorNoise(bias_mag=(0.1,)).sample_bias(jax.random.key(0), ())


def test_inner_ksim_noise_is_rejected():
    with pytest.raises(TypeError, match="sensor_noise"):
        DelayedObservation(observation=ksim.JointPositionObservation(noise=ksim.AdditiveGaussianNoise(std=0.1)))


def test_non_observations_are_rejected():
    with pytest.raises(TypeError, match="must be a ksim.Observation"):
        DelayedObservation(observation=SensorNoise())
    with pytest.raises(TypeError, match="latency"):
        DelayedObservation(observation=ksim.JointPositionObservation(), latency=0.02)
    with pytest.raises(TypeError, match="sensor_noise"):
        DelayedObservation(observation=ksim.JointPositionObservation(), sensor_noise=0.1)


def test_latency_errors_surface():
    with pytest.raises(ValueError, match="longer than the buffer"):
        DelayedObservation.create(
            ksim.JointPositionObservation(), ctrl_dt_s=CTRL_DT, latency_range_s=(0.0, 0.1), buffer_steps=3
        )
    with pytest.raises(ValueError, match="latency range is empty"):
        DelayedObservation.create(ksim.JointPositionObservation(), ctrl_dt_s=CTRL_DT, latency_range_s=(0.1, 0.0))
    with pytest.raises(ValueError, match="step_s must be > 0"):
        DelayedObservation.create(ksim.JointPositionObservation(), ctrl_dt_s=0.0, latency_range_s=(0.0, 0.1))


class _CommandObservation(ksim.Observation):
    def observe(self, state, curriculum_level, rng):
        return state.commands["joystick"]


def test_observations_that_need_commands_are_rejected_at_reset(kbot):
    wrapper = DelayedObservation(observation=_CommandObservation(), latency=_lat(0, 1))
    with pytest.raises(TypeError, match="observations that need commands cannot be wrapped"):
        wrapper.initial_carry(_physics_state(kbot[2]), jax.random.key(0))
