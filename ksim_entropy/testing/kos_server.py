"""A KOS gRPC server with a simulated K-Bot behind it: pykos's own service definitions, CPU MuJoCo at 1 kHz.

The robot is `ksim_entropy.testing.reality`'s stand-in (hidden physics, action and observation latency, encoder zero
offsets, IMU biases, sensor noise), stepped in real time by a physics thread. Commands reach the servos
`action_latency_s` after they arrive; every reading reports the state of `obs_latency_s` ago (1 ms resolution). It
speaks KOS's units: positions in degrees, velocities in deg/s, gyro in deg/s, accelerometer in m/s². A deployment
loop cannot tell it from a robot's KOS, so the loop is tested against a real server and a real network stack, not
a mock.

Faults, for the deployment's safety tests, start after the N-th `CommandActuators` request:
`freeze_imu_after` (the IMU keeps returning its last reading), `latency_spike_after` + `latency_spike_s` (every
reply is held back that long, or only the next `latency_spike_replies`), and from the start `faulty_actuators` (report
a fault) / `offline_actuators`.
`Quirks` make it behave like K-Scale's kos-sim 0.0.14 (`--like-kos-sim`, or one by one): physics in 20 ms bursts
under the lock (readings repeat within a burst, a read arriving during one waits), the gyroscope in rad/s,
`torque_enabled` ignored, no configuration (`torque_enabled`, kp, kd, `max_torque`) in the actuator states. `sway_rad`
rocks the suspended base (roll and pitch together, 0.5 Hz) so that the IMU turns, as it does on a robot that moves.

`record` appends one JSON line per event (command, configure, fault onset; wall time `t`, s) as an independent
record of what the robot was told.

    python -m ksim_entropy.testing.kos_server --port 50051 [--suspended] [--hidden-seed S] [--record events.jsonl]
        [--like-kos-sim] [--sway-rad 0.2]
"""

# ruff: noqa: N802  (the servicer methods carry gRPC's CamelCase names)
import argparse
import collections
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import mujoco
import numpy as np
from google.protobuf import empty_pb2
from kos_protos import actuator_pb2, actuator_pb2_grpc, common_pb2, imu_pb2, imu_pb2_grpc

from ksim_entropy.deploy.kos_sim import stop_process
from ksim_entropy.deploy.robot_map import RobotMap
from ksim_entropy.kbot.robot import RobotFiles, load_robot_model, resolve_robot_files
from ksim_entropy.testing.reality import REALITY_DT_S, HiddenRobot, perturbed_simulator

__all__ = ["Faults", "Quirks", "SimServerProcess", "SimulatedKBot", "serve"]

_MAX_LAG_S = 0.05  # the physics thread drops simulated time rather than fall further behind the wall clock


@dataclass(frozen=True)
class Faults:
    """Injected faults; `*_after` counts `CommandActuators` requests (None: never)."""

    freeze_imu_after: int | None = None
    latency_spike_after: int | None = None
    latency_spike_s: float = 0.2
    latency_spike_replies: int | None = None  # None: every reply to the end (a sensor read is three replies)
    faulty_actuators: tuple[int, ...] = ()
    offline_actuators: tuple[int, ...] = ()


@dataclass(frozen=True)
class Quirks:
    """Ways a KOS server departs from the proto (kos-sim 0.0.14 has all four: `KOS_SIM`), and a rocking stand."""

    burst_s: float = 0.0  # physics advances this much at once (0: one 1 ms step at a time)
    gyro_unit: str = "deg"  # what the gyroscope is sent in, per s (the proto: deg)
    ignores_torque_off: bool = False
    reports_settings: bool = True  # actuator states carry torque_enabled, kp, kd, max_torque
    sway_rad: float = 0.0  # suspended base rocks by this much (roll and pitch, 0.5 Hz)


KOS_SIM = Quirks(burst_s=0.02, gyro_unit="rad", ignores_torque_off=True, reports_settings=False)
_SWAY_HZ = 0.5


class SimulatedKBot:
    """The stand-in K-Bot, stepped in real time at 1 kHz by a thread; all access under one lock."""

    def __init__(
        self,
        files: RobotFiles,
        hidden: HiddenRobot,
        *,
        suspended: bool,
        seed: int = 0,
        faults: Faults = Faults(),
        quirks: Quirks = Quirks(),
        record: Path | None = None,
    ) -> None:
        self.sim = perturbed_simulator(files, hidden, suspended)
        self.map = RobotMap.from_files(files, self.sim.joint_names)
        self.hidden = hidden
        self.suspended = suspended
        self.faults = faults
        self.quirks = quirks
        self.physics_steps = 0
        self.imu_cache: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None  # (physics step, reading)
        self.offsets = hidden.offsets(self.sim.num_joints)
        self.index = {aid: i for i, aid in enumerate(self.map.ids)}
        self.kp_scale, self.kd_scale = hidden.kp_scale, hidden.kd_scale  # the servos' gain error
        # as configured over KOS (start: the metadata's gains, torque on, holding the nominal pose)
        self.kp, self.kd = self.sim.kp / hidden.kp_scale, self.sim.kd / hidden.kd_scale
        self.torque_limit = self.sim.torque_limit_nm.copy()
        self.targets = self.sim.nominal_pose_rad.copy()
        self.torque_enabled = np.ones(self.sim.num_joints, dtype=bool)
        self.pending: list[tuple[float, np.ndarray]] = []  # (sim time the servos get it, targets)
        self.rng = np.random.default_rng(seed)
        self.stds = hidden.noise.stds()
        self.commands = 0
        self.spiked_replies = 0
        self.spike_lock = threading.Lock()  # replies are delayed before they take `lock`
        self.frozen_imu: tuple[np.ndarray, np.ndarray] | None = None
        self.last_imu: tuple[np.ndarray, np.ndarray] | None = None
        self.lock = threading.Lock()
        # the last obs_latency_s / 1 ms + 1 physics states: readings report the oldest
        self.history: collections.deque[dict[str, np.ndarray]] = collections.deque(
            [self._state()], maxlen=round(hidden.obs_latency_s / REALITY_DT_S) + 1
        )
        self.dropped_s = 0.0
        self._record = record.open("a", encoding="utf-8") if record is not None else None
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="physics", daemon=True)

    # ---- physics -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._running.set()
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        self._thread.join(timeout=1.0)
        if self._record is not None:
            self._record.close()

    def _run(self) -> None:
        start = time.monotonic()
        steps = 0
        burst = max(1, round(self.quirks.burst_s / REALITY_DT_S))
        while self._running.is_set():
            due = int((time.monotonic() - start) / REALITY_DT_S) // burst * burst
            if due - steps > max(_MAX_LAG_S / REALITY_DT_S, burst):
                self.dropped_s += (due - steps - burst) * REALITY_DT_S
                steps = due - burst
            while steps < due:  # one step (or burst) per lock hold: a read waits for one, never for a catch-up batch
                with self.lock:
                    for _ in range(burst):
                        self._physics_step()
                steps += burst
            time.sleep(REALITY_DT_S / 2)

    def _physics_step(self) -> None:
        sim = self.sim
        while self.pending and self.pending[0][0] <= sim.time_s + 1e-9:
            self.targets = self.pending.pop(0)[1]
        # the servo closes its loop on the encoder (q - offset), so it drives the joint to target + offset
        error = self.targets + self.offsets - sim.data.qpos[7:]
        torque = self.kp_scale * self.kp * error - self.kd_scale * self.kd * sim.data.qvel[6:]
        torque = np.clip(torque, -self.torque_limit, self.torque_limit)
        sim.data.ctrl[:] = np.where(self.torque_enabled, torque, 0.0)
        mujoco.mj_step(sim.model, sim.data)
        if self.suspended:
            sim.data.qpos[:7] = sim.base_pose
            sim.data.qvel[:6] = 0.0
            if self.quirks.sway_rad:  # rock about the base's (1, 1, 0) axis; qvel[3:6] is in the base's frame
                omega, axis = 2 * math.pi * _SWAY_HZ, np.array([1.0, 1.0, 0.0]) / math.sqrt(2.0)
                angle = self.quirks.sway_rad * math.sin(omega * sim.time_s)
                sway = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])
                mujoco.mju_mulQuat(sim.data.qpos[3:7], sim.base_pose[3:7], sway)
                sim.data.qvel[3:6] = axis * self.quirks.sway_rad * omega * math.cos(omega * sim.time_s)
        self.physics_steps += 1
        self.history.append(self._state())

    def _state(self) -> dict[str, np.ndarray]:
        """What the sensors see now, noise-free (joint angles before the encoder offsets)."""
        state = self.sim.sensors()
        state["quat"] = self.sim.imu_quaternion()
        return state

    # ---- events --------------------------------------------------------------------------------------------
    def log_event(self, event: str, **fields: object) -> None:
        if self._record is not None:
            self._record.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
            self._record.flush()

    def reply_delay_s(self) -> float:
        after, replies = self.faults.latency_spike_after, self.faults.latency_spike_replies
        if after is None or self.commands < after:
            return 0.0
        with self.spike_lock:
            self.spiked_replies += 1
            return self.faults.latency_spike_s if replies is None or self.spiked_replies <= replies else 0.0

    # ---- what KOS reports (caller holds the lock) --------------------------------------------------------
    def actuator_states(self, ids: list[int]) -> list[actuator_pb2.ActuatorStateResponse]:
        sim, seen = self.sim, self.history[0]
        q = seen["joint_angles"] - self.offsets
        q = q + self.rng.normal(0.0, self.stds["joint_angles"], q.shape)
        qd = seen["joint_vels"] + self.rng.normal(0.0, self.stds["joint_vels"], q.shape)
        states = []
        for aid in ids or self.map.ids:
            i = self.index.get(aid)
            if i is None:
                states.append(actuator_pb2.ActuatorStateResponse(actuator_id=aid, online=False, faults=["unknown id"]))
                continue
            spec = self.map.joints[i]
            faults = ["overcurrent"] if aid in self.faults.faulty_actuators else []
            states.append(
                actuator_pb2.ActuatorStateResponse(
                    actuator_id=aid,
                    online=aid not in self.faults.offline_actuators,
                    position=math.degrees(q[i]),
                    velocity=math.degrees(qd[i]),
                    torque=float(sim.data.ctrl[i]),
                    temperature=35.0,
                    min_position=math.degrees(spec.lower_rad),
                    max_position=math.degrees(spec.upper_rad),
                    faults=faults,
                )
            )
            if self.quirks.reports_settings:
                states[-1].torque_enabled = bool(self.torque_enabled[i])
                states[-1].kp, states[-1].kd = float(self.kp[i]), float(self.kd[i])
                states[-1].max_torque = float(self.torque_limit[i])
        return states

    def imu(self) -> tuple[np.ndarray, np.ndarray]:
        """(accel m/s², gyro rad/s) as the IMU reports them now, or frozen."""
        if self.frozen_imu is not None:
            return self.frozen_imu
        if self.quirks.burst_s and self.imu_cache is not None and self.imu_cache[0] == self.physics_steps:
            return self.imu_cache[1]  # no physics since the last read (a burst): the same reading, bit for bit
        sensors = self.history[0]
        accel = -sensors["projected_g"] if self.suspended else sensors["accel"]
        accel = accel + np.asarray(self.hidden.accel_bias_mps2) + self.rng.normal(0.0, self.stds["accel"], 3)
        gyro = sensors["gyro"] + np.asarray(self.hidden.gyro_bias_rad_s) + self.rng.normal(0.0, self.stds["gyro"], 3)
        self.last_imu = (accel, gyro)
        self.imu_cache = (self.physics_steps, self.last_imu)
        return accel, gyro

    def quaternion(self) -> np.ndarray:
        """IMU orientation (w, x, y, z) in the world frame."""
        return self.history[0]["quat"].copy()

    # ---- what KOS is told (caller holds the lock) --------------------------------------------------------
    def command(self, positions_deg: dict[int, float]) -> list[common_pb2.ActionResult]:
        targets = self.targets.copy() if not self.pending else self.pending[-1][1].copy()
        results = []
        for aid, position in positions_deg.items():
            i = self.index.get(aid)
            if i is None or aid in self.faults.offline_actuators:
                error = common_pb2.Error(code=common_pb2.ErrorCode.INVALID_ARGUMENT, message=f"no actuator {aid}")
                results.append(common_pb2.ActionResult(actuator_id=aid, success=False, error=error))
                continue
            targets[i] = math.radians(position)
            results.append(common_pb2.ActionResult(actuator_id=aid, success=True))
        self.pending.append((self.sim.time_s + self.hidden.action_latency_s, targets))
        self.commands += 1
        self.log_event(
            "command", sim_time_s=self.sim.time_s, positions_deg={str(k): v for k, v in positions_deg.items()}
        )
        if self.faults.freeze_imu_after is not None and self.commands == self.faults.freeze_imu_after:
            self.frozen_imu = self.last_imu if self.last_imu is not None else self.imu()
            self.log_event("fault", kind="imu frozen")
        if self.faults.latency_spike_after is not None and self.commands == self.faults.latency_spike_after:
            self.log_event("fault", kind="latency spike", seconds=self.faults.latency_spike_s)
        return results

    def configure(self, request: actuator_pb2.ConfigureActuatorRequest) -> common_pb2.ActionResponse:
        i = self.index.get(request.actuator_id)
        if i is None:
            error = common_pb2.Error(code=common_pb2.ErrorCode.INVALID_ARGUMENT, message="unknown actuator")
            return common_pb2.ActionResponse(success=False, error=error)
        fields = {}
        if request.HasField("kp"):
            self.kp[i] = fields["kp"] = request.kp
        if request.HasField("kd"):
            self.kd[i] = fields["kd"] = request.kd
        if request.HasField("max_torque"):
            spec = self.map.joints[i]
            fields["max_torque"] = request.max_torque
            self.torque_limit[i] = spec.actuator_max_torque_nm * request.max_torque / 100.0
        if request.HasField("torque_enabled"):
            fields["torque_enabled"] = request.torque_enabled
            if not self.quirks.ignores_torque_off or request.torque_enabled:
                self.torque_enabled[i] = request.torque_enabled
        self.log_event("configure", actuator_id=request.actuator_id, **fields)
        return common_pb2.ActionResponse(success=True)


class _ActuatorService(actuator_pb2_grpc.ActuatorServiceServicer):
    def __init__(self, robot: SimulatedKBot) -> None:
        self.robot = robot

    def _delay(self) -> None:
        delay = self.robot.reply_delay_s()
        if delay > 0:
            time.sleep(delay)

    def GetActuatorsState(
        self, request: actuator_pb2.GetActuatorsStateRequest, context: grpc.ServicerContext
    ) -> actuator_pb2.GetActuatorsStateResponse:
        self._delay()
        with self.robot.lock:
            states = self.robot.actuator_states(list(request.actuator_ids))
        return actuator_pb2.GetActuatorsStateResponse(states=states)

    def CommandActuators(
        self, request: actuator_pb2.CommandActuatorsRequest, context: grpc.ServicerContext
    ) -> actuator_pb2.CommandActuatorsResponse:
        self._delay()
        with self.robot.lock:
            results = self.robot.command(
                {c.actuator_id: c.position for c in request.commands if c.HasField("position")}
            )
        return actuator_pb2.CommandActuatorsResponse(results=results)

    def ConfigureActuator(
        self, request: actuator_pb2.ConfigureActuatorRequest, context: grpc.ServicerContext
    ) -> common_pb2.ActionResponse:
        self._delay()
        with self.robot.lock:
            return self.robot.configure(request)


class _IMUService(imu_pb2_grpc.IMUServiceServicer):
    def __init__(self, robot: SimulatedKBot) -> None:
        self.robot = robot

    def GetValues(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> imu_pb2.IMUValuesResponse:
        time.sleep(self.robot.reply_delay_s())
        with self.robot.lock:
            accel, gyro = self.robot.imu()
        gyro = np.degrees(gyro) if self.robot.quirks.gyro_unit == "deg" else gyro
        return imu_pb2.IMUValuesResponse(
            accel_x=accel[0], accel_y=accel[1], accel_z=accel[2], gyro_x=gyro[0], gyro_y=gyro[1], gyro_z=gyro[2]
        )

    def GetQuaternion(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> imu_pb2.QuaternionResponse:
        time.sleep(self.robot.reply_delay_s())
        with self.robot.lock:
            w, x, y, z = self.robot.quaternion()
        return imu_pb2.QuaternionResponse(w=w, x=x, y=y, z=z)


def serve(robot: SimulatedKBot, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.Server, int]:
    """Start the physics thread and a gRPC server on `host:port` (0: any free port); returns (server, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    actuator_pb2_grpc.add_ActuatorServiceServicer_to_server(_ActuatorService(robot), server)
    imu_pb2_grpc.add_IMUServiceServicer_to_server(_IMUService(robot), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind a KOS server to {host}:{port}")
    robot.start()
    server.start()
    return server, bound


class SimServerProcess:
    """The server in its own process (`python -m ksim_entropy.testing.kos_server`) on a free localhost port.

    `args` are extra command-line options (`--suspended`, `--hidden-seed 3`, `--freeze-imu-after 100`, ...).
    Waits for the server to listen (or raises with its output); `port` is where. A context manager.
    """

    def __init__(self, *args: str, timeout_s: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ksim_entropy.testing.kos_server", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout_s
        output = []
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            output.append(line)
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                return
        self.process.kill()
        raise RuntimeError("the KOS sim server did not start:\n" + "".join(output[-20:]))

    def kill(self) -> tuple[float, float]:
        """SIGKILL the server (a crash, a pulled cable); returns the wall times (s) of the signal and of the reaping.

        Its sockets close while the kernel tears the process down, in between: on a loaded machine, tens of ms.
        """
        killed_at = time.time()
        self.process.kill()
        self.process.wait(timeout=10)
        return killed_at, time.time()

    def close(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> "SimServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ksim_entropy.testing.kos_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port (printed)")
    parser.add_argument("--robot", default="local", help="robot model: local | <dir> | kscale:<name>")
    parser.add_argument("--suspended", action="store_true", help="base held still (robot on a stand)")
    parser.add_argument("--hidden-seed", type=int, default=None, help="draw hidden physics (default: nominal)")
    parser.add_argument("--seed", type=int, default=0, help="sensor noise seed")
    parser.add_argument("--record", type=Path, default=None, help="append events here (JSON lines)")
    parser.add_argument("--freeze-imu-after", type=int, default=None, metavar="N")
    parser.add_argument("--latency-spike-after", type=int, default=None, metavar="N")
    parser.add_argument("--latency-spike-s", type=float, default=0.2)
    parser.add_argument("--latency-spike-replies", type=int, default=None, help="default: every one to the end")
    parser.add_argument("--faulty-actuators", type=_ids, default=(), metavar="ID,ID")
    parser.add_argument("--offline-actuators", type=_ids, default=(), metavar="ID,ID")
    parser.add_argument("--like-kos-sim", action="store_true", help="all of kos-sim 0.0.14's quirks (below)")
    parser.add_argument("--burst-s", type=float, default=0.0, help="physics in bursts this long (kos-sim: 0.02)")
    parser.add_argument("--gyro-unit", choices=("deg", "rad"), default="deg", help="per s (proto: deg; kos-sim: rad)")
    parser.add_argument("--ignores-torque-off", action="store_true", help="torque_enabled=False does nothing")
    parser.add_argument("--no-settings-in-state", action="store_true", help="states without torque_enabled, kp, ...")
    parser.add_argument("--sway-rad", type=float, default=0.0, help="rock the suspended base (0.5 Hz)")
    args = parser.parse_args(argv)
    files = resolve_robot_files(args.robot)
    num_joints = load_robot_model(files, scene=None).njnt - 1  # hinge joints after the free joint
    hidden = HiddenRobot() if args.hidden_seed is None else HiddenRobot.random(args.hidden_seed, num_joints)
    faults = Faults(
        args.freeze_imu_after,
        args.latency_spike_after,
        args.latency_spike_s,
        args.latency_spike_replies,
        args.faulty_actuators,
        args.offline_actuators,
    )
    quirks = Quirks(args.burst_s, args.gyro_unit, args.ignores_torque_off, not args.no_settings_in_state, args.sway_rad)
    if args.like_kos_sim:
        quirks = dataclasses.replace(KOS_SIM, sway_rad=args.sway_rad)
    robot = SimulatedKBot(
        files, hidden, suspended=args.suspended, seed=args.seed, faults=faults, quirks=quirks, record=args.record
    )
    server, port = serve(robot, args.host, args.port)
    print(f"KOS sim server listening on {args.host}:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=None)
        robot.stop()


if __name__ == "__main__":
    main()
