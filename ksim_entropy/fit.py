"""Fit the randomization to real logs by replay: which simulated robots reproduce what the real one did.

Stages (a sysid engineer's order: closed forms first, then the global search, then the local refinement):

1. **IMU, from moments** (`ksim_entropy.bridge.fitted.imu_moments`): a suspended robot is at rest, so gyro and
   accelerometer biases and noise follow from the means and spreads of the log.
2. **Global search, CMA-ES** (the `cmaes` package) over the global physics (friction loss, armature, damping,
   kp, kd scales) and the loop latency, each normalised to [0, 1] over its prior range. Every generation replays all
   candidates on many short log windows at once in MJX (`ksim_entropy.replay`). The score is the multi-step
   prediction likelihood of the encoder readings (DROPO's objective; Tiboni et al. 2023) with each channel's residual
   variance profiled out: ``loss = mean_c ½ log(mse_c + floor_c²)`` over joint angles and velocities.
3. **Local refinement, Gauss-Newton** over the globals and the per-joint zero offsets (latency held), with a
   finite-difference Jacobian computed as one batch. Its curvature, plus the prior as a Gaussian of the uniform's
   variance, gives each parameter's posterior standard deviation σ.

Widths (the entropy side, after E-DROPO's "widest distribution consistent with the data"): an identifiable
parameter gets the widest uniform range the data allow, mean ± 1.96 σ (its 95 % likelihood region), clipped to the
prior; a parameter the logs do not constrain (σ > half its prior standard deviation) keeps its prior range and is
marked unidentifiable. Windows overlap in time, so the likelihood counts one independent sample per window and
channel (the curvature is divided by the horizon), which makes σ conservative.

The mass is given, not fitted. Scaling every mass and inertia, the armature, damping, friction loss and the servo
gains by one factor c scales every torque in the joint-space equation of motion by c (gravity too), so the joint
motion is exactly the same; MuJoCo's soft constraints are set in acceleration space and keep the symmetry. Logs of
joint angles therefore fix only ratios to the mass (only torque saturation would break the tie). The fit holds
`mass_scale` at the weighed value (`FitOptions.mass_scale`, default 1: the model's mass) and fits the rest relative
to it, which reproduces the robot's motion exactly as well.

Loop latency: open-loop logs only reveal the sum of observation and action latency (`ksim_entropy.replay`); the fit
reports `loop_latency_s` and keeps the split between `action_latency_s` and `obs_latency_s` at the range
consistent with the sum and the priors, marked unidentifiable.
"""

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cmaes import CMA

from ksim_entropy import randomization as rnd
from ksim_entropy.actuation import use_native_pd
from ksim_entropy.bridge.fitted import FittedParameter, FittedRandomization, imu_moments
from ksim_entropy.bridge.schema import StepLog
from ksim_entropy.replay import ReplayModel, Windows, make_windows
from ksim_entropy.robot import RobotFiles, load_metadata, load_robot_model

__all__ = ["GLOBAL_PRIORS", "FitError", "FitOptions", "FitResult", "Prior", "fit_randomization"]

_ANGLE_FLOOR_RAD = 1e-4  # below an encoder's quantisation: a residual this small is noise, not signal
_VEL_FLOOR_RAD_S = 1e-3
_Z95 = 1.96


class FitError(ValueError):
    """Logs or settings the fit cannot use, or a fit that failed; the message says which and why."""


@dataclass(frozen=True)
class Prior:
    """A fitted global parameter: its range before seeing data, unit, and the training randomizer it sets."""

    name: str
    unit: str
    low: float
    high: float
    make: Callable[..., rnd.RandomizedParameter]


# Priors: the training ranges of tasks.walk (MuJoCo Playground / ksim, see ksim_entropy.randomization), widened about
# 2-3x so a robot outside the training assumptions is still inside the search.
GLOBAL_PRIORS: tuple[Prior, ...] = (
    Prior(
        "frictionloss_scale",
        "1",
        0.25,
        3.0,
        lambda m, lo, hi: rnd.JointFrictionLoss.create(m, low=lo, high=hi, shared=True),
    ),
    Prior("armature_scale", "1", 0.5, 2.0, lambda m, lo, hi: rnd.JointArmature.create(m, low=lo, high=hi, shared=True)),
    Prior(
        "joint_damping",
        "N·m·s/rad",
        0.0,
        2.0,
        lambda m, lo, hi: rnd.JointDamping.create(m, low=lo, high=hi, mode="add", shared=True),
    ),
    Prior("kp_scale", "1", 0.7, 1.3, lambda m, lo, hi: rnd.ActuatorKpScale.create(m, low=lo, high=hi, shared=True)),
    Prior("kd_scale", "1", 0.5, 1.5, lambda m, lo, hi: rnd.ActuatorKdScale.create(m, low=lo, high=hi, shared=True)),
)
MASS_SCALE_PRIOR = (0.7, 1.3)
ZERO_OFFSET_PRIOR_RAD = 0.05  # Playground's qpos0 range
ACTION_LATENCY_PRIOR_S = (0.0, 0.03)
OBS_LATENCY_PRIOR_S = (0.0, 0.02)


@dataclass(frozen=True)
class FitOptions:
    """Fit settings. `windows` log windows of `horizon` control steps are replayed per candidate."""

    horizon: int = 10
    windows: int = 48
    generations: int = 60
    population: int = 12
    refine_iterations: int = 8
    seed: int = 0
    mass_scale: float = 1.0  # the robot's weighed mass / the model's (joint motion cannot tell it, see the docstring)
    mass_scale_std: float | None = None  # its measurement's one-sigma error; None = not weighed
    identifiable_ratio: float = 0.5  # posterior σ / prior σ above which a parameter counts as unidentifiable
    progress: bool = True


@dataclass
class FitResult:
    """The fitted randomization, the loss history and the replays before/after the fit (for plots)."""

    fitted: FittedRandomization
    loss_history: list[float] = field(default_factory=list)  # best loss per CMA-ES generation, then per refinement
    before: tuple[np.ndarray, np.ndarray] | None = None  # predicted angles (W, H, J) at the prior centre, at the fit
    after: tuple[np.ndarray, np.ndarray] | None = None
    windows: Windows | None = None
    seconds: float = 0.0


def _check_logs(logs: Sequence[StepLog], joint_names: tuple[str, ...], need: int) -> None:
    if not logs:
        raise FitError("no logs given")
    for log in logs:
        name = log.source or "log"
        if log.joint_names is not None and tuple(log.joint_names) != joint_names:
            raise FitError(
                f"{name}: its joints {list(log.joint_names)[:4]}... ({len(log.joint_names)}) are not the robot's "
                f"{list(joint_names)[:4]}... ({len(joint_names)}): a log of another robot?"
            )
        for group in ("joint_angles", "joint_vels", "output"):
            if group not in log.groups:
                raise FitError(f"{name}: no {group!r} channels; the fit replays outputs and compares encoders")
            if log.group(group).shape[1] != len(joint_names):
                raise FitError(
                    f"{name}: {group} has {log.group(group).shape[1]} columns; the robot has {len(joint_names)} joints"
                )
        if np.any(np.diff(log.step_id) != 1):
            raise FitError(f"{name}: step ids are not consecutive (dropped steps); cut the log at its gaps first")
        if len(log) < need:
            raise FitError(f"{name}: {len(log)} control steps is too short; the fit needs >= {need}")


def _windows(logs: Sequence[StepLog], options: FitOptions, history: int) -> Windows:
    """`options.windows` windows spread evenly over all logs (rows with NaN skipped)."""
    parts = []
    per_log = np.diff(np.linspace(0, options.windows, len(logs) + 1).round().astype(int))
    for log, count in zip(logs, per_log, strict=True):
        angles, vels, outputs = (
            np.asarray(log.group(g), dtype=float) for g in ("joint_angles", "joint_vels", "output")
        )
        finite = np.isfinite(angles).all(1) & np.isfinite(vels).all(1) & np.isfinite(outputs).all(1)
        candidates = np.arange(history, len(log) - options.horizon - 1)
        ok = np.array([finite[s - history : s + options.horizon + 1].all() for s in candidates], dtype=bool)
        candidates = candidates[ok]
        if candidates.size < count:
            raise FitError(f"{log.source or 'log'}: only {candidates.size} windows without NaN; need {count}")
        starts = candidates[np.linspace(0, candidates.size - 1, count).round().astype(int)]
        parts.append(make_windows(angles, vels, outputs, starts, options.horizon, history))
    return Windows(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("angles0", "vels0", "targets", "angles", "vels")),
        history=history,
    )


class _Objective:
    """Batched replay loss and whitened residuals for candidates given as normalised vectors."""

    def __init__(self, replay: ReplayModel, windows: Windows, max_delay: int, mass_scale: float) -> None:
        self.replay, self.windows, self.max_delay, self.mass_scale = replay, windows, max_delay, mass_scale
        self.batch = 1
        self.num_globals = len(GLOBAL_PRIORS)
        self.low = np.array([p.low for p in GLOBAL_PRIORS])
        self.high = np.array([p.high for p in GLOBAL_PRIORS])

    def values(self, x: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
        g = self.low + np.clip(x, 0.0, 1.0) * (self.high - self.low)
        mass = np.full((len(x), 1), self.mass_scale)
        return [mass] + [g[:, i : i + 1] for i in range(self.num_globals)] + [offsets]

    def predict(self, x: np.ndarray, offsets: np.ndarray, delays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Replays of len(x) candidates, padded to one batch size so XLA compiles the replay once."""
        count = len(x)
        pad = max(self.batch - count, 0)
        x, offsets, delays = (np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in (x, offsets, delays))
        angles, vels = self.replay.replay(self.values(x, offsets), delays, self.windows)
        return angles[:count], vels[:count]

    def mse(self, angles: np.ndarray, vels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and channel mean squared residual plus its floor: (C, J) each."""
        ra = angles - self.windows.angles[None]
        rv = vels - self.windows.vels[None]
        return (np.mean(ra**2, axis=(1, 2)) + _ANGLE_FLOOR_RAD**2, np.mean(rv**2, axis=(1, 2)) + _VEL_FLOOR_RAD_S**2)

    def loss(self, angles: np.ndarray, vels: np.ndarray) -> np.ndarray:
        msa, msv = self.mse(angles, vels)
        loss = 0.25 * (np.mean(np.log(msa), axis=1) + np.mean(np.log(msv), axis=1))
        return np.where(np.isfinite(loss), loss, np.inf)

    def nll(self, loss: np.ndarray) -> np.ndarray:
        """Profiled negative log-likelihood with one independent sample per window and channel."""
        channels = 2 * self.windows.angles.shape[2]
        return 2.0 * loss * channels * self.windows.angles.shape[0]


def _progress(total: int, enabled: bool, desc: str):  # noqa: ANN202 - tqdm or a no-op
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def fit_parameters(files: RobotFiles) -> list[rnd.RandomizedParameter]:
    """The training randomizers the fit sets, in the order the replay applies them.

    Mass scale, `GLOBAL_PRIORS`, then per-joint zero offsets (after the kp scale, as `JointZeroOffset` requires).
    """
    pd_model = use_native_pd(load_robot_model(files), load_metadata(files))
    lo, hi = MASS_SCALE_PRIOR
    parameters = [rnd.BodyMassScale.create(pd_model, low=lo, high=hi, shared=True)]
    parameters += [p.make(pd_model, p.low, p.high) for p in GLOBAL_PRIORS]
    parameters.append(rnd.JointZeroOffset.create(pd_model, low=-ZERO_OFFSET_PRIOR_RAD, high=ZERO_OFFSET_PRIOR_RAD))
    return parameters


def fit_randomization(
    logs: Sequence[StepLog],
    files: RobotFiles,
    *,
    suspended: bool = True,
    options: FitOptions = FitOptions(),
    robot_name: str = "kbot",
    partial_path: str | Path | None = None,
) -> FitResult:
    """Fit the randomization to `logs` (see the module docstring).

    `partial_path`: where the result is also written when the fit ends (overwriting), for callers that save a
    final file elsewhere.
    """
    if not suspended:
        raise FitError(
            "only suspended logs (robot on a stand, base fixed) are fitted so far; standing logs need the floor "
            "contact in the replay and are not supported yet"
        )
    started = time.perf_counter()
    lo, hi = MASS_SCALE_PRIOR
    replay = ReplayModel(files, fit_parameters(files), suspended=suspended)
    joints = replay.joint_names
    latency_high_s = ACTION_LATENCY_PRIOR_S[1] + OBS_LATENCY_PRIOR_S[1]
    max_delay = round(latency_high_s / replay.dt_s)
    ctrl_steps = replay.substeps
    history = max_delay // ctrl_steps + 1
    _check_logs(logs, joints, need=history + options.horizon + options.windows)
    windows = _windows(logs, options, history)
    if not (math.isfinite(options.mass_scale) and lo <= options.mass_scale <= hi):
        raise FitError(f"mass_scale must lie in {list(MASS_SCALE_PRIOR)}, got {options.mass_scale!r}")
    objective = _Objective(replay, windows, max_delay, options.mass_scale)
    objective.batch = max(options.population, len(GLOBAL_PRIORS) + len(joints) + 1, max_delay + 1)
    num_globals = len(GLOBAL_PRIORS)
    zeros = np.zeros((1, len(joints)))

    # 1. IMU from moments
    imu = {}
    for log in logs:
        if all(g in log.groups for g in ("gyro", "accel", "projected_g")):
            imu = imu_moments(log)
            break

    # 2. CMA-ES over the globals and the loop latency (last coordinate)
    history_losses: list[float] = []
    centre = np.full(num_globals + 1, 0.5)
    optimizer = CMA(
        mean=centre,
        sigma=0.25,
        bounds=np.tile([0.0, 1.0], (num_globals + 1, 1)),
        seed=options.seed,
        population_size=options.population,
    )

    def delays_of(x: np.ndarray) -> np.ndarray:
        return np.rint(np.clip(x[:, -1], 0.0, 1.0) * max_delay).astype(int)

    best_x, best_loss = centre.copy(), math.inf
    with _progress(options.generations, options.progress, "fit: CMA-ES") as bar:
        for _ in range(options.generations):
            xs = np.stack([optimizer.ask() for _ in range(optimizer.population_size)])
            angles, vels = objective.predict(xs[:, :num_globals], np.repeat(zeros, len(xs), 0), delays_of(xs))
            losses = objective.loss(angles, vels)
            if not np.isfinite(losses).any():
                raise FitError("every candidate's replay diverged (NaN); check the logs' units (rad, rad/s)")
            optimizer.tell([(x, float(v) if np.isfinite(v) else 1e9) for x, v in zip(xs, losses, strict=True)])
            i = int(np.argmin(losses))
            if losses[i] < best_loss:
                best_x, best_loss = xs[i].copy(), float(losses[i])
            history_losses.append(best_loss)
            bar.set_postfix(loss=f"{best_loss:.4f}")
            bar.update()
            if optimizer.should_stop():
                break

    # 3. Gauss-Newton over globals + zero offsets, latency held at the best
    delay = int(delays_of(best_x[None])[0])
    offset_scale = 2.0 * ZERO_OFFSET_PRIOR_RAD  # offsets normalised like the globals: prior width = 1
    theta = np.concatenate([best_x[:num_globals], np.full(len(joints), 0.5)])
    num = theta.size

    def split(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return thetas[:, :num_globals], (thetas[:, num_globals:] - 0.5) * offset_scale

    def evaluate(thetas: np.ndarray, delay_: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, off = split(thetas)
        angles, vels = objective.predict(x, off, np.full(len(thetas), delay_))
        return objective.loss(angles, vels), angles, vels

    prior_precision = np.full(num, 12.0)  # uniform prior of width 1 as a Gaussian: variance 1/12
    step = 1e-2
    loss0, _, _ = evaluate(theta[None], delay)
    current = float(loss0[0])
    covariance = np.diag(1.0 / prior_precision)
    with _progress(options.refine_iterations, options.progress, "fit: Gauss-Newton") as bar:
        for _ in range(options.refine_iterations + 1):
            probes = theta[None] + step * np.vstack([np.zeros(num), np.eye(num)])
            _, angles_p, vels_p = evaluate(probes, delay)
            msa, msv = objective.mse(angles_p[:1], vels_p[:1])
            scale_a, scale_v = np.sqrt(msa[0]), np.sqrt(msv[0])
            residual = np.concatenate(
                [
                    ((angles_p - windows.angles[None]) / scale_a).reshape(num + 1, -1),
                    ((vels_p - windows.vels[None]) / scale_v).reshape(num + 1, -1),
                ],
                axis=1,
            )
            jacobian = (residual[1:] - residual[:1]).T / step  # (N, P)
            information = jacobian.T @ jacobian / options.horizon  # one independent sample per window and channel
            covariance = np.linalg.inv(information + np.diag(prior_precision))
            if bar.n >= options.refine_iterations:
                break
            r0 = residual[0] / math.sqrt(options.horizon)
            gradient = jacobian.T @ r0 / math.sqrt(options.horizon)
            accepted = False
            for damping in (1e-3, 1e-1, 1e1):  # Levenberg-Marquardt: damp until the loss falls
                delta = -np.linalg.solve(information + damping * np.diag(np.diag(information) + 1e-9), gradient)
                candidate = np.clip(theta + delta, 0.0, 1.0)
                trial = float(evaluate(candidate[None], delay)[0][0])
                if trial < current:
                    theta, accepted = candidate, current - trial > 1e-5
                    current = trial
                    break
            history_losses.append(current)
            bar.set_postfix(loss=f"{current:.4f}")
            bar.update()
            if not accepted:
                bar.update(options.refine_iterations - bar.n)
                break

    # loop latency: every delay, at the refined parameters; its 95 % region by the likelihood ratio
    delays = np.arange(max_delay + 1)
    x, off = split(np.repeat(theta[None], delays.size, 0))
    angles_d, vels_d = objective.predict(x, off, delays)
    nll = objective.nll(objective.loss(angles_d, vels_d))
    delay = int(np.argmin(nll))
    region = delays[nll - nll[delay] <= 0.5 * _Z95**2]
    final_loss = float(objective.loss(angles_d[delay : delay + 1], vels_d[delay : delay + 1])[0])
    history_losses.append(final_loss)
    after = (angles_d[delay], vels_d[delay])
    before_a, before_v = objective.predict(np.full((1, num_globals), 0.5), zeros, np.array([max_delay // 2]))

    # results
    sigma = np.sqrt(np.diag(covariance))
    prior_sigma = 1.0 / np.sqrt(prior_precision)
    params: list[FittedParameter] = []

    def add(name: str, unit: str, value: float, s: float, lo: float, hi: float, ok: bool, note: str = "") -> None:
        value = float(np.clip(value, lo, hi))
        low, high = (max(lo, value - _Z95 * s), min(hi, value + _Z95 * s)) if ok else (lo, hi)
        params.append(FittedParameter(name, value, low, high, unit, float(s), bool(ok), (lo, hi), note))

    weighed = options.mass_scale_std is not None
    mass_std = options.mass_scale_std if weighed else 0.05
    params.append(
        FittedParameter(
            "mass_scale",
            options.mass_scale,
            max(MASS_SCALE_PRIOR[0], options.mass_scale - _Z95 * mass_std),
            min(MASS_SCALE_PRIOR[1], options.mass_scale + _Z95 * mass_std),
            "1",
            float(mass_std),
            weighed,
            MASS_SCALE_PRIOR,
            "given, not fitted: joint motion is unchanged when masses, gains, damping, friction and armature scale "
            "together, so logs of joint angles fix only their ratios to the mass; weigh the robot (--mass-scale)",
        )
    )
    for i, prior in enumerate(GLOBAL_PRIORS):
        width = prior.high - prior.low
        ok = sigma[i] < options.identifiable_ratio * prior_sigma[i]
        add(prior.name, prior.unit, prior.low + theta[i] * width, sigma[i] * width, prior.low, prior.high, ok)
    dt = replay.dt_s
    loop = delay * dt
    loop_lo, loop_hi = float(region.min()) * dt - dt / 2, float(region.max()) * dt + dt / 2
    add(
        "loop_latency_s",
        "s",
        loop,
        (loop_hi - loop_lo) / (2 * _Z95),
        0.0,
        latency_high_s,
        True,
        "action + observation latency: the only latency open-loop logs reveal",
    )
    obs = min(loop / 2, OBS_LATENCY_PRIOR_S[1])
    split_note = "only the sum loop_latency_s is identifiable; range = the split consistent with it and the priors"
    act_lo, act_hi = max(0.0, loop_lo - OBS_LATENCY_PRIOR_S[1]), min(ACTION_LATENCY_PRIOR_S[1], max(loop_hi, 0.0))
    params.append(
        FittedParameter(
            "action_latency_s",
            float(np.clip(loop - obs, act_lo, act_hi)),
            act_lo,
            act_hi,
            "s",
            (act_hi - act_lo) / math.sqrt(12),
            False,
            ACTION_LATENCY_PRIOR_S,
            split_note,
        )
    )
    obs_hi = min(OBS_LATENCY_PRIOR_S[1], max(loop_hi, 0.0))
    params.append(
        FittedParameter(
            "obs_latency_s",
            float(np.clip(obs, 0.0, obs_hi)),
            0.0,
            obs_hi,
            "s",
            obs_hi / math.sqrt(12),
            False,
            OBS_LATENCY_PRIOR_S,
            split_note,
        )
    )
    for j, joint in enumerate(joints):
        k = num_globals + j
        ok = sigma[k] < options.identifiable_ratio * prior_sigma[k]
        value = (theta[k] - 0.5) * offset_scale
        add(
            f"zero_offset/{joint}",
            "rad",
            value,
            sigma[k] * offset_scale,
            -ZERO_OFFSET_PRIOR_RAD,
            ZERO_OFFSET_PRIOR_RAD,
            ok,
        )
    for name, (value, s) in imu.items():
        unit = (
            {"gyro": "rad/s", "accel": "m/s^2", "projected_g": "m/s^2"}[name.split("/")[-1]]
            if name.startswith("noise_std")
            else ("rad/s" if name.startswith("gyro") else "m/s^2")
        )
        lo, hi = (
            (0.0, max(1.0, 10 * value))
            if name.startswith("noise_std")
            else (-1.0, 1.0)
            if name.startswith("gyro")
            else (-2.0, 2.0)
        )
        add(name, unit, value, s, lo, hi, True, "IMU at rest: closed form from the log's moments")
    seconds = float(sum(len(log) for log in logs) * replay.substeps * replay.dt_s)
    fitted = FittedRandomization(
        robot=robot_name,
        joint_names=joints,
        parameters=tuple(params),
        final_loss=final_loss,
        coverage={
            "logs": [log.source or "log" for log in logs],
            "seconds": seconds,
            "windows": int(windows.angles.shape[0]),
            "horizon_steps": options.horizon,
            "suspended": suspended,
            "joint_excursion_rad": {
                j: float(np.std(np.concatenate([log.group("joint_angles")[:, i] for log in logs])))
                for i, j in enumerate(joints)
            },
            "fit_seconds": time.perf_counter() - started,
        },
    )
    if partial_path is not None:
        fitted.save(partial_path, overwrite=True)
    return FitResult(fitted, history_losses, (before_a[0], before_v[0]), after, windows, time.perf_counter() - started)
