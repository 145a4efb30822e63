"""Step logs of the simulated K-Bot in the robot's NDJSON schema (`ksim_entropy.formats.schema.StepLog`).

Three sources, all recording what the robot's runtime records at each control step, in its order: read the sensors,
compute the output (joint position targets), log, then apply the output for one control period.

- `policy_log`: a `.kinfer` file run by kinfer's own Rust runtime; the runtime writes the NDJSON itself.
- `scripted_log`: a deterministic random multi-sine "motion script" of PD targets around the nominal pose, with a
  command vector: rich joint-level data with no policy, fast (~2000 control steps/s on one core).
- `replay_open_loop`: a log's outputs replayed open-loop from its first state: "what the simulation predicts the
  robot did", to compare with what it did.

Sensor model (`SensorNoiseStds`): seeded Gaussian noise per channel group, the order of magnitude of a MEMS IMU and
14-bit joint encoders sampled at 50 Hz. Without noise a suspended robot's IMU channels would be exactly constant.

Suspended robot: `KBotSimulator(..., SimOptions(suspended=True))` pins the base by overwriting its pose after every
physics step, so MuJoCo's accelerometer sees the base in free fall (≈ 0 m/s²). A base held on a stand does not
accelerate, so its accelerometer reads the specific force -g: here `accel = -projected_g` for a suspended robot.

Faults for sim-to-real tests are simulated, not painted on: `action_delay_steps=k` makes the robot apply the output
of k steps earlier (an actuation delay; the log still records the output computed at each step), `sim.kp` scaled
before the run makes weaker actuators.
"""

import datetime
import gc
import math
import os
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mujoco
import numpy as np
from kinfer.rust_bindings import PyModelMetadata, PyModelRunner

from ksim_entropy.bridge.logs import read_ndjson
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.sim2real.sim import KBotSimProvider, KBotSimulator, kinfer_inputs

__all__ = [
    "COMMAND_NAMES",
    "SensorNoiseStds",
    "joint_limits",
    "motion_script",
    "policy_log",
    "random_commands",
    "replay_open_loop",
    "scripted_log",
]

COMMAND_NAMES = ("xvel", "yvel", "yawrate")  # the walking task's command vector (m/s, m/s, rad/s)
_SENSOR_GROUPS = ("joint_angles", "joint_vels", "projected_g", "accel", "gyro")
_JOINT_LIMIT_MARGIN_RAD = 0.05  # scripted targets stay this far inside each joint's range


@dataclass(frozen=True)
class SensorNoiseStds:
    """Standard deviations of the zero-mean Gaussian noise added to each sensor group, in the group's units."""

    joint_angles_rad: float = 2e-4  # a 14-bit absolute encoder's step is 3.8e-4 rad
    joint_vels_rad_s: float = 5e-3
    projected_g_mps2: float = 0.02  # ~0.1° of attitude-estimate noise
    accel_mps2: float = 0.05
    gyro_rad_s: float = 5e-3

    def __post_init__(self) -> None:
        for name, value in self.stds().items():
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"SensorNoiseStds.{name} must be a finite std >= 0, got {value!r}")

    def stds(self) -> dict[str, float]:
        """Sensor group name -> noise std."""
        values = (self.joint_angles_rad, self.joint_vels_rad_s, self.projected_g_mps2, self.accel_mps2, self.gyro_rad_s)
        return dict(zip(_SENSOR_GROUPS, values, strict=True))


class _Sensing:
    """Turns simulator state into what the robot reports: suspended-base accelerometer fix, then seeded noise."""

    def __init__(self, sim: KBotSimulator, noise: SensorNoiseStds | None, seed: int) -> None:
        self.sim = sim
        self.stds = noise.stds() if noise is not None else {}
        self.rng = np.random.default_rng(seed)

    def read(self) -> dict[str, np.ndarray]:
        sensors = self.sim.sensors()
        if self.sim.options.suspended:
            sensors["accel"] = -sensors["projected_g"]
        for name, std in self.stds.items():
            if std > 0:
                sensors[name] = sensors[name] + self.rng.normal(0.0, std, sensors[name].shape)
        return sensors


class _DelayedActuation:
    """Applies, per joint, the target of `delay_steps` control steps earlier (the first target until then)."""

    def __init__(self, sim: KBotSimulator, delay_steps: int | Sequence[int]) -> None:
        delays = np.broadcast_to(np.asarray(delay_steps), (sim.num_joints,))
        if delays.dtype.kind not in "iu" or (delays < 0).any():
            raise ValueError(f"action_delay_steps must be ints >= 0 (one, or one per joint), got {delay_steps!r}")
        self.sim = sim
        self.delays = delays.astype(int)
        self.history: deque[np.ndarray] = deque(maxlen=int(self.delays.max()) + 1)

    def apply(self, target: np.ndarray) -> None:
        self.history.append(np.array(target, dtype=float))
        rows = np.maximum(len(self.history) - 1 - self.delays, 0)
        self.sim.step(np.asarray(self.history)[rows, np.arange(self.delays.size)])


def _num_steps(seconds: float, sim: KBotSimulator) -> int:
    steps = round(seconds / sim.options.ctrl_dt_s) if math.isfinite(seconds) else 0
    if steps < 2:
        raise ValueError(f"seconds={seconds!r} gives {steps} control steps of {sim.options.ctrl_dt_s} s; need >= 2")
    return steps


def random_commands(
    seed: int, *, period_s: float = 2.0, ranges: tuple[float, ...] = (0.5, 0.2, 0.5)
) -> Callable[[float], np.ndarray]:
    """Piecewise-constant command function of time (s): uniform in ±`ranges`, redrawn every `period_s`, seeded."""
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0, got {period_s!r}")
    limits = np.asarray(ranges, dtype=float)
    rng = np.random.default_rng(seed)
    table: list[np.ndarray] = []

    def command(time_s: float) -> np.ndarray:
        index = math.floor(time_s / period_s + 1e-9)  # the tolerance keeps t = k·period in interval k
        while len(table) <= index:
            table.append(rng.uniform(-limits, limits))
        return table[index].copy()

    return command


def joint_limits(sim: KBotSimulator) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper target bounds (rad): each limited joint's range shrunk by `_JOINT_LIMIT_MARGIN_RAD`."""
    ranges = sim.model.jnt_range[1:]
    limited = sim.model.jnt_limited[1:].astype(bool)
    low = np.where(limited, ranges[:, 0] + _JOINT_LIMIT_MARGIN_RAD, -np.inf)
    high = np.where(limited, ranges[:, 1] - _JOINT_LIMIT_MARGIN_RAD, np.inf)
    return low, high


def motion_script(
    nominal_pose_rad: np.ndarray,
    rng: np.random.Generator,
    amplitude_rad: float = 0.25,
    band_hz: tuple[float, float] = (0.2, 2.0),
    num_sines: int = 4,
) -> Callable[[float], np.ndarray]:
    """Targets(t) before clipping: nominal pose + per joint a sum of `num_sines` equal sines with random phases.

    The frequencies are fixed (log-spaced over `band_hz`, offset per joint by the golden ratio) and each joint's sum
    has std `amplitude_rad`, so logs of different seeds share their distributions but not their trajectories.
    """
    low_hz, high_hz = band_hz
    if not 0 < low_hz <= high_hz or num_sines < 1 or amplitude_rad < 0:
        raise ValueError(
            f"need 0 < band_hz[0] <= band_hz[1], num_sines >= 1 and amplitude_rad >= 0; got {band_hz}, {num_sines}, "
            f"{amplitude_rad}"
        )
    nominal = np.array(nominal_pose_rad, dtype=float)
    offsets = (np.arange(nominal.size)[:, None] * 0.6180339887) % 1.0
    freqs = low_hz * (high_hz / low_hz) ** ((np.arange(num_sines)[None, :] + offsets) / num_sines)
    phases = rng.uniform(0.0, 2.0 * np.pi, freqs.shape)
    weight = amplitude_rad * np.sqrt(2.0 / num_sines)

    def targets(time_s: float) -> np.ndarray:
        return nominal + weight * np.sum(np.sin(2.0 * np.pi * freqs * time_s + phases), axis=1)

    return targets


def scripted_log(
    sim: KBotSimulator,
    *,
    seconds: float,
    seed: int,
    amplitude_rad: float = 0.25,
    band_hz: tuple[float, float] = (0.2, 1.5),
    num_sines: int = 3,
    dither_rad: float = 0.02,
    command_fn: Callable[[float], np.ndarray] | None = None,
    noise: SensorNoiseStds | None = SensorNoiseStds(),
    action_delay_steps: int | Sequence[int] = 0,
    noise_seed: int | None = None,
    start_t_us: int = 0,
    source: str = "",
) -> StepLog:
    """Run a seeded multi-sine motion script (PD targets around the nominal pose) and log it like kinfer does.

    At each control step: read the sensors (with `noise`), evaluate the command (`command_fn(t)`, default
    `random_commands(seed)`) and the targets at the simulation time t, plus white `dither_rad` noise (it makes the
    response identifiable at step rate: a purely smooth target hides actuation delays), clipped inside the joint
    ranges; log them with `t_us = start_t_us + t·1e6`; then apply, per joint, the targets of `action_delay_steps`
    steps earlier for one control period. `seed` draws the phases, dither, commands and (unless `noise_seed` is
    given: the same script with independent sensor noise) the sensor noise. The simulator is reset to the nominal
    pose first; its `kp`/`kd` are used as they are.
    """
    steps = _num_steps(seconds, sim)
    if not dither_rad >= 0:
        raise ValueError(f"dither_rad must be >= 0, got {dither_rad!r}")
    rng = np.random.default_rng(seed)
    script = motion_script(sim.nominal_pose_rad, rng, amplitude_rad, band_hz, num_sines)
    command = command_fn if command_fn is not None else random_commands(seed)
    derived_noise_seed = int(rng.integers(2**63))  # drawn always, so noise_seed leaves the script unchanged
    sensing = _Sensing(sim, noise, seed=derived_noise_seed if noise_seed is None else noise_seed)
    actuation = _DelayedActuation(sim, action_delay_steps)
    low, high = joint_limits(sim)
    sim.reset()
    columns: dict[str, list[np.ndarray]] = {name: [] for name in (*_SENSOR_GROUPS, "command", "output")}
    t_us = np.empty(steps, dtype=np.int64)
    for step in range(steps):
        time_s = sim.time_s
        for name, value in sensing.read().items():
            columns[name].append(value)
        target = np.clip(script(time_s) + rng.normal(0.0, dither_rad, sim.num_joints), low, high)
        columns["command"].append(np.asarray(command(time_s), dtype=float))
        columns["output"].append(target)
        t_us[step] = start_t_us + round(time_s * 1e6)
        actuation.apply(target)
    return StepLog(
        step_id=np.arange(steps, dtype=np.int64),
        t_us=t_us,
        groups={name: np.stack(values) for name, values in columns.items()},
        joint_names=sim.joint_names,
        source=source or f"scripted_log(seed={seed}, seconds={seconds})",
    )


def replay_open_loop(log: StepLog, sim: KBotSimulator) -> StepLog:
    """Replay `log`'s outputs open-loop in `sim` from the log's first joint angles (and velocities, if logged).

    Each row's output is held for one control period; a NaN output holds the previous target; a step-id gap of g
    missing steps (steps the robot ran but the log lost) holds the last target g more periods, so simulation time
    follows the step ids. Sensors are recorded noise-free before each output is applied. Same step ids; `t_us` =
    the log's first `t_us` + simulation time; `command` and `output` are copied from the log.
    """
    outputs = log.group("output")
    angles = log.group("joint_angles")
    if outputs.shape[1] != sim.num_joints or angles.shape[1] != sim.num_joints:
        raise ValueError(
            f"log has {outputs.shape[1]} outputs and {angles.shape[1]} joint angles; the simulator has "
            f"{sim.num_joints} joints"
        )
    if len(log) < 1 or not np.isfinite(angles[0]).all():
        raise ValueError("replay needs a first row with finite joint angles to start from")
    sim.reset(angles[0])
    if "joint_vels" in log.groups and np.isfinite(log.group("joint_vels")[0]).all():
        sim.data.qvel[6:] = log.group("joint_vels")[0]
        mujoco.mj_forward(sim.model, sim.data)
    sensing = _Sensing(sim, None, seed=0)
    gaps = np.maximum(np.diff(log.step_id), 1) - 1
    target = np.where(np.isfinite(outputs[0]), outputs[0], angles[0])
    columns: dict[str, list[np.ndarray]] = {name: [] for name in _SENSOR_GROUPS}
    t_us = np.empty(len(log), dtype=np.int64)
    for row in range(len(log)):
        for name, value in sensing.read().items():
            columns[name].append(value)
        t_us[row] = log.t_us[0] + round(sim.time_s * 1e6)
        target = np.where(np.isfinite(outputs[row]), outputs[row], target)
        sim.step(target)
        for _ in range(int(gaps[row]) if row < len(gaps) else 0):
            sim.step(target)
    groups: dict[str, np.ndarray] = {name: np.stack(values) for name, values in columns.items()}
    groups["output"] = outputs
    if "command" in log.groups:
        groups["command"] = log.group("command")
    return StepLog(
        step_id=log.step_id,
        t_us=t_us,
        groups=groups,
        joint_names=sim.joint_names,
        source=f"replay_open_loop({log.source or 'log'})",
    )


class _LoggedProvider(KBotSimProvider):
    """`KBotSimProvider` with `_Sensing` (suspended accelerometer, noise) and an optional actuation delay."""

    def __init__(
        self,
        sim: KBotSimulator,
        command: Callable[[float], np.ndarray],
        sensing: _Sensing,
        actuation: _DelayedActuation,
    ) -> None:
        super().__init__(sim, command)
        self.sensing = sensing
        self.actuation = actuation

    def get_inputs(self, input_types: list[str], metadata: PyModelMetadata) -> Mapping[str, np.ndarray]:
        return kinfer_inputs(self.sensing.read(), self.command(self.sim.time_s), self.sim.time_s, input_types)

    def take_action(self, action: np.ndarray, metadata: PyModelMetadata) -> None:
        action = np.asarray(action, dtype=float)
        self.actions.append(action.copy())
        self.actuation.apply(action[: self.sim.num_joints])


def policy_log(
    kinfer_path: str | os.PathLike[str],
    *,
    seconds: float,
    command_fn: Callable[[float], np.ndarray],
    sim: KBotSimulator,
    log_dir: str | os.PathLike[str],
    seed: int = 0,
    speedup: float = 4.0,
    initial_pose_noise_rad: float = 0.02,
    noise: SensorNoiseStds | None = SensorNoiseStds(),
    action_delay_steps: int | Sequence[int] = 0,
    timestamps: Literal["runtime", "simulated"] = "runtime",
) -> StepLog:
    """Run a `.kinfer` policy on the simulated K-Bot through kinfer's Rust runtime, which writes the NDJSON log.

    `KINFER_LOG_PATH=log_dir` and a fresh `KINFER_LOG_UUID` are set while the runner is created (the runtime reads
    them then) and restored afterwards; the runner's `run()` runs the init function, then `seconds / ctrl_dt`
    steps. Runner period: `ctrl_dt / speedup` of wall clock (default 5 ms for the 20 ms control period), so `t_us`
    is the runtime's own wall-clock schedule with its real jitter, `speedup`× faster than simulated time; one
    step's work (sensors, ONNX step, 5 physics substeps) takes 0.3-0.7 ms on one core, so on an idle machine the
    schedule holds. Use `speedup=1` for real-time `t_us`. On a loaded machine the host's stalls show up in `t_us` as
    jitter and late ticks that a simulated robot does not have: `timestamps="simulated"` replaces `t_us` by the
    first logged `t_us` + step_id · ctrl_dt (the simulated robot's clock); the file on disk keeps the runtime's.
    The simulator is reset to the nominal pose plus seeded uniform noise of ±`initial_pose_noise_rad`; `seed` also
    draws the sensor noise. Returns the log as `read_ndjson` reads it back (joint names from `sim`), with `source`
    = the NDJSON path.
    """
    if timestamps not in ("runtime", "simulated"):
        raise ValueError(f"timestamps must be 'runtime' or 'simulated', got {timestamps!r}")
    if not np.isfinite(speedup) or speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup!r}")
    kinfer_path = Path(kinfer_path)
    if not kinfer_path.is_file():
        raise FileNotFoundError(f"{kinfer_path}: no such .kinfer file")
    steps = _num_steps(seconds, sim)
    rng = np.random.default_rng(seed)
    sim.reset(sim.nominal_pose_rad + rng.uniform(-initial_pose_noise_rad, initial_pose_noise_rad, sim.num_joints))
    provider = _LoggedProvider(
        sim, command_fn, _Sensing(sim, noise, seed=int(rng.integers(2**63))), _DelayedActuation(sim, action_delay_steps)
    )
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"policy-{seed}-{uuid.uuid4().hex[:12]}"
    path = log_dir / f"{name}.ndjson"  # kinfer appends: a fresh name guarantees a file of this run only
    saved = {key: os.environ.get(key) for key in ("KINFER_LOG_PATH", "KINFER_LOG_UUID")}
    os.environ["KINFER_LOG_PATH"], os.environ["KINFER_LOG_UUID"] = str(log_dir), name
    try:
        runner = PyModelRunner(str(kinfer_path), provider, None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    runner.run(datetime.timedelta(seconds=sim.options.ctrl_dt_s / speedup), total_steps=steps)
    del runner  # dropping the runner joins kinfer's log writer thread, which flushes the file
    gc.collect()
    if not path.is_file():
        raise RuntimeError(f"kinfer wrote no log at {path}; is this kinfer build logging (KINFER_LOG_PATH)?")
    log, _ = read_ndjson(path, joint_names=sim.joint_names)
    if timestamps == "runtime":
        return log
    period_us = round(sim.options.ctrl_dt_s * 1e6)
    t_us = log.t_us[0] + (log.step_id - log.step_id[0]) * period_us
    return StepLog(step_id=log.step_id, t_us=t_us, groups=log.groups, joint_names=log.joint_names, source=log.source)
