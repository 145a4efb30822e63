"""The stand-in robot (`ksim_entropy.testing.reality`): latencies, IMU biases and noise are what its parameters say."""

import re

import numpy as np
import pytest

from ksim_entropy.sim2real.sim_logs import SensorNoiseStds
from ksim_entropy.testing.reality import HiddenRobot, reality_log

QUIET = SensorNoiseStds(0.0, 0.0, 0.0, 0.0, 0.0)


def test_obs_latency_of_one_control_step_shifts_the_readings_by_one_row():
    plain = reality_log(HiddenRobot(noise=QUIET), seconds=1.0, seed=3)
    late = reality_log(HiddenRobot(noise=QUIET, obs_latency_s=0.02), seconds=1.0, seed=3)
    np.testing.assert_array_equal(late.group("output"), plain.group("output"))  # same script
    np.testing.assert_array_equal(late.group("joint_angles")[1:], plain.group("joint_angles")[:-1])
    np.testing.assert_array_equal(late.group("joint_vels")[1:], plain.group("joint_vels")[:-1])


def test_action_latency_delays_the_response():
    plain = reality_log(HiddenRobot(noise=QUIET), seconds=1.0, seed=3)
    late = reality_log(HiddenRobot(noise=QUIET, action_latency_s=0.01), seconds=1.0, seed=3)
    np.testing.assert_array_equal(late.group("joint_angles")[0], plain.group("joint_angles")[0])
    assert np.abs(late.group("joint_angles")[2:] - plain.group("joint_angles")[2:]).max() > 1e-3


def test_suspended_imu_reads_its_biases_exactly_without_noise():
    hidden = HiddenRobot(noise=QUIET, gyro_bias_rad_s=(0.01, -0.02, 0.005), accel_bias_mps2=(0.1, 0.2, -0.3))
    log = reality_log(hidden, seconds=0.5, seed=0)
    np.testing.assert_allclose(log.group("gyro"), np.tile(hidden.gyro_bias_rad_s, (len(log), 1)), atol=1e-9)
    specific = log.group("accel") + log.group("projected_g")
    np.testing.assert_allclose(specific, np.tile(hidden.accel_bias_mps2, (len(log), 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(log.group("projected_g"), axis=1), 9.81, rtol=1e-9)


def test_zero_offset_shifts_the_encoder_not_the_script():
    delta = np.full(20, 0.02)
    plain = reality_log(HiddenRobot(noise=QUIET), seconds=0.2, seed=1)
    shifted = reality_log(HiddenRobot(noise=QUIET, zero_offset_rad=tuple(delta)), seconds=0.2, seed=1)
    # at t = 0 the joints sit at the nominal pose: the encoder reads it minus δ
    np.testing.assert_allclose(shifted.group("joint_angles")[0], plain.group("joint_angles")[0] - delta, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kp_scale": 0.0}, "kp_scale must be a finite scale > 0"),
        ({"obs_latency_s": -0.01}, "obs_latency_s must be finite and >= 0"),
        ({"gyro_bias_rad_s": (0.0, 0.0)}, "need 3 values"),
        ({"zero_offset_rad": (float("nan"),) * 20}, "zero_offset_rad must be finite"),
    ],
)
def test_bad_hidden_robot_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HiddenRobot(**kwargs)


def test_latency_off_the_1khz_grid_and_wrong_offset_count_are_refused():
    with pytest.raises(ValueError, match="not a multiple"):
        reality_log(HiddenRobot(action_latency_s=0.0105), seconds=0.2, seed=0)
    with pytest.raises(ValueError, match="3 zero offsets; the robot has 20"):
        reality_log(HiddenRobot(zero_offset_rad=(0.0, 0.0, 0.0)), seconds=0.2, seed=0)


def test_a_standing_log_under_pushes_and_a_fall():
    """The shipped standing policy closed-loop on the stand-in robot (its latency, offsets, biases, noise): it stands
    10 s under 0.1 m/s pushes, which show in the gyro against an unpushed run of the same seed; the accelerometer
    reads the body's motion, not −g alone. A 1.5 m/s push topples it, which is an error, not a log of standing."""
    from tests.test_standing_policy import POLICY

    hidden = HiddenRobot.random(0, 20)
    quiet = reality_log(hidden, seconds=10.0, seed=3, suspended=False, policy=POLICY)
    pushed = reality_log(hidden, seconds=10.0, seed=3, suspended=False, policy=POLICY, push_mps=0.1)
    assert len(pushed) == 500 and "push_mps=0.1" in pushed.source
    assert np.all(pushed.group("command") == 0.0)
    gyro_rms = [
        float(np.sqrt(np.mean((log.group("gyro")[100:] - hidden.gyro_bias_rad_s) ** 2))) for log in (quiet, pushed)
    ]
    assert gyro_rms[1] > 1.5 * gyro_rms[0]
    specific = pushed.group("accel") + pushed.group("projected_g") - hidden.accel_bias_mps2
    assert np.abs(specific).max() > 0.5  # m/s²: the pushed body accelerates
    with pytest.raises(ValueError, match="fell at t") as fall:
        reality_log(hidden, seconds=10.0, seed=3, suspended=False, policy=POLICY, push_mps=1.5)
    fell_at_s = float(re.search(r"t = ([\d.]+) s", str(fall.value)).group(1))
    stopped = reality_log(hidden, seconds=10.0, seed=3, suspended=False, policy=POLICY, push_mps=1.5, stop_at_fall=True)
    assert 0 < fell_at_s < 10.0 and len(stopped) == round(fell_at_s / 0.02)  # ends at the control step it fell in
    assert np.array_equal(stopped.step_id, np.arange(len(stopped))) and stopped.group("output").shape[0] == len(stopped)
    with pytest.raises(ValueError, match="0 for a suspended robot"):
        reality_log(hidden, seconds=1.0, seed=3, policy=POLICY, push_mps=0.1)
    with pytest.raises(FileNotFoundError, match="no such .kinfer"):
        reality_log(hidden, seconds=1.0, seed=3, suspended=False, policy="missing.kinfer")
