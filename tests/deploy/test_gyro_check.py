"""The gyroscope unit check against an IMU whose rotation is known in closed form (MuJoCo integrates the quaternion)."""

import math

import mujoco
import numpy as np
import pytest

from ksim_entropy.deploy.gyro_check import GyroUnitCheck, rotation_vector

PERIOD_S = 0.02


def _readings(seconds: float, rate_rad_s, burst_s: float = 0.0, seed: int = 0):
    """(time, quaternion, gyro rad/s) at 50 Hz for an IMU turning at body rate `rate_rad_s(t)`; with `burst_s`, the
    state only advances in bursts that long (kos-sim's physics), as a server polled between bursts reports it."""
    rng = np.random.default_rng(seed)
    quat, t, dt = np.array([1.0, 0.0, 0.0, 0.0]), 0.0, 0.001
    seen = (quat.copy(), np.asarray(rate_rad_s(0.0), dtype=float))
    out = []
    for k in range(round(seconds / PERIOD_S)):
        while t < k * PERIOD_S:
            omega = np.asarray(rate_rad_s(t), dtype=float)
            mujoco.mju_quatIntegrate(quat, omega, dt)
            t += dt
            if burst_s == 0 or abs(t / burst_s - round(t / burst_s)) < 1e-9:
                seen = (quat.copy(), omega)
        out.append((k * PERIOD_S + rng.normal(0, 1e-3), seen[0], seen[1] + rng.normal(0, 0.01, 3)))
    return out


def _sway(t: float) -> np.ndarray:
    return 0.4 * math.cos(math.pi * t) * np.array([1.0, 1.0, 0.2])


@pytest.mark.parametrize("burst_s", [0.0, 0.02])
@pytest.mark.parametrize(("unit", "scale"), [("deg", 180 / math.pi), ("rad", 1.0)])
def test_the_unit_is_found_from_the_quaternion(unit, scale, burst_s):
    check = GyroUnitCheck()
    for t, quat, gyro in _readings(2.0, _sway, burst_s):
        check.add(t, quat, gyro * scale)
    found, how = check.verdict()
    assert found == unit, how
    assert check.ratio == pytest.approx(scale, rel=0.2)


def test_a_still_imu_gives_no_verdict_whatever_its_bias():
    check = GyroUnitCheck()
    for t, quat, gyro in _readings(2.0, lambda t: np.zeros(3)):
        check.add(t, quat, gyro + 3.0)  # a large bias, in either unit
    found, how = check.verdict()
    assert found is None and "not verified" in how


def test_a_gyro_in_neither_unit_is_inconsistent():
    check = GyroUnitCheck()
    for t, quat, gyro in _readings(2.0, _sway):
        check.add(t, quat, -gyro)  # e.g. the wrong sign (another frame)
    assert check.verdict()[0] == "inconsistent"


def test_rotation_vector_is_the_body_frame_rotation():
    base = np.array([math.cos(0.4), 0.0, 0.0, math.sin(0.4)])  # some orientation
    turned = base.copy()
    mujoco.mju_quatIntegrate(turned, np.array([0.0, 0.3, 0.0]), 1.0)  # 0.3 rad about the body's y axis
    np.testing.assert_allclose(rotation_vector(base, turned), [0.0, 0.3, 0.0], atol=1e-12)
