"""The CPU MuJoCo K-Bot used for sim logs: sensors in robot units, consistent with ksim's observations."""

import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
import xax

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions


@pytest.fixture(scope="module")
def sim():
    return KBotSimulator(resolve_robot_files("local"))


def test_projected_gravity_matches_ksims_definition(sim):
    rng = np.random.default_rng(0)
    for _ in range(5):
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        sim.reset()
        sim.data.qpos[3:7] = quat
        mujoco.mj_forward(sim.model, sim.data)
        imu_quat = sim.imu_quaternion()
        # ksim.ProjectedGravityObservation: gravity rotated by the inverse IMU frame quaternion (xax implementation).
        expected = xax.rotate_vector_by_quat(jnp.array([0.0, 0.0, -9.81]), jnp.asarray(imu_quat), inverse=True)
        # xax computes in float32: ~1e-6 relative on a 9.81 m/s² vector.
        np.testing.assert_allclose(sim.sensors()["projected_g"], np.asarray(expected), rtol=0, atol=1e-4)


def test_upright_start_and_pd_tracking(sim):
    sim.reset()
    sensors = sim.sensors()
    assert sensors["projected_g"][2] < -9.0  # IMU z axis points up at the start
    np.testing.assert_allclose(sensors["joint_angles"], sim.nominal_pose_rad)
    target = sim.nominal_pose_rad.copy()
    target[sim.joint_names.index("dof_right_elbow_02")] += 0.3
    for _ in range(10):  # 0.2 s
        sim.step(target)
    angles = sim.sensors()["joint_angles"]
    assert (
        abs(angles[sim.joint_names.index("dof_right_elbow_02")] - target[sim.joint_names.index("dof_right_elbow_02")])
        < 0.1
    )
    assert sim.time_s == pytest.approx(0.2)
    assert all(np.isfinite(v).all() for v in sim.sensors().values())


def test_bad_targets_and_options_are_rejected(sim):
    with pytest.raises(ValueError, match="20 finite values"):
        sim.step(np.zeros(19))
    with pytest.raises(ValueError, match="20 finite values"):
        sim.step(np.full(20, np.nan))
    with pytest.raises(ValueError, match="multiple"):
        SimOptions(dt_s=0.003, ctrl_dt_s=0.02)


def test_suspended_robot_keeps_its_base_while_joints_move():
    sim = KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))
    start = sim.data.qpos[:7].copy()
    for k in range(50):  # 1 s of swinging legs
        sim.step(sim.nominal_pose_rad + 0.3 * np.sin(0.2 * k))
    np.testing.assert_allclose(sim.data.qpos[:7], start)
    assert np.abs(sim.sensors()["joint_vels"]).max() > 0.1
    np.testing.assert_allclose(sim.sensors()["projected_g"], [0.0, 0.0, -9.81], atol=1e-6)
