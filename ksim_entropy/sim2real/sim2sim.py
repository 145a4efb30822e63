"""Sim-to-sim gate: an exported `.kinfer` in a simulator unlike training's, over perturbation levels.

Training steps MJX at 4 ms with the implicit-fast integrator. The gate runs kinfer's own runtime
(`ksim_entropy.export.KinferRunner`) on CPU MuJoCo with the RK4 integrator at 1 ms and the PD servos closed every
millisecond (1 kHz), and perturbs it one factor at a time (`Perturbation`): floor friction, body mass, action
latency (1 ms resolution), sensor noise, pushes. A policy that only works in its training simulator fails here
before it fails on the robot.

Per level, over `episodes` seeded episodes of `seconds` each, with a fixed command:

- success rate: episodes without a fall (base below `fall_height_fraction` of its starting height, or tilted more
  than `fall_tilt_deg`);
- mean reward: per control step, exp(−‖v_xy − c_xy‖² / 0.25) · (0.5 + 0.5 · exp(−(ω_z − c_yaw)² / 0.25)) while
  standing, 0 after a fall (v_xy: base velocity in its heading frame, m/s; ω_z: yaw rate, rad/s; c: the command,
  `tasks.walk`'s (xvel, yvel, yawrate)); the same Gaussian tracking kernels as ksim's velocity-tracking rewards;
- tracking error: RMS of ‖v_xy − c_xy‖ (m/s) over the steps before a fall;
- transfer efficiency: the level's mean reward over the mean reward of the same episodes in the training
  simulator's settings (4 ms, implicit-fast, nominal): 1 means nothing was lost in the transfer.

The gate passes when the nominal level's success rate is at least `min_success` and its transfer efficiency at
least `min_efficiency`. Defaults of the perturbations follow the field (../shared/docs/sim2real-anchors.md):
friction ×0.5 (the low end of the U(0.4, 1.0)–U(0.5, 1.25) floor-friction ranges), mass ×1.15, 20 ms latency
(one 50 Hz control step), twice the default sensor noise, 0.5 m/s pushes every 2 s (Playground humanoids push
with velocity impulses on qvel[:2]).
"""

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from ksim_entropy.export import KinferRunner, KinferSession
from ksim_entropy.formats.jsonfile import atomic_write, write_json
from ksim_entropy.kbot.robot import RobotFiles
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions, kinfer_inputs, tilt_deg
from ksim_entropy.sim2real.sim_logs import SensorNoiseStds

__all__ = [
    "DEFAULT_LEVELS",
    "GateOptions",
    "GateResult",
    "LevelResult",
    "Perturbation",
    "run_gate",
    "write_gate_report",
]

GATE_DT_S = 0.001  # physics step of the gate (s); the PD servos close every step (1 kHz)
_TRACKING_SIGMA2 = 0.25  # (m/s)², (rad/s)²: width of the tracking kernels


@dataclass(frozen=True)
class Perturbation:
    """One level of the sweep: what differs from the nominal robot."""

    name: str
    friction_scale: float = 1.0  # every geom's sliding friction ×
    mass_scale: float = 1.0  # every body's mass and inertia ×
    latency_s: float = 0.0  # an action reaches the servos this long after it is computed (1 ms resolution)
    noise_scale: float = 0.0  # × `SensorNoiseStds()` standard deviations on every sensor group (0: noise-free)
    push_mps: float = 0.0  # horizontal velocity impulse on the base (m/s), random direction ...
    push_interval_s: float = 2.0  # ... every this long (the first after one interval)

    def __post_init__(self) -> None:
        for name in ("friction_scale", "mass_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Perturbation {self.name!r}: {name} must be > 0, got {value!r}")
        for name in ("latency_s", "noise_scale", "push_mps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Perturbation {self.name!r}: {name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.push_interval_s) and self.push_interval_s > 0):
            raise ValueError(f"Perturbation {self.name!r}: push_interval_s must be > 0, got {self.push_interval_s!r}")


DEFAULT_LEVELS: tuple[Perturbation, ...] = (
    Perturbation("nominal"),
    Perturbation("friction x0.5", friction_scale=0.5),
    Perturbation("mass x1.15", mass_scale=1.15),
    Perturbation("latency 20 ms", latency_s=0.02),
    Perturbation("noise x2", noise_scale=2.0),
    Perturbation("push 0.5 m/s", push_mps=0.5),
)


@dataclass(frozen=True)
class GateOptions:
    """How long, how often, and what passes."""

    episodes: int = 4
    seconds: float = 10.0
    command: tuple[float, ...] | None = None  # default: 0.3 m/s forward for a (xvel, yvel, yawrate) policy, else 0
    seed: int = 0
    initial_pose_noise_rad: float = 0.02
    fall_height_fraction: float = 0.6
    fall_tilt_deg: float = 60.0
    min_success: float = 0.8
    min_efficiency: float = 0.7

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes!r}")
        if not (math.isfinite(self.seconds) and self.seconds >= 0.1):
            raise ValueError(f"seconds must be >= 0.1, got {self.seconds!r}")
        if self.command is not None and not all(math.isfinite(c) for c in self.command):
            raise ValueError(f"command must be finite, got {self.command!r}")


@dataclass
class LevelResult:
    """One level's outcome over all episodes (see the module docstring for each measure)."""

    name: str
    perturbation: dict
    success_rate: float
    mean_reward: float
    tracking_error_mps: float
    transfer_efficiency: float
    episode_rewards: list[float] = field(default_factory=list)
    fell_at_s: list[float | None] = field(default_factory=list)


@dataclass
class GateResult:
    """The sweep: every level, the training-simulator reference reward, and the verdict with its reasons."""

    model: str
    command: list[float]
    reference_reward: float
    levels: list[LevelResult]
    passed: bool
    reasons: list[str]
    options: dict

    def level(self, name: str) -> LevelResult:
        return next(level for level in self.levels if level.name == name)


@dataclass
class _Episode:
    reward: float
    tracking_error_mps: float
    fell_at_s: float | None


def _default_command(command_names: Sequence[str]) -> np.ndarray:
    command = np.zeros(len(command_names))
    if tuple(command_names[:1]) == ("xvel",):
        command[0] = 0.3
    return command


def _make_sim(files: RobotFiles, level: Perturbation, training: bool) -> KBotSimulator:
    options = SimOptions() if training else SimOptions(dt_s=GATE_DT_S)
    sim = KBotSimulator(files, options)
    model = sim.model
    if not training:
        model.opt.integrator = mujoco.mjtIntegrator.mjINT_RK4
    model.geom_friction[:, 0] *= level.friction_scale
    model.body_mass[1:] *= level.mass_scale
    model.body_inertia[1:] *= level.mass_scale
    return sim


def _heading_velocity(sim: KBotSimulator) -> tuple[np.ndarray, float]:
    """Base velocity (x, y) in its heading frame (m/s), and its yaw rate (rad/s)."""
    w, x, y, z = sim.data.qpos[3:7]
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    c, s = math.cos(yaw), math.sin(yaw)
    vx, vy = sim.data.qvel[0], sim.data.qvel[1]
    return np.array([c * vx + s * vy, -s * vx + c * vy]), float(sim.data.qvel[5])


def _episode(
    model_path: Path,
    files: RobotFiles,
    level: Perturbation,
    options: GateOptions,
    command: np.ndarray,
    seed: int,
    training: bool,
) -> _Episode:
    sim = _make_sim(files, level, training)
    rng = np.random.default_rng(seed)
    noise = options.initial_pose_noise_rad
    sim.reset(sim.nominal_pose_rad + rng.uniform(-noise, noise, sim.num_joints))
    runner = KinferRunner(model_path)
    stds = {k: v * level.noise_scale for k, v in SensorNoiseStds().stds().items()}
    delay = round(level.latency_s / sim.options.dt_s)
    pending: deque[tuple[int, np.ndarray]] = deque()
    applied = sim.nominal_pose_rad.copy()
    start_height = float(sim.data.qpos[2])
    push_every = round(level.push_interval_s / sim.options.dt_s) if level.push_mps > 0 else 0
    steps = round(options.seconds / sim.options.ctrl_dt_s)
    rewards, errors = [], []
    fell_at = None
    substep = 0
    for _ in range(steps):
        sensors = sim.sensors()
        sensors = {k: v + rng.normal(0.0, stds[k], v.shape) if stds[k] > 0 else v for k, v in sensors.items()}
        action = runner.step(kinfer_inputs(sensors, command, sim.time_s))
        if not np.isfinite(action).all():
            fell_at = sim.time_s
            break
        pending.append((substep + delay, action[: sim.num_joints]))
        for _ in range(sim.options.substeps):
            while pending and pending[0][0] <= substep:
                applied = pending.popleft()[1]
            if push_every and substep > 0 and substep % push_every == 0:
                angle = rng.uniform(0.0, 2 * math.pi)
                sim.data.qvel[0:2] += level.push_mps * np.array([math.cos(angle), math.sin(angle)])
            sim.physics_step(applied)
            substep += 1
        if (
            sim.data.qpos[2] < options.fall_height_fraction * start_height
            or tilt_deg(sim.data.qpos[3:7]) > options.fall_tilt_deg
        ):
            fell_at = sim.time_s
            break
        velocity, yaw_rate = _heading_velocity(sim)
        error2 = float(np.sum((velocity - command[:2]) ** 2)) if command.size >= 2 else float(np.sum(velocity**2))
        yaw_error2 = (yaw_rate - command[2]) ** 2 if command.size >= 3 else yaw_rate**2
        rewards.append(math.exp(-error2 / _TRACKING_SIGMA2) * (0.5 + 0.5 * math.exp(-yaw_error2 / _TRACKING_SIGMA2)))
        errors.append(error2)
    return _Episode(
        reward=float(np.sum(rewards) / steps),
        tracking_error_mps=float(math.sqrt(np.mean(errors))) if errors else math.nan,
        fell_at_s=fell_at,
    )


def run_gate(
    model_path: str | Path,
    files: RobotFiles,
    levels: Sequence[Perturbation] = DEFAULT_LEVELS,
    options: GateOptions = GateOptions(),
    progress: Callable[[str], None] | None = None,
) -> GateResult:
    """Run the sweep; the first level must be the nominal one (it decides the verdict)."""
    model_path = Path(model_path)
    session = KinferSession(model_path)  # checks the file (ExportError names what is wrong)
    command_names = tuple(session.metadata.get("command_names") or ())
    command = _default_command(command_names) if options.command is None else np.asarray(options.command, float)
    if command.shape != (len(command_names),):
        raise ValueError(f"the policy takes {len(command_names)} commands {list(command_names)}, got {command.size}")
    if not levels:
        raise ValueError("give at least one perturbation level")
    seeds = [options.seed * 1000 + i for i in range(options.episodes)]
    nominal = Perturbation("training simulator")
    reference = [_episode(model_path, files, nominal, options, command, s, training=True) for s in seeds]
    reference_reward = float(np.mean([e.reward for e in reference]))
    results = []
    for level in levels:
        if progress is not None:
            progress(level.name)
        episodes = [_episode(model_path, files, level, options, command, s, training=False) for s in seeds]
        reward = float(np.mean([e.reward for e in episodes]))
        tracking = [e.tracking_error_mps for e in episodes if math.isfinite(e.tracking_error_mps)]
        results.append(
            LevelResult(
                name=level.name,
                perturbation=asdict(level),
                success_rate=float(np.mean([e.fell_at_s is None for e in episodes])),
                mean_reward=reward,
                tracking_error_mps=float(np.mean(tracking)) if tracking else math.nan,
                transfer_efficiency=reward / reference_reward if reference_reward > 0 else math.nan,
                episode_rewards=[e.reward for e in episodes],
                fell_at_s=[e.fell_at_s for e in episodes],
            )
        )
    first = results[0]
    reasons = []
    if first.success_rate < options.min_success:
        reasons.append(f"{first.name}: success rate {first.success_rate:.2f} < {options.min_success}")
    if not first.transfer_efficiency >= options.min_efficiency:
        reasons.append(f"{first.name}: transfer efficiency {first.transfer_efficiency:.2f} < {options.min_efficiency}")
    return GateResult(
        model=str(model_path),
        command=command.tolist(),
        reference_reward=reference_reward,
        levels=results,
        passed=not reasons,
        reasons=reasons,
        options=asdict(options),
    )


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_gate_report(result: GateResult, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """`<out_dir>/sim2sim.json` (everything, NaN as null) and `sim2sim.png` (the four measures per level)."""
    from matplotlib.figure import Figure  # plotting only when a report is asked for

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "sim2sim.json", "png": out_dir / "sim2sim.png"}
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist; pass overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(_finite_or_none(asdict(result)), paths["json"], overwrite=True)
    names = [level.name for level in result.levels]
    measures = (
        ("success rate", [level.success_rate for level in result.levels], (0, 1.05)),
        ("mean reward", [level.mean_reward for level in result.levels], (0, 1.05)),
        ("tracking error (m/s)", [level.tracking_error_mps for level in result.levels], None),
        ("transfer efficiency", [level.transfer_efficiency for level in result.levels], None),
    )
    fig = Figure(figsize=(11, 6.5))
    axes = fig.subplots(2, 2)
    for ax, (title, values, ylim) in zip(axes.flat, measures, strict=True):
        shown = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
        ax.bar(range(len(names)), shown, color=["tab:green" if i == 0 else "tab:blue" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
    verdict = "PASSED" if result.passed else "FAILED: " + "; ".join(result.reasons)
    fig.suptitle(f"sim-to-sim gate, {Path(result.model).name}: {verdict}", fontsize=10)
    fig.tight_layout()
    atomic_write(paths["png"], lambda tmp: fig.savefig(tmp, dpi=110, format="png", facecolor="white"))
    return paths
