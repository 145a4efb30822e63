"""The K-Bot in CPU MuJoCo, driven the way the real robot is.

PD position targets at the control rate; sensors in the units the robot reports (rad, rad/s, m/s², rad/s).

Physics, actuation and sensing match `tasks.walk` (same model, solver options, kp/kd/soft torque limits from the
metadata, torques recomputed every physics substep, projected gravity = gravity rotated into the IMU frame). Used to
run an exported `.kinfer` policy through kinfer's own runtime (`KBotSimProvider`), which then writes the same NDJSON
log the robot writes, and to replay a log's actions open-loop.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import mujoco
import numpy as np
from kinfer.rust_bindings import ModelProviderABC, PyModelMetadata

from ksim_entropy.constants import GRAVITY_MPS2
from ksim_entropy.kbot.robot import KBOT_NOMINAL_POSE_RAD, RobotFiles, load_metadata, load_robot_model

__all__ = ["KINFER_INPUT_SENSORS", "KBotSimProvider", "KBotSimulator", "SimOptions", "kinfer_inputs", "tilt_deg"]

GRAVITY_VECTOR_MPS2 = np.array([0.0, 0.0, -GRAVITY_MPS2])


@dataclass(frozen=True)
class SimOptions:
    """Simulation settings; defaults are `tasks.walk`'s (250 Hz physics, 50 Hz control, stable contact solve)."""

    dt_s: float = 0.004
    ctrl_dt_s: float = 0.02
    iterations: int = 4
    ls_iterations: int = 20
    scene: str = "smooth"
    suspended: bool = False  # hold the base still (robot on a stand/gantry): joints move, the body does not fall

    def __post_init__(self) -> None:
        if not 0 < self.dt_s <= self.ctrl_dt_s:
            raise ValueError(f"need 0 < dt_s <= ctrl_dt_s, got dt_s={self.dt_s}, ctrl_dt_s={self.ctrl_dt_s}")
        ratio = self.ctrl_dt_s / self.dt_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"ctrl_dt_s ({self.ctrl_dt_s}) must be a multiple of dt_s ({self.dt_s})")

    @property
    def substeps(self) -> int:
        return round(self.ctrl_dt_s / self.dt_s)


@dataclass
class KBotSimulator:
    """CPU MuJoCo K-Bot with per-joint PD position control (joint order = MJCF order = policy action order)."""

    files: RobotFiles
    options: SimOptions = field(default_factory=SimOptions)

    def __post_init__(self) -> None:
        model = load_robot_model(self.files, scene=self.options.scene)
        metadata = load_metadata(self.files, model)
        model.opt.timestep = self.options.dt_s
        model.opt.iterations = self.options.iterations
        model.opt.ls_iterations = self.options.ls_iterations
        model.opt.tolerance = 1e-10
        model.opt.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
        self.model = model
        self.data = mujoco.MjData(model)
        self.joint_names = tuple(model.joint(i).name for i in range(1, model.njnt))
        joints = metadata.joint_name_to_metadata or {}
        self.kp = np.array([joints[n].kp for n in self.joint_names], dtype=float)
        self.kd = np.array([joints[n].kd for n in self.joint_names], dtype=float)
        self.torque_limit_nm = np.array([joints[n].soft_torque_limit for n in self.joint_names], dtype=float)
        self.nominal_pose_rad = np.array([KBOT_NOMINAL_POSE_RAD.get(n, 0.0) for n in self.joint_names])
        self._quat_adr = self._sensor_slice("imu_site_quat")
        self._acc_adr = self._sensor_slice("imu_acc")
        self._gyro_adr = self._sensor_slice("imu_gyro")
        self.reset()

    def _sensor_slice(self, name: str) -> slice:
        sensor = self.model.sensor(name)
        return slice(int(sensor.adr[0]), int(sensor.adr[0] + sensor.dim[0]))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def reset(self, joint_angles_rad: np.ndarray | None = None) -> None:
        """Back to the model's initial base pose with the given (default: nominal) joint angles, at rest."""
        mujoco.mj_resetData(self.model, self.data)
        if self.options.suspended:  # lift the feet clear of the floor
            self.data.qpos[2] += 0.3
        q = self.nominal_pose_rad if joint_angles_rad is None else np.asarray(joint_angles_rad, dtype=float)
        if q.shape != (self.num_joints,):
            raise ValueError(f"joint_angles_rad must have shape ({self.num_joints},), got {q.shape}")
        self.data.qpos[7:] = q
        mujoco.mj_forward(self.model, self.data)
        self.base_pose = self.data.qpos[:7].copy()  # (7,) m, quaternion: where a suspended robot is held

    def imu_quaternion(self) -> np.ndarray:
        """The IMU site's orientation in the world frame, (w, x, y, z), a copy."""
        return self.data.sensordata[self._quat_adr].copy()

    def sensors(self) -> dict[str, np.ndarray]:
        """What the robot reports: joint angles (rad), velocities (rad/s), projected gravity, accel (m/s²), gyro."""
        quat = self.data.sensordata[self._quat_adr]
        world_to_imu = np.empty(4)
        mujoco.mju_negQuat(world_to_imu, quat)
        projected_g = np.empty(3)
        mujoco.mju_rotVecQuat(projected_g, GRAVITY_VECTOR_MPS2, world_to_imu)
        return {
            "joint_angles": self.data.qpos[7:].copy(),
            "joint_vels": self.data.qvel[6:].copy(),
            "projected_g": projected_g,
            "accel": self.data.sensordata[self._acc_adr].copy(),
            "gyro": self.data.sensordata[self._gyro_adr].copy(),
        }

    def step(self, targets_rad: np.ndarray) -> None:
        """Hold PD position targets (rad) for one control period; torques are recomputed every physics substep."""
        targets = np.asarray(targets_rad, dtype=float)
        if targets.shape != (self.num_joints,) or not np.isfinite(targets).all():
            raise ValueError(f"targets_rad must be {self.num_joints} finite values, got shape {targets.shape}")
        for _ in range(self.options.substeps):
            self.physics_step(targets)

    def physics_step(self, targets: np.ndarray) -> None:
        """One physics step (`dt_s`) of the PD servos holding `targets` (rad, unchecked: `step` checks them)."""
        error = targets - self.data.qpos[7:]
        torque = self.kp * error - self.kd * self.data.qvel[6:]
        self.data.ctrl[:] = np.clip(torque, -self.torque_limit_nm, self.torque_limit_nm)
        mujoco.mj_step(self.model, self.data)
        if self.options.suspended:
            self.data.qpos[:7] = self.base_pose
            self.data.qvel[:6] = 0.0


KINFER_INPUT_SENSORS: Mapping[str, str] = {  # kinfer input name -> sensor key (the NDJSON log uses the sensor keys)
    "joint_angles": "joint_angles",
    "joint_angular_velocities": "joint_vels",
    "projected_gravity": "projected_g",
    "accelerometer": "accel",
    "gyroscope": "gyro",
}


def kinfer_inputs(
    sensors: Mapping[str, np.ndarray], command: np.ndarray, time_s: float, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """A kinfer policy's inputs (float32) from sensor readings (`KBotSimulator.sensors` keys), a command, a time (s).

    `names`: the inputs the runtime asks for (default: every input this simulator provides).
    """
    names = (*KINFER_INPUT_SENSORS, "command", "time") if names is None else names
    inputs: dict[str, np.ndarray] = {}
    for name in names:
        if name == "command":
            inputs[name] = np.asarray(command, dtype=np.float32)
        elif name == "time":
            inputs[name] = np.array([time_s], dtype=np.float32)
        elif name in KINFER_INPUT_SENSORS:
            inputs[name] = np.asarray(sensors[KINFER_INPUT_SENSORS[name]], dtype=np.float32)
    return inputs


def tilt_deg(quat: np.ndarray) -> float:
    """Angle between a body's z axis and the world's (deg), from its (w, x, y, z) orientation (e.g. qpos[3:7])."""
    _, x, y, _ = quat
    return math.degrees(math.acos(max(-1.0, min(1.0, 1 - 2 * (x * x + y * y)))))


class KBotSimProvider(ModelProviderABC):
    """Feeds a kinfer `PyModelRunner` from `KBotSimulator` and applies its actions: the robot, in simulation.

    `command` is a function of simulation time (s) returning the command vector. Every action also advances the
    simulation by one control period, so `runner.run(dt, total_steps=N)` simulates N control steps.
    """

    def __new__(cls, *args: object, **kwargs: object) -> "KBotSimProvider":
        return super().__new__(cls)  # the pyo3 base class takes no constructor arguments

    def __init__(self, sim: KBotSimulator, command: Callable[[float], np.ndarray]) -> None:
        super().__init__()
        self.sim = sim
        self.command = command
        self.actions: list[np.ndarray] = []

    def get_inputs(self, input_types: list[str], metadata: PyModelMetadata) -> Mapping[str, np.ndarray]:
        return kinfer_inputs(self.sim.sensors(), self.command(self.sim.time_s), self.sim.time_s, input_types)

    def take_action(self, action: np.ndarray, metadata: PyModelMetadata) -> None:
        action = np.asarray(action, dtype=float)
        self.actions.append(action.copy())
        self.sim.step(action[: self.sim.num_joints])
