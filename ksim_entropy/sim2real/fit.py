"""Fit the randomization to real logs by replay: which simulated robots reproduce what the real one did.

Stages (a sysid engineer's order: closed forms first, then the global search, then the local refinement). After
each, the result so far can be saved (`partial_path`), so a failed or interrupted fit keeps its last stage.

1. **IMU, from moments** (`ksim_entropy.formats.fitted.imu_moments`): a suspended robot is at rest, so gyro and
   accelerometer biases and noise follow from the means and spreads of the log.
2. **Global search, CMA-ES** (the `cmaes` package) over the global physics (friction loss, armature, damping,
   kp, kd scales) and the loop latency, each normalised to [0, 1] over its prior range. Every generation replays all
   candidates on many short log windows at once in MJX (`ksim_entropy.sim2real.replay`). The score is the multi-step
   prediction likelihood of the encoder readings (DROPO's objective; Tiboni et al. 2023) with each channel's residual
   variance profiled out: ``loss = mean_c ½ log(mse_c + floor_c²)`` over joint angles and velocities.
3. **Loop latency sweep**: every other whole latency (physics steps) at the best globals; the best starts step 4.
4. **Local refinement, Gauss-Newton / Levenberg-Marquardt** over the globals, the loop latency (the replay is continuous
   in it, `ksim_entropy.sim2real.replay`) and the per-joint zero offsets, with a finite-difference Jacobian computed as
   one batch (two-sided in the latency, where the replay is piecewise linear with a kink at every whole physics step)
   and up to six dampings tried at once (one replay batch), each also with the latency held; then again, re-linearised,
   for up to three iterations (each round stops once a step gains < 1e-5; a round stopped by its cap while still
   descending is a warning). Without the held-latency steps a fit whose latency sits on a kink (a true 12 ms) stalled
   0.012 above the optimum, with two hip-roll zero offsets 14 and 26 mrad off and called identifiable. The latency is
   refined with the physics because they trade off (a later loop reads like a heavier joint): fitted one after the
   other, they zig-zag to a wrong pair (measured: 10 ms and armature 1.17 for a true 12 ms and 0.82). The curvature,
   plus the prior as a Gaussian of the uniform's variance, gives each parameter's posterior standard deviation σ.

Start velocity (errors in variables): each window starts from the logged joint velocity, which carries the
encoder's velocity noise, and a heavy, slowly settling joint (hip roll) keeps that error through the window, which
the fit would read as dynamics (measured: residuals 2-7x the encoder noise on the hip rolls at the true values, and
a biased armature on a log of a still robot). Each window's start velocity is therefore a nuisance parameter,
profiled out of the residuals (variable projection: the residual's component along the replay's sensitivity to it,
probed once per joint where the fit stands, is removed under a loose prior, `START_VELOCITY_PRIOR_RAD_S`). At the
true values the residual then sits at the encoder noise on every joint.

The replay model is the training model at the physical level: 1 ms physics (`FitOptions.replay_dt_s`) with the
servo law applied explicitly each step (`ReplayModel(servo="explicit")`), as servo firmware does. At training's
4 ms, or with MuJoCo's implicit servo damping, the integrator's error is larger than the data's noise and the fit
absorbs it into the armature (measured: 0.54 for a true 0.82) and damping.

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

Loop latency: open-loop logs only reveal the sum of observation and action latency (`ksim_entropy.sim2real.replay`); the
fit reports `loop_latency_s` and keeps the split between `action_latency_s` and `obs_latency_s` at the range consistent
with the sum and the priors, marked unidentifiable. The priors (0-80 ms action, 0-40 ms observation, so a loop of up to
120 ms) cover a KOS loop over a network or with a slow policy; beyond them, see the checks.

Checks (`coverage["warnings"]`): an identifiable value within 1 % of its prior's edge (0 latency or damping excepted:
physical bounds), and a replay residual whose median over joints exceeds 3× the log's own noise floor (the white part
of the residual along each window), say that reality lies outside the model. An unidentifiable parameter reports its
prior's centre.
"""

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from cmaes import CMA

from ksim_entropy import randomization as rnd
from ksim_entropy.actuation import use_native_pd
from ksim_entropy.formats.fitted import FittedParameter, FittedRandomization, imu_moments
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.kbot.robot import RobotFiles, load_metadata, load_robot_model
from ksim_entropy.ppo.data_parallel import DataParallelError, resolve_devices
from ksim_entropy.sim2real.replay import ReplayModel, Windows, make_windows
from ksim_entropy.sim2real.sim import SimOptions

__all__ = ["GLOBAL_PRIORS", "FitError", "FitOptions", "FitResult", "Prior", "fit_randomization"]

_ANGLE_FLOOR_RAD = 1e-4  # below an encoder's quantisation: a residual this small is noise, not signal
_VEL_FLOOR_RAD_S = 1e-3
_Z95 = 1.96
# Each window's start velocity is fitted (profiled out), under this loose prior around the logged value: far above an
# encoder's velocity noise (0.05 rad/s on the stand-in), so the data set it wherever a window can see it.
START_VELOCITY_PRIOR_RAD_S = 1.0


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
# Loop latency 0-120 ms: KOS loops over a network or with a slow policy run tens of ms later than a local one. (While
# the latency was swept apart from the physics, this prior made a short search land at armature 1.23 for a true 0.82.)
ACTION_LATENCY_PRIOR_S = (0.0, 0.08)
OBS_LATENCY_PRIOR_S = (0.0, 0.04)
_EDGE_FRACTION = 0.01  # a fitted value this close to its prior's edge (fraction of the width) is at the edge
_UNCONVERGED_GAIN = 1e-4  # the refinement's last step lowered the loss by this much or more: not converged
_DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # Levenberg-Marquardt dampings tried at once (see `_refine`)
_RESIDUAL_NOISE_RATIO = 3.0  # median replay residual over the log's own noise floor above this: reality is not fitted


@dataclass(frozen=True)
class FitOptions:
    """Fit settings. `windows` log windows of `horizon` control steps are replayed per candidate.

    `replay_dt_s` is the replay's physics step: the fit estimates physical values, so it replays finer than
    training's 4 ms (at 4 ms the integrator's phase lag at the servo bandwidth biases armature and damping).
    """

    horizon: int = 10
    windows: int = 32
    generations: int = 30
    population: int = 13
    refine_iterations: int = 6
    replay_dt_s: float = 0.001
    seed: int = 0
    mass_scale: float = 1.0  # the robot's weighed mass / the model's (joint motion cannot tell it, see the docstring)
    mass_scale_std: float | None = None  # its measurement's one-sigma error; None = not weighed
    identifiable_ratio: float = 0.5  # posterior σ / prior σ above which a parameter counts as unidentifiable
    progress: bool = True
    devices: str = "1"  # the candidates' replays split across devices: "1", "auto" (all JAX sees) or a count


@dataclass
class FitResult:
    """The fitted randomization, the loss history and the replays before/after the fit (for plots)."""

    fitted: FittedRandomization
    loss_history: list[float] = field(default_factory=list)  # best loss per CMA-ES generation, then per refinement
    stages: list[tuple[str, int]] = field(default_factory=list)  # (stage, index of its first loss_history entry)
    before: tuple[np.ndarray, np.ndarray] | None = None  # predicted (W, H, J) angles, vels at the prior centre
    after: tuple[np.ndarray, np.ndarray] | None = None  # the same at the fit, each window's start velocity profiled
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


@dataclass(frozen=True)
class _StartVelocity:
    """Each window's start velocity, profiled out of the residuals (errors in variables).

    A window starts from the logged joint velocity, which carries the encoder's velocity noise; a heavy, slowly
    settling joint (hip roll) keeps that error through the window, which the fit would otherwise read as dynamics
    (armature, damping). So each window's start velocity v0 + δ is a nuisance: the residual's component along the
    replay's sensitivity to δ (`basis`, whitened, one finite-difference probe per joint at a reference candidate) is
    removed, under a loose prior δ ~ N(0, `START_VELOCITY_PRIOR_RAD_S`²) that only keeps δ finite where a window
    cannot see it (a fast joint forgets its start velocity within a step).
    """

    basis: np.ndarray  # (W, N, J) orthonormal directions in whitened residual space (N = 2 · horizon · J)
    shrink: np.ndarray  # (W, J) ridge factors s² / (s² + 1) of those directions
    scale: np.ndarray  # (N,) whitening scale of each residual entry: angles (rad), then velocities (rad/s)

    def residuals(self, ra: np.ndarray, rv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, W, H, J) angle and velocity residuals with the start-velocity component removed."""
        c, w, h, j = ra.shape
        r = np.concatenate([ra.reshape(c, w, -1), rv.reshape(c, w, -1)], axis=2) / self.scale
        coefficients = np.einsum("wnk,cwn->cwk", self.basis, r) * self.shrink
        r = (r - np.einsum("wnk,cwk->cwn", self.basis, coefficients)) * self.scale
        return r[..., : h * j].reshape(c, w, h, j), r[..., h * j :].reshape(c, w, h, j)


class _Objective:
    """Batched replay loss and whitened residuals for candidates θ = (globals in [0, 1], zero offsets in rad)."""

    def __init__(
        self,
        replay: ReplayModel,
        windows: Windows,
        mass_scale: float,
        batch: int,
        devices: Sequence[jax.Device] | None = None,
    ) -> None:
        self.replay, self.windows, self.mass_scale, self.batch = replay, windows, mass_scale, batch
        self.devices = devices
        self.num_globals = len(GLOBAL_PRIORS)
        self.low = np.array([p.low for p in GLOBAL_PRIORS])
        self.high = np.array([p.high for p in GLOBAL_PRIORS])
        self.start_velocity: _StartVelocity | None = None  # set by `profile_start_velocity`

    def values(self, x: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
        g = self.low + np.clip(x, 0.0, 1.0) * (self.high - self.low)
        mass = np.full((len(x), 1), self.mass_scale)
        return [mass] + [g[:, i : i + 1] for i in range(self.num_globals)] + [offsets]

    def predict(
        self, x: np.ndarray, offsets: np.ndarray, delays: np.ndarray, start_vels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replays of len(x) candidates in chunks of one batch size, so XLA compiles the replay once."""
        if start_vels is None:
            start_vels = np.zeros_like(offsets)
        angles, vels = [], []
        for start in range(0, len(x), self.batch):
            chunk = [a[start : start + self.batch] for a in (x, offsets, delays, start_vels)]
            count = len(chunk[0])
            pad = self.batch - count
            chunk = [np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in chunk]
            a, v = self.replay.replay(
                self.values(chunk[0], chunk[1]), chunk[2], self.windows, chunk[3], devices=self.devices
            )
            angles.append(a[:count])
            vels.append(v[:count])
        return np.concatenate(angles), np.concatenate(vels)

    def profile_start_velocity(
        self, x: np.ndarray, offsets: np.ndarray, delay: float, probe_rad_s: float = 0.1
    ) -> float:
        """Profile the start velocity out of later residuals, linearised at candidate (x, offsets, delay).

        Returns that candidate's loss with its start velocity profiled.
        """
        num_joints, num_windows = offsets.size, self.windows.angles.shape[0]
        probes = np.vstack([np.zeros(num_joints), probe_rad_s * np.eye(num_joints)])
        count = num_joints + 1
        angles, vels = self.predict(
            np.repeat(x[None], count, 0), np.repeat(offsets[None], count, 0), np.full(count, delay), probes
        )
        if not (np.isfinite(angles).all() and np.isfinite(vels).all()):
            raise FitError("the replay diverged (NaN) while probing the start velocity; check the logs' units")
        ra, rv = angles[0] - self.windows.angles, vels[0] - self.windows.vels
        scale = np.concatenate(
            [
                np.tile(np.sqrt(np.mean(ra**2, axis=(0, 1)) + _ANGLE_FLOOR_RAD**2), ra.shape[1]),
                np.tile(np.sqrt(np.mean(rv**2, axis=(0, 1)) + _VEL_FLOOR_RAD_S**2), rv.shape[1]),
            ]
        )
        flat = np.concatenate([angles.reshape(count, num_windows, -1), vels.reshape(count, num_windows, -1)], 2)
        sensitivity = np.moveaxis((flat[1:] - flat[:1]) / probe_rad_s / scale, 0, -1)  # (W, N, J) per rad/s
        # ridge in δ' = δ / σ: the fitted part of a residual r is U diag(s² / (s² + 1)) Uᵀ r, with U s Vᵀ = S σ
        u, singular, _ = np.linalg.svd(sensitivity * START_VELOCITY_PRIOR_RAD_S, full_matrices=False)
        self.start_velocity = _StartVelocity(u, singular**2 / (singular**2 + 1.0), scale)
        return float(self.loss(angles[:1], vels[:1])[0])

    def residuals(self, angles: np.ndarray, vels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, W, H, J) residuals of predicted angles (rad) and velocities (rad/s), the start velocity profiled out."""
        ra, rv = angles - self.windows.angles[None], vels - self.windows.vels[None]
        if self.start_velocity is None:
            return ra, rv
        return self.start_velocity.residuals(ra, rv)

    @staticmethod
    def mse(ra: np.ndarray, rv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and channel mean squared residual (from `residuals`) plus its floor: (C, J) each."""
        return (np.mean(ra**2, axis=(1, 2)) + _ANGLE_FLOOR_RAD**2, np.mean(rv**2, axis=(1, 2)) + _VEL_FLOOR_RAD_S**2)

    def loss(self, angles: np.ndarray, vels: np.ndarray) -> np.ndarray:
        msa, msv = self.mse(*self.residuals(angles, vels))
        loss = 0.25 * (np.mean(np.log(msa), axis=1) + np.mean(np.log(msv), axis=1))
        return np.where(np.isfinite(loss), loss, np.inf)


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


@dataclass
class _State:
    """Where the fit stands: globals in [0, 1], offsets (rad), loop latency (physics steps) and what is known."""

    globals_: np.ndarray
    offsets: np.ndarray
    delay: float
    sigma: np.ndarray  # posterior σ of (globals in prior-width units, loop latency in physics steps, offsets in rad)
    prior_sigma: np.ndarray
    loss: float
    stage: str
    last_gain: float = 0.0  # the refinement's last accepted loss decrease: large = stopped before it converged


def _global_search(
    objective: _Objective, options: FitOptions, max_delay: int, num_joints: int, history: list[float]
) -> np.ndarray:
    """CMA-ES over the globals and the loop latency (last coordinate, × max_delay); returns the best globals.

    The latency is searched with them (it shifts the loss landscape) but is then swept exactly (`_latency_sweep`).
    """
    num_globals = objective.num_globals
    centre = np.full(num_globals + 1, 0.5)
    optimizer = CMA(
        mean=centre,
        sigma=0.25,
        bounds=np.tile([0.0, 1.0], (num_globals + 1, 1)),
        seed=options.seed,
        population_size=options.population,
    )
    zeros = np.zeros((optimizer.population_size, num_joints))
    best_x, best_loss = centre.copy(), math.inf
    with _progress(options.generations, options.progress, "fit: CMA-ES") as bar:
        for _ in range(options.generations):
            xs = np.stack([optimizer.ask() for _ in range(optimizer.population_size)])
            delays = xs[:, -1] * max_delay
            losses = objective.loss(*objective.predict(xs[:, :num_globals], zeros, delays))
            if not np.isfinite(losses).any():
                raise FitError("every candidate's replay diverged (NaN); check the logs' units (rad, rad/s)")
            optimizer.tell([(x, float(v) if np.isfinite(v) else 1e9) for x, v in zip(xs, losses, strict=True)])
            i = int(np.argmin(losses))
            if losses[i] < best_loss:
                best_x, best_loss = xs[i].copy(), float(losses[i])
            history.append(best_loss)
            bar.set_postfix(loss=f"{best_loss:.4f}")
            bar.update()
            if optimizer.should_stop():
                break
    return best_x[:num_globals]


def _latency_sweep(
    objective: _Objective, globals_: np.ndarray, offsets: np.ndarray, max_delay: int
) -> tuple[float, float]:
    """Every other whole loop latency (physics steps) at fixed parameters: the best and its loss.

    The best starts the refinement, which refines the latency continuously: a 2-step grid is enough.
    """
    delays = np.arange(0, max_delay + 1, 2)
    count = delays.size
    angles, vels = objective.predict(np.repeat(globals_[None], count, 0), np.repeat(offsets[None], count, 0), delays)
    losses = objective.loss(angles, vels)
    if not np.isfinite(losses).any():
        raise FitError("the replay diverged (NaN) at every loop latency")
    best = int(np.argmin(losses))
    return float(delays[best]), float(losses[best])


def _refine(
    objective: _Objective,
    state: _State,
    options: FitOptions,
    max_delay: int,
    iterations: int,
    history: list[float],
    desc: str,
) -> _State:
    """Gauss-Newton / Levenberg-Marquardt over the globals, the loop latency and the zero offsets.

    The Jacobian of the whitened residuals is a forward finite difference, all probes in one batched replay (the
    replay is continuous in the latency). Its curvature plus the prior (a uniform of width w as a Gaussian of
    variance w²/12) gives the posterior σ.
    """
    g = objective.num_globals
    offset_width = 2.0 * ZERO_OFFSET_PRIOR_RAD
    width = np.concatenate([np.ones(g), [max_delay], np.full(state.offsets.size, offset_width)])
    theta = np.concatenate([state.globals_, [state.delay / max_delay], state.offsets / offset_width + 0.5])  # in [0, 1]
    num = theta.size
    prior_precision = np.full(num, 12.0)
    step = 1e-2

    def predict(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offsets = (thetas[:, g + 1 :] - 0.5) * offset_width
        return objective.predict(thetas[:, :g], offsets, thetas[:, g] * max_delay)

    current, gain = state.loss, 0.0
    covariance = np.diag(1.0 / prior_precision)
    latency = np.zeros(num)
    latency[g] = step
    held = np.ones(num, dtype=bool)
    held[g] = False  # the trials that hold the latency where it is
    held_block = np.ix_(held, held)
    # as many trials as one replay batch holds (a second batch would cost a whole replay): all six dampings at the
    # default population (13), every other one below 12
    dampings = _DAMPINGS if 2 * len(_DAMPINGS) <= objective.batch else _DAMPINGS[1::2]
    with _progress(iterations, options.progress, desc) as bar:
        for iteration in range(iterations + 1):
            probes = theta[None] + np.vstack([np.zeros(num), step * np.eye(num), -latency])
            probes[:, g] = np.clip(probes[:, g], 0.0, 1.0)  # a latency in [0, max_delay]
            angles, vels = predict(probes)
            if not np.isfinite(angles[0]).all():
                raise FitError("the replay diverged (NaN) during the refinement; the partial result is the last good")
            ra, rv = objective.residuals(angles, vels)
            msa, msv = objective.mse(ra[:1], rv[:1])  # the base candidate's, already profiled
            residual = np.concatenate(
                [(ra / np.sqrt(msa[0])).reshape(num + 2, -1), (rv / np.sqrt(msv[0])).reshape(num + 2, -1)], axis=1
            )
            jacobian = (residual[1 : num + 1] - residual[:1]).T / step  # (N, P)
            # the latency's column two-sided: the replay is piecewise linear in it, with a kink at every whole
            # physics step (where a true latency in whole milliseconds sits), which a one-sided slope misreads
            jacobian[:, g] = (residual[g + 1] - residual[num + 1]) / (probes[g + 1, g] - probes[num + 1, g])
            information = jacobian.T @ jacobian / options.horizon  # one independent sample per window and channel
            covariance = np.linalg.inv(information + np.diag(prior_precision))
            if iteration == iterations:
                break
            gradient = jacobian.T @ residual[0] / options.horizon
            scaled = np.diag(np.diag(information) + 1e-9)
            # Levenberg-Marquardt, the dampings tried in one batch, each also with the latency held (a step along a
            # narrow valley of the other parameters that a latency at a kink would otherwise block)
            trials = []
            for d in dampings:
                trials.append(np.clip(theta - np.linalg.solve(information + d * scaled, gradient), 0.0, 1.0))
                moved = theta.copy()
                moved[held] -= np.linalg.solve((information + d * scaled)[held_block], gradient[held])
                trials.append(np.clip(moved, 0.0, 1.0))
            losses = objective.loss(*predict(np.stack(trials)))
            best = int(np.argmin(losses))
            improved = losses[best] < current
            gain = current - float(losses[best]) if improved else 0.0
            if improved:
                theta, current = trials[best], float(losses[best])
            history.append(current)
            bar.set_postfix(loss=f"{current:.4f}")
            bar.update()
            if gain < 1e-5:
                bar.update(iterations - bar.n)
                break
    return _State(
        globals_=theta[:g],
        offsets=(theta[g + 1 :] - 0.5) * offset_width,
        delay=float(theta[g] * max_delay),
        sigma=np.sqrt(np.diag(covariance)) * width,
        prior_sigma=width / np.sqrt(prior_precision),
        loss=current,
        stage=state.stage,
        last_gain=gain,
    )


def _imu_parameters(imu: dict[str, tuple[float, float]]) -> list[FittedParameter]:
    out = []
    for name, (value, s) in imu.items():
        kind, _, axis = name.partition("/")
        if kind == "noise_std":
            unit, lo, hi = {"gyro": "rad/s"}.get(axis, "m/s^2"), 0.0, max(1.0, 10 * value)
        else:
            unit, lo, hi = ("rad/s", -1.0, 1.0) if kind == "gyro_bias" else ("m/s^2", -2.0, 2.0)
        value = float(np.clip(value, lo, hi))
        low, high = max(lo, value - _Z95 * s), min(hi, value + _Z95 * s)
        note = "IMU at rest: closed form from the log's moments"
        out.append(FittedParameter(name, value, low, high, unit, float(s), True, (lo, hi), note))
    return out


def _fitted_parameters(
    state: _State, options: FitOptions, joints: tuple[str, ...], dt_s: float, latency_high_s: float
) -> list[FittedParameter]:
    """`fitted.json` entries from the fit's state (IMU entries excluded)."""
    params: list[FittedParameter] = []

    def add(name: str, unit: str, value: float, s: float, prior: tuple[float, float], ok: bool, note: str = "") -> None:
        lo, hi = prior
        value = float(np.clip(value, lo, hi))
        if ok:
            low, high = max(lo, value - _Z95 * s), min(hi, value + _Z95 * s)
            margin = min(value - lo if lo != 0 else np.inf, hi - value)  # 0 (latency, damping) is physical, no edge
            if margin <= _EDGE_FRACTION * (hi - lo) and hi > lo:
                note = f"{note}; " if note else ""
                note += "AT ITS PRIOR'S EDGE: the truth may lie outside the prior (reality outside the model)"
        else:  # no information: the prior's centre, not wherever the search stopped (often a bound)
            prefix = f"{note}; " if note else ""
            note = f"{prefix}unidentifiable: the prior's centre (the fit stopped at {value:+.4g})"
            low, high, value = lo, hi, 0.5 * (lo + hi)
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
    ok = state.sigma < options.identifiable_ratio * state.prior_sigma
    for i, prior in enumerate(GLOBAL_PRIORS):
        w = prior.high - prior.low
        value = prior.low + state.globals_[i] * w
        add(prior.name, prior.unit, value, state.sigma[i] * w, (prior.low, prior.high), ok[i])
    g = len(GLOBAL_PRIORS)
    loop_note = "action + observation latency: the only latency open-loop logs reveal"
    add("loop_latency_s", "s", state.delay * dt_s, state.sigma[g] * dt_s, (0.0, latency_high_s), ok[g], loop_note)
    loop, loop_lo, loop_hi = params[-1].mean, params[-1].low, params[-1].high
    split_note = "only the sum loop_latency_s is identifiable; range = the split consistent with it and the priors"
    obs = min(loop / 2, OBS_LATENCY_PRIOR_S[1])
    act_lo, act_hi = max(0.0, loop_lo - OBS_LATENCY_PRIOR_S[1]), min(ACTION_LATENCY_PRIOR_S[1], max(loop_hi, 0.0))
    act = float(np.clip(loop - obs, act_lo, act_hi))
    params.append(
        FittedParameter(
            "action_latency_s",
            act,
            act_lo,
            act_hi,
            "s",
            (act_hi - act_lo) / 12**0.5,
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
            obs_hi / 12**0.5,
            False,
            OBS_LATENCY_PRIOR_S,
            split_note,
        )
    )
    for j, joint in enumerate(joints):
        prior = (-ZERO_OFFSET_PRIOR_RAD, ZERO_OFFSET_PRIOR_RAD)
        add(f"zero_offset/{joint}", "rad", state.offsets[j], state.sigma[g + 1 + j], prior, ok[g + 1 + j])
    return params


def _residual_over_noise(windows: Windows, angles: np.ndarray) -> np.ndarray:
    """Per joint: RMS replay residual of the joint angles over the log's own noise floor.

    The floor is the residual's white part along each window, its nugget γ0 - (2γ1 - γ2) over the horizon (white
    encoder noise adds to lag 0 only, a model error is smooth in time), floored at `_ANGLE_FLOOR_RAD`. At the truth the
    ratio is 1 for a fast joint; a heavy, slow joint keeps its noisy start velocity's effect longer (about 3 with
    0.05 rad/s velocity noise on the stand-in).
    """
    r = angles - windows.angles
    h = r.shape[1]
    gamma = [np.mean(r[:, lag:] * r[:, : h - lag], axis=(0, 1)) for lag in (0, 1, 2)]
    noise = np.sqrt(np.maximum(gamma[0] - 2.0 * gamma[1] + gamma[2], _ANGLE_FLOOR_RAD**2))
    return np.sqrt(gamma[0]) / noise


def _warnings(params: Sequence[FittedParameter], ratio: np.ndarray, joints: tuple[str, ...]) -> list[str]:
    """What a person must read before trusting the fit: values at their prior's edge, residuals above the noise."""
    out = [
        f"{p.name} = {p.mean:.4g} {p.unit} sits at its prior's edge {list(p.prior)}: the truth may lie outside it; "
        "widen the prior or check the model"
        for p in params
        if "AT ITS PRIOR'S EDGE" in p.note
    ]
    median = float(np.median(ratio))
    if median > _RESIDUAL_NOISE_RATIO:
        worst = ", ".join(f"{joints[j]} ×{ratio[j]:.1f}" for j in np.argsort(ratio)[::-1][:4])
        out.append(
            f"the replay residual stays {median:.1f}× the log's own noise floor (median over joints; worst {worst}): "
            "reality is outside the model (an unmodelled effect, a latency or physics beyond the priors), not fitted"
        )
    return out


def _replay_model(files: RobotFiles, options: SimOptions, suspended: bool) -> ReplayModel:
    """The fit's replay model, kept for the next fit of the same (unchanged) robot files in this process.

    Its jitted replay then compiles once for several logs or seeds (per window count and batch size); an edited MJCF
    or metadata file (a new modification time) gets a new model.
    """
    stamps = tuple(path.stat().st_mtime_ns for path in (files.mjcf, files.metadata))
    return _kept_replay_model(files, stamps, options, suspended)


@functools.lru_cache(maxsize=2)
def _kept_replay_model(files: RobotFiles, stamps: tuple[int, ...], options: SimOptions, suspended: bool) -> ReplayModel:
    del stamps  # part of the cache key only
    return ReplayModel(files, fit_parameters(files), suspended=suspended, options=options, servo="explicit")


def _convergence_warnings(state: _State) -> list[str]:
    """A refinement stopped by its iteration cap while still descending.

    σ and the ranges then describe a point that is not the optimum, so an "identifiable" range may miss the truth.
    """
    if state.last_gain < _UNCONVERGED_GAIN:
        return []
    return [
        f"the refinement stopped before it converged (its last step still lowered the loss by {state.last_gain:.2g}): "
        "ranges may not hold the truth; fit again with more refine iterations (--refine-iterations)"
    ]


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

    `partial_path`: the result so far is written there (overwriting) after every stage, so a fit that fails or is
    interrupted leaves its last complete stage on disk; coverage["stage"] says which.
    """
    if not suspended:
        raise FitError(
            "only suspended logs (robot on a stand, base fixed) are fitted; standing logs do not identify the foot "
            "friction (they bound it from below, and small offset errors move that bound: docs/fit.md)"
        )
    started = time.perf_counter()
    if not (math.isfinite(options.mass_scale) and MASS_SCALE_PRIOR[0] <= options.mass_scale <= MASS_SCALE_PRIOR[1]):
        raise FitError(f"mass_scale must lie in {list(MASS_SCALE_PRIOR)}, got {options.mass_scale!r}")
    try:
        sim_options = SimOptions(dt_s=options.replay_dt_s)
    except ValueError as err:
        raise FitError(f"replay_dt_s: {err}") from None
    try:
        devices = resolve_devices(options.devices)
    except DataParallelError as err:
        raise FitError(str(err)) from None
    replay = _replay_model(files, sim_options, suspended)
    joints = replay.joint_names
    latency_high_s = ACTION_LATENCY_PRIOR_S[1] + OBS_LATENCY_PRIOR_S[1]
    max_delay = round(latency_high_s / replay.dt_s)
    history = max_delay // replay.substeps + 1
    _check_logs(logs, joints, need=history + options.horizon + options.windows)
    windows = _windows(logs, options, history)
    objective = _Objective(replay, windows, options.mass_scale, batch=options.population, devices=devices)
    imu = next((imu_moments(log) for log in logs if {"gyro", "accel", "projected_g"} <= set(log.groups)), {})
    losses: list[float] = []
    stages: list[tuple[str, int]] = []
    seconds = float(sum(len(log) for log in logs) * replay.substeps * replay.dt_s)
    excursion = {
        j: float(np.std(np.concatenate([log.group("joint_angles")[:, i] for log in logs])))
        for i, j in enumerate(joints)
    }

    def fitted_of(state: _State, replayed: tuple[np.ndarray, np.ndarray] | None = None) -> FittedRandomization:
        params = _fitted_parameters(state, options, joints, replay.dt_s, latency_high_s) + _imu_parameters(imu)
        checks = {}
        if replayed is not None:
            ratio = _residual_over_noise(windows, replayed[0])
            checks = {
                "residual_over_noise": dict(zip(joints, ratio.round(3).tolist(), strict=True)),
                "warnings": _warnings(params, ratio, joints) + _convergence_warnings(state),
            }
        coverage = {
            "logs": [log.source or "log" for log in logs],
            "seconds": seconds,
            "windows": int(windows.angles.shape[0]),
            "horizon_steps": options.horizon,
            "suspended": suspended,
            "stage": state.stage,
            "joint_excursion_rad": excursion,
            "fit_seconds": time.perf_counter() - started,
            **checks,
        }
        return FittedRandomization(robot_name, joints, tuple(params), state.loss, coverage)

    def checkpoint(state: _State) -> None:
        if partial_path is not None:
            fitted_of(state).save(partial_path, overwrite=True)

    num_globals = len(GLOBAL_PRIORS)
    zero_offsets = np.zeros(len(joints))
    prior_sigma = np.concatenate(
        [
            np.full(num_globals, 12**-0.5),
            [max_delay / 12**0.5],
            np.full(len(joints), 2 * ZERO_OFFSET_PRIOR_RAD / 12**0.5),
        ]
    )
    centre = np.full(num_globals, 0.5)
    before = objective.predict(centre[None], zero_offsets[None], np.array([max_delay / 2]))

    def predicted(state: _State) -> tuple[np.ndarray, np.ndarray]:
        return objective.predict(state.globals_[None], state.offsets[None], np.array([state.delay]))

    # 1. global search: CMA-ES over the globals and the loop latency, then the best whole latency at the best globals
    stages.append(("CMA-ES", len(losses)))
    objective.profile_start_velocity(centre, zero_offsets, max_delay / 2)
    globals_ = _global_search(objective, options, max_delay, len(joints), losses)
    delay, loss = _latency_sweep(objective, globals_, zero_offsets, max_delay)
    state = _State(globals_, zero_offsets, delay, prior_sigma.copy(), prior_sigma, loss, "global search")
    checkpoint(state)

    # 2. local refinement of everything, the start velocity re-linearised where the fit stands before each round
    stages.append(("Gauss-Newton", len(losses)))
    for round_, iterations in enumerate((options.refine_iterations, 3)):
        state.loss = objective.profile_start_velocity(state.globals_, state.offsets, state.delay)
        state = _refine(objective, state, options, max_delay, iterations, losses, f"fit: Gauss-Newton ({round_ + 1})")
        state.stage = "refined"
        checkpoint(state)
    ra, rv = objective.residuals(*predicted(state))
    after = (windows.angles + ra[0], windows.vels + rv[0])  # the replay at the fit, its start velocity profiled
    state.stage = "complete"
    fitted = fitted_of(state, after)
    if partial_path is not None:
        fitted.save(partial_path, overwrite=True)
    before_a, before_v = before
    return FitResult(fitted, losses, stages, (before_a[0], before_v[0]), after, windows, time.perf_counter() - started)
