"""The simulated K-Bot behind the KOS server: its readings are the physics state exactly `obs_latency_s` old."""

import math

import numpy as np
import pytest

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim_logs import SensorNoiseStds
from ksim_entropy.testing.kos_server import SimulatedKBot
from ksim_entropy.testing.reality import HiddenRobot

QUIET = SensorNoiseStds(0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("suspended", [True, False])
def test_readings_report_the_state_of_obs_latency_ago(suspended):
    files = resolve_robot_files("local")
    offsets = tuple(0.01 * np.sin(np.arange(20)))
    hidden = HiddenRobot(obs_latency_s=0.007, zero_offset_rad=offsets, gyro_bias_rad_s=(0.01, -0.02, 0.03), noise=QUIET)
    robot = SimulatedKBot(files, hidden, suspended=suspended)
    ids = list(robot.map.ids)
    robot.command({aid: math.degrees(0.3) for aid in ids[:4]})  # move a few joints so the state changes every step
    truth = []
    for _ in range(40):
        robot._physics_step()
        truth.append(robot.sim.sensors() | {"quat": robot.sim.imu_quaternion()})
    seen = truth[-1 - 7]  # 7 physics steps of 1 ms ago
    assert not np.allclose(seen["joint_angles"], truth[-1]["joint_angles"], atol=1e-6)  # the delay is visible
    states = robot.actuator_states(ids)
    q = np.radians([s.position for s in states])
    qd = np.radians([s.velocity for s in states])
    np.testing.assert_allclose(q, seen["joint_angles"] - np.asarray(offsets), atol=1e-9)
    np.testing.assert_allclose(qd, seen["joint_vels"], atol=1e-9)
    accel, gyro = robot.imu()
    np.testing.assert_allclose(gyro, seen["gyro"] + np.array([0.01, -0.02, 0.03]), atol=1e-12)
    np.testing.assert_allclose(accel, -seen["projected_g"] if suspended else seen["accel"], atol=1e-12)
    np.testing.assert_allclose(robot.quaternion(), seen["quat"], atol=1e-12)
