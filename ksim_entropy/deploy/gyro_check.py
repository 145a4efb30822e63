"""Which unit KOS sends the gyroscope in, judged against the rate at which the IMU's own quaternion turns.

KOS's proto says deg/s; kos-sim 0.0.14 sends rad/s. Over windows of `window_s` (many of a simulator's 20 ms physics
bursts) the gyroscope's integral is compared with the rotation between the window's first and last quaternion, both
in the IMU frame: the least-squares ratio is 180/π (≈ 57.3) for deg/s and 1 for rad/s. Windows in which the IMU turned
less than `min_turn_rad` carry no information (a robot held still: the gyro then shows only its bias and noise) and
are left out, so a still robot gives no verdict rather than a wrong one.
"""

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GYRO_UNITS", "GyroUnitCheck", "rotation_vector"]

GYRO_UNITS = {"deg": 180.0 / math.pi, "rad": 1.0}  # the raw reading per rad/s, for each unit


def _conjugate(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def rotation_vector(q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """The rotation (axis × angle, rad) from orientation `q_from` to `q_to` (w, x, y, z), in `q_from`'s frame."""
    q_from = np.asarray(q_from, dtype=float) / np.linalg.norm(q_from)
    q_to = np.asarray(q_to, dtype=float) / np.linalg.norm(q_to)
    rel = _multiply(_conjugate(q_from), q_to)
    if rel[0] < 0:
        rel = -rel
    sin_half = np.linalg.norm(rel[1:])
    if sin_half < 1e-12:
        return 2.0 * rel[1:]
    return rel[1:] / sin_half * 2.0 * math.atan2(sin_half, rel[0])


@dataclass
class GyroUnitCheck:
    """Feed it every reading (`add`); `verdict` says which unit the gyroscope is in, or that it cannot tell yet."""

    window_s: float = 0.2
    min_turn_rad: float = 0.02  # per window, about 6 deg/s on average: far above a still IMU's drift
    min_windows: int = 3
    tolerance: float = 2.0  # a unit matches when the measured ratio is within this factor of it
    _start: tuple[float, np.ndarray] | None = field(default=None, repr=False)
    _last: tuple[float, np.ndarray] | None = field(default=None, repr=False)
    _integral: np.ndarray = field(default_factory=lambda: np.zeros(3), repr=False)
    _turn_dot_gyro: float = 0.0
    _turn_sq: float = 0.0
    windows: int = 0  # windows that turned enough to count
    turned_rad: float = 0.0  # the rotation seen in all windows, whether they counted or not

    def add(self, time_s: float, quat_wxyz: np.ndarray, gyro_raw: np.ndarray) -> None:
        """One reading: monotonic time (s), the IMU quaternion and the gyroscope as KOS sent it (unit unknown)."""
        quat, gyro = np.asarray(quat_wxyz, dtype=float), np.asarray(gyro_raw, dtype=float)
        if not (np.isfinite(quat).all() and np.isfinite(gyro).all() and np.linalg.norm(quat) > 0):
            return
        if self._last is not None:
            last_time, last_gyro = self._last
            self._integral += 0.5 * (last_gyro + gyro) * (time_s - last_time)  # trapezoid
        self._last = (time_s, gyro)
        if self._start is None:
            self._start = (time_s, quat)
            return
        start_time, start_quat = self._start
        if time_s - start_time < self.window_s:
            return
        turn = rotation_vector(start_quat, quat)
        self.turned_rad += float(np.linalg.norm(turn))
        if np.linalg.norm(turn) >= self.min_turn_rad:
            self._turn_dot_gyro += float(turn @ self._integral)
            self._turn_sq += float(turn @ turn)
            self.windows += 1
        self._start, self._integral = (time_s, quat), np.zeros(3)

    @property
    def ratio(self) -> float:
        """Least-squares gyroscope reading per rad/s of the quaternion's rate (nan until a window counts)."""
        return self._turn_dot_gyro / self._turn_sq if self._turn_sq > 0 else math.nan

    def verdict(self) -> tuple[str | None, str]:
        """("deg" | "rad", how it was judged), ("inconsistent", why), or (None, why it cannot tell yet)."""
        if self.windows < self.min_windows:
            return None, (
                f"gyroscope units not verified: the IMU turned {self.turned_rad:.3f} rad in all, "
                f"{self.windows} of the {self.min_windows} windows of {self.window_s} s needed turned "
                f">= {self.min_turn_rad} rad"
            )
        ratio = self.ratio
        how = f"the gyroscope reads {ratio:.3g} per rad/s of the quaternion's rate ({self.windows} windows)"
        for unit, scale in GYRO_UNITS.items():
            if ratio > 0 and abs(math.log(ratio / scale)) <= math.log(self.tolerance):
                return unit, f"{how}: {unit}/s"
        return "inconsistent", f"{how}: neither deg/s (57.3) nor rad/s (1)"
