"""Native PD servos and delayed actuation on the real K-Bot, against ksim.PositionActuators and closed forms.

Oracles: ksim's own `PositionActuators` torques applied to the original motor model (CPU MuJoCo, float64 through
`jax.enable_x64`), the raw `metadata.json` numbers for kp / kd / limits, the closed-form PD law for randomized gains
in MJX, and, for the delay, the commanded sequence that ksim's `MjxEngine.step` computes (engine.py: the previous
action on the first sub-step of a control step, the new one after), recorded on every physics step by an event.
"""

import ksim_entropy  # noqa: F401, I001  (headless configuration before mujoco / jax are used)

import copy
import dataclasses
import json

import attrs
import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
from jaxtyping import Array, PRNGKeyArray
from mujoco import mjx

from ksim_entropy.actuation import DelayedActuators, NativePDActuators, is_native_pd, use_native_pd
from ksim_entropy.latency import DelayLine, Latency
from ksim_entropy.kbot.robot import load_metadata, load_robot_model, resolve_robot_files

NU = 20
DT = 0.004  # the walking task's physics step (s)
CTRL_DT = 0.02  # its control step (s): 5 physics steps


@pytest.fixture(scope="module")
def kbot():
    files = resolve_robot_files("local")
    mj = load_robot_model(files, scene="smooth")
    md = load_metadata(files, mj)
    raw = json.loads(files.metadata.read_text())["joint_name_to_metadata"]
    names = [mj.joint(j).name for j in range(1, mj.njnt)]  # joint order = actuator order on the K-Bot
    oracle = {
        key: np.array([float(raw[n][key]) for n in names]) for key in ("kp", "kd", "soft_torque_limit")
    }  # straight from metadata.json, not through ksim / the converter
    return mj, md, use_native_pd(mj, md), oracle


def _random_states(mj, rng, n):
    """n (q, q̇, target) triples: joints inside half their range, ±3 rad/s, targets 0.3 rad (σ) off."""
    lo, hi = mj.jnt_range[1:, 0], mj.jnt_range[1:, 1]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    q = rng.uniform(mid - 0.5 * half, mid + 0.5 * half, (n, NU))
    return q, rng.uniform(-3.0, 3.0, (n, NU)), q + rng.normal(0.0, 0.3, (n, NU))


# --------------------------------------------------------------------------------------------------------------------
# Conversion


def test_conversion_writes_the_metadata_and_leaves_the_callers_model_alone(kbot):
    _, md, pd, oracle = kbot
    fresh = load_robot_model(resolve_robot_files("local"), scene="smooth")
    before = {f: np.array(getattr(fresh, f)) for f in dir(fresh) if f.startswith("actuator_")}
    converted = use_native_pd(fresh, md)
    for field, value in before.items():
        np.testing.assert_array_equal(getattr(fresh, field), value, err_msg=field)
    assert not is_native_pd(fresh) and is_native_pd(converted) and is_native_pd(pd)
    assert np.all(fresh.actuator_gaintype == mujoco.mjtGain.mjGAIN_FIXED)
    assert np.all(fresh.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE)

    assert np.all(converted.actuator_gear[:, 0] == 1.0)
    assert np.all(converted.actuator_biastype == mujoco.mjtBias.mjBIAS_AFFINE)
    np.testing.assert_array_equal(converted.actuator_gainprm[:, 0], oracle["kp"])
    np.testing.assert_array_equal(
        converted.actuator_biasprm[:, :3], np.stack([0 * oracle["kp"], -oracle["kp"], -oracle["kd"]], 1)
    )
    assert np.all(converted.actuator_forcelimited == 1) and np.all(converted.actuator_ctrllimited == 0)
    limit = oracle["soft_torque_limit"]
    np.testing.assert_array_equal(converted.actuator_forcerange, np.stack([-limit, limit], 1))
    assert limit.max() == 84.0 and limit.min() == 9.8
    # Not the motor's ctrlrange (±120 ... ±14 N·m): the soft limit is narrower on every K-Bot joint.
    assert np.all(limit < fresh.actuator_ctrlrange[:, 1])
    # Everything but the actuators is untouched.
    np.testing.assert_array_equal(converted.body_mass, fresh.body_mass)
    assert converted.opt.integrator == fresh.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER


def test_limits_without_a_soft_torque_limit_come_from_the_motor(kbot):
    mj, md, _, _ = kbot
    joints = dict(md.joint_name_to_metadata)
    joints["dof_left_knee_04"] = dataclasses.replace(joints["dof_left_knee_04"], soft_torque_limit=None)  # actuator 3
    joints["dof_left_ankle_02"] = dataclasses.replace(joints["dof_left_ankle_02"], soft_torque_limit=None)  # 4
    joints["dof_right_wrist_00"] = dataclasses.replace(joints["dof_right_wrist_00"], soft_torque_limit=100.0)  # 14
    motor = copy.copy(mj)
    motor.actuator_ctrllimited[4] = 0  # ankle: no limit at all
    pd = use_native_pd(motor, dataclasses.replace(md, joint_name_to_metadata=joints))
    np.testing.assert_array_equal(pd.actuator_forcerange[3], [-120.0, 120.0])  # the motor's ctrlrange
    assert pd.actuator_forcelimited[4] == 0  # unlimited
    np.testing.assert_array_equal(pd.actuator_forcerange[14], [-14.0, 14.0])  # 100 narrowed by ctrlrange ±14
    np.testing.assert_array_equal(pd.actuator_forcerange[0], [-84.0, 84.0])


# --------------------------------------------------------------------------------------------------------------------
# Parity with ksim.PositionActuators (CPU MuJoCo, float64)


def test_forces_equal_ksim_position_actuators_including_clipping(kbot):
    mj, md, pd, _ = kbot
    q, qd, target = _random_states(mj, np.random.default_rng(0), 40)
    clipped, worst = 0, {}
    with jax.enable_x64(True):  # ksim's torques in float64, like MuJoCo
        ksim_pd = ksim.PositionActuators(physics_model=mj, metadata=md)
        for k in range(len(q)):
            motor, servo = mujoco.MjData(mj), mujoco.MjData(pd)
            for d in (motor, servo):
                d.qpos[7:], d.qvel[6:] = q[k], qd[k]
            tau = np.asarray(ksim_pd.get_ctrl(jnp.asarray(target[k]), motor, jax.random.PRNGKey(0)))
            assert tau.dtype == np.float64
            motor.ctrl[:] = tau
            servo.ctrl[:] = NativePDActuators().get_ctrl(target[k], servo, jax.random.PRNGKey(0))
            mujoco.mj_forward(mj, motor)
            mujoco.mj_forward(pd, servo)
            clipped += int(np.sum(np.abs(tau) == np.asarray(ksim_pd.ctrl_clip)))
            for field in ("actuator_force", "qfrc_actuator", "qacc"):
                diff = np.max(np.abs(getattr(motor, field) - getattr(servo, field)))
                worst[field] = max(worst.get(field, 0.0), diff)
    print(f"max |motor + ksim PD − native PD|: {worst}; {clipped} of {q.size} joint torques clipped")
    assert 0.1 * q.size < clipped < 0.9 * q.size  # both regimes are exercised
    assert worst["actuator_force"] < 1e-9 and worst["qfrc_actuator"] < 1e-9
    assert worst["qacc"] < 1e-9


def _rollout(model, data, ctrl_fn, targets, steps_per_target):
    qpos, qvel = [], []
    for s in range(len(targets) * steps_per_target):
        data.ctrl[:] = ctrl_fn(targets[s // steps_per_target], data)
        mujoco.mj_step(model, data)
        qpos.append(data.qpos.copy())
        qvel.append(data.qvel.copy())
    return np.array(qpos), np.array(qvel)


def test_closed_loop_rollout_matches_with_the_euler_integrator(kbot):
    mj, md, pd, _ = kbot
    rng = np.random.default_rng(1)
    targets = rng.normal(0.0, 0.3, (10, NU))  # a new target every 5 steps, 50 physics steps of the model's dt
    with jax.enable_x64(True):
        ksim_pd = ksim.PositionActuators(physics_model=mj, metadata=md)

        def ksim_ctrl(target, data):
            return np.asarray(ksim_pd.get_ctrl(jnp.asarray(target), data, jax.random.PRNGKey(0)))

        def native_ctrl(target, data):
            return NativePDActuators().get_ctrl(target, data, jax.random.PRNGKey(0))

        results = {}
        for integrator in ("EULER", "IMPLICITFAST"):
            motor_model, servo_model = copy.copy(mj), copy.copy(pd)
            motor_model.opt.integrator = servo_model.opt.integrator = getattr(
                mujoco.mjtIntegrator, f"mjINT_{integrator}"
            )
            motor = _rollout(motor_model, mujoco.MjData(motor_model), ksim_ctrl, targets, 5)
            servo = _rollout(servo_model, mujoco.MjData(servo_model), native_ctrl, targets, 5)
            results[integrator] = [float(np.max(np.abs(a - b))) for a, b in zip(motor, servo, strict=True)]
    print("max |Δqpos|, |Δqvel| over 50 steps:", results)
    assert np.max(np.abs(motor[0][-1] - motor[0][0])) > 0.01  # the robot moved
    assert max(results["EULER"]) < 1e-9
    # MuJoCo's implicitfast integrates a servo's −kd·q̇ implicitly, ksim's explicit torque not: they differ.
    assert max(results["IMPLICITFAST"]) > 1e-3


# --------------------------------------------------------------------------------------------------------------------
# MJX: same forces, and kp / kd / limits are traced model parameters


def test_mjx_forces_match_cpu_and_gains_are_traced_parameters(kbot):
    mj, _, pd, oracle = kbot
    traces = []

    @jax.jit
    def actuation(model, data, kp_scale, kd_scale, limit_scale):
        traces.append(1)  # runs only while tracing
        model = model.tree_replace(
            {
                "actuator_gainprm": model.actuator_gainprm.at[:, 0].multiply(kp_scale),
                "actuator_biasprm": model.actuator_biasprm.at[:, 1].multiply(kp_scale).at[:, 2].multiply(kd_scale),
                "actuator_forcerange": model.actuator_forcerange * limit_scale[:, None],
            }
        )
        out = mjx.forward(model, data)
        return out.actuator_force, out.qfrc_actuator

    q, qd, target = _random_states(mj, np.random.default_rng(2), 1)
    cpu = mujoco.MjData(pd)
    cpu.qpos[7:], cpu.qvel[6:], cpu.ctrl[:] = q[0], qd[0], target[0]
    mujoco.mj_forward(pd, cpu)
    mx, dx = mjx.put_model(pd), mjx.put_data(pd, cpu)

    ones = jnp.ones(NU, dtype=jnp.float32)
    force, qfrc = actuation(mx, dx, ones, ones, ones)
    np.testing.assert_allclose(force, cpu.actuator_force, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(qfrc, cpu.qfrc_actuator, rtol=1e-5, atol=1e-3)

    q32, qd32 = np.asarray(dx.qpos[7:], dtype=np.float64), np.asarray(dx.qvel[6:], dtype=np.float64)
    c32 = np.asarray(dx.ctrl, dtype=np.float64)
    rng = np.random.default_rng(3)
    cases = [(ones, ones, ones)] + [
        tuple(jnp.asarray(rng.uniform(lo, hi, NU), dtype=jnp.float32) for lo, hi in ranges)
        for ranges in [
            ((0.5, 1.5), (1.0, 1.0), (10.0, 10.0)),
            ((1.0, 1.0), (0.2, 3.0), (10.0, 10.0)),
            ((0.5, 1.5),) * 3,
        ]
    ]
    clip_counts = []
    for kp_s, kd_s, lim_s in cases:
        force, qfrc = actuation(mx, dx, kp_s, kd_s, lim_s)
        kp, kd = oracle["kp"] * np.asarray(kp_s), oracle["kd"] * np.asarray(kd_s)
        limit = oracle["soft_torque_limit"] * np.asarray(lim_s)
        expected = np.clip(kp * (c32 - q32) - kd * qd32, -limit, limit)
        np.testing.assert_allclose(force, expected, rtol=1e-5, atol=2e-3)
        # The joints' actuatorfrcrange (the motor classes' ±120 ... ±14 N·m) still clamps qfrc_actuator.
        joint_limit = pd.jnt_actfrcrange[1:, 1]
        np.testing.assert_allclose(qfrc[6:], np.clip(expected, -joint_limit, joint_limit), rtol=1e-5, atol=2e-3)
        clip_counts.append(int(np.sum(np.abs(expected) >= limit)))
    assert len(traces) == 1  # one compilation for every value of kp, kd and the limit
    assert clip_counts[0] > 0 and clip_counts[1] == clip_counts[2] == 0  # the nominal state clips; ×10 limits do not


# --------------------------------------------------------------------------------------------------------------------
# Delayed actuation


@attrs.define(frozen=True, kw_only=True)
class _CtrlRecorder(ksim.Event):
    """Records data.ctrl (what the actuators applied) on every physics step of an episode."""

    num_steps: int = attrs.field()
    num_ctrl: int = attrs.field()

    def __call__(self, model, data, event_state, curriculum_level, rng):
        buffer, step = event_state
        return data, (buffer.at[step].set(data.ctrl), step + 1)

    def get_initial_event_state(self, rng: PRNGKeyArray) -> tuple[Array, Array]:
        return jnp.full((self.num_steps, self.num_ctrl), jnp.nan), jnp.zeros((), dtype=jnp.int32)


def _expected_applied(actions, hold, delay, steps_per_ctrl):
    """What MjxEngine commands on physics step s (previous action on sub-step 0), delayed by `delay` steps."""
    commanded = []
    previous = hold
    for action in actions:
        commanded += [previous] + [action] * (steps_per_ctrl - 1)
        previous = action
    return np.array([commanded[s - delay] if s >= delay else hold for s in range(len(commanded))])


def test_delay_through_ksims_mjx_engine_is_exact_and_does_not_leak_across_resets(kbot):
    _, _, pd, _ = kbot
    model = copy.copy(pd)
    model.opt.timestep = DT
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONSTRAINT  # faster to compile; the delay is kinematic
    mx = mjx.put_model(model)
    ctrl_steps, per_ctrl = 4, round(CTRL_DT / DT)
    actuators = DelayedActuators.create(NativePDActuators(), latency_range_s=(0.0, 0.032), dt_s=DT)
    assert (actuators.latency.min_steps, actuators.latency.max_steps) == (0, 8)  # 8 steps = 32 ms > one control step
    engine = ksim.engine.get_physics_engine(
        "mjx",
        resets=[ksim.RandomJointPositionReset(scale=0.5)],
        events={"rec": _CtrlRecorder(num_steps=ctrl_steps * per_ctrl, num_ctrl=NU)},
        actuators=actuators,
        dt=DT,
        ctrl_dt=CTRL_DT,
        action_latency_range=(0.0, 0.0),
        drop_action_prob=0.0,
        actuator_update_dt=None,
    )
    level = jnp.array(1.0)
    reset = jax.jit(jax.vmap(lambda rng: engine.reset(mx, level, rng)))
    step = jax.jit(jax.vmap(lambda action, state, rng: engine.step(action, mx, state, level, rng)))

    n_envs = 64
    rng = np.random.default_rng(4)
    delays = []
    for episode, offset in enumerate((10.0, -10.0)):  # episode 1 commands ≈ +10 rad, episode 2 ≈ −10 rad
        state = reset(jax.random.split(jax.random.PRNGKey(episode), n_envs))
        hold = np.asarray(state.data.qpos[:, 7:])
        assert np.all(np.abs(hold) > 0) and np.all(np.abs(hold) <= 0.5)  # random reset pose
        np.testing.assert_array_equal(state.most_recent_action, hold)  # ksim's default action: hold still
        actions = offset + rng.uniform(-1.0, 1.0, (ctrl_steps, n_envs, NU)).astype(np.float32)
        for k in range(ctrl_steps):
            state = step(jnp.asarray(actions[k]), state, jax.random.split(jax.random.PRNGKey(100 + k), n_envs))
        applied = np.asarray(state.event_states["rec"][0])  # (envs, physics steps, NU)
        assert np.all(np.asarray(state.event_states["rec"][1]) == ctrl_steps * per_ctrl)
        delay = np.asarray(state.actuator_state.delay)
        for e in range(n_envs):
            expected = _expected_applied(actions[:, e], hold[e], int(delay[e]), per_ctrl)
            np.testing.assert_array_equal(applied[e], expected, err_msg=f"episode {episode} env {e} d={delay[e]}")
            first_command = np.argmax(np.abs(applied[e, :, 0] - hold[e, 0]) > 1.0)
            assert first_command == delay[e] + 1  # + ksim's own one-step delay (previous action on sub-step 0)
        if episode == 1:
            assert np.all(applied < 5.0)  # nothing of episode 1 (≈ +10 rad) after the reset
        # The servos got the delayed targets (NativePD: ctrl = target).
        np.testing.assert_array_equal(np.asarray(state.data.ctrl), applied[:, -1])
        delays.append(delay)
    assert set(np.concatenate(delays).tolist()) == set(range(9))  # every quantised delay was exercised


def test_delay_by_direct_calls_for_every_quantised_delay(kbot):
    mj, _, _, _ = kbot
    data = mujoco.MjData(mj)
    data.qpos[7:] = np.linspace(-0.3, 0.3, NU)
    mujoco.mj_forward(mj, data)
    dx = mjx.put_data(mj, data)
    hold = np.asarray(dx.qpos[7:])
    commands = np.arange(1, 31, dtype=np.float32)[:, None] * np.ones(NU, dtype=np.float32)  # c_s = s + 1

    def run(actuators, rng):
        state = actuators.get_initial_state(dx, rng)

        def body(state, x):
            command, key = x
            ctrl, state = actuators.get_stateful_ctrl(command, dx, state, key)
            return state, ctrl

        keys = jax.random.split(jax.random.PRNGKey(7), len(commands))
        return state.delay, jax.lax.scan(body, state, (jnp.asarray(commands), keys))[1]

    for d in range(9):  # fixed delays d·4 ms, 0 ... 32 ms
        actuators = DelayedActuators.create(NativePDActuators(), latency_range_s=(d * DT, d * DT), dt_s=DT)
        delay, out = jax.jit(lambda rng, a=actuators: run(a, rng))(jax.random.PRNGKey(d))
        assert int(delay) == d
        expected = np.array([commands[s - d] if s >= d else hold for s in range(len(commands))])
        np.testing.assert_array_equal(out, expected, err_msg=f"d={d}")

    # 30 ms at 4 ms steps: 7.5 → 8 steps, more than one 20 ms control step.
    thirty = DelayedActuators.create(NativePDActuators(), latency_range_s=(0.03, 0.03), dt_s=DT)
    assert thirty.latency.min_steps == thirty.latency.max_steps == 8
    state = thirty.get_initial_state(dx, jax.random.PRNGKey(0))
    assert isinstance(state, DelayLine)
    np.testing.assert_array_equal(thirty.get_default_action(dx), hold)


def test_hold_action_is_a_copy_of_the_joint_positions(kbot):
    mj, _, _, _ = kbot
    data = mujoco.MjData(mj)
    data.qpos[7:] = 0.1
    hold = NativePDActuators().get_default_action(data)
    data.qpos[7:] = 0.2  # MujocoEngine keeps simulating the same MjData
    np.testing.assert_array_equal(hold, np.full(NU, 0.1, dtype=np.float32))
    target = jnp.arange(NU, dtype=jnp.float32)
    assert NativePDActuators().get_ctrl(target, data, jax.random.PRNGKey(0)) is target


# --------------------------------------------------------------------------------------------------------------------
# Bad input


def _with_joint(md, joint, **changes):
    joints = dict(md.joint_name_to_metadata)
    if joint in joints:
        joints[joint] = dataclasses.replace(joints[joint], **changes)
    else:
        joints[joint] = ksim.JointMetadata(**changes)
    return dataclasses.replace(md, joint_name_to_metadata=joints)


def _without_joint(md, joint):
    return dataclasses.replace(
        md, joint_name_to_metadata={k: v for k, v in md.joint_name_to_metadata.items() if k != joint}
    )


def _geared(mj):
    model = copy.copy(mj)
    model.actuator_gear[3, 0] = 2.0
    return model


def _reordered(mj):
    model = copy.copy(mj)
    model.actuator_trnid[[0, 1], 0] = model.actuator_trnid[[1, 0], 0]
    return model


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda mj, md, pd: use_native_pd(mj, _with_joint(md, "dof_left_knee_04", kp=None)), ValueError, "no kp"),
        (lambda mj, md, pd: use_native_pd(mj, _with_joint(md, "dof_left_knee_04", kd=-1.0)), ValueError, "kd must be"),
        (
            lambda mj, md, pd: use_native_pd(mj, _with_joint(md, "dof_left_knee_04", soft_torque_limit=-5.0)),
            ValueError,
            "soft_torque_limit must be > 0",
        ),
        (
            lambda mj, md, pd: use_native_pd(mj, _with_joint(md, "dof_tail", kp=1.0, kd=1.0)),
            ValueError,
            r"\['dof_tail'\] are in the metadata but have no actuator",
        ),
        (
            lambda mj, md, pd: use_native_pd(mj, _without_joint(md, "dof_left_knee_04")),
            ValueError,
            r"\['dof_left_knee_04_ctrl'\] have no joint in the metadata",
        ),
        (lambda mj, md, pd: use_native_pd(pd, md), ValueError, "already PD servos"),
        (lambda mj, md, pd: use_native_pd(_geared(mj), md), ValueError, "has gear 2; only gear 1"),
        (lambda mj, md, pd: use_native_pd(_reordered(mj), md), ValueError, "drives joint 'dof_left_hip_roll_03'"),
        (lambda mj, md, pd: use_native_pd(mjx.put_model(mj), md), TypeError, "needs a mujoco.MjModel"),
        (
            lambda mj, md, pd: DelayedActuators.create(
                DelayedActuators.create(NativePDActuators(), latency_range_s=(0, 0), dt_s=DT),
                latency_range_s=(0.0, 0.01),
                dt_s=DT,
            ),
            TypeError,
            "must be a stateless ksim.Actuators",
        ),
        (
            lambda mj, md, pd: DelayedActuators(inner=NativePDActuators(), latency=0.02),
            TypeError,
            "must be a .*Latency",
        ),
        (
            lambda mj, md, pd: DelayedActuators(inner="pd", latency=Latency(min_s=0, max_s=0, step_s=DT)),
            TypeError,
            "got str",
        ),
        (
            lambda mj, md, pd: DelayedActuators.create(NativePDActuators(), latency_range_s=(0.02, 0.01), dt_s=DT),
            ValueError,
            "latency range is empty",
        ),
        (
            lambda mj, md, pd: DelayedActuators.create(NativePDActuators(), latency_range_s=(0.0, 0.01), dt_s=0.0),
            ValueError,
            "step_s must be > 0",
        ),
        (
            lambda mj, md, pd: DelayedActuators.create(NativePDActuators(), latency_range_s=(0.01,), dt_s=DT),
            ValueError,
            r"must be \(min_s, max_s\)",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kbot, make, error, match):
    mj, md, pd, _ = kbot
    with pytest.raises(error, match=match):
        make(mj, md, pd)
