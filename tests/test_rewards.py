"""Reward terms on synthetic trajectories, each against values worked out by hand in the comments."""

import jax.numpy as jnp
import ksim
import numpy as np
import pytest
import xax
from mujoco import mjx

from ksim_entropy.actuation import use_native_pd
from ksim_entropy.kbot.robot import KBOT_FOOT_BODIES, load_metadata, load_robot_model, resolve_robot_files
from ksim_entropy.rewards import (
    ActionRatePenalty,
    ActionSmoothnessPenalty,
    BaseAccelerationPenalty,
    BaseHeightTrackingReward,
    BaseTiltReward,
    BaseVelocityTrackingReward,
    EnergyPenalty,
    FootSlipPenalty,
    JointLimitProximityPenalty,
    NominalPosePenalty,
    NormalizedTorquePenalty,
    YawRateTrackingReward,
    episode_start_mask,
)


def trajectory(t=5, nj=2, *, action=None, done=None, qpos=None, qvel=None, ctrl=None, xpos=None, obs=None, cmd=None):
    return ksim.Trajectory(
        qpos=jnp.zeros((t, 7 + nj)).at[:, 3].set(1.0) if qpos is None else jnp.asarray(qpos),
        qvel=jnp.zeros((t, 6 + nj)) if qvel is None else jnp.asarray(qvel),
        xpos=jnp.zeros((t, 4, 3)) if xpos is None else jnp.asarray(xpos),
        xquat=jnp.zeros((t, 4, 4)),
        ctrl=jnp.zeros((t, nj)) if ctrl is None else jnp.asarray(ctrl),
        obs=xax.freeze_dict(obs or {}),
        command=xax.freeze_dict(cmd or {}),
        event_state=xax.freeze_dict({}),
        action=jnp.zeros((t, nj)) if action is None else jnp.asarray(action),
        done=jnp.zeros(t, dtype=bool) if done is None else jnp.asarray(done),
        success=jnp.zeros(t, dtype=bool),
        timestep=jnp.arange(t, dtype=jnp.float32),
        termination_components=xax.freeze_dict({}),
        aux_outputs=xax.freeze_dict({}),
    )


def test_episode_start_mask():
    done = jnp.array([False, False, True, False, False, False])
    # Step 0 has no predecessor; step 3 starts a new episode (step 2 ended one).
    assert episode_start_mask(done, 1).tolist() == [False, True, True, False, True, True]
    # Two steps back: also step 1 (no t-2) and step 4 (t-2 = 2 ended an episode).
    assert episode_start_mask(done, 2).tolist() == [False, False, True, False, False, True]


def test_action_rate_and_smoothness():
    # Joint 0 ramps 0, 1, 2, 4, 4; joint 1 stays 0. Episode ends at step 2.
    action = jnp.array([[0.0, 0], [1, 0], [2, 0], [4, 0], [4, 0]])
    traj = trajectory(action=action, done=jnp.array([False, False, True, False, False]))
    # Rate: mean over 2 joints of diff²: step1 1/2, step2 1/2, step3 masked (new episode), step4 0.
    np.testing.assert_allclose(ActionRatePenalty(scale=-1.0).get_reward(traj), [0, 0.5, 0.5, 0, 0])
    # Second difference: step2 = 2 - 2 + 0 = 0; step3, step4 cross the episode boundary -> 0.
    np.testing.assert_allclose(ActionSmoothnessPenalty(scale=-1.0).get_reward(traj), [0, 0, 0, 0, 0])
    jerky = trajectory(action=jnp.array([[0.0, 0], [1, 0], [0, 0], [1, 0], [0, 0]]))
    # Second differences of 0,1,0,1,0: -2, 2, -2 -> squared 4, halved over joints 2.
    np.testing.assert_allclose(ActionSmoothnessPenalty(scale=-1.0).get_reward(jerky), [0, 0, 2, 2, 2])


def test_torque_and_energy():
    torque = jnp.array([[60.0, -7.0]] * 3)
    qvel = jnp.zeros((3, 8)).at[:, 6].set(2.0).at[:, 7].set(-1.0)
    # ctrl holds position targets (native PD): the rewards must ignore it and read the applied torque observation.
    traj = trajectory(t=3, ctrl=jnp.full((3, 2), 0.3), qvel=qvel, obs={"actuator_force": torque})
    # (60/120)^2 = 0.25, (7/14)^2 = 0.25 -> mean 0.25
    penalty = NormalizedTorquePenalty(torque_limits_nm=(120.0, 14.0), scale=-1.0)
    np.testing.assert_allclose(penalty.get_reward(traj), [0.25] * 3)
    # |60 * 2| + |-7 * -1| = 127 W
    np.testing.assert_allclose(EnergyPenalty(scale=-1.0).get_reward(traj), [127.0] * 3)
    # Another observation name: (30/120)^2 = 0.0625, (14/14)^2 = 1 -> mean 0.53125; |30 * 2| + |14 * -1| = 74 W
    other = trajectory(t=3, qvel=qvel, obs={"tau": jnp.array([[30.0, 14.0]] * 3)})
    np.testing.assert_allclose(
        NormalizedTorquePenalty(torque_limits_nm=(120.0, 14.0), torque_obs="tau", scale=-1.0).get_reward(other),
        [0.53125] * 3,
    )
    np.testing.assert_allclose(EnergyPenalty(torque_obs="tau", scale=-1.0).get_reward(other), [74.0] * 3)


@pytest.mark.parametrize(
    "reward", [NormalizedTorquePenalty(torque_limits_nm=(1.0, 1.0), scale=-1.0), EnergyPenalty(scale=-1.0)]
)
def test_torque_rewards_name_a_missing_observation(reward):
    traj = trajectory(t=3, obs={"joint_position": jnp.zeros((3, 2))})
    with pytest.raises(KeyError, match=r"'actuator_force' is missing.*ActuatorForceObservation.*\['joint_position'\]"):
        reward.get_reward(traj)


def test_base_acceleration():
    qvel = jnp.zeros((4, 8)).at[:, 0].set(jnp.array([0.0, 0.1, 0.1, 0.4])).at[3, 1].set(0.4)
    traj = trajectory(t=4, qvel=qvel)
    # dv: step1 0.1 -> 5 m/s²; step2 0; step3 (0.3, 0.4) -> 0.5 / 0.02 = 25 m/s²
    np.testing.assert_allclose(BaseAccelerationPenalty(ctrl_dt_s=0.02, scale=-1.0).get_reward(traj), [0, 5, 0, 25])


def test_foot_slip_only_counts_feet_in_contact():
    xpos = np.zeros((3, 4, 3))
    xpos[:, 2, 0] = [0.0, 0.01, 0.03]  # foot A slides +x: 0.5 m/s then 1.0 m/s at ctrl_dt 0.02
    xpos[:, 3, 1] = [0.0, 0.02, 0.02]  # foot B moves 1.0 m/s, then stops
    contact = np.zeros((3, 2, 2), dtype=bool)  # (T, capsules per foot, feet)
    contact[1, 0, 0] = True  # A touches at step 1
    contact[2, 1, 0] = contact[2, 0, 1] = True  # both touch at step 2
    traj = trajectory(t=3, xpos=xpos, obs={"feet_contact": jnp.asarray(contact)})
    penalty = FootSlipPenalty(foot_body_ids=(2, 3), contact_obs="feet_contact", ctrl_dt_s=0.02, scale=-1.0)
    # step1: A in contact at 0.5 m/s -> 0.25 (B moves 1 m/s but is airborne); step2: A 1.0² + B 0 = 1.0
    np.testing.assert_allclose(penalty.get_reward(traj), [0.0, 0.25, 1.0], rtol=1e-5)


def test_joint_limit_proximity():
    penalty = JointLimitProximityPenalty(lower_rad=(-1.0, 0.0), upper_rad=(1.0, 2.0), margin_rad=(0.2, 0.2), scale=-1.0)
    qpos = jnp.zeros((3, 9)).at[:, 3].set(1.0)
    qpos = qpos.at[:, 7].set(jnp.array([0.0, 0.9, 1.0])).at[:, 8].set(jnp.array([1.0, 0.1, 0.0]))
    # step0: far from limits -> 0; step1: d = 0.1 on both -> 2 * 0.5² = 0.5; step2: both at a limit -> 2
    np.testing.assert_allclose(penalty.get_reward(trajectory(t=3, qpos=qpos)), [0.0, 0.5, 2.0], rtol=1e-5)


@pytest.mark.parametrize("engine", ["mujoco", "mjx"])
def test_factories_on_the_kbot(engine):
    files = resolve_robot_files("local")
    model = load_robot_model(files, scene="smooth")
    servo = use_native_pd(model, load_metadata(files, model))
    body_names = [model.body(i).name for i in range(model.nbody)]
    joint_names = [model.joint(j).name for j in range(model.njnt)]
    if engine == "mjx":  # what ksim passes to get_rewards during training
        model, servo = mjx.put_model(model), mjx.put_model(servo)
    # Motors: the ctrlrange (±120 ... ±14 N·m, the robstride classes).
    torque = NormalizedTorquePenalty.create(model, scale=-1.0)
    assert max(torque.torque_limits_nm) == 120.0 and min(torque.torque_limits_nm) == 14.0
    assert torque.torque_obs == "actuator_force"
    # Native PD servos: the forcerange, i.e. metadata.json's soft torque limits (84 N·m knees/hips ... 9.8 N·m wrists).
    torque = NormalizedTorquePenalty.create(servo, scale=-1.0, torque_obs="tau")
    assert max(torque.torque_limits_nm) == 84.0 and min(torque.torque_limits_nm) == pytest.approx(9.8)  # MJX: float32
    assert torque.torque_limits_nm[joint_names[1:].index("dof_left_ankle_02")] == pytest.approx(11.9)
    assert torque.torque_obs == "tau"
    limits = JointLimitProximityPenalty.create(model, margin_fraction=0.1, scale=-1.0)
    knee = joint_names[1:].index("dof_left_knee_04")
    assert limits.margin_rad[knee] == pytest.approx(0.1 * (model.jnt_range[knee + 1][1] - model.jnt_range[knee + 1][0]))
    slip = FootSlipPenalty.create(
        model, foot_body_names=KBOT_FOOT_BODIES, contact_obs="feet_contact", ctrl_dt_s=0.02, scale=-1.0
    )
    assert [body_names[i] for i in slip.foot_body_ids] == list(KBOT_FOOT_BODIES)
    with pytest.raises(ValueError, match="not in the model"):
        FootSlipPenalty.create(model, foot_body_names=("no_such_foot",), contact_obs="c", ctrl_dt_s=0.02, scale=-1.0)
    with pytest.raises(ValueError, match="margin_fraction"):
        JointLimitProximityPenalty.create(model, margin_fraction=0.7, scale=-1.0)


def test_torque_limits_must_be_known():
    files = resolve_robot_files("local")
    model = load_robot_model(files, scene="smooth")
    servo = use_native_pd(model, load_metadata(files, model))
    servo.actuator_forcelimited[2] = 0  # a servo's ctrlrange is a target range (rad), not a torque limit
    with pytest.raises(ValueError, match="actuator 2 is a servo without a force range"):
        NormalizedTorquePenalty.create(servo, scale=-1.0)
    model.actuator_ctrlrange[5] = 0.0
    with pytest.raises(ValueError, match="non-zero forcerange .* or ctrlrange"):
        NormalizedTorquePenalty.create(model, scale=-1.0)


def test_velocity_tracking_rewards():
    # Base yawed 90° (quat w=cos45, z=sin45), moving +y in the world at 0.5 m/s = +x in the base frame.
    c = np.cos(np.pi / 4)
    qpos = jnp.zeros((2, 9)).at[:, 3].set(c).at[:, 6].set(c)
    qvel = jnp.zeros((2, 8)).at[:, 1].set(0.5).at[:, 5].set(0.3)
    cmd = {"velocity": jnp.array([[0.5, 0.0, 0.3], [0.0, 0.0, 0.0]])}
    traj = trajectory(t=2, qpos=qpos, qvel=qvel, cmd=cmd)
    vel = BaseVelocityTrackingReward(command_name="velocity", sigma_mps=0.25, scale=1.0).get_reward(traj)
    # perfect tracking -> 1; standing command vs 0.5 m/s -> exp(-0.25 / (2 * 0.0625)) = exp(-2)
    np.testing.assert_allclose(vel, [1.0, np.exp(-2.0)], rtol=1e-5)
    yaw = YawRateTrackingReward(command_name="velocity", sigma_radps=0.5, scale=1.0).get_reward(traj)
    np.testing.assert_allclose(yaw, [1.0, np.exp(-0.09 / 0.5)], rtol=1e-5)


def test_posture_rewards():
    # Base at 0.70 m and upright, at 0.60 m and pitched 0.2 rad (quat about y: w=cos 0.1, y=sin 0.1).
    qpos = jnp.zeros((2, 9)).at[:, 3].set(1.0).at[:, 2].set(jnp.array([0.70, 0.60]))
    qpos = qpos.at[1, 3].set(np.cos(0.1)).at[1, 5].set(np.sin(0.1))
    qpos = qpos.at[:, 7:].set(jnp.array([[0.1, -0.2], [0.0, 0.4]]))
    traj = trajectory(t=2, qpos=qpos)
    height = BaseHeightTrackingReward(height_m=0.70, sigma_m=0.05, scale=1.0).get_reward(traj)
    np.testing.assert_allclose(height, [1.0, np.exp(-0.01 / 0.005)], rtol=1e-5)
    tilt = BaseTiltReward(sigma_rad=0.1, scale=1.0).get_reward(traj)
    np.testing.assert_allclose(tilt, [1.0, np.exp(-(np.sin(0.2) ** 2) / 0.02)], rtol=1e-5)
    pose = NominalPosePenalty(nominal_rad=(0.1, 0.0), weights=(1.0, 3.0), scale=-1.0).get_reward(traj)
    # step 0: (0 + 3 * 0.04) / 2 = 0.06; step 1: (0.01 + 3 * 0.16) / 2 = 0.245
    np.testing.assert_allclose(pose, [0.06, 0.245], rtol=1e-5)


def test_posture_rewards_refuse_bad_settings():
    with pytest.raises(ValueError, match="height_m"):
        BaseHeightTrackingReward(height_m=0.0, scale=1.0)
    with pytest.raises(ValueError, match="sigma_rad"):
        BaseTiltReward(sigma_rad=-0.1, scale=1.0)
    with pytest.raises(ValueError, match="weights"):
        NominalPosePenalty(nominal_rad=(0.0, 0.0), weights=(1.0,), scale=-1.0)
    with pytest.raises(ValueError, match="weights"):
        NominalPosePenalty(nominal_rad=(0.0,), weights=(-1.0,), scale=-1.0)
