"""A stand-in for the real K-Bot: a perturbed K-Bot in CPU MuJoCo with hidden parameters, writing kinfer-format logs.

It differs from the training simulation on purpose, the way a real robot does: 1 ms physics with the PD servos
closed at 1 kHz (training: 4 ms, MuJoCo's own servos), hidden physical parameters, action and observation latency
at 1 ms resolution, per-joint encoder zero errors, IMU biases and sensor noise. A fit of the randomization to its
logs (`ksim_entropy.sim2real.fit`) must recover the hidden values without seeing them.

Parameter meanings are those of the training randomization (`ksim_entropy.randomization`), by the names the fit
writes to `fitted.json`:

- `mass_scale` (every body's mass and inertia ×), `frictionloss_scale`, `armature_scale` (every joint ×),
  `joint_damping` (N·m·s/rad added to every joint), `kp_scale`, `kd_scale` (every servo ×);
- `action_latency_s`: a target reaches the servos this long after it is logged; `obs_latency_s`: logged sensors
  are this old;
- `zero_offset/<joint>` (rad): the encoder reads q − δ and the servo closes its loop on that reading, so it drives
  the joint to target + δ (`JointZeroOffset`'s law);
- `gyro_bias/<x|y|z>` (rad/s), `accel_bias/<x|y|z>` (m/s²): constant IMU biases;
- `foot_friction`: the sliding friction coefficient of the foot capsules (None: the model's own, 0.64 on the K-Bot);
- sensor noise: `ksim_entropy.sim2real.sim_logs.SensorNoiseStds`.
"""

import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ksim_entropy.export import KinferRunner, KinferSession
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.kbot.robot import KBOT_FOOT_COLLISION_GEOMS, RobotFiles, resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions, kinfer_inputs, tilt_deg
from ksim_entropy.sim2real.sim_logs import SensorNoiseStds, joint_limits, motion_script, random_commands

__all__ = ["REALITY_DT_S", "HiddenRobot", "perturbed_simulator", "reality_log"]

REALITY_DT_S = 0.001  # physics and servo period of the stand-in robot (s): PD at 1 kHz
_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class HiddenRobot:
    """The hidden truth of a stand-in robot (see the module docstring for each parameter's meaning and unit)."""

    mass_scale: float = 1.0
    frictionloss_scale: float = 1.0
    armature_scale: float = 1.0
    joint_damping: float = 0.0
    kp_scale: float = 1.0
    kd_scale: float = 1.0
    action_latency_s: float = 0.0
    obs_latency_s: float = 0.0
    zero_offset_rad: tuple[float, ...] = ()  # one per joint; empty = none
    gyro_bias_rad_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    accel_bias_mps2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise: SensorNoiseStds = field(default_factory=SensorNoiseStds)
    foot_friction: float | None = None

    def __post_init__(self) -> None:
        for name in ("mass_scale", "frictionloss_scale", "armature_scale", "kp_scale", "kd_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"HiddenRobot.{name} must be a finite scale > 0, got {value!r}")
        for name in ("joint_damping", "action_latency_s", "obs_latency_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"HiddenRobot.{name} must be finite and >= 0, got {value!r}")
        for name in ("zero_offset_rad", "gyro_bias_rad_s", "accel_bias_mps2"):
            values = np.asarray(getattr(self, name), dtype=float)
            if not np.isfinite(values).all():
                raise ValueError(f"HiddenRobot.{name} must be finite, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.foot_friction is not None and not (math.isfinite(self.foot_friction) and self.foot_friction > 0):
            raise ValueError(f"HiddenRobot.foot_friction must be finite and > 0, got {self.foot_friction!r}")
        if len(self.gyro_bias_rad_s) != 3 or len(self.accel_bias_mps2) != 3:
            raise ValueError("HiddenRobot: gyro_bias_rad_s and accel_bias_mps2 need 3 values (x, y, z)")

    @classmethod
    def random(cls, seed: int, num_joints: int, noise: SensorNoiseStds | None = None) -> "HiddenRobot":
        """A plausible robot off nominal: every value drawn (seeded) from a range wider than a good robot's."""
        rng = np.random.default_rng(seed)
        return cls(
            mass_scale=float(rng.uniform(0.85, 1.15)),
            frictionloss_scale=float(rng.uniform(0.6, 1.8)),
            armature_scale=float(rng.uniform(0.8, 1.25)),
            joint_damping=float(rng.uniform(0.2, 1.0)),
            kp_scale=float(rng.uniform(0.85, 1.15)),
            kd_scale=float(rng.uniform(0.8, 1.25)),
            action_latency_s=float(rng.integers(2, 13)) * REALITY_DT_S,
            obs_latency_s=float(rng.integers(0, 9)) * REALITY_DT_S,
            zero_offset_rad=tuple(rng.uniform(-0.03, 0.03, num_joints)),
            gyro_bias_rad_s=tuple(rng.uniform(-0.02, 0.02, 3)),
            accel_bias_mps2=tuple(rng.uniform(-0.3, 0.3, 3)),
            noise=noise if noise is not None else SensorNoiseStds(),
            foot_friction=float(rng.uniform(0.4, 1.0)),  # drawn last: the draws above are as before it was added
        )

    def values(self, joint_names: tuple[str, ...]) -> dict[str, float]:
        """Every hidden value by its `fitted.json` name (zero offsets per joint, biases per axis)."""
        out = {
            name: float(getattr(self, name))
            for name in (
                "mass_scale",
                "frictionloss_scale",
                "armature_scale",
                "joint_damping",
                "kp_scale",
                "kd_scale",
                "action_latency_s",
                "obs_latency_s",
            )
        }
        offsets = self.offsets(len(joint_names))
        out.update({f"zero_offset/{joint}": float(v) for joint, v in zip(joint_names, offsets, strict=True)})
        out.update({f"gyro_bias/{a}": v for a, v in zip(_AXES, self.gyro_bias_rad_s, strict=True)})
        out.update({f"accel_bias/{a}": v for a, v in zip(_AXES, self.accel_bias_mps2, strict=True)})
        if self.foot_friction is not None:
            out["foot_friction"] = self.foot_friction
        return out

    def offsets(self, num_joints: int) -> np.ndarray:
        if not self.zero_offset_rad:
            return np.zeros(num_joints)
        if len(self.zero_offset_rad) != num_joints:
            raise ValueError(f"HiddenRobot has {len(self.zero_offset_rad)} zero offsets; the robot has {num_joints}")
        return np.asarray(self.zero_offset_rad)


def perturbed_simulator(files: RobotFiles, hidden: HiddenRobot, suspended: bool) -> KBotSimulator:
    """A 1 kHz CPU K-Bot with `hidden`'s masses, joint friction, armature, damping, PD gains and foot friction."""
    sim = KBotSimulator(files, SimOptions(dt_s=REALITY_DT_S, suspended=suspended))
    model = sim.model
    model.body_mass[1:] *= hidden.mass_scale
    model.body_inertia[1:] *= hidden.mass_scale
    model.dof_frictionloss[6:] *= hidden.frictionloss_scale
    model.dof_armature[6:] *= hidden.armature_scale
    model.dof_damping[6:] += hidden.joint_damping
    sim.kp = sim.kp * hidden.kp_scale
    sim.kd = sim.kd * hidden.kd_scale
    if hidden.foot_friction is not None:
        feet = [model.geom(g).id for pair in KBOT_FOOT_COLLISION_GEOMS.values() for g in pair]
        model.geom_friction[feet, 0] = hidden.foot_friction
    sim.reset()
    return sim


def _substeps(seconds: float) -> int:
    steps = seconds / REALITY_DT_S
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"latency {seconds} s is not a multiple of the stand-in robot's {REALITY_DT_S} s period")
    return round(steps)


def reality_log(
    hidden: HiddenRobot,
    *,
    seconds: float,
    seed: int,
    suspended: bool = True,
    files: RobotFiles | None = None,
    amplitude_rad: float = 0.25,
    band_hz: tuple[float, float] = (0.2, 2.0),
    num_sines: int = 4,
    dither_rad: float = 0.02,
    ctrl_dt_s: float = 0.02,
    policy: str | os.PathLike[str] | None = None,
    push_mps: float = 0.0,
    push_interval_s: tuple[float, float] = (2.0, 4.0),
    stop_at_fall: bool = False,
) -> StepLog:
    """A seeded run of the hidden robot, logged like kinfer logs a real one (50 Hz, rad, m/s²).

    Targets: without `policy`, `sim_logs`' multi-sine excitation script around the nominal pose plus white
    `dither_rad` per step, clipped inside the joint ranges (the same script as `scripted_log`); with `policy` (a
    `.kinfer`), that policy closed-loop through kinfer's runtime at zero command, on the readings the log records.
    At each control step: read the sensors as they were `obs_latency_s` ago (encoder reading q − δ, IMU with biases,
    all with noise), compute and log the targets; the servos receive them `action_latency_s` later and drive to
    target + δ at 1 kHz. Suspended: the base is held (robot on a stand), its accelerometer reads −g in the IMU frame
    plus bias. Standing (`suspended=False`): the robot starts on the floor in the nominal pose; `push_mps` > 0 adds
    a horizontal velocity impulse to the base in a random direction every U(`push_interval_s`) s (the sim-to-sim
    gate's push), and a fall (base below 60 % of its start height or tilted over 45°) raises `ValueError`: the log
    of a fallen robot (which sinks through the floor: only the feet collide) is no log of standing. With
    `stop_at_fall` the log ends instead at the control step the robot fell in (fewer than `seconds` of rows: how
    long it stood, to one control step).
    """
    files = files if files is not None else resolve_robot_files("local")
    sim = perturbed_simulator(files, hidden, suspended)
    per_step = round(ctrl_dt_s / REALITY_DT_S)
    if abs(per_step * REALITY_DT_S - ctrl_dt_s) > 1e-9 or per_step < 1:
        raise ValueError(f"ctrl_dt_s must be a multiple of {REALITY_DT_S} s, got {ctrl_dt_s}")
    steps = round(seconds / ctrl_dt_s) if math.isfinite(seconds) else 0
    if steps < 2:
        raise ValueError(f"seconds={seconds!r} gives {steps} control steps; need >= 2")
    if push_mps < 0 or not math.isfinite(push_mps) or (push_mps > 0 and suspended):
        raise ValueError(f"push_mps must be finite and >= 0, and 0 for a suspended robot; got {push_mps!r}")
    if not (0 < push_interval_s[0] <= push_interval_s[1] < math.inf):
        raise ValueError(f"push_interval_s must be (low, high) seconds with 0 < low <= high, got {push_interval_s!r}")
    action_delay, obs_delay = _substeps(hidden.action_latency_s), _substeps(hidden.obs_latency_s)
    offsets = hidden.offsets(sim.num_joints)
    rng = np.random.default_rng(seed)
    script = motion_script(sim.nominal_pose_rad, rng, amplitude_rad, band_hz, num_sines)
    commands = random_commands(seed)
    noise_rng = np.random.default_rng(int(rng.integers(2**63)))
    stds = hidden.noise.stds()
    low, high = joint_limits(sim)

    def reading() -> dict[str, np.ndarray]:
        sensors = sim.sensors()
        sensors["joint_angles"] = sensors["joint_angles"] - offsets
        if suspended:
            sensors["accel"] = -sensors["projected_g"]
        sensors["accel"] = sensors["accel"] + np.asarray(hidden.accel_bias_mps2)
        sensors["gyro"] = sensors["gyro"] + np.asarray(hidden.gyro_bias_rad_s)
        return {k: v + noise_rng.normal(0.0, stds[k], v.shape) if stds[k] > 0 else v for k, v in sensors.items()}

    controller = _PolicyTargets(policy, low, high) if policy is not None else None
    push_rng = np.random.default_rng(int(rng.integers(2**63)))
    next_push = push_rng.uniform(*push_interval_s) if push_mps > 0 else math.inf
    start_height = float(sim.data.qpos[2])
    first = reading()
    readings: deque[dict[str, np.ndarray]] = deque()  # sensor readings taken obs_delay substeps before a log step
    pending: deque[tuple[int, np.ndarray]] = deque()  # (substep at which the servos get it, target)
    applied = sim.nominal_pose_rad.copy()
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (*first, "command", "output")}
    for step in range(steps):
        start = step * per_step
        logged = readings.popleft() if start - obs_delay > 0 else first  # the state at t = 0 when m <= 0
        for name, value in logged.items():
            columns[name].append(value)
        time_s = start * REALITY_DT_S
        if controller is None:
            target = np.clip(script(time_s) + rng.normal(0.0, dither_rad, sim.num_joints), low, high)
            columns["command"].append(commands(time_s))
        else:
            target = controller(logged, time_s)
            columns["command"].append(controller.command)
        columns["output"].append(target)
        pending.append((start + action_delay, target))
        for sub in range(start, start + per_step):
            while pending and pending[0][0] <= sub:
                applied = pending.popleft()[1]
            if sub * REALITY_DT_S >= next_push:
                angle = push_rng.uniform(0.0, 2 * math.pi)
                sim.data.qvel[0:2] += push_mps * np.array([math.cos(angle), math.sin(angle)])
                next_push += push_rng.uniform(*push_interval_s)
            sim.physics_step(applied + offsets)
            if (sub + 1 + obs_delay) % per_step == 0:  # the state a later log step reports
                readings.append(reading())
        if not suspended and (sim.data.qpos[2] < 0.6 * start_height or tilt_deg(sim.data.qpos[3:7]) > 45.0):
            if stop_at_fall:
                break
            raise ValueError(f"the stand-in robot fell at t = {sim.time_s:.2f} s (push_mps={push_mps}, seed={seed})")
    rows = len(columns["output"])
    return StepLog(
        step_id=np.arange(rows, dtype=np.int64),
        t_us=np.arange(rows, dtype=np.int64) * round(ctrl_dt_s * 1e6),
        groups={name: np.stack(values) for name, values in columns.items()},
        joint_names=sim.joint_names,
        source=f"reality_log(seed={seed}, seconds={seconds}, suspended={suspended}"
        + (f", policy={Path(policy).name}, push_mps={push_mps})" if policy is not None else ")"),
    )


class _PolicyTargets:
    """A `.kinfer` policy at zero command as a target source: readings (sensor keys) -> joint targets (rad)."""

    def __init__(self, path: str | os.PathLike[str], low: np.ndarray, high: np.ndarray) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such .kinfer file")
        self.runner = KinferRunner(path)
        self.command = np.zeros(len(KinferSession(path).metadata.get("command_names") or ()))
        self.low, self.high = low, high

    def __call__(self, reading: dict[str, np.ndarray], time_s: float) -> np.ndarray:
        action = self.runner.step(kinfer_inputs(reading, self.command, time_s))
        return np.clip(action[: len(self.low)], self.low, self.high)
