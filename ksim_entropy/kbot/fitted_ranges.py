"""Training ranges from a fitted randomization (`fitted.json`, written by ``python -m tasks.fit``).

The fit gives each parameter the widest range the logs allow (its prior range where they say nothing); training
draws uniformly from those ranges, scaled by the task's randomization widths like any other range. What maps where:

- `mass_scale`, `frictionloss_scale`, `armature_scale`, `joint_damping` (N·m·s/rad, added), `kp_scale`, `kd_scale`
  → the ranges of the matching shared randomizers (`BodyMassScale`, `JointFrictionLoss`, ...);
- `zero_offset/<joint>` (rad) → `JointZeroOffset`, one range per joint;
- `foot_friction` → the feet's `GeomFriction` range (the fit does not write it: standing logs bound it from below
  only, docs/fit.md; a friction measured by a slip test can be added by hand);
- `action_latency_s`, `obs_latency_s` (s) → the actuator and observation delay ranges;
- IMU: `noise_std/gyro` and `noise_std/projected_g` → the uniform noise of the same variance (half-width √3·σ);
  `gyro_bias/<axis>` → the gyro's per-episode bias half-width, the largest |bound| over the axes.

Parameters the file does not have keep the task's defaults. Pure NumPy (the bridge's file format).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ksim_entropy.formats.fitted import FittedRandomization, FittedRandomizationError

__all__ = ["PHYSICS_PARAMETERS", "FittedRanges", "load_fitted_ranges"]

PHYSICS_PARAMETERS = ("mass_scale", "frictionloss_scale", "armature_scale", "joint_damping", "kp_scale", "kd_scale")


@dataclass(frozen=True)
class FittedRanges:
    """(low, high) per fitted quantity that training randomizes; None or absent = keep the task's default."""

    physics: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # PHYSICS_PARAMETERS names
    zero_offset_rad: tuple[np.ndarray, np.ndarray] | None = None  # per joint, in the robot's joint order
    action_latency_s: tuple[float, float] | None = None
    obs_latency_s: tuple[float, float] | None = None
    foot_friction: tuple[float, float] | None = None  # the foot capsules' sliding friction coefficient
    sensor_noise: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)  # obs -> (noise, bias)


def _range(fitted: FittedRandomization, name: str) -> tuple[float, float] | None:
    return (fitted[name].low, fitted[name].high) if name in fitted.names() else None


def fitted_ranges(fitted: FittedRandomization, joint_names: Sequence[str]) -> FittedRanges:
    """The ranges of `fitted` for a robot with `joint_names` (checked against the file's)."""
    if tuple(fitted.joint_names) != tuple(joint_names):
        raise FittedRandomizationError(
            f"fitted for joints {list(fitted.joint_names)[:3]}... ({len(fitted.joint_names)}), but the task's robot "
            f"has {list(joint_names)[:3]}... ({len(joint_names)}): fitted to another robot?"
        )
    physics = {name: r for name in PHYSICS_PARAMETERS if (r := _range(fitted, name)) is not None}
    offsets = [_range(fitted, f"zero_offset/{joint}") for joint in joint_names]
    zero_offset = None
    if None not in offsets:
        zero_offset = (np.array([r[0] for r in offsets if r]), np.array([r[1] for r in offsets if r]))
    sensor: dict[str, tuple[float | None, float | None]] = {}
    gyro_noise = fitted["noise_std/gyro"].mean * math.sqrt(3) if "noise_std/gyro" in fitted.names() else None
    biases = [r for axis in "xyz" if (r := _range(fitted, f"gyro_bias/{axis}")) is not None]
    gyro_bias = max(max(abs(lo), abs(hi)) for lo, hi in biases) if len(biases) == 3 else None
    if gyro_noise is not None or gyro_bias is not None:
        sensor["imu_gyro"] = (gyro_noise, gyro_bias)
    if "noise_std/projected_g" in fitted.names():
        sensor["projected_gravity"] = (fitted["noise_std/projected_g"].mean * math.sqrt(3), None)
    return FittedRanges(
        physics=physics,
        zero_offset_rad=zero_offset,
        action_latency_s=_range(fitted, "action_latency_s"),
        obs_latency_s=_range(fitted, "obs_latency_s"),
        foot_friction=_range(fitted, "foot_friction"),
        sensor_noise=sensor,
    )


def load_fitted_ranges(path: str | Path, joint_names: Sequence[str]) -> FittedRanges:
    """`fitted_ranges` of the file at `path` (a `FittedRandomizationError` naming the problem if unusable)."""
    return fitted_ranges(FittedRandomization.load(path), joint_names)
