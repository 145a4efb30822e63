"""Batched MJX replay of logged joint targets on the training model: many candidate robots × many log windows at once.

A *window* starts at a logged control step s from the logged joint state, replays the logged outputs open-loop for
`horizon` control steps and predicts what the encoders read at steps s+1 … s+horizon. A *candidate* is one robot:
values of the training randomization's parameters (`ksim_entropy.randomization`, applied with their own `apply`,
so a fitted value means exactly what training randomizes) and a loop latency in physics steps.

The model is the one `tasks.walk` trains on (MuJoCo PD servos from `use_native_pd`, the same solver settings as
`ksim_entropy.sim2real.sim.SimOptions`; 4 ms physics unless `options` say otherwise). A suspended robot has its base
pinned after every physics step and its contacts disabled (its feet hang clear of the floor).

A standing robot (`suspended=False`) stands on the floor with its contacts on. A log does not record where the base is
or how fast it moves, so each window's base state is reconstructed from the readings at its start
(`ReplayModel.floor_start`): the orientation from the projected gravity (yaw is arbitrary on a flat floor), the
angular velocity from the gyroscope, the height from the joint angles with the lowest foot point on the floor, and
the linear velocity from the joint velocities with the feet's contact points at rest (the feet do not slide). These
windows need the logged `projected_g` and `gyro` (`make_windows(..., imu=...)`).

Servos: `servo="native"` steps MuJoCo's own PD actuators, whose damping term the implicit integrator treats
implicitly (as training does). `servo="explicit"` computes the same law, clip(kp·(target + δ − q) − kd·q̇), from
the (randomized) actuator fields once per physics step and applies it as a motor force, the way a servo's firmware
closes its loop (and `ksim_entropy.sim2real.sim.KBotSimulator` does). The implicit damping acts like an extra inertia of
dt·kd per joint, which a fit at the physical level must not absorb into the armature.

Latency: a logged sensor reading is `obs_latency` old and a logged target reaches the servos `action_latency`
later, so an open-loop replay only sees their sum, the loop latency d: the target logged at step k drives the
servos from physics step k·S + d of the window's clock, whose origin is the (late) state the log reports at s.
d is continuous (in physics steps): during the physics step in which a target switches, the servo holds the
time-weighted mean of the old and the new one, which makes the replay, and the fit's loss, continuous in d.
"""

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jaxtyping import Array
from mujoco import mjx

from ksim_entropy.actuation import use_native_pd
from ksim_entropy.kbot.robot import KBOT_FOOT_COLLISION_GEOMS, RobotFiles, load_metadata, load_robot_model
from ksim_entropy.ppo.data_parallel import env_mesh, replicate, split_leading
from ksim_entropy.randomization import RandomizedParameter, with_updates
from ksim_entropy.sim2real.sim import SimOptions

__all__ = ["ReplayModel", "Windows", "make_windows"]

_CONTACT_BAND_M = 0.005  # a foot capsule's end this close to the floor at a window's start is standing on it
_CONTACT_HEIGHT_SIGMA_M = 5e-4  # how level the ends of flat feet lie (encoder noise, contact)
_IMU_TILT_PRIOR_RAD = 0.01  # how far the projected gravity's tilt may be off (0.02 m/s² of noise is 2 mrad)


def _levelling_rotation(points: np.ndarray) -> np.ndarray:
    """The small world-frame rotation (w, x, y, z) that lays `points` (n, 3) m flat.

    The plane through them is fitted by least squares with the IMU's tilt as a prior (`_IMU_TILT_PRIOR_RAD`) and
    turned horizontal. Points on one line (a foot on an edge) leave the tilt across it to the prior.
    """
    rows = np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))]) / _CONTACT_HEIGHT_SIGMA_M
    prior = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) / _IMU_TILT_PRIOR_RAD
    slope = np.linalg.lstsq(np.vstack([rows, prior]), np.concatenate([points[:, 2] / _CONTACT_HEIGHT_SIGMA_M, [0, 0]]))
    normal = np.array([-slope[0][0], -slope[0][1], 1.0])
    normal /= np.linalg.norm(normal)
    axis = np.cross(normal, [0.0, 0.0, 1.0])
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(
        quat, axis / max(np.linalg.norm(axis), 1e-12), math.atan2(np.linalg.norm(axis), normal[2])
    )
    return quat


def _at_rest_where(jacobian: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """The qvel nearest `qvel` (the base's linear part free) with `jacobian @ qvel = 0` (points at rest).

    Minimises ‖qvel − measured‖ over every coordinate but the base's linear velocity, which is unmeasured; the
    constraint rows may be redundant (several points of one rigid foot), so the solve is a pseudo-inverse.
    """
    spread = np.ones(qvel.size)
    spread[:3] = 1e6  # the base's linear velocity: unmeasured, so it moves first
    gram = (jacobian * spread) @ jacobian.T
    return qvel - spread * (jacobian.T @ (np.linalg.pinv(gram, rcond=1e-9) @ (jacobian @ qvel)))


@dataclass(frozen=True)
class Windows:
    """Log windows to replay: initial readings (W, J), targets (W, history + horizon, J), readings to predict."""

    angles0: np.ndarray  # (W, J) rad, encoder readings at each window's start
    vels0: np.ndarray  # (W, J) rad/s
    targets: np.ndarray  # (W, history + horizon, J) rad: logged outputs from step s − history to s + horizon − 1
    angles: np.ndarray  # (W, horizon, J) rad: readings at s+1 … s+horizon
    vels: np.ndarray  # (W, horizon, J) rad/s
    history: int
    projected_g0: np.ndarray | None = None  # (W, 3) m/s², IMU frame, at each window's start (standing replay only)
    gyro0: np.ndarray | None = None  # (W, 3) rad/s, IMU frame, at each window's start (standing replay only)

    @property
    def horizon(self) -> int:
        return int(self.angles.shape[1])


def make_windows(
    angles: np.ndarray,
    vels: np.ndarray,
    outputs: np.ndarray,
    starts: Sequence[int],
    horizon: int,
    history: int,
    imu: tuple[np.ndarray, np.ndarray] | None = None,
) -> Windows:
    """Cut windows at control steps `starts` out of one log's (T, J) arrays (rows must be consecutive steps).

    `imu`: the log's (T, 3) projected gravity (m/s²) and gyroscope (rad/s, biases removed if known), which a standing
    replay needs for each window's base state.
    """
    starts = np.asarray(starts, dtype=int)
    if horizon < 1 or history < 1:
        raise ValueError(f"need horizon >= 1 and history >= 1, got {horizon}, {history}")
    if starts.size == 0 or starts.min() < history or starts.max() + horizon >= len(angles):
        raise ValueError(f"window starts must lie in [{history}, {len(angles) - horizon - 1}]")
    t = starts[:, None] + np.arange(-history, horizon)[None, :]
    ahead = starts[:, None] + np.arange(1, horizon + 1)[None, :]
    return Windows(
        angles0=angles[starts],
        vels0=vels[starts],
        targets=outputs[t],
        angles=angles[ahead],
        vels=vels[ahead],
        history=history,
        projected_g0=None if imu is None else np.asarray(imu[0], dtype=float)[starts],
        gyro0=None if imu is None else np.asarray(imu[1], dtype=float)[starts],
    )


class ReplayModel:
    """The training model of a robot in MJX, and a jitted batched replay of windows for candidate parameter sets."""

    def __init__(
        self,
        files: RobotFiles,
        parameters: Sequence[RandomizedParameter],
        *,
        suspended: bool,
        options: SimOptions | None = None,
        servo: str = "native",
    ) -> None:
        if servo not in ("native", "explicit"):
            raise ValueError(f"servo must be 'native' or 'explicit', got {servo!r}")
        options = options if options is not None else SimOptions()
        mj_model = load_robot_model(files, scene=options.scene)
        mj_model = use_native_pd(mj_model, load_metadata(files, mj_model))
        mj_model.opt.timestep = options.dt_s
        mj_model.opt.iterations = options.iterations
        mj_model.opt.ls_iterations = options.ls_iterations
        mj_model.opt.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        mj_model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        mj_model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
        mj_model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_SENSOR  # encoder readings come from qpos, qvel
        if suspended:
            mj_model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT
        self.mj_model = mj_model
        self.parameters = tuple(parameters)
        self.suspended = suspended
        self.servo = servo
        self.substeps = options.substeps
        self.dt_s = options.dt_s
        self.joint_names = tuple(mj_model.joint(i).name for i in range(1, mj_model.njnt))
        data = mujoco.MjData(mj_model)
        mujoco.mj_forward(mj_model, data)
        base = data.qpos[:7].copy()
        base[2] += 0.3  # as ksim_entropy.sim2real.sim: the suspended robot's feet hang clear of the floor
        self._base = jnp.asarray(base)
        imu_site = int(mj_model.sensor("imu_gyro").objid[0])
        self._imu_in_base = data.xmat[1].reshape(3, 3).T @ data.site_xmat[imu_site].reshape(3, 3)
        self._feet = tuple(mj_model.geom(g).id for pair in KBOT_FOOT_COLLISION_GEOMS.values() for g in pair)
        self._mjx_model = mjx.put_model(mj_model)
        self._offset_index = next(
            (i for i, p in enumerate(self.parameters) if type(p).__name__ == "JointZeroOffset"), None
        )
        self._runs: dict[int, Callable] = {}  # jitted batched replay per history length (a static shape)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def floor_start(self, windows: Windows, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each standing window's start: base qpos (W, 7) (m, quaternion) and qvel (W, 6 + J) (m/s world, rad/s).

        Orientation: the rotation nearest the identity that takes the measured down direction (the projected
        gravity, turned from the IMU frame to the base's) to the world's, then turned so that the foot capsules'
        ends standing on the floor lie flat (`_levelling_rotation`: a flat foot tells the tilt better than a noisy
        IMU; 0.12° of projected-gravity noise made the fitted friction 0.3 too high). The height puts the lowest
        point of the foot capsules on the floor (z = 0). Velocity: the base's linear velocity is free; it, the
        gyro's angular velocity and the logged joint velocities move as little as they must (least squares) for the
        capsule ends within `_CONTACT_BAND_M` of the floor to be at rest: noisy joint velocities would otherwise start
        the feet sliding against each other. The legs' pose is the logged angles plus the encoders' zero `offsets`
        (J,) rad: 30 mrad at an ankle tilts a foot by as much.
        """
        if windows.projected_g0 is None or windows.gyro0 is None:
            raise ValueError("a standing replay needs each window's projected gravity and gyro (make_windows(imu=...))")
        model, data = self.mj_model, mujoco.MjData(self.mj_model)
        qpos, qvel = np.zeros((len(windows.angles0), 7)), np.zeros((len(windows.angles0), model.nv))
        jac = np.zeros((3, model.nv))
        offsets = np.zeros(self.num_joints) if offsets is None else np.asarray(offsets, dtype=float)
        for w, (angles, vels, gravity, gyro) in enumerate(
            zip(windows.angles0, windows.vels0, windows.projected_g0, windows.gyro0, strict=True)
        ):
            down = self._imu_in_base @ (gravity / np.linalg.norm(gravity))  # in the base frame
            quat = np.zeros(4)
            axis = np.cross(down, [0.0, 0.0, -1.0])
            angle = math.atan2(np.linalg.norm(axis), -down[2])
            mujoco.mju_axisAngle2Quat(quat, axis / max(np.linalg.norm(axis), 1e-12), angle)
            data.qpos[:] = np.concatenate([[0.0, 0.0, 0.0], quat, angles + offsets])
            data.qvel[:] = np.concatenate([[0.0, 0.0, 0.0], self._imu_in_base @ gyro, vels])
            ends = self._capsule_ends(data)
            floor = min(point[2] for _, point in ends)
            standing = [point for _, point in ends if point[2] - floor < _CONTACT_BAND_M]
            level = np.zeros(4)  # the rotation that lays the standing capsule ends flat on the floor
            mujoco.mju_mulQuat(level, _levelling_rotation(np.array(standing)), quat)
            quat = level
            data.qpos[3:7] = quat
            ends = self._capsule_ends(data)
            floor = min(point[2] for _, point in ends)
            rows = []
            for body, point in ends:
                if point[2] - floor < _CONTACT_BAND_M:
                    mujoco.mj_jac(model, data, jac, None, point, body)
                    rows.append(jac.copy())
            qpos[w] = np.concatenate([[0.0, 0.0, -floor], quat])
            qvel[w] = _at_rest_where(np.vstack(rows), data.qvel.copy())
        return qpos, qvel

    def _capsule_ends(self, data: mujoco.MjData) -> list[tuple[int, np.ndarray]]:
        """(body, world point) of the bottom of each end of each foot capsule, after forward kinematics of `data`."""
        mujoco.mj_kinematics(self.mj_model, data)
        mujoco.mj_comPos(self.mj_model, data)
        ends = []
        for g in self._feet:
            axis_z, half = data.geom_xmat[g].reshape(3, 3)[:, 2], self.mj_model.geom_size[g, 1]
            for end in data.geom_xpos[g] + np.outer([-half, half], axis_z):
                ends.append((int(self.mj_model.geom_bodyid[g]), end - [0.0, 0.0, self.mj_model.geom_size[g, 0]]))
        return ends

    def _model(self, values: tuple[Array, ...]) -> mjx.Model:
        model = self._mjx_model
        for parameter, value in zip(self.parameters, values, strict=True):
            model = with_updates(model, parameter.apply(model, value))
        return model

    def _servo_step(self, model: mjx.Model) -> Callable[[mjx.Data, Array], mjx.Data]:
        """One physics step holding PD targets `ctrl` (rad), with the servos stepped as `self.servo` says."""
        if self.servo == "native":
            return lambda data, ctrl: mjx.step(model, data.replace(ctrl=ctrl))
        gain = model.actuator_gainprm[:, 0]
        bias = model.actuator_biasprm[:, :3]
        limited = model.actuator_forcelimited.astype(bool)
        low = jnp.where(limited, model.actuator_forcerange[:, 0], -jnp.inf)
        high = jnp.where(limited, model.actuator_forcerange[:, 1], jnp.inf)
        motors = model.replace(  # force = ctrl: gain 1, no bias (actuator i drives qpos[7 + i], use_native_pd checks)
            actuator_gainprm=model.actuator_gainprm.at[:, 0].set(1.0),
            actuator_biasprm=jnp.zeros_like(model.actuator_biasprm),
        )

        def step(data: mjx.Data, ctrl: Array) -> mjx.Data:
            force = gain * ctrl + bias[:, 0] + bias[:, 1] * data.qpos[7:] + bias[:, 2] * data.qvel[6:]
            return mjx.step(motors, data.replace(ctrl=jnp.clip(force, low, high)))

        return step

    def _window(
        self,
        model: mjx.Model,
        delay: Array,
        offsets: Array,
        dvels0: Array,
        base_qpos: Array,
        base_qvel: Array,
        angles0: Array,
        vels0: Array,
        targets: Array,
        history: int,
    ) -> tuple[Array, Array]:
        data = mjx.make_data(model)
        servo_step = self._servo_step(model)
        qpos = jnp.concatenate([base_qpos, angles0 + offsets])
        qvel = jnp.concatenate([base_qvel, vels0 + dvels0])
        data = data.replace(qpos=qpos, qvel=qvel)
        substeps = self.substeps

        whole = jnp.floor(delay).astype(jnp.int32)
        fraction = delay - whole

        def physics_step(data: mjx.Data, j: Array) -> tuple[mjx.Data, None]:
            # a fractional latency: the step in which the target switches holds their time-weighted mean
            now = targets[history + jnp.floor_divide(j - whole, substeps)]
            before = targets[jnp.maximum(history + jnp.floor_divide(j - whole - 1, substeps), 0)]
            data = servo_step(data, (1.0 - fraction) * now + fraction * before)
            if self.suspended:
                data = data.replace(qpos=data.qpos.at[:7].set(self._base), qvel=data.qvel.at[:6].set(0.0))
            return data, None

        def control_step(data: mjx.Data, k: Array) -> tuple[mjx.Data, tuple[Array, Array]]:
            data, _ = jax.lax.scan(physics_step, data, k * substeps + jnp.arange(substeps))
            return data, (data.qpos[7:] - offsets, data.qvel[6:])

        horizon = targets.shape[0] - history
        _, (angles, vels) = jax.lax.scan(control_step, data, jnp.arange(horizon))
        return angles, vels

    def _candidate(
        self,
        values: tuple[Array, ...],
        delay: Array,
        dvels0: Array,
        base_qpos: Array,
        base_qvel: Array,
        angles0: Array,
        vels0: Array,
        targets: Array,
        *,
        history: int,
    ) -> tuple[Array, Array]:
        model = self._model(values)
        offsets = jnp.zeros(self.num_joints) if self._offset_index is None else values[self._offset_index]
        offsets = jnp.broadcast_to(offsets, (self.num_joints,))
        window = jax.vmap(self._window, in_axes=(None, None, None, None, 0, 0, 0, 0, 0, None))
        return window(model, delay, offsets, dvels0, base_qpos, base_qvel, angles0, vels0, targets, history)

    def replay(
        self,
        values: Sequence[np.ndarray],
        delays: np.ndarray,
        windows: Windows,
        start_vels: np.ndarray | None = None,
        devices: Sequence[jax.Device] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted readings (C, W, horizon, J) of angles (rad) and velocities (rad/s) for C candidates.

        `values[i]` is (C, dims_i) for parameter i; `delays` (C,) is the loop latency in physics steps (a fraction
        blends the targets of the step in which they switch), at most `windows.history · substeps`; `start_vels` (C, J)
        rad/s is added to every window's logged start velocity (default 0; `ksim_entropy.sim2real.fit` probes with it to
        profile the start velocity out). `devices`: split the candidates across them (padded to a multiple), the
        windows replicated; None or one device: the default device.
        """
        delays = np.asarray(delays, dtype=np.float32)
        if not np.isfinite(delays).all() or delays.min() < 0 or delays.max() > windows.history * self.substeps:
            raise ValueError(f"delays must lie in [0, {windows.history * self.substeps}] physics steps")
        if start_vels is None:
            start_vels = np.zeros((len(delays), self.num_joints))
        values = tuple(jnp.asarray(v, dtype=jnp.float32) for v in values)
        vels0 = windows.vels0
        if self.suspended:
            count = len(windows.angles0)
            base_qpos, base_qvel = np.tile(np.asarray(self._base), (count, 1)), np.zeros((count, 6))
        else:
            offsets = np.zeros((len(delays), self.num_joints))
            if self._offset_index is not None:
                offsets = np.broadcast_to(np.asarray(values[self._offset_index]), (len(delays), self.num_joints))
            if not np.allclose(offsets, offsets[:1]):
                raise ValueError("a standing replay needs the same zero offsets for every candidate (one floor start)")
            base_qpos, qvel = self.floor_start(windows, offsets[0])
            base_qvel, vels0 = qvel[:, :6], qvel[:, 6:]
        args = tuple(
            jnp.asarray(a, dtype=jnp.float32) for a in (base_qpos, base_qvel, windows.angles0, vels0, windows.targets)
        )
        if windows.history not in self._runs:
            batched = jax.vmap(
                functools.partial(self._candidate, history=windows.history),
                in_axes=(0, 0, 0, None, None, None, None, None),
            )
            self._runs[windows.history] = jax.jit(batched)
        dvels0 = jnp.asarray(start_vels, dtype=jnp.float32)
        if devices is None or len(devices) < 2:
            angles, vels = self._runs[windows.history](values, jnp.asarray(delays), dvels0, *args)
            return np.asarray(angles), np.asarray(vels)
        (*values, delays, dvels0), count = split_leading([*values, delays, dvels0], devices)
        args = replicate(args, env_mesh(devices))
        angles, vels = self._runs[windows.history](tuple(values), delays, dvels0, *args)
        return np.asarray(angles)[:count], np.asarray(vels)[:count]
