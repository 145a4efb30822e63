"""Shared pieces of the deployment tests: a tiny `.kinfer` policy and a KOS server in its own process."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ksim_entropy.export import KinferPolicy, export_kinfer
from ksim_entropy.kbot.robot import KBOT_NOMINAL_POSE_RAD
from ksim_entropy.sim2real.sim_logs import COMMAND_NAMES
from ksim_entropy.testing.kos_server import SimServerProcess

SWING_RAD = 0.15  # the tiny policy's swing about the nominal pose
SWING_HZ = 0.5


def swing_targets(time_s: float | np.ndarray, joint_names: tuple[str, ...]) -> np.ndarray:
    """What the tiny policy asks for at policy time `time_s`: the nominal pose plus a 0.5 Hz swing on every joint."""
    nominal = np.array([KBOT_NOMINAL_POSE_RAD.get(n, 0.0) for n in joint_names])
    return nominal + SWING_RAD * np.sin(2 * np.pi * SWING_HZ * np.asarray(time_s))[..., None]


def tiny_policy(joint_names: tuple[str, ...], ctrl_dt_s: float = 0.02, swing_rad: float = SWING_RAD) -> KinferPolicy:
    """A policy with no network: nominal pose + swing; its clock is the carry (steps so far), so the swing only
    advances if the runtime feeds the carry back."""
    nominal = jnp.array([KBOT_NOMINAL_POSE_RAD.get(n, 0.0) for n in joint_names], dtype=jnp.float32)

    def init_fn():
        return jnp.zeros(1, dtype=jnp.float32)

    def step_fn(joint_angles, projected_gravity, command, carry):
        del joint_angles, projected_gravity, command
        action = nominal + swing_rad * jnp.sin(2 * jnp.pi * SWING_HZ * ctrl_dt_s * carry[0])
        return action, carry + 1.0

    return KinferPolicy(init_fn, step_fn, joint_names, COMMAND_NAMES, carry_size=1)


def write_tiny_policy(path: Path, joint_names: tuple[str, ...], swing_rad: float = SWING_RAD) -> Path:
    """Export `tiny_policy`; `swing_rad=0` is a policy that stands still in the nominal pose."""
    return export_kinfer(tiny_policy(joint_names, swing_rad=swing_rad), path)


# For tests about what the robot does rather than the watchdog's timing: five periods per read and per command, fifty
# overruns in a row (one second) and ten periods without progress, so a busy 2-core CI machine does not stop the run
# (a real stop, for a real reason). CI runs saw a read take over a whole period at step 41 of the clean run, a
# command take over one in the server-kill and frozen-IMU tests before their fault, and ten overruns in a row in the
# excitation run.
TOLERANT = {"read_timeout": 5.0, "command_timeout": 5.0, "max_overruns": 50, "stall_timeout": 10.0}
# A stall in the last ticks ends a run early: ticks past the end are not skipped but never reached, so `steps` of a
# completed run can fall short of duration / T by the stall's length (CI: 298 of 300).
END_STALL_TICKS = 10


def kos_server(record: Path, *args: str) -> SimServerProcess:
    """A suspended simulated K-Bot behind KOS in its own process, recording what it is told to `record`."""
    return SimServerProcess("--suspended", "--record", str(record), *args)
