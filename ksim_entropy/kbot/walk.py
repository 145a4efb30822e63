"""The K-Bot walking (and standing) task: PPO with the sim-to-real blocks, its config and presets.

`KBotWalkingTask` tracks planar velocity commands (`preset=stand`: zero commands); `PRESETS` are the named configs
the command line (`ksim_entropy.cli.walk`, `python -m tasks.walk`) starts from. The task exports its policy to
`<exp_dir>/policy.kinfer` at the end of training and, when asked, runs the sim-to-sim gate on it.
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import functools
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import attrs
import jax
import jax.numpy as jnp
import ksim
import mujoco
import optax
import xax
from jaxtyping import Array, PyTree
from omegaconf.errors import OmegaConfBaseException

from ksim_entropy.actuation import DelayedActuators, NativePDActuators, use_native_pd
from ksim_entropy.constants import GRAVITY_MPS2
from ksim_entropy.curriculum import RandomizationCurriculum
from ksim_entropy.events import ForcePushEvent, UprightAssistEvent, WindEvent
from ksim_entropy.export import KinferPolicy, export_kinfer
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.formats.windows import WindowError, read_windows
from ksim_entropy.kbot.fitted_ranges import FittedRanges, load_fitted_ranges
from ksim_entropy.kbot.robot import (
    KBOT_FOOT_BODIES,
    KBOT_FOOT_COLLISION_GEOMS,
    KBOT_NOMINAL_POSE_RAD,
    KBOT_STANDING_BASE_HEIGHT_M,
    RobotFiles,
    RobotLoadError,
    load_metadata,
    load_robot_model,
    resolve_robot_files,
)
from ksim_entropy.kbot.task import EntropyBridgedKBotTask, KBotEntropyConfig
from ksim_entropy.observation import DelayedObservation, SensorNoise
from ksim_entropy.policy import RecurrentActorCritic
from ksim_entropy.ppo.checkpoint import CheckpointError, check_compatible, inspect_checkpoint
from ksim_entropy.ppo.discriminator import (
    DiscriminatorGuidance,
    DiscriminatorGuidedMixin,
    DiscriminatorRule,
    parameters_from_report,
)
from ksim_entropy.ppo.domain_adversarial import DomainAdversarial, DomainAdversarialMixin, ReversalSchedule
from ksim_entropy.ppo.finetune import SourceKL, SourceKLMixin
from ksim_entropy.ppo.recurrent import RecurrentActorCriticMixin
from ksim_entropy.randomization import (
    ActuatorKdScale,
    ActuatorKpScale,
    BodyMassOffset,
    BodyMassScale,
    CenterOfMassOffset,
    DomainRandomization,
    GeomFriction,
    ImuMisalignment,
    JointArmature,
    JointDamping,
    JointFrictionLoss,
    JointZeroOffset,
    TorqueLimitScale,
)
from ksim_entropy.rewards import (
    ActionRatePenalty,
    ActionSmoothnessPenalty,
    BaseAccelerationPenalty,
    BaseHeightTrackingReward,
    BaseTiltReward,
    BaseVelocityTrackingReward,
    EnergyPenalty,
    FootSlipPenalty,
    JointLimitProximityPenalty,
    NominalPosePenalty,
    NormalizedTorquePenalty,
    YawRateTrackingReward,
)
from ksim_entropy.terminations import UnstablePhysicsTermination

logger = logging.getLogger(__name__)

TASK_ID = "ksim_entropy.walk.v1"
ARCHITECTURE_KEYS = ("policy_body", "hidden_size", "depth", "robot_source")
COMMAND_NAMES = ("xvel", "yvel", "yawrate")
JOINT_VELOCITY_SCALE = 0.1  # policy input = joint velocity (rad/s) × 0.1


@dataclass
class WalkConfig(KBotEntropyConfig):
    """Config for K-Bot velocity tracking. Units: m, s, rad, m/s, rad/s."""

    task_id: str = xax.field(value=TASK_ID, help="Identifies checkpoints of this task; do not change.")
    preset: str = xax.field(value="auto", help="auto | cpu | gpu | stand: the defaults this run started from.")
    robot_source: str = xax.field(value="local", help="'local' (shipped asset), a directory, or 'kscale:<name>'.")
    scene: str = xax.field(value="smooth", help="mujoco-scenes terrain around the robot.")
    export_kinfer: bool = xax.field(value=True, help="Export <exp_dir>/policy.kinfer when training ends.")
    sim2sim_gate: bool = xax.field(value=True, help="Run the sim-to-sim gate on the exported policy (tasks.sim2sim).")
    sim2sim_episodes: int = xax.field(value=2, help="Sim-to-sim gate: episodes per perturbation level.")
    sim2sim_seconds: float = xax.field(value=5.0, help="Sim-to-sim gate: seconds per episode.")

    # Policy.
    policy_body: str = xax.field(value="lstm", help="lstm (recurrent) | mlp (feedforward ELU layers).")
    hidden_size: int = xax.field(value=128, help="LSTM (or MLP) width.")
    depth: int = xax.field(value=2, help="Number of stacked LSTM cells (or MLP layers).")
    init_std: float | None = xax.field(value=None, help="Initial action std (rad) of every joint; None: random.")
    head_init_scale: float = xax.field(value=1.0, help="Initial output-layer weights × this (0.01: start at nominal).")

    # Optimiser.
    learning_rate: float = xax.field(value=3e-4, help="Adam learning rate.")
    grad_clip: float = xax.field(value=1.0, help="Global gradient-norm clip.")

    # Commands [vx, vy, wz] in the heading frame.
    xvel_range: tuple[float, float] = xax.field(value=(-0.5, 1.0), help="Forward velocity command range (m/s).")
    yvel_range: tuple[float, float] = xax.field(value=(-0.3, 0.3), help="Lateral velocity command range (m/s).")
    yawrate_range: tuple[float, float] = xax.field(value=(-1.0, 1.0), help="Yaw-rate command range (rad/s).")
    command_zero_prob: float = xax.field(value=0.1, help="Probability that a sampled command is zero (stand).")
    command_switch_prob: float = xax.field(value=0.004, help="Per-control-step probability of a new command.")

    # Rewards.
    velocity_sigma_mps: float = xax.field(value=0.25, help="Width of the planar velocity tracking kernel.")
    yawrate_sigma_radps: float = xax.field(value=0.5, help="Width of the yaw-rate tracking kernel.")
    base_height_reward: float = xax.field(value=0.0, help="Scale of the base-height kernel (0: off).")
    base_height_sigma_m: float = xax.field(value=0.05, help="Width of the base-height kernel (m).")
    tilt_reward: float = xax.field(value=0.0, help="Scale of the base-tilt kernel (0: off).")
    tilt_sigma_rad: float = xax.field(value=0.1, help="Width of the base-tilt kernel (rad).")
    pose_penalty: float = xax.field(value=0.0, help="Scale of the weighted squared distance from the nominal pose.")
    action_rate_penalty: float = xax.field(value=0.5, help="Scale of the action-rate penalty (rad² per step).")
    action_smoothness_penalty: float = xax.field(value=0.1, help="Scale of the action second-difference penalty.")
    feet_air_time_reward: float = xax.field(value=1.0, help="Scale of ksim's feet air-time reward.")

    # Disturbances and episodes.
    push_velocity_mps: float = xax.field(value=0.5, help="sim2real=false: max horizontal push velocity (m/s).")
    push_interval_s: tuple[float, float] = xax.field(value=(3.0, 8.0), help="Time between pushes (s).")
    push_max_force_n: float = xax.field(value=150.0, help="Max push force on the torso (N), 0.1-0.3 s long.")
    wind_max_force_n: float = xax.field(value=10.0, help="Max steady per-episode horizontal force on the torso (N).")
    disturbance_curriculum: bool = xax.field(
        value=False, help="Scale pushes and wind by the curriculum level (randomization widths / max widths)."
    )
    assist_stiffness_nm_per_rad: float = xax.field(
        value=0.0, help="Upright assist on the torso (N·m/rad of tilt) that fades with the curriculum; 0: off."
    )
    assist_damping_nms_per_rad: float = xax.field(value=50.0, help="Upright assist damping on roll/pitch rates.")
    assist_fade_out_level: float = xax.field(value=0.5, help="Curriculum level at which the assist reaches 0.")
    episode_length_s: float = xax.field(value=20.0, help="Episodes end (successfully) after this time.")
    min_base_height_m: float = xax.field(value=0.45, help="Fall when the base drops below this height.")

    # Sim-to-real blocks (ksim_entropy). False: the same task built from ksim's plain classes (the bench baseline).
    sim2real: bool = xax.field(value=True, help="Per-episode entropy-aware randomization, latency, noise, bias.")
    randomization_mode: str = xax.field(value="uniform", help="uniform | curriculum | adaptive (ADR).")
    randomization_width: float = xax.field(value=1.0, help="Starting width scale of every randomized range.")
    randomization_max_width: float = xax.field(value=1.5, help="Widest a curriculum may go (width scale).")
    randomization_ramp_updates: int = xax.field(value=1000, help="curriculum mode: updates to reach max width.")
    adr_measure: str = xax.field(value="survival", help="adaptive mode: 'survival' or 'reward:<name>'.")
    adr_thresholds: tuple[float, float] = xax.field(value=(0.5, 0.8), help="adaptive: narrow below, widen above.")
    adr_step: float = xax.field(value=0.05, help="adaptive mode: width change per decision.")
    adr_queue_length: int = xax.field(value=64, help="adaptive mode: samples pooled per decision.")
    adr_boundary_fraction: float = xax.field(value=0.4, help="adaptive mode: fraction of envs pinned to a bound.")
    obs_latency_s: tuple[float, float] = xax.field(value=(0.0, 0.02), help="Sensor delay per episode (s).")
    obs_hold_prob: float = xax.field(value=0.0, help="Per-step probability a sensor repeats its last value.")
    action_latency_s: tuple[float, float] = xax.field(value=(0.004, 0.012), help="Command delay per episode (s).")
    randomization: str = xax.field(
        value="", help="fitted.json from `python -m tasks.fit`: its ranges replace the defaults (sim2real only)."
    )

    # Domain-adversarial training on real logs (ksim_entropy.ppo.domain_adversarial; docs/transfer.md).
    dann_windows: str = xax.field(
        value="", help="real_windows.npz from `python -m tasks.windows`: DANN on the actor's encoder ('': off)."
    )
    dann_lambda: float = xax.field(value=0.1, help="DANN: largest gradient-reversal strength λ (>= 0).")
    dann_lambda_updates: int = xax.field(value=500, help="DANN: PPO updates for λ's ramp (Ganin et al.'s schedule).")
    dann_weight: float = xax.field(value=1.0, help="DANN: scale of the domain loss in the PPO loss.")
    dann_classifier_lr: float = xax.field(value=1e-3, help="DANN: the domain classifier's Adam learning rate.")
    dann_windows_per_update: int = xax.field(value=64, help="DANN: sim and real windows per PPO minibatch.")

    # Discriminator-guided randomization (ksim_entropy.ppo.discriminator; docs/transfer.md).
    c2st_windows: str = xax.field(
        value="", help="real_windows.npz: a C2ST against them moves the randomization widths ('': off; uniform mode)."
    )
    c2st_every: int = xax.field(value=10, help="C2ST guidance: PPO updates between decisions.")
    c2st_band: tuple[float, float] = xax.field(value=(0.6, 0.75), help="C2ST: accuracy band kept as is.")
    c2st_factors: tuple[float, float] = xax.field(value=(0.9, 1.1), help="C2ST: width × (narrow, widen).")
    c2st_max_spread_ratio: float = xax.field(value=2.0, help="C2ST: sim/real feature variance above which to narrow.")
    c2st_parameters: tuple[str, ...] = xax.field(value=(), help="C2ST: randomizers it moves (empty: all).")
    c2st_report: str = xax.field(
        value="", help="C2ST: ksim-bridge gap's report.json; move the randomizers its diagnosis points at."
    )

    # Fine-tuning (ksim_entropy.ppo.finetune; docs/transfer.md): with load_from_ckpt_path, hold the policy near the
    # checkpoint's while it adapts (e.g. to randomization=fitted.json at a lower learning_rate).
    finetune_kl: float = xax.field(
        value=0.0, help="KL(source ‖ policy) penalty to the policy load_from_ckpt_path loaded (nats; 0: off)."
    )
    finetune_kl_window_steps: int = xax.field(value=8, help="Fine-tuning KL: control steps per window.")


PRESETS: dict[str, dict[str, object]] = {
    # CPU: a smoke-sized run that finishes in minutes on 2 cores (~500 env-steps/s after a ~2 min compile).
    "cpu": {
        "num_envs": 16,
        "batch_size": 8,
        "num_passes": 2,
        "rollout_length_frames": 32,
        "hidden_size": 64,
        "depth": 1,
        "iterations": 4,
        "ls_iterations": 20,
        "max_steps": 100,
        "render_length_seconds": 1.0,
        "render_width": 160,
        "render_height": 120,
        "valid_every_n_seconds": None,
        "save_every_n_seconds": 300.0,
    },
    # GPU: the K-Bot recipe's scale (kscalelabs/kbot-joystick: 4096 envs, batch 512, 3 passes).
    "gpu": {
        "num_envs": 4096,
        "batch_size": 512,
        "num_passes": 3,
        "rollout_length_frames": 32,
        "hidden_size": 128,
        "depth": 2,
        "iterations": 8,
        "ls_iterations": 20,
        "max_steps": 2000,
        "render_length_seconds": 5.0,
        "valid_every_n_seconds": 600.0,
        "save_every_n_seconds": 300.0,
    },
}

# Stand: the CPU proof that the recipe learns (zero command, pushes and randomization on, both ramped in by the
# curriculum). Sized for a 2-core CPU; the numbers are chosen by bench/learning.py curves (docs/training.md).
PRESETS["stand"] = {
    **PRESETS["cpu"],
    "num_envs": 64,
    "batch_size": 16,
    "num_passes": 4,
    "max_steps": 100_000,
    "max_train_seconds": 3600.0,
    # kbot-joystick's Newton iterations, not the cpu preset's 4: at 4 the MJX physics is much harder to stand in than
    # converged MuJoCo. The shipped policy's mean action (trained at 4; it stands in the gate) stood 20 s in 9 % of MJX
    # episodes at 4 iterations and 47 % at 8 (level 0, no pushes). Trained at 8 for an hour, the curve's episode
    # length was 1.6-2.7x longer at equal env-steps or updates, at 2x the wall time per env-step; the gated mean
    # action stood alike (bench/train_env_standing.py, bench/learning.py; docs/training.md).
    "iterations": 8,
    "learning_rate": 5e-4,
    "gamma": 0.99,
    "command_zero_prob": 1.0,
    "advantage_normalization": "minibatch",
    "init_std": 0.05,
    "head_init_scale": 0.01,
    # Just above the initial exploration (σ = 0.05 rad: −1.58 nats/dim). Measured: a target annealed to −2.2 over 2000
    # updates left the policy behind (α on its 1e-4 floor from update ~220), a fixed α = 0.004 let the entropy climb
    # (−1.58 → −1.44 in 270 updates), and −1.6 held from the start put α on its floor from update 244 on: the
    # policy's own entropy drifts down, so a target below it needs α → 0. At −1.5 α has a bonus to hold against that
    # drift: over an hour α stayed within [1e-4, 0.01] (39 updates in a row at most on the floor), entropy within
    # 0.16 nats/dim of the target (mean +0.004), and the mean action stood 20 s from minute 20 (docs/training.md).
    # When the entropy drifts up instead, a positive α cannot pull it down: annealed from the first update's entropy,
    # PPO itself raised it past the target and α sat 163 updates on its floor. So α is signed here (a lower bound
    # below 0 makes α < 0 an entropy penalty; PI gains 10/0.6 on asinh(α/1e-3), a 0.03 nats/dim dead band). One hour,
    # seeds 0 and 1: entropy within 0.084 and 0.108 nats/dim of the target after update 20 (the 0.108 one logged
    # update; mean +0.008, +0.003), α never on a bound and below 0 once (−1e-4, seed 1), the curve's first 10 s at
    # minutes 37.0 and 39.3, the mean action standing 20 s in the gate from minute 20.5
    # (bench/results/learning_stand_alpha_signed_cpu.json; docs/training.md).
    "target_entropy": -1.5,
    "target_entropy_anneal_updates": 0,
    "alpha_bounds": (-0.01, 0.1),
    "temperature_pi_gains": (10.0, 0.6),
    "temperature_tolerance": 0.03,
    "base_height_reward": 0.5,
    "tilt_reward": 0.5,
    "pose_penalty": 0.1,
    "disturbance_curriculum": True,
    "randomization_mode": "curriculum",
    "randomization_width": 0.0,
    "randomization_max_width": 1.0,
    # Pushes ≤ 40 N for 0.1-0.3 s (≤ 0.33 m/s, all but 5 % within the ankles' capture speed of ~0.25 m/s), not the
    # walking task's 150 N, which no policy that keeps its feet still survives at full strength. Seed 0, one hour,
    # against 150 N: the curve passed 10 s at minute 41 (150 N: never; 5.9 s over the last 5 minutes) and the mean
    # action stood 20 s in the gate from minute 31 (150 N: 21); under a 0.5 m/s push every 2 s both fall after 3-4 s
    # (bench/results/learning_stand_push40_r1500_cpu.json; docs/training.md). With an 800-update ramp instead of
    # 1500 the same pushes left the curve at 3-4 s (learning_stand_push40_cpu.json).
    "push_max_force_n": 40.0,
    "randomization_ramp_updates": 1500,
}

# What a preset fixes: an override that changes one of these contradicts the preset (None: any override does).
PRESET_LOCKS: dict[str, dict[str, object]] = {
    "stand": {
        "command_zero_prob": 1.0,
        "xvel_range": None,
        "yvel_range": None,
        "yawrate_range": None,
        "command_switch_prob": None,
    },
}

# Solver: K-Bot foot contacts blow up with few line-search iterations (MuJoCo and MJX, dt 0.004, Newton,
# tolerance 1e-10): 4 line-search iterations diverged within 0.1-1.3 s under random PD targets, 20 did not
# (tests/test_physics_stability.py). Newton iterations stay at the recipe's values.
COMMON_DEFAULTS: dict[str, object] = {
    "dt": 0.004,  # 250 Hz physics, 50 Hz control: the K-Bot recipe (kbot-joystick)
    "ctrl_dt": 0.02,
    "entropy_coef": 0.004,  # kbot-joystick's value
    "gamma": 0.97,  # MuJoCo Playground locomotion discount
    "lam": 0.95,
    "log_full_trajectory_every_n_seconds": None,
}


# Sensor noise, uniform half-widths in physical units: MuJoCo Playground's humanoids (joint position 0.03 rad, gyro
# 0.2 rad/s, gravity 0.05 g) and kbot-joystick's joint velocity (15 deg/s). Per-episode biases (sim2real only) are
# our choice: 0.02 rad encoder offset, 0.03 g accelerometer tilt, 0.02 rad/s gyro bias.
SENSOR_NOISE: dict[str, tuple[float, float]] = {  # name: (uniform half-width, per-episode bias half-width)
    "joint_position": (0.03, 0.02),
    "joint_velocity": (0.26, 0.0),
    "projected_gravity": (0.05 * GRAVITY_MPS2, 0.03 * GRAVITY_MPS2),
    "imu_gyro": (0.2, 0.02),
}


# Physics ranges (low, high) where no fitted.json is given; the fit's ranges replace them (`kbot.fitted_ranges`).
DEFAULT_PHYSICS_RANGES: dict[str, tuple[float, float]] = {
    "mass_scale": (0.9, 1.1),  # Playground Go1/G1/BH
    "frictionloss_scale": (0.5, 2.0),  # ksim, Playground G1
    "joint_damping": (0.0, 1.0),  # N·m·s/rad added; the K-Bot model's damping is 0
    "armature_scale": (0.95, 1.05),  # ksim
    "kp_scale": (0.9, 1.1),  # Playground T1
    "kd_scale": (0.9, 1.1),
}


class KBotWalkingTask(
    DiscriminatorGuidedMixin[WalkConfig],
    DomainAdversarialMixin[WalkConfig],
    SourceKLMixin[WalkConfig],
    EntropyBridgedKBotTask[WalkConfig],
    RecurrentActorCriticMixin[WalkConfig],
    ksim.PPOTask[WalkConfig],
):
    """K-Bot velocity tracking on ksim 0.2.10's PPO with a recurrent actor-critic.

    With `sim2real=True` (default) the physics is redrawn every episode from an entropy-aware `DomainRandomization`
    (widths scheduled by `randomization_mode`), the robot's PD servos run inside MuJoCo so their gains and torque
    limits can be randomized per joint, commands reach the servos late (`action_latency_s`) and the policy's sensors
    are late, noisy and biased (`obs_latency_s`, `SENSOR_NOISE`). With `sim2real=False` the same task uses ksim's
    plain classes instead (per-environment randomization, in-step PD torques, uniform noise, velocity pushes).
    """

    # ---------------------------------------------------------------- robot
    @functools.cached_property
    def robot_files(self) -> RobotFiles:
        return resolve_robot_files(self.config.robot_source)

    def get_mujoco_model(self) -> mujoco.MjModel:
        mj_model = load_robot_model(self.robot_files, scene=self.config.scene)
        if self.config.sim2real:  # PD servos in MuJoCo: kp, kd and torque limits become randomizable model fields
            mj_model = use_native_pd(mj_model, load_metadata(self.robot_files, mj_model))
        return mj_model

    def get_mujoco_model_metadata(self, mj_model: mujoco.MjModel) -> ksim.Metadata:
        return load_metadata(self.robot_files, mj_model)

    def joint_names(self, physics_model: ksim.PhysicsModel) -> list[str]:
        return ksim.get_joint_names_in_order(physics_model)[1:]

    def nominal_pose(self, physics_model: ksim.PhysicsModel) -> list[float]:
        return [KBOT_NOMINAL_POSE_RAD.get(name, 0.0) for name in self.joint_names(physics_model)]

    def fitted_ranges(self, physics_model: ksim.PhysicsModel) -> FittedRanges:
        """The ranges of `config.randomization` (fitted.json), or none (all defaults) when it is unset."""
        path = self.config.randomization
        if not path:
            return FittedRanges()
        if not self.config.sim2real:
            raise ValueError("randomization=fitted.json needs sim2real=True (ksim's plain randomizers have no ranges)")
        return load_fitted_ranges(Path(path).expanduser(), self.joint_names(physics_model))

    # ---------------------------------------------------------------- environment
    def get_actuators(self, physics_model: ksim.PhysicsModel, metadata: ksim.Metadata | None = None) -> ksim.Actuators:
        cfg = self.config
        if cfg.sim2real:
            lo, hi = self.fitted_ranges(physics_model).action_latency_s or cfg.action_latency_s
            return DelayedActuators.create(NativePDActuators(), latency_range_s=(lo, hi), dt_s=cfg.dt)
        if metadata is None:
            raise ValueError("K-Bot actuators need joint metadata (kp, kd, soft torque limits)")
        return ksim.PositionActuators(physics_model=physics_model, metadata=metadata)

    def get_domain_randomization(self, physics_model: ksim.PhysicsModel) -> DomainRandomization:
        """The K-Bot's randomized physics, applied in this order (sources in ksim_entropy.randomization)."""
        w = {"width": self.config.randomization_width, "max_width": self.config.randomization_max_width}
        feet = [g for body in KBOT_FOOT_BODIES for g in KBOT_FOOT_COLLISION_GEOMS[body]]
        fitted = self.fitted_ranges(physics_model)
        r = {k: {"low": lo, "high": hi} for k, (lo, hi) in {**DEFAULT_PHYSICS_RANGES, **fitted.physics}.items()}
        offset_lo, offset_hi = fitted.zero_offset_rad or (-0.03, 0.03)  # Playground qpos0 is ±0.05
        friction_lo, friction_hi = fitted.foot_friction or (0.4, 1.0)  # Playground's floor
        return DomainRandomization(
            parameters=[
                BodyMassScale.create(physics_model, **r["mass_scale"], **w),
                BodyMassOffset.create(physics_model, body_names=["torso"], low=-1.0, high=1.0, **w),  # Playground
                CenterOfMassOffset.create(physics_model, body_names=["torso"], max_offset_m=0.03, **w),
                JointFrictionLoss.create(physics_model, **r["frictionloss_scale"], **w),
                JointDamping.create(physics_model, **r["joint_damping"], mode="add", **w),
                JointArmature.create(physics_model, **r["armature_scale"], **w),
                GeomFriction.create(physics_model, geom_names=feet, low=friction_lo, high=friction_hi, **w),
                ImuMisalignment.create(physics_model, **w),  # ksim's 2 deg
                ActuatorKpScale.create(physics_model, **r["kp_scale"], **w),
                ActuatorKdScale.create(physics_model, **r["kd_scale"], **w),
                TorqueLimitScale.create(physics_model, low=0.8, high=1.0, **w),  # weaker, never stronger
                JointZeroOffset.create(physics_model, low=offset_lo, high=offset_hi, **w),
            ]
        )

    def get_randomization_curriculum(
        self, physics_model: ksim.PhysicsModel, randomization: DomainRandomization
    ) -> RandomizationCurriculum:
        cfg = self.config
        low, high = cfg.adr_thresholds
        return RandomizationCurriculum(
            randomization=randomization,
            mode=cfg.randomization_mode,
            ramp_updates=cfg.randomization_ramp_updates,
            measure=cfg.adr_measure,
            threshold_low=low,
            threshold_high=high,
            step=cfg.adr_step,
            boundary_fraction=cfg.adr_boundary_fraction,
            queue_length=cfg.adr_queue_length,
        )

    def get_physics_randomizers(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.PhysicsRandomizer]:
        if self.config.sim2real:
            return super().get_physics_randomizers(physics_model)
        # ksim's own (Playground / ksim defaults): frictionloss ×U(0.5, 2), armature ×U(0.95, 1.05), floor friction
        # =U(0.4, 1) (a no-op on the K-Bot: its feet decide the contact friction), link masses ×U(0.98, 1.02).
        return {
            "static_friction": ksim.StaticFrictionRandomizer(),
            "armature": ksim.ArmatureRandomizer(),
            "floor_friction": ksim.FloorFrictionRandomizer.from_geom_name(physics_model, "floor"),
            "all_bodies_mass": ksim.AllBodiesMassMultiplicationRandomizer(),
        }

    def get_events(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Event]:
        cfg = self.config
        if not cfg.sim2real:
            return {"push": ksim.LinearPushEvent(linvel=cfg.push_velocity_mps, interval_range=cfg.push_interval_s)}
        events: dict[str, ksim.Event] = {
            "push": ForcePushEvent.create(
                physics_model,
                body_name="torso",
                max_force_n=cfg.push_max_force_n,
                interval_s=cfg.push_interval_s,
                duration_s=(0.1, 0.3),
                scale_with_curriculum=cfg.disturbance_curriculum,
            ),
            "wind": WindEvent.create(
                physics_model,
                body_name="torso",
                max_force_n=cfg.wind_max_force_n,
                scale_with_curriculum=cfg.disturbance_curriculum,
            ),
        }
        if cfg.assist_stiffness_nm_per_rad > 0.0:
            events["assist"] = UprightAssistEvent.create(
                physics_model,
                body_name="torso",
                stiffness_nm_per_rad=cfg.assist_stiffness_nm_per_rad,
                damping_nms_per_rad=cfg.assist_damping_nms_per_rad,
                fade_out_level=cfg.assist_fade_out_level,
            )
        return events

    def get_resets(self, physics_model: ksim.PhysicsModel) -> list[ksim.Reset]:
        zeros = dict(zip(self.joint_names(physics_model), self.nominal_pose(physics_model), strict=True))
        return [
            ksim.RandomJointPositionReset.create(physics_model, zeros=zeros, scale=0.1),
            ksim.RandomJointVelocityReset(scale=0.5),
            ksim.RandomHeadingReset(),
        ]

    def get_observations(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Observation]:
        # The policy reads `noisy_*` (what the robot's sensors report); the critic reads the clean values.
        sensors: dict[str, ksim.Observation] = {
            "joint_position": ksim.JointPositionObservation(),
            "joint_velocity": ksim.JointVelocityObservation(),
            "projected_gravity": ksim.ProjectedGravityObservation.create(
                physics_model=physics_model, framequat_name="imu_site_quat"
            ),
            "imu_gyro": ksim.SensorObservation.create(physics_model=physics_model, sensor_name="imu_gyro"),
        }
        observations: dict[str, ksim.Observation] = {}
        cfg = self.config
        fitted = self.fitted_ranges(physics_model)
        for name, obs in sensors.items():
            noise, bias = SENSOR_NOISE[name]
            fitted_noise, fitted_bias = fitted.sensor_noise.get(name, (None, None))
            noise = noise if fitted_noise is None else fitted_noise
            bias = bias if fitted_bias is None else fitted_bias
            if cfg.sim2real:
                observations[name] = obs
                observations[f"noisy_{name}"] = DelayedObservation.create(
                    obs,
                    ctrl_dt_s=cfg.ctrl_dt,
                    latency_range_s=fitted.obs_latency_s or tuple(cfg.obs_latency_s),
                    hold_prob=cfg.obs_hold_prob,
                    sensor_noise=SensorNoise(uniform_mag=noise, bias_mag=bias),
                )
            else:  # ksim adds `noisy_<name>` itself
                observations[name] = attrs.evolve(obs, noise=ksim.AdditiveUniformNoise(mag=noise))
        return {
            **observations,
            "base_position": ksim.BasePositionObservation(),
            "base_linear_velocity": ksim.BaseLinearVelocityObservation(in_robot_frame=True),
            "base_angular_velocity": ksim.BaseAngularVelocityObservation(in_robot_frame=True),
            "actuator_force": ksim.ActuatorForceObservation(),
            "feet_contact": ksim.FeetContactObservation.create(
                physics_model=physics_model,
                foot_left_geom_names=list(KBOT_FOOT_COLLISION_GEOMS[KBOT_FOOT_BODIES[0]]),
                foot_right_geom_names=list(KBOT_FOOT_COLLISION_GEOMS[KBOT_FOOT_BODIES[1]]),
                floor_geom_names=["floor"],
            ),
        }

    def get_commands(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Command]:
        cfg = self.config
        return {
            "velocity": ksim.FloatVectorCommand(
                ranges=(tuple(cfg.xvel_range), tuple(cfg.yvel_range), tuple(cfg.yawrate_range)),
                zero_prob=cfg.command_zero_prob,
                switch_prob=cfg.command_switch_prob,
            ),
        }

    def get_rewards(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Reward]:
        cfg = self.config
        rewards: dict[str, ksim.Reward] = {
            "velocity_tracking": BaseVelocityTrackingReward(
                command_name="velocity", sigma_mps=cfg.velocity_sigma_mps, scale=1.0
            ),
            "yawrate_tracking": YawRateTrackingReward(
                command_name="velocity", sigma_radps=cfg.yawrate_sigma_radps, scale=0.5
            ),
            "stay_alive": ksim.StayAliveReward(scale=1.0),
            "upright": ksim.UprightReward(scale=0.5),
            "feet_air_time": ksim.FeetAirTimeReward(
                ctrl_dt=cfg.ctrl_dt, period=0.35, contact_obs="feet_contact", scale=cfg.feet_air_time_reward
            ),
            # Sim2real regularisers (ksim_entropy.rewards; magnitudes in rad², (τ/τ_max)², W, m/s², (m/s)²).
            "action_rate": ActionRatePenalty(scale=-cfg.action_rate_penalty),
            "action_smoothness": ActionSmoothnessPenalty(scale=-cfg.action_smoothness_penalty),
            "torque": NormalizedTorquePenalty.create(physics_model, scale=-0.05),
            "energy": EnergyPenalty(scale=-1e-4),
            "base_acceleration": BaseAccelerationPenalty(ctrl_dt_s=cfg.ctrl_dt, scale=-1e-3),
            "foot_slip": FootSlipPenalty.create(
                physics_model,
                foot_body_names=KBOT_FOOT_BODIES,
                contact_obs="feet_contact",
                ctrl_dt_s=cfg.ctrl_dt,
                scale=-0.1,
            ),
            "joint_limits": JointLimitProximityPenalty.create(physics_model, margin_fraction=0.05, scale=-0.1),
        }
        # Posture shaping (kbot-joystick weighs base height, roll/pitch and arm pose): off unless a scale is set.
        if cfg.base_height_reward:
            rewards["base_height"] = BaseHeightTrackingReward(
                height_m=KBOT_STANDING_BASE_HEIGHT_M, sigma_m=cfg.base_height_sigma_m, scale=cfg.base_height_reward
            )
        if cfg.tilt_reward:
            rewards["tilt"] = BaseTiltReward(sigma_rad=cfg.tilt_sigma_rad, scale=cfg.tilt_reward)
        if cfg.pose_penalty:
            nominal = self.nominal_pose(physics_model)
            rewards["pose"] = NominalPosePenalty(
                nominal_rad=tuple(nominal), weights=(1.0,) * len(nominal), scale=-cfg.pose_penalty
            )
        return rewards

    def get_terminations(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Termination]:
        return {
            "fell": ksim.BadZTermination(min_z=self.config.min_base_height_m, max_z=2.0),
            "tilted": ksim.NotUprightTermination(max_radians=1.0),
            "episode_length": ksim.EpisodeLengthTermination(max_length_sec=self.config.episode_length_s),
            "unstable_physics": UnstablePhysicsTermination(),
        }

    def get_curriculum(self, physics_model: ksim.PhysicsModel) -> ksim.Curriculum:
        if self.config.sim2real:
            return super().get_curriculum(physics_model)
        return ksim.ConstantCurriculum(level=1.0)

    # ---------------------------------------------------------------- model
    def get_optimizer(self) -> optax.GradientTransformation:
        return optax.chain(
            optax.zero_nans(),
            optax.clip_by_global_norm(self.config.grad_clip),
            optax.adam(self.config.learning_rate),
        )

    num_actor_inputs = 2 * 20 + 3 + 3 + len(COMMAND_NAMES)
    num_critic_inputs = num_actor_inputs + 3 + 3 + 1 + 20 + 2

    def get_model(self, params: ksim.InitParams) -> RecurrentActorCritic:
        nominal = self.nominal_pose(params.physics_model)
        if len(nominal) != 20:
            raise RobotLoadError(f"The walking task expects the 20-joint K-Bot, got {len(nominal)} joints")
        return RecurrentActorCritic(
            params.key,
            num_actor_inputs=self.num_actor_inputs,
            num_critic_inputs=self.num_critic_inputs,
            nominal_pose=nominal,
            hidden_size=self.config.hidden_size,
            depth=self.config.depth,
            min_std=self.config.min_std,
            max_std=self.config.max_std,
            var_scale=self.config.var_scale,
            init_std=self.config.init_std,
            head_init_scale=self.config.head_init_scale,
            body=self.config.policy_body,
        )

    @staticmethod
    def actor_inputs(
        nominal_pose: Array,
        joint_angles: Array,
        joint_angular_velocities: Array,
        projected_gravity: Array,
        gyroscope: Array,
        command: Array,
    ) -> Array:
        """The actor's input vector from the quantities a K-Bot reports (rad, rad/s, m/s², rad/s, command)."""
        return jnp.concatenate(
            [
                joint_angles - nominal_pose,
                joint_angular_velocities * JOINT_VELOCITY_SCALE,
                projected_gravity / GRAVITY_MPS2,
                gyroscope,
                command,
            ],
            axis=-1,
        )

    def actor_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        return self.actor_inputs(
            jnp.asarray(model.actor.nominal_pose),
            obs["noisy_joint_position"],
            obs["noisy_joint_velocity"],
            obs["noisy_projected_gravity"],
            obs["noisy_imu_gyro"],
            cmd["velocity"],
        )

    def critic_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        clean = self.actor_inputs(
            jnp.asarray(model.actor.nominal_pose),
            obs["joint_position"],
            obs["joint_velocity"],
            obs["projected_gravity"],
            obs["imu_gyro"],
            cmd["velocity"],
        )
        privileged = [
            obs["base_linear_velocity"],
            obs["base_angular_velocity"],
            obs["base_position"][..., 2:3],
            obs["actuator_force"] / 100.0,
            obs["feet_contact"].any(axis=-2).astype(jnp.float32),  # (capsule, foot) -> per-foot contact
        ]
        return jnp.concatenate([clean, *privileged], axis=-1)

    # ---------------------------------------------------------------- export
    def kinfer_policy(self, model: RecurrentActorCritic) -> KinferPolicy:
        """The deployable actor: deterministic (mean) action, LSTM state in the kinfer carry."""
        actor = model.actor
        carry_shape = actor.body.carry_shape
        carry_size = int(carry_shape[0] * carry_shape[1] * carry_shape[2])
        nominal = jnp.asarray(actor.nominal_pose, dtype=jnp.float32)

        def init_fn() -> Array:
            return jnp.zeros((carry_size,), dtype=jnp.float32)

        def step_fn(
            joint_angles: Array,
            joint_angular_velocities: Array,
            projected_gravity: Array,
            gyroscope: Array,
            command: Array,
            carry: Array,
        ) -> tuple[Array, Array]:
            obs = self.actor_inputs(
                nominal, joint_angles, joint_angular_velocities, projected_gravity, gyroscope, command
            )
            mean, _, next_carry = actor.mean_and_std(obs, carry.reshape(carry_shape))
            return mean, next_carry.reshape(-1)

        return KinferPolicy(
            init_fn=init_fn,
            step_fn=step_fn,
            joint_names=tuple(self.joint_names_from_model()),
            command_names=COMMAND_NAMES,
            carry_size=carry_size,
        )

    # ---------------------------------------------------------------- domain-adversarial training (DANN)
    def get_domain_adversarial(self) -> DomainAdversarial | None:
        cfg = self.config
        if not cfg.dann_windows:
            return None
        windows, _ = read_windows(cfg.dann_windows, task_id=cfg.task_id, num_inputs=self.num_actor_inputs)
        self._check_window_fits(windows.shape[1], "make shorter ones (`python -m tasks.windows --window-steps`)")
        return DomainAdversarial(
            real_windows=windows,
            schedule=ReversalSchedule(max_lambda=cfg.dann_lambda, updates=cfg.dann_lambda_updates),
            weight=cfg.dann_weight,
            classifier_learning_rate=cfg.dann_classifier_lr,
            windows_per_update=cfg.dann_windows_per_update,
        )

    def get_discriminator_guidance(self) -> DiscriminatorGuidance | None:
        cfg = self.config
        if not cfg.c2st_windows:
            return None
        if cfg.randomization_mode != "uniform" or not cfg.sim2real or cfg.entropy_target_path is not None:
            raise ValueError(
                "c2st_windows moves the randomization widths itself: it needs sim2real=true, randomization_mode="
                f"uniform and no entropy_target_path (got sim2real={cfg.sim2real}, randomization_mode="
                f"{cfg.randomization_mode!r}, entropy_target_path={cfg.entropy_target_path!r})"
            )
        windows, _ = read_windows(cfg.c2st_windows, task_id=cfg.task_id, num_inputs=self.num_actor_inputs)
        self._check_window_fits(windows.shape[1], "make shorter ones (`python -m tasks.windows --window-steps`)")
        rule = DiscriminatorRule(
            every_updates=cfg.c2st_every,
            band=tuple(cfg.c2st_band),
            factors=tuple(cfg.c2st_factors),
            max_spread_ratio=cfg.c2st_max_spread_ratio,
        )
        parameters = tuple(cfg.c2st_parameters)
        if cfg.c2st_report:
            if parameters:
                raise ValueError("give c2st_parameters or c2st_report (the diagnosis's pointer), not both")
            parameters = parameters_from_report(cfg.c2st_report)
        return DiscriminatorGuidance(real_windows=windows, rule=rule, parameters=parameters)

    def _check_window_fits(self, steps: int, remedy: str) -> None:
        """Windows of `steps` control steps must fit the rollouts and the validation rollout (ksim's first update).

        ksim's first update also trains on the validation rollout (`render_length_seconds`).
        """
        frames = min(self.rollout_length_frames, self.render_length_frames)
        if steps > frames:
            raise WindowError(f"windows of {steps} steps do not fit rollouts of {frames} frames; {remedy}")

    def policy_input_sequences(self, model: RecurrentActorCritic, trajectories: ksim.Trajectory) -> Array:
        return self.actor_observation(model, trajectories.obs, trajectories.command)

    def domain_features(self, model: RecurrentActorCritic, windows: Array) -> Array:
        return self.actor_over_windows(model, windows)[0]

    def domain_feature_size(self) -> int:
        return self.config.hidden_size

    def get_source_kl(self) -> SourceKL | None:
        cfg = self.config
        if cfg.finetune_kl == 0.0:
            return None
        if cfg.load_from_ckpt_path is None:
            raise ValueError("finetune_kl holds the policy near the one it starts from: it needs load_from_ckpt_path")
        self._check_window_fits(cfg.finetune_kl_window_steps, "lower finetune_kl_window_steps")
        return SourceKL(coef=cfg.finetune_kl, window_steps=cfg.finetune_kl_window_steps)

    def policy_over_windows(self, model: RecurrentActorCritic, windows: Array) -> tuple[Array, Array]:
        _, mean, std = self.actor_over_windows(model, windows)
        return mean, std

    # What the robot's runtime logs (kinfer NDJSON groups) correspond to in this task's observations.
    LOG_OBSERVATIONS: ClassVar[dict[str, str]] = {
        "joint_angles": "noisy_joint_position",
        "joint_vels": "noisy_joint_velocity",
        "projected_g": "noisy_projected_gravity",
        "gyro": "noisy_imu_gyro",
    }

    def rollout_log(self, model: RecurrentActorCritic, *, seconds: float, seed: int = 0, env_index: int = 0) -> StepLog:
        """Roll the policy's mean action out in this task's MJX environment; the log a robot would have written."""
        from ksim_entropy.sim2real.rollout_logs import ksim_rollout, trajectory_to_step_log  # tooling, on demand

        num_steps = max(1, round(seconds / self.config.ctrl_dt))
        trajectory = ksim_rollout(self, model, num_steps=num_steps, seed=seed, argmax=True)
        return trajectory_to_step_log(
            trajectory,
            env_index=env_index,
            ctrl_dt_s=self.config.ctrl_dt,
            observation_keys=self.LOG_OBSERVATIONS,
            command_key="velocity",
            joint_names=tuple(self.joint_names_from_model()),
            source=f"ksim rollout of {self.config.task_id}",
        )

    def joint_names_from_model(self) -> list[str]:
        return self.joint_names(load_robot_model(self.robot_files, scene=None))

    def load_policy_model(self, ckpt_path: str | Path) -> RecurrentActorCritic:
        """Weights of a checkpoint of this task, after checking it is one (clear error otherwise)."""
        self.check_checkpoint(ckpt_path)
        mj_model = self.get_mujoco_model()
        params = ksim.InitParams(key=jax.random.PRNGKey(0), physics_model=mj_model)
        try:
            return self.load_ckpt(Path(ckpt_path), params, part="model")[0]
        except Exception as err:  # equinox raises on shape/dtype mismatches
            raise CheckpointError(f"Cannot load weights from {ckpt_path}: {err}") from err

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path) -> "KBotWalkingTask":
        """The task as configured when `ckpt_path` was saved; `CheckpointError` if it is not this task's checkpoint."""
        info = inspect_checkpoint(ckpt_path)
        found = info.config.get("task_id")
        if found != TASK_ID:
            raise CheckpointError(
                f"{ckpt_path} was written by task '{found or 'unknown (not a ksim-entropy task)'}', not '{TASK_ID}'"
            )
        try:
            config = cls.load_config(ckpt_path)
        except OmegaConfBaseException as err:
            raise CheckpointError(f"{ckpt_path} has a config this version cannot read: {err}") from err
        return cls(config)

    def check_checkpoint(self, ckpt_path: str | Path) -> None:
        info = inspect_checkpoint(ckpt_path)
        check_compatible(
            info,
            task_id=TASK_ID,
            current_config={k: getattr(self.config, k) for k in ARCHITECTURE_KEYS},
            architecture_keys=ARCHITECTURE_KEYS,
        )

    # ---------------------------------------------------------------- lifecycle
    def run(self) -> None:
        if self.config.load_from_ckpt_path is not None:
            self.check_checkpoint(self.config.load_from_ckpt_path)
        super().run()

    def run_training(self) -> None:
        super().run_training()  # raises if the loop stopped early (TrainingStateMixin)
        ckpt = self.get_ckpt_path()
        if self.config.export_kinfer and xax.is_master() and ckpt.exists():  # process 0 of a multi-host run
            out = self.exp_dir / "policy.kinfer"
            export_kinfer(self.kinfer_policy(self.load_policy_model(ckpt)), out, overwrite=True)
            logger.info("Exported %s", out)
            print(f"Exported policy: {out}", flush=True)
            if self.config.sim2sim_gate:  # reported, not enforced: a failed gate still leaves the policy to study
                # tooling, loaded only when asked for: training never needs it
                from ksim_entropy.cli.sim2sim import gate
                from ksim_entropy.sim2real.sim2sim import GateOptions

                options = GateOptions(episodes=self.config.sim2sim_episodes, seconds=self.config.sim2sim_seconds)
                gate(out, self.robot_files, self.exp_dir, options, overwrite=True)


# -------------------------------------------------------------------- presets
def default_device_preset() -> str:
    """`gpu` when JAX's default backend is a GPU, else `cpu`."""
    return "gpu" if jax.default_backend() == "gpu" else "cpu"


def preset_config(preset: str, /, **values: object) -> dict[str, object]:
    """COMMON_DEFAULTS, then PRESETS[preset], then `values`: the ones that are WalkConfig fields."""
    known = {f.name for f in fields(WalkConfig)}
    return {k: v for k, v in {**COMMON_DEFAULTS, **PRESETS[preset], **values}.items() if k in known}
