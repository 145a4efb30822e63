"""Model joints ↔ KOS actuators: ids, PD gains, torque limits and joint limits, from the robot's `metadata.json`.

KOS speaks degrees and deg/s; policies speak radians. The map is built once at start, in the policy's joint order,
and refuses a policy whose joints do not match the robot's before anything moves.
"""

import math
from dataclasses import dataclass

import numpy as np
from kscale.web.gen.api import RobotURDFMetadataOutput

from ksim_entropy.kbot.robot import RobotFiles

__all__ = ["DeployError", "JointSpec", "RobotMap"]


class DeployError(RuntimeError):
    """The policy, the robot or the connection is not fit to run: raised before any motion where possible."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint: its KOS id, PD gains (N·m/rad, N·m·s/rad), torque limit (N·m), range (rad)."""

    name: str
    actuator_id: int
    kp: float
    kd: float
    torque_limit_nm: float
    actuator_max_torque_nm: float
    lower_rad: float
    upper_rad: float

    @property
    def max_torque_percent(self) -> float:
        """KOS's `ConfigureActuator.max_torque` is a percentage of the actuator's peak torque."""
        return 100.0 * min(self.torque_limit_nm / self.actuator_max_torque_nm, 1.0)


def _number(joint: str, field: str, value: object) -> float:
    try:
        number = float(value)  # metadata.json stores numbers as strings
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DeployError(f"robot metadata: joint {joint!r} has no valid {field} (got {value!r})")
    return number


@dataclass(frozen=True)
class RobotMap:
    """The robot's joints in the policy's order, and its control rate (Hz)."""

    joints: tuple[JointSpec, ...]
    control_hz: float

    @classmethod
    def from_files(cls, files: RobotFiles, joint_names: tuple[str, ...] | list[str]) -> "RobotMap":
        """Map `joint_names` (the policy's order) onto the robot in `files`; the two sets must be equal."""
        try:
            parsed = RobotURDFMetadataOutput.model_validate_json(files.metadata.read_text())
        except FileNotFoundError as err:
            raise DeployError(f"robot metadata not found: {files.metadata}") from err
        except Exception as err:  # pydantic.ValidationError, JSON errors
            raise DeployError(f"malformed robot metadata {files.metadata}: {err}") from err
        robot = parsed.joint_name_to_metadata or {}
        names = tuple(joint_names)
        missing, extra = sorted(set(robot) - set(names)), sorted(set(names) - set(robot))
        if missing or extra or len(set(names)) != len(names):
            raise DeployError(
                f"the policy's joints do not match the robot's ({files.metadata}): "
                f"policy lacks {missing}, robot lacks {extra}"
                + (", policy repeats joints" if len(set(names)) != len(names) else "")
            )
        actuators = parsed.actuator_type_to_metadata or {}
        specs = []
        for name in names:
            meta = robot[name]
            if meta.id is None:
                raise DeployError(f"robot metadata: joint {name!r} has no actuator id")
            actuator = actuators.get(meta.actuator_type or "")
            if actuator is None:
                raise DeployError(f"robot metadata: joint {name!r} has unknown actuator type {meta.actuator_type!r}")
            lower = math.radians(_number(name, "min_angle_deg", meta.min_angle_deg))
            upper = math.radians(_number(name, "max_angle_deg", meta.max_angle_deg))
            if not lower < upper:
                raise DeployError(f"robot metadata: joint {name!r} has an empty range [{lower}, {upper}] rad")
            specs.append(
                JointSpec(
                    name=name,
                    actuator_id=int(meta.id),
                    kp=_number(name, "kp", meta.kp),
                    kd=_number(name, "kd", meta.kd),
                    torque_limit_nm=_number(name, "soft_torque_limit", meta.soft_torque_limit),
                    actuator_max_torque_nm=_number(name, "max_torque", actuator.max_torque),
                    lower_rad=lower,
                    upper_rad=upper,
                )
            )
        ids = [s.actuator_id for s in specs]
        if len(set(ids)) != len(ids):
            raise DeployError(f"robot metadata: actuator ids repeat: {sorted(ids)}")
        hz = _number("(robot)", "control_frequency", parsed.control_frequency or "nan")
        return cls(joints=tuple(specs), control_hz=hz)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(j.actuator_id for j in self.joints)

    def array(self, field: str) -> np.ndarray:
        return np.array([getattr(j, field) for j in self.joints], dtype=float)
