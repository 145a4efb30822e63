"""A second ksim task, not the K-Bot: a small quadruped written here, adopting ksim-entropy's pieces in a few lines.

    python examples/quadruped.py max_steps=3 exp_dir=runs/quadruped   # any ksim / xax config key=value

What it adopts (each a few lines below, marked `# ksim-entropy`):
- `EntropyBridgedTask`: per-episode physics randomization with traced widths (`get_domain_randomization`), PPO
  with an auto-tuned temperature α (`get_action_entropy_range` refuses an unreachable target before compiling),
  their metrics on the console and in TensorBoard, and both states in checkpoints (resume with
  `load_from_ckpt_path=.../ckpt.bin`);
- `DelayedObservation` + `SensorNoise`: the policy's joint sensors are late, noisy and biased, in seconds and
  physical units;
- `DelayedActuators` around MuJoCo's own position servos (`NativePDActuators`);
- `RecurrentActorCritic` (here with its MLP body) through `RecurrentActorCriticMixin`: the task only says what the
  actor and the critic read (`actor_observation`, `critic_observation`); the entropy is in nats per action dim.

The robot: a 0.2 × 0.12 m box torso (2 kg) on four two-joint legs (hip pitch, knee; 16 cm links), MuJoCo position
servos (kp 20 N·m/rad, 4 N·m limit), an IMU site. Everything else is ksim's own: rewards, resets, terminations.
"""

# isort: off
import ksim_entropy  # noqa: F401  (first: its JAX shims apply before ksim loads)
from ksim_entropy.runtime import configure_headless, quiet_start_up_logs

configure_headless()
quiet_start_up_logs()  # an entry point sets the process defaults; importing the library changes none
# isort: on

import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import ksim  # noqa: E402
import mujoco  # noqa: E402
import optax  # noqa: E402
import xax  # noqa: E402
from jaxtyping import Array, PyTree  # noqa: E402

from ksim_entropy.actuation import DelayedActuators, NativePDActuators  # noqa: E402
from ksim_entropy.constants import GRAVITY_MPS2  # noqa: E402
from ksim_entropy.observation import DelayedObservation, SensorNoise  # noqa: E402
from ksim_entropy.policy import RecurrentActorCritic  # noqa: E402
from ksim_entropy.ppo.mixins import EntropyBridgedConfig, EntropyBridgedTask  # noqa: E402
from ksim_entropy.ppo.recurrent import RecurrentActorCriticMixin  # noqa: E402
from ksim_entropy.ppo.temperature import gaussian_entropy_range  # noqa: E402
from ksim_entropy.randomization import BodyMassScale, DomainRandomization, JointFrictionLoss  # noqa: E402
from ksim_entropy.rewards import BaseVelocityTrackingReward  # noqa: E402

LEGS = {"fl": (0.1, 0.07), "fr": (0.1, -0.07), "hl": (-0.1, 0.07), "hr": (-0.1, -0.07)}  # hip positions (m)
NOMINAL_POSE_RAD = {"hip": 0.6, "knee": -1.2}


def _leg(name: str, x: float, y: float) -> str:
    return f"""
      <body name="{name}_thigh" pos="{x} {y} 0">
        <joint name="{name}_hip" axis="0 1 0" range="-1.5 1.5" damping="0.1" frictionloss="0.02"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.16" size="0.015" mass="0.15"/>
        <body name="{name}_shin" pos="0 0 -0.16">
          <joint name="{name}_knee" axis="0 1 0" range="-2.5 0" damping="0.1" frictionloss="0.02"/>
          <geom type="capsule" fromto="0 0 0 0 0 -0.16" size="0.012" mass="0.1"/>
          <geom name="{name}_foot" type="sphere" pos="0 0 -0.16" size="0.02" mass="0.02" friction="1.0"/>
        </body>
      </body>"""


def robot_xml(on_torso: str = "", in_world: str = "") -> str:
    """The quadruped's MJCF (meters, kilograms, radians); `on_torso` and `in_world` are MJCF elements added there."""
    legs = "".join(_leg(name, x, y) for name, (x, y) in LEGS.items())
    servos = "".join(
        f'<position name="{name}_{joint}_ctrl" joint="{name}_{joint}" kp="20" kv="0.5" forcerange="-4 4" '
        f'ctrlrange="-2.5 2.5"/>'
        for name in LEGS
        for joint in ("hip", "knee")
    )
    return f"""
<mujoco model="quadruped">
  <compiler angle="radian"/>
  <option timestep="0.005"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1" friction="1.0"/>
    <body name="torso" pos="0 0 0.3">
      <freejoint name="root"/>
      <geom type="box" size="0.1 0.06 0.025" mass="2.0"/>
      <site name="imu" pos="0 0 0"/>{on_torso}{legs}
    </body>{in_world}
  </worldbody>
  <actuator>{servos}</actuator>
  <sensor>
    <framequat name="imu_quat" objtype="site" objname="imu"/>
    <gyro name="imu_gyro" site="imu"/>
  </sensor>
</mujoco>"""


@dataclass
class QuadrupedConfig(EntropyBridgedConfig):
    """ksim's PPO config, ksim-entropy's switches (`EntropyBridgedConfig`) and this task's few fields."""

    hidden_size: int = xax.field(value=64, help="MLP width")
    depth: int = xax.field(value=2, help="MLP layers")
    learning_rate: float = xax.field(value=3e-4, help="Adam step")
    obs_latency_s: tuple[float, float] = xax.field(value=(0.0, 0.02), help="sensor latency range (s)")
    action_latency_s: tuple[float, float] = xax.field(value=(0.0, 0.01), help="command latency range (s)")
    min_std: float = xax.field(value=0.01, help="action std floor (rad)")
    max_std: float = xax.field(value=1.0, help="action std ceiling (rad)")
    var_scale: float = xax.field(value=0.5, help="action std scale")


class QuadrupedTask(
    EntropyBridgedTask[QuadrupedConfig], RecurrentActorCriticMixin[QuadrupedConfig], ksim.PPOTask[QuadrupedConfig]
):
    """Walk forward at a commanded 0-0.3 m/s under randomized physics, late and noisy sensors and late commands."""

    def get_mujoco_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_string(robot_xml())

    def joint_names(self, physics_model: ksim.PhysicsModel) -> list[str]:
        return ksim.get_joint_names_in_order(physics_model)[1:]  # without the free joint

    def nominal_pose(self, physics_model: ksim.PhysicsModel) -> list[float]:
        return [NOMINAL_POSE_RAD[name.split("_")[1]] for name in self.joint_names(physics_model)]

    def get_actuators(self, physics_model: ksim.PhysicsModel, metadata: ksim.Metadata | None = None) -> ksim.Actuators:
        # ksim-entropy: commands reach MuJoCo's position servos 0-10 ms late, redrawn every episode
        return DelayedActuators.create(
            NativePDActuators(), latency_range_s=self.config.action_latency_s, dt_s=self.config.dt
        )

    def get_domain_randomization(self, physics_model: ksim.PhysicsModel) -> DomainRandomization:
        # ksim-entropy: redrawn at every episode reset; widths live in the curriculum state
        return DomainRandomization(
            parameters=[
                BodyMassScale.create(physics_model, low=0.85, high=1.15),
                JointFrictionLoss.create(physics_model, low=0.5, high=2.0),
            ]
        )

    def get_action_entropy_range(self) -> tuple[float, float]:
        # ksim-entropy: the entropy per action dim the std bounds allow, so an unreachable target is refused at once
        cfg = self.config
        return gaussian_entropy_range(cfg.min_std * cfg.var_scale, cfg.max_std)

    def get_events(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Event]:
        return {}

    def get_resets(self, physics_model: ksim.PhysicsModel) -> list[ksim.Reset]:
        zeros = dict(zip(self.joint_names(physics_model), self.nominal_pose(physics_model), strict=True))
        return [ksim.RandomJointPositionReset.create(physics_model, zeros=zeros, scale=0.1)]

    def get_observations(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Observation]:
        cfg = self.config
        joints = {"joint_position": ksim.JointPositionObservation(), "joint_velocity": ksim.JointVelocityObservation()}
        noise = {
            "joint_position": SensorNoise(gaussian_std=0.005, bias_mag=0.01),
            "joint_velocity": SensorNoise(gaussian_std=0.1),
        }
        return {
            **joints,
            # ksim-entropy: what the policy reads is late (0-20 ms), noisy and biased, in rad and rad/s
            **{
                f"noisy_{name}": DelayedObservation.create(
                    obs, ctrl_dt_s=cfg.ctrl_dt, latency_range_s=cfg.obs_latency_s, sensor_noise=noise[name]
                )
                for name, obs in joints.items()
            },
            "projected_gravity": ksim.ProjectedGravityObservation.create(
                physics_model=physics_model, framequat_name="imu_quat"
            ),
            "imu_gyro": ksim.SensorObservation.create(physics_model=physics_model, sensor_name="imu_gyro"),
            "base_linear_velocity": ksim.BaseLinearVelocityObservation(in_robot_frame=True),
        }

    def get_commands(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Command]:
        # forward velocity 0-0.3 m/s (x, y in m/s; yaw rate in rad/s), redrawn now and then
        return {"velocity": ksim.FloatVectorCommand(ranges=((0.0, 0.3), (0.0, 0.0), (0.0, 0.0)), switch_prob=0.005)}

    def get_rewards(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Reward]:
        return {
            "stay_alive": ksim.StayAliveReward(scale=1.0),
            "upright": ksim.UprightReward(scale=0.5),
            "velocity": BaseVelocityTrackingReward(command_name="velocity", sigma_mps=0.1, scale=1.0),
        }

    def get_terminations(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Termination]:
        return {
            "fell": ksim.BadZTermination(min_z=0.08, max_z=1.0),
            "tilted": ksim.NotUprightTermination(max_radians=1.0),
            "episode_length": ksim.EpisodeLengthTermination(max_length_sec=10.0),
        }

    def get_optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(self.config.learning_rate))

    num_actor_inputs = 8 + 8 + 3 + 3 + 3
    num_critic_inputs = num_actor_inputs + 3

    def get_model(self, params: ksim.InitParams) -> RecurrentActorCritic:
        cfg = self.config
        return RecurrentActorCritic(
            params.key,
            num_actor_inputs=self.num_actor_inputs,
            num_critic_inputs=self.num_critic_inputs,
            nominal_pose=self.nominal_pose(params.physics_model),
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            min_std=cfg.min_std,
            max_std=cfg.max_std,
            var_scale=cfg.var_scale,
            body="mlp",
        )

    def actor_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        pose = obs["noisy_joint_position"] - jnp.asarray(model.actor.nominal_pose)
        gravity = obs["projected_gravity"] / GRAVITY_MPS2
        return jnp.concatenate([pose, obs["noisy_joint_velocity"] * 0.1, gravity, obs["imu_gyro"], cmd["velocity"]], -1)

    def critic_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        return jnp.concatenate([self.actor_observation(model, obs, cmd), obs["base_linear_velocity"]], axis=-1)


DEFAULTS = {
    "num_envs": 16,
    "batch_size": 8,
    "num_passes": 2,
    "rollout_length_frames": 32,
    "dt": 0.005,
    "ctrl_dt": 0.02,
    "iterations": 4,
    "ls_iterations": 8,
    "target_entropy": -1.0,
    "target_entropy_anneal_updates": 200,
    "valid_every_n_seconds": None,
    "save_every_n_seconds": 60.0,
}


if __name__ == "__main__":
    QuadrupedTask.launch(QuadrupedTask.get_config(DEFAULTS, use_cli=sys.argv[1:]), use_cli=[])
