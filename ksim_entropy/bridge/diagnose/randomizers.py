"""Which randomized physics parameters a diagnosis points at: the ranges C2ST guidance should move.

A finding names channels; some causes of it are ranges the training randomizes (`ksim_entropy.randomization`, named as
the task's `DomainRandomization` names them):

- `dynamics_mismatch` (joints respond differently to the same outputs): the servo gains and the joint's own
  friction, damping and armature, `actuator_kp_scale`, `actuator_kd_scale`, `joint_friction_loss`, `joint_damping`,
  `joint_armature`;
- `observation_mismatch` on joint angles (a reading offset): `joint_zero_offset`; on projected gravity or the
  accelerometer (the IMU's frame is tilted): `imu_misalignment`.

The rest are not physics ranges: sensor noise, a gyro or joint-velocity bias and latency live in the observation
and actuator blocks (their widths are the task's config, which C2ST guidance does not move), swapped and mis-scaled
channels are wiring and unit bugs to fix, and an overconfident policy is the policy's. `pointed_randomizers` says so
for each finding instead of guessing.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DYNAMICS_RANDOMIZERS = (
    "actuator_kp_scale",
    "actuator_kd_scale",
    "joint_friction_loss",
    "joint_damping",
    "joint_armature",
)
# observation_mismatch: the channel's group (the part of `joint_angles/dof_left_knee_04` before "/" or "[").
OBSERVATION_RANDOMIZERS = {
    "joint_angles": "joint_zero_offset",
    "projected_g": "imu_misalignment",
    "accel": "imu_misalignment",
}
NOT_PHYSICS = {
    "sensor_noise": "sensor noise is the observation's noise block, not a physics range",
    "temporal_mismatch": "latency is the observation and actuator blocks' delay, not a physics range",
    "swapped_channels": "a wiring bug in the log or the robot: fix it, do not randomize it",
    "misscaled_channels": "a unit bug in the log or the robot: fix it, do not randomize it",
    "overconfident_policy": "the policy's, not the physics'",
}


@dataclass(frozen=True)
class RandomizerPointer:
    """Randomized parameters to move (in the order found), why each, and findings that point at none, with why."""

    names: tuple[str, ...]
    reasons: Mapping[str, str]
    not_pointed: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "reasons": dict(self.reasons), "not_pointed": dict(self.not_pointed)}


def channel_group(channel: str) -> str:
    """`joint_angles/dof_left_knee_04` → `joint_angles`; `command[0]` → `command`."""
    return channel.split("/", 1)[0].split("[", 1)[0]


def pointed_randomizers(findings: Iterable[Mapping[str, Any]]) -> RandomizerPointer:
    """The randomized parameters behind diagnosis findings (`Finding.to_dict()`s: "kind" and "channels")."""
    names: dict[str, str] = {}
    not_pointed: dict[str, str] = {}
    for finding in findings:
        kind, channels = finding["kind"], [str(c) for c in finding["channels"]]
        found: list[str] = []
        if kind == "dynamics_mismatch":
            found = list(DYNAMICS_RANDOMIZERS)
            why = f"dynamics_mismatch on {len(channels)} joints"
        elif kind == "observation_mismatch":
            groups = sorted({channel_group(c) for c in channels})
            found = sorted({OBSERVATION_RANDOMIZERS[g] for g in groups if g in OBSERVATION_RANDOMIZERS})
            why = f"observation_mismatch on {', '.join(groups)}"
            rest = [g for g in groups if g not in OBSERVATION_RANDOMIZERS]
            if rest:
                not_pointed[f"observation_mismatch:{','.join(rest)}"] = (
                    "a bias or noise of these sensors is the observation block's, not a physics range"
                )
        else:
            not_pointed[kind] = NOT_PHYSICS.get(kind, "no randomized physics parameter is known to cause it")
        for name in found:
            names.setdefault(name, why)
    return RandomizerPointer(names=tuple(names), reasons=names, not_pointed=not_pointed)
