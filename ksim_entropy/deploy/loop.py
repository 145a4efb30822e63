"""Run a `.kinfer` policy on a K-Bot over KOS: deadline-scheduled control, soft start, limits, watchdog, NDJSON log.

One control step (period T = 1 / the robot's control rate, 20 ms on the K-Bot), at deadline t0 + k·T:

1. read actuator states and the IMU (three concurrent pykos calls, each bounded by `read_timeout` · T; the command
   in step 4 by `command_timeout` · T);
2. convert KOS's units to the policy's (deg → rad, deg/s → rad/s; projected gravity from the IMU quaternion); the
   gyroscope's unit is checked against the quaternion's rate during the soft start (`gyro_check`);
3. step the model through kinfer's runtime (`ksim_entropy.export.KinferRunner`, which feeds the carry back);
4. blend from the starting pose during the soft start, clamp to the joint limits, send the position targets (deg);
5. append the step to the NDJSON log (flushed at once) and sleep until the next deadline (not `sleep(T)`).

The watchdog ends the run with a safe stop — hold the last measured pose for `hold_s`, then damping (kp = 0) or
torque off, read back — when KOS stops answering or errs (disconnect, latency spike), an actuator reports a fault,
the IMU reading stays bit for bit the same for `imu_freeze_s` (a frozen stream: a live MEMS IMU never repeats, but a
simulator stepping in bursts repeats within one), `max_overruns` steps in a row overrun their period, the policy
outputs a non-finite value, or the user presses Ctrl-C. Except for overruns (which need `max_overruns` slow steps)
and a frozen IMU (`imu_freeze_s` after its last change), each is noticed at the latest one step after it happens, so
the hold command goes out within two control periods (the first read of the loop may take the setup's
`connect_timeout_s`: until then the robot holds the pose it was found in). Those checks run inside the loop; a loop
that stops running — a policy step that hangs, a blocked event loop — is caught by a second watchdog in a thread of
its own with its own KOS connection (`_StallWatchdog`): when the loop has not reported progress for `stall_timeout`
· T it takes the stop over, and the loop, should it ever resume, sends nothing more. Every stop is written, with its
reason, to `<log>.deploy.json` along with timing statistics.

Before any motion: the policy's joints must equal the robot's (by name), its inputs must be ones this loop can
provide, every actuator must answer, be online and report no fault, and the IMU must answer.
"""

import asyncio
import contextlib
import logging
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import grpc
import numpy as np
from pykos import KOS

from ksim_entropy.bridge.logs import NdjsonWriter
from ksim_entropy.constants import GRAVITY_MPS2
from ksim_entropy.deploy.gyro_check import GYRO_UNITS, GyroUnitCheck
from ksim_entropy.deploy.robot_map import DeployError, RobotMap
from ksim_entropy.export import ExportError, KinferRunner, KinferSession
from ksim_entropy.formats.jsonfile import write_json
from ksim_entropy.kbot.robot import KBOT_NOMINAL_POSE_RAD, RobotFiles, load_robot_model
from ksim_entropy.sim2real.sim_logs import COMMAND_NAMES, motion_script

__all__ = ["DeployOptions", "DeployResult", "Excitation", "deploy", "projected_gravity"]

logger = logging.getLogger(__name__)

# kinfer step inputs this loop can provide (kinfer 0.6.1's names, `kinfer/rust/src/types.rs`)
_PROVIDED_INPUTS = frozenset(
    {"joint_angles", "joint_angular_velocities", "projected_gravity", "accelerometer", "gyroscope", "command", "time"}
)


@dataclass(frozen=True)
class DeployOptions:
    """How to run; times in seconds, `read_timeout`, `command_timeout` and `stall_timeout` in control periods."""

    host: str = "127.0.0.1"
    port: int = 50051
    duration_s: float | None = None  # None: until Ctrl-C or a fault
    command: tuple[float, ...] = ()  # the policy's command vector (default: zeros), e.g. (xvel m/s, yvel, yaw rad/s)
    soft_start_s: float = 2.0  # blend from the measured pose to the policy's targets over this long
    hold_s: float = 0.5  # safe stop: hold the last measured pose this long ...
    final: Literal["damp", "torque_off"] = "damp"  # ... then damping only (kp = 0) or torque off
    max_overruns: int = 2  # this many overrunning steps in a row stop the run
    # periods a read may take before it is given up: its tick runs nothing (the robot keeps its last target), and
    # `max_slow_reads` in a row mean KOS is not answering; above 1, a slow read is an overrun instead
    read_timeout: float = 0.75
    max_slow_reads: int = 2
    # periods a position command may take (same rule: above 1, a slow command is an overrun instead)
    command_timeout: float = 1.0
    connect_timeout_s: float = 3.0
    stop_timeout_s: float = 2.0  # how long the final damping / torque-off setting may take
    limit_margin_rad: float = 0.0  # targets stay this far inside each joint's range
    stall_timeout: float = 1.5  # control periods without progress before the thread watchdog stops the robot
    # an IMU reading unchanged this long is a frozen stream (kos-sim steps in 20 ms bursts: reads inside one repeat)
    imu_freeze_s: float = 0.1
    # the unit KOS sends the gyroscope in: the proto says deg/s, kos-sim 0.0.14 sends rad/s; "auto" converts by what
    # the check during the soft start finds (deg/s until then), "deg" / "rad" stop the run if it finds otherwise
    gyro_unit: Literal["auto", "deg", "rad"] = "auto"

    def __post_init__(self) -> None:
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise DeployError(f"duration_s must be > 0 s, got {self.duration_s!r}")
        for name in ("soft_start_s", "hold_s", "limit_margin_rad", "connect_timeout_s", "stop_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise DeployError(f"{name} must be finite and >= 0, got {value!r}")
        for name in ("read_timeout", "command_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise DeployError(f"{name} must be > 0 control periods, got {value!r}")
        if not (math.isfinite(self.stall_timeout) and self.stall_timeout > 1):
            raise DeployError(f"stall_timeout must be > 1 control period, got {self.stall_timeout!r}")
        if not (math.isfinite(self.imu_freeze_s) and self.imu_freeze_s > 0):
            raise DeployError(f"imu_freeze_s must be > 0 s, got {self.imu_freeze_s!r}")
        if self.gyro_unit not in ("auto", *GYRO_UNITS):
            raise DeployError(f"gyro_unit must be 'auto', 'deg' or 'rad', got {self.gyro_unit!r}")
        if self.max_slow_reads < 1:
            raise DeployError(f"max_slow_reads must be >= 1, got {self.max_slow_reads!r}")
        if self.max_overruns < 1:
            raise DeployError(f"max_overruns must be >= 1, got {self.max_overruns!r}")
        if self.final not in ("damp", "torque_off"):
            raise DeployError(f"final must be 'damp' or 'torque_off', got {self.final!r}")
        if not all(math.isfinite(c) for c in self.command):
            raise DeployError(f"command must be finite, got {self.command!r}")


@dataclass
class DeployResult:
    """What happened: why it stopped, when (unix s), and the loop's timing (ms)."""

    reason: str
    steps: int
    log_path: str
    stopped_at_s: float = math.nan
    last_good_step_s: float = math.nan
    stop_actions: list[str] = field(default_factory=list)
    jitter_ms: dict[str, float] = field(default_factory=dict)
    step_ms: dict[str, float] = field(default_factory=dict)
    read_ms: dict[str, float] = field(default_factory=dict)  # the sensor reads' round trips
    inference_ms: dict[str, float] = field(default_factory=dict)
    overruns: int = 0
    # control ticks passed over after falling more than a period behind (no step, no log line): `steps` counts
    # ticks up to the last step run, and `steps` − `skipped_ticks` steps ran and were logged
    skipped_ticks: int = 0
    slow_reads: int = 0  # reads given up after `read_timeout` (their ticks are among `skipped_ticks`)
    gyro_unit: str = ""  # the unit the gyroscope was read in at the end ("deg" or "rad", per second)
    gyro_check: str = ""  # what the check against the quaternion found


class _SafeStopError(Exception):
    """A watchdog condition: the run must end with a safe stop, for `reason`."""


class _NoAnswerError(_SafeStopError):
    """KOS did not answer within the time allowed."""


def projected_gravity(quat_wxyz: np.ndarray) -> np.ndarray:
    """Gravity (0, 0, −g) in the IMU frame, for an IMU orientation quaternion (w, x, y, z) in the world frame."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=float) / np.linalg.norm(quat_wxyz)
    # third row of the rotation matrix (world z axis in IMU coordinates), times -g
    return -GRAVITY_MPS2 * np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])


def _check_model(path: Path, files: RobotFiles, command: tuple[float, ...]) -> tuple[RobotMap, np.ndarray]:
    """The robot map in the policy's order and the command vector; `DeployError` if the policy cannot run here."""
    try:
        session = KinferSession(path)
    except (ExportError, OSError) as err:
        raise DeployError(f"cannot load the policy {path}: {err}") from err
    joint_names = tuple(session.metadata.get("joint_names") or ())
    command_names = tuple(session.metadata.get("command_names") or ())
    unknown = sorted(set(session.input_names) - _PROVIDED_INPUTS - {"carry"})
    if unknown:
        raise DeployError(f"the policy {path} asks for inputs this loop cannot provide: {unknown}")
    robot = RobotMap.from_files(files, joint_names)
    vector = np.zeros(len(command_names)) if not command else np.asarray(command, dtype=float)
    if vector.shape != (len(command_names),):
        raise DeployError(f"the policy takes {len(command_names)} commands {list(command_names)}, got {len(command)}")
    dummy = {name: np.zeros(shape, np.float32) for name, shape in session.input_shapes.items()}
    dummy["carry"] = session.init()
    action, _ = session.step(dummy)
    if np.shape(action) != (len(joint_names),):
        raise DeployError(
            f"the policy's action has shape {np.shape(action)}; its metadata names {len(joint_names)} joints"
        )
    return robot, vector


@dataclass(frozen=True)
class Excitation:
    """Scripted excitation instead of a policy, for fitting the randomization (`python -m tasks.fit`).

    Targets: the nominal pose plus `sim_logs.motion_script`'s seeded multi-sine (std `amplitude_rad` per joint,
    `num_sines` sines over `band_hz`) plus white dither of std `dither_rad` per step, kept `margin_rad` inside each
    joint's range: the same excitation as `ksim_entropy.testing.reality.reality_log`. Run it with the robot on a stand.
    """

    seed: int = 0
    amplitude_rad: float = 0.25
    band_hz: tuple[float, float] = (0.2, 2.0)
    num_sines: int = 4
    dither_rad: float = 0.02
    margin_rad: float = 0.05

    def __post_init__(self) -> None:
        low, high = self.band_hz
        values = (self.amplitude_rad, self.dither_rad, self.margin_rad)
        if not (0 < low <= high and self.num_sines >= 1 and all(math.isfinite(v) and v >= 0 for v in values)):
            raise DeployError(
                f"Excitation: need 0 < band_hz[0] <= band_hz[1], num_sines >= 1 and finite amplitude, dither and "
                f"margin >= 0; got {self}"
            )

    def controller(self, robot: RobotMap) -> Callable[[Mapping[str, np.ndarray], float], np.ndarray]:
        """targets(inputs, time_s) for the robot's joints (rad)."""
        rng = np.random.default_rng(self.seed)
        nominal = np.array([KBOT_NOMINAL_POSE_RAD.get(name, 0.0) for name in robot.names])
        script = motion_script(nominal, rng, self.amplitude_rad, self.band_hz, self.num_sines)
        low = robot.array("lower_rad") + self.margin_rad
        high = robot.array("upper_rad") - self.margin_rad

        def targets(inputs: Mapping[str, np.ndarray], time_s: float) -> np.ndarray:
            del inputs
            return np.clip(script(time_s) + rng.normal(0.0, self.dither_rad, nominal.size), low, high)

        return targets


def _check_excitation(files: RobotFiles) -> RobotMap:
    """The robot map in the model's (MJCF) joint order, which is the order the fit reads logs in."""
    model = load_robot_model(files, scene=None)
    return RobotMap.from_files(files, tuple(model.joint(i).name for i in range(1, model.njnt)))


def _stats_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1e3
    return {
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
        "mean": float(statistics.fmean(array)),
    }


def tilt_deg(projected_g: np.ndarray) -> float:
    """The torso's tilt from upright (deg, 0-180) from the IMU's projected gravity (upright: (0, 0, −g))."""
    g = np.asarray(projected_g, dtype=float)
    return float(np.degrees(np.arccos(np.clip(-g[2] / max(float(np.linalg.norm(g)), 1e-9), -1.0, 1.0))))


class _Run:
    """One deployment: connection, model, state of the loop, log."""

    def __init__(
        self,
        source: Path | Excitation,
        files: RobotFiles,
        log_path: Path,
        options: DeployOptions,
        overwrite: bool,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.progress = progress
        if isinstance(source, Excitation):
            self.robot, self.command = _check_excitation(files), np.zeros(len(COMMAND_NAMES))
        else:
            self.robot, self.command = _check_model(source, files, options.command)
        if not math.isfinite(self.robot.control_hz) or self.robot.control_hz <= 0:
            raise DeployError(f"robot metadata: bad control_frequency {self.robot.control_hz!r}")
        self.period = 1.0 / self.robot.control_hz
        self.source = source
        self.log_path = log_path
        self.summary_path = log_path.with_suffix(".deploy.json")
        if not overwrite:
            for path in (log_path, self.summary_path):
                if path.exists():
                    raise FileExistsError(f"{path} exists; pass overwrite to replace it")
        self.overwrite = overwrite
        self.ids = list(self.robot.ids)
        self.lower = self.robot.array("lower_rad") + options.limit_margin_rad
        self.upper = self.robot.array("upper_rad") - options.limit_margin_rad
        self.interrupted = False
        self.last_q: np.ndarray | None = None
        self.last_imu: tuple[float, ...] | None = None
        self.imu_changed_s = math.nan  # monotonic time of the read that last saw the IMU reading change
        self.gyro_unit = "deg" if options.gyro_unit == "auto" else options.gyro_unit
        self.gyro_check: GyroUnitCheck | None = GyroUnitCheck()  # None once it has judged
        self.result = DeployResult(reason="not started", steps=0, log_path=str(log_path))
        # Shared with the stall watchdog's thread: the loop's progress (monotonic s, while it runs), and who stops
        # the robot. The loop sends each command holding `stop_lock`, so none can follow the watchdog's stop.
        self.stop_lock = threading.Lock()
        self.stopped_by: str | None = None
        self.progress_s: float | None = None

    # ---- KOS ------------------------------------------------------------------------------------------------
    async def _call(self, what: str, awaitable: object, timeout_s: float) -> object:
        try:
            return await asyncio.wait_for(awaitable, timeout_s)  # type: ignore[arg-type]
        except TimeoutError:
            raise _NoAnswerError(f"KOS did not answer {what} within {timeout_s * 1e3:.0f} ms") from None
        except grpc.aio.AioRpcError as err:
            raise _SafeStopError(f"KOS connection lost during {what}: {err.code().name} {err.details()}") from None

    async def _read(self, kos: KOS, timeout_s: float) -> dict[str, np.ndarray]:
        states, imu, quat = await self._call(
            "a sensor read",
            asyncio.gather(
                kos.actuator.get_actuators_state(self.ids), kos.imu.get_imu_values(), kos.imu.get_quaternion()
            ),
            timeout_s,
        )
        by_id = {s.actuator_id: s for s in states.states}
        for spec in self.robot.joints:
            state = by_id.get(spec.actuator_id)
            if state is None or not state.online:
                raise _SafeStopError(
                    f"actuator {spec.actuator_id} ({spec.name}) is {'missing' if state is None else 'offline'}"
                )
            if state.faults:
                raise _SafeStopError(f"actuator {spec.actuator_id} ({spec.name}) reports faults: {list(state.faults)}")
        for message in (imu, quat):
            if message.HasField("error") and message.error.message:
                raise _SafeStopError(f"the IMU reports an error: {message.error.message}")
        imu_values = (imu.accel_x, imu.accel_y, imu.accel_z, imu.gyro_x, imu.gyro_y, imu.gyro_z)
        now = time.monotonic()
        if imu_values != self.last_imu:
            self.last_imu, self.imu_changed_s = imu_values, now
        elif now - self.imu_changed_s >= self.options.imu_freeze_s:
            unchanged_ms = (now - self.imu_changed_s) * 1e3
            raise _SafeStopError(f"the IMU stream is frozen: its reading has not changed for {unchanged_ms:.0f} ms")
        q = np.radians([by_id[i].position for i in self.ids])
        if not np.isfinite(q).all():
            raise _SafeStopError("an actuator reported a non-finite position")
        return {
            "joint_angles": q,
            "joint_vels": np.radians([by_id[i].velocity for i in self.ids]),
            "accel": np.array(imu_values[:3]),
            "gyro_raw": np.array(imu_values[3:]),  # unit unknown until checked: `_gyro`
            "quat": np.array([quat.w, quat.x, quat.y, quat.z]),
            "projected_g": projected_gravity(np.array([quat.w, quat.x, quat.y, quat.z])),
            "read_s": now,
        }

    def _gyro(self, state: Mapping[str, np.ndarray], checking: bool) -> np.ndarray:
        """The gyroscope in rad/s; while `checking` (start-up, soft start) the reading also feeds the unit check.

        Once the check judges (or `checking` ends), the unit is confirmed, converted with a warning, or the run stops.
        """
        check = self.gyro_check
        if check is not None:
            check.add(float(state["read_s"]), state["quat"], state["gyro_raw"])
            unit, how = check.verdict()
            if unit is not None or not checking:
                self.gyro_check = None
                self._judge_gyro(unit, how)
        return state["gyro_raw"] / GYRO_UNITS[self.gyro_unit]

    def _judge_gyro(self, unit: str | None, how: str) -> None:
        declared = self.options.gyro_unit
        self.result.gyro_unit = self.gyro_unit
        if unit is None:
            self.result.gyro_check = f"{how}; read as {self.gyro_unit}/s" + (
                " (the proto's unit)" if declared == "auto" else ""
            )
            logger.warning("%s", self.result.gyro_check)
        elif unit == "inconsistent":
            raise _SafeStopError(f"the gyroscope disagrees with the IMU quaternion: {how}")
        elif declared not in ("auto", unit):
            raise _SafeStopError(f"gyro_unit is {declared} but {how}; pass --gyro-unit {unit} (or auto)")
        elif unit != self.gyro_unit:
            self.gyro_unit = self.result.gyro_unit = unit
            self.result.gyro_check = f"KOS sends the gyroscope in {unit}/s, not deg/s as its proto says ({how})"
            logger.warning("%s", self.result.gyro_check)
        else:
            self.result.gyro_check = f"checked: {how}"
            logger.info("gyroscope %s", self.result.gyro_check)

    async def _command(self, kos: KOS, targets_rad: np.ndarray, timeout_s: float) -> None:
        targets = np.clip(targets_rad, self.lower, self.upper)  # never outside the limits, whatever the caller
        commands = [{"actuator_id": aid, "position": math.degrees(t)} for aid, t in zip(self.ids, targets, strict=True)]
        response = await self._call("a command", kos.actuator.command_actuators(commands), timeout_s)
        failed = [r.actuator_id for r in response.results if not r.success]
        if failed:
            raise _SafeStopError(f"actuators {failed} refused the command")

    async def _configure(self, kos: KOS, timeout_s: float, **settings: object) -> None:
        calls = [kos.actuator.configure_actuator(actuator_id=aid, **settings) for aid in self.ids]
        responses = await self._call("configure", asyncio.gather(*calls), timeout_s)
        failed = [aid for aid, r in zip(self.ids, responses, strict=True) if not r.success]
        if failed:
            raise _SafeStopError(f"actuators {failed} refused {settings}")

    # ---- the run --------------------------------------------------------------------------------------------
    async def run(self) -> DeployResult:
        options = self.options
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread: no Ctrl-C handler
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        watchdog = _StallWatchdog(self)
        try:
            async with KOS(options.host, options.port) as kos:
                start = await self._prepare(kos, watchdog)
                with NdjsonWriter(self.log_path, overwrite=self.overwrite) as log:
                    try:
                        await self._loop(kos, log, start)
                    except _SafeStopError as stop:
                        await self._safe_stop(kos, str(stop))
                    except BaseException as err:  # a bug or an unforeseen error: still stop the robot safely
                        await self._safe_stop(kos, f"internal error: {type(err).__name__}: {err}")
                        raise
        finally:
            watchdog.finish()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            if self.result.reason != "not started":
                summary = asdict(self.result) | self._describe()
                summary = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in summary.items()}
                write_json(summary, self.summary_path, overwrite=True)
        return self.result

    def _interrupt(self) -> None:
        self.interrupted = True

    async def _prepare(self, kos: KOS, watchdog: "_StallWatchdog") -> dict[str, np.ndarray]:
        """Checks before motion, the stall watchdog's connection, then gains and torque limits; the first reading."""
        where = f"{self.options.host}:{self.options.port}"
        try:
            state = await self._read(kos, self.options.connect_timeout_s)
        except _SafeStopError as err:
            raise DeployError(f"KOS at {where} is not ready, nothing was moved: {err}") from None
        self._gyro(state, checking=True)
        watchdog.start()  # its connection is up before anything is set, and before the loop's timing starts
        try:
            await self._command(kos, state["joint_angles"], self.options.connect_timeout_s)  # hold where it stands
            for spec in self.robot.joints:
                await self._call(
                    "configure",
                    kos.actuator.configure_actuator(
                        actuator_id=spec.actuator_id,
                        kp=spec.kp,
                        kd=spec.kd,
                        max_torque=spec.max_torque_percent,
                        torque_enabled=True,
                    ),
                    self.options.connect_timeout_s,
                )
        except _SafeStopError as err:
            raise DeployError(f"KOS at {where} refused the setup: {err}") from None
        return state

    async def _loop(self, kos: KOS, log: NdjsonWriter, first: dict[str, np.ndarray]) -> None:
        options, period = self.options, self.period
        if isinstance(self.source, Excitation):
            controller = self.source.controller(self.robot)
        else:
            runner = KinferRunner(self.source)

            def controller(inputs: Mapping[str, np.ndarray], time_s: float) -> np.ndarray:
                del time_s
                return runner.step(inputs)

        self.last_q = first["joint_angles"]
        start_pose = None  # the soft start blends from the pose measured at the first step
        jitter, step_time, inference, read_time = [], [], [], []
        overruns_in_row = slow_in_row = unlogged_ticks = 0
        steps = math.inf if options.duration_s is None else round(options.duration_s / period)
        t0 = time.monotonic() + period
        k = 0
        self.result.reason = "running"
        while k < steps:
            deadline = t0 + k * period
            await _sleep_until(deadline)
            began = time.monotonic()
            if self.progress_s is not None:
                self.progress_s = began
            jitter.append(began - deadline)
            if self.interrupted:
                raise _SafeStopError("user interrupt (Ctrl-C)")
            # The first read may be slow (KOS's first poll after the setup); the robot holds the pose it was found
            # in meanwhile, so it gets the setup's timeout, and the stall watchdog arms once it is in.
            first = self.progress_s is None
            read_began = time.monotonic()
            try:
                state = await self._read(kos, options.connect_timeout_s if first else options.read_timeout * period)
            except _NoAnswerError as err:
                slow_in_row += 1
                self.result.slow_reads += 1
                if first or slow_in_row >= options.max_slow_reads:
                    raise _NoAnswerError(f"{err} ({slow_in_row} in a row)" if slow_in_row > 1 else str(err)) from None
                self.progress_s = time.monotonic()  # one slow read: this tick sends nothing, the next one reads again
                unlogged_ticks += 1
                k = self._next_tick(k, t0, steps)
                continue
            slow_in_row = 0
            self.progress_s = time.monotonic()
            read_time.append(self.progress_s - read_began)
            self.last_q = state["joint_angles"]
            start_pose = self.last_q if start_pose is None else start_pose
            elapsed = k * period
            state["gyro"] = self._gyro(state, checking=elapsed < options.soft_start_s)
            inputs = {
                "joint_angles": state["joint_angles"].astype(np.float32),
                "joint_angular_velocities": state["joint_vels"].astype(np.float32),
                "projected_gravity": state["projected_g"].astype(np.float32),
                "accelerometer": state["accel"].astype(np.float32),
                "gyroscope": state["gyro"].astype(np.float32),
                "command": self.command.astype(np.float32),
                "time": np.array([elapsed], dtype=np.float32),
            }
            tick = time.perf_counter()
            action = controller(inputs, elapsed)
            inference.append(time.perf_counter() - tick)
            if not np.isfinite(action).all():
                raise _SafeStopError("the policy output a non-finite action")
            blend = 1.0 if options.soft_start_s == 0 else min(1.0, elapsed / options.soft_start_s)
            blend = 0.5 - 0.5 * math.cos(math.pi * blend)  # smooth ramp, zero slope at both ends
            targets = np.clip(start_pose + blend * (action - start_pose), self.lower, self.upper)
            self.progress_s = time.monotonic()
            with self.stop_lock:
                if self.stopped_by is not None:
                    raise _SafeStopError(f"the {self.stopped_by} watchdog has stopped the robot")
                # a late step is an overrun; a command over command_timeout · T, a stop
                await self._command(kos, targets, options.command_timeout * period)
            self.progress_s = time.monotonic()
            log.write(
                k,
                round(time.time() * 1e6),
                {
                    **{n: state[n] for n in ("joint_angles", "joint_vels", "projected_g", "accel", "gyro")},
                    "command": self.command,
                    "output": targets,
                },
            )
            self.result.steps = k + 1
            if self.progress is not None and (k + 1) % round(1.0 / period) == 0:  # once a second of robot time
                recent = round(1.0 / period)
                read_ms, step_ms = max(read_time[-recent:]) * 1e3, max(step_time[-recent:], default=0.0) * 1e3
                self.progress(
                    f"t {(k + 1) * period:.1f} s | tilt {tilt_deg(state['projected_g']):.1f} deg | read max "
                    f"{read_ms:.1f} ms | step max {step_ms:.1f} ms | slow reads {self.result.slow_reads} | overruns "
                    f"{self.result.overruns}"
                )
            self.result.skipped_ticks += unlogged_ticks  # given-up reads: counted once a later step is logged
            unlogged_ticks = 0
            self.result.last_good_step_s = time.time()
            done = time.monotonic()
            step_time.append(done - began)
            overruns_in_row = overruns_in_row + 1 if done - deadline > period else 0
            self.result.overruns += overruns_in_row > 0
            if overruns_in_row >= options.max_overruns:
                raise _SafeStopError(f"{overruns_in_row} steps in a row overran the {period * 1e3:.0f} ms period")
            k = self._next_tick(k, t0, steps)
            self.result.jitter_ms, self.result.step_ms = _stats_ms(jitter), _stats_ms(step_time)
            self.result.inference_ms, self.result.read_ms = _stats_ms(inference), _stats_ms(read_time)
        self.result.reason = "completed"
        self.result.stopped_at_s = time.time()
        await self._safe_stop(kos, "completed", completed=True)

    def _next_tick(self, k: int, t0: float, steps: float) -> int:
        """The tick after `k`, or a later one: a loop more than a period behind skips the missed ticks (counted)."""
        k += 1
        if time.monotonic() > t0 + k * self.period + self.period:
            resume = max(k, math.ceil((time.monotonic() - t0) / self.period))
            if resume < steps:  # ticks past the end are not skipped, the run just ends
                self.result.skipped_ticks += resume - k
            k = resume
        return k

    def claim_stop(self, by: str, timeout_s: float = -1) -> bool:
        """Become the one who stops the robot (False if the other watchdog already has); no command follows."""
        # a command in flight ends (or times out) within command_timeout · T
        locked = self.stop_lock.acquire(timeout=timeout_s)
        try:
            if self.stopped_by is not None:
                return False
            self.stopped_by = by
            return True
        finally:
            if locked:
                self.stop_lock.release()

    async def _safe_stop(self, kos: KOS, reason: str, completed: bool = False) -> None:
        """The loop's stop, unless the stall watchdog already stopped the robot while the loop was stuck."""
        if self.claim_stop("loop"):
            await self.stop_sequence(kos, reason, completed)

    async def stop_sequence(self, kos: KOS, reason: str, completed: bool = False) -> None:
        """Hold the last measured pose for `hold_s`, then damping only or torque off; each step bounded in time.

        The final setting is read back: a torque off that did not take, or that KOS does not report, adds damping.
        """
        if not completed:
            self.result.reason = reason
            self.result.stopped_at_s = time.time()
        actions = self.result.stop_actions
        timeout = max(self.period, 0.05)
        if self.last_q is not None:
            try:
                await self._command(kos, self.last_q, timeout)
                actions.append(f"held the last measured pose at {time.time():.3f}")
                await asyncio.sleep(self.options.hold_s)
            except _SafeStopError as err:
                actions.append(f"could not hold: {err}")
        settings: dict[str, object] = (
            {"kp": 0.0, "torque_enabled": True} if self.options.final == "damp" else {"torque_enabled": False}
        )
        try:  # the robot holds meanwhile: give a slow KOS time to take the final setting
            await self._configure(kos, self.options.stop_timeout_s, **settings)
            actions.append("damping only (kp = 0)" if self.options.final == "damp" else "torque off")
            actions.append(await self._read_back_final(kos))
        except _SafeStopError as err:
            actions.append(f"could not switch to {self.options.final}: {err}")

    async def _read_back_final(self, kos: KOS) -> str:
        """What the actuators report after the final setting; torque off not confirmed → damping (kp = 0) too."""
        timeout = self.options.stop_timeout_s
        try:
            response = await self._call("a read-back", kos.actuator.get_actuators_state(self.ids), timeout)
        except _SafeStopError as err:
            return f"could not read the final setting back: {err}"
        by_id = {s.actuator_id: s for s in response.states}
        damp = self.options.final == "damp"
        name = "kp" if damp else "torque_enabled"
        unreported = [aid for aid in self.ids if aid not in by_id or not by_id[aid].HasField(name)]
        wrong = [aid for aid in self.ids if aid not in unreported and bool(getattr(by_id[aid], name))]
        if not unreported and not wrong:
            return f"read back: {'kp = 0' if damp else 'torque off'} on all {len(self.ids)} actuators"
        found = (f"actuators {wrong} report {name} = {[getattr(by_id[a], name) for a in wrong]}" if wrong else "") + (
            f"{'; ' if wrong else ''}KOS does not report {name} for actuators {unreported}" if unreported else ""
        )
        if damp:
            message = f"damping {'did not take' if wrong else 'not confirmed'}: {found}"
        else:  # kos-sim 0.0.14 ignores torque_enabled: the robot would go on holding the pose
            try:
                await self._configure(kos, timeout, kp=0.0)  # torque_enabled left alone: a torque off that took stays
                fallback = "switched to damping (kp = 0)"
            except _SafeStopError as err:
                fallback = f"could not switch to damping either: {err}"
            message = f"torque off {'did not take' if wrong else 'not confirmed'}: {found}; {fallback}"
        logger.warning("%s", message)
        return message

    def _describe(self) -> dict[str, object]:
        return {
            "model": str(self.source) if isinstance(self.source, Path) else f"excitation {asdict(self.source)}",
            "control_hz": self.robot.control_hz,
            "joint_names": list(self.robot.names),
            "actuator_ids": self.ids,
            "options": asdict(self.options),
        }


class _StallWatchdog:
    """Stops the robot from a thread of its own when the control loop stops making progress.

    The loop's own checks run between its awaits; a policy step that never returns, or anything else that blocks
    the event loop, silences them. This thread sleeps until the loop's latest progress mark would be `stall_timeout`
    · T old, looks again, and when it is, claims the stop and sends the same safe stop (hold the last measured
    pose, then damping or torque off) over its own KOS connection.
    """

    def __init__(self, run: "_Run") -> None:
        self.run = run
        self.done = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="stall-watchdog", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until its own KOS connection has answered (a `DeployError` if it does not)."""
        self.thread.start()
        timeout_s = self.run.options.connect_timeout_s
        if not self.ready.wait(timeout_s + 1.0):
            self.done.set()
            where = f"{self.run.options.host}:{self.run.options.port}"
            raise DeployError(f"the stall watchdog could not reach KOS at {where}, nothing was moved: {self.error}")

    def finish(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=self.run.options.stop_timeout_s + self.run.options.hold_s + 1.0)

    def _main(self) -> None:
        try:
            asyncio.run(self._watch())
        except Exception as err:  # the loop's own checks still run; say loudly that this one does not
            self.error = err
            if self.ready.is_set():
                logger.error("the stall watchdog failed and no longer guards the run: %s: %s", type(err).__name__, err)

    async def _watch(self) -> None:
        run = self.run
        limit = run.options.stall_timeout * run.period
        async with KOS(run.options.host, run.options.port) as kos:
            await asyncio.wait_for(kos.imu.get_imu_values(), run.options.connect_timeout_s)
            self.ready.set()
            while not self.done.is_set():
                progress = run.progress_s
                if progress is None or run.stopped_by is not None:
                    self.done.wait(run.period)
                    continue
                remaining = progress + limit - time.monotonic()
                if remaining > 0:  # wake when this mark would go stale: rarely, so the loop keeps the GIL
                    self.done.wait(remaining + 1e-4)
                    continue
                silent_ms = (time.monotonic() - progress) * 1e3
                if run.claim_stop("stall", timeout_s=run.options.command_timeout * run.period):
                    await run.stop_sequence(kos, f"the control loop stalled: no progress for {silent_ms:.0f} ms")
                return


async def _sleep_until(deadline: float) -> None:
    """Sleep to within ~1 ms of `deadline` (monotonic s), then spin: the event loop's timers are coarse."""
    remaining = deadline - time.monotonic()
    if remaining > 0.0015:
        await asyncio.sleep(remaining - 0.0015)
    while time.monotonic() < deadline:
        pass


def deploy(
    source: str | Path | Excitation,
    files: RobotFiles,
    log_path: str | Path,
    options: DeployOptions = DeployOptions(),
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DeployResult:
    """Run a `.kinfer` policy (or an `Excitation`) on the robot at `options.host:port`.

    Writes `log_path` (NDJSON) and `<log>.deploy.json`. Raises `DeployError` (before any motion) when the policy
    does not fit the robot or KOS is not ready. `progress` gets one line per second of the run (time, tilt, the
    slowest read and step of that second, slow reads and overruns so far).
    """
    path = source if isinstance(source, Excitation) else Path(source)
    run = _Run(path, files, Path(log_path), options, overwrite, progress)
    return asyncio.run(run.run())
