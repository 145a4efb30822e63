"""Physical and numerical constants used across the package, each defined once."""

import math

__all__ = ["GRAVITY_MPS2", "HALF_LOG_2PI_E", "STANDARD_GRAVITY_MPS2"]

GRAVITY_MPS2 = 9.81  # |g| of MuJoCo's default gravity: what the simulated K-Bot's IMU reports standing still
STANDARD_GRAVITY_MPS2 = 9.80665  # one "g" (ISO 80000-3): converts a log's accelerometer given in g to m/s²
HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)  # 1.4189 nats: the entropy of a unit Gaussian
