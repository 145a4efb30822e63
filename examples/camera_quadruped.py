"""The quadruped of `quadruped.py` with a camera on its torso, the image randomized per episode (issue 35 item 5).

    python examples/camera_quadruped.py max_steps=3 exp_dir=runs/camera_quadruped   # any ksim / xax key=value

What it adds to `quadruped.py` (each marked `# ksim-entropy`):
- a forward-looking camera on the torso and three coloured props ahead of the robot (seen, not touched: no
  contacts), in the MJCF;
- `RayCastCamera`: a 12 × 16 RGB image of that camera, ray cast in JAX on every control step (MJX has no
  renderer), wrapped in `RandomizedImage`: per-episode brightness, contrast, saturation, hue, blur and sensor noise,
  whose widths follow the curriculum level (`follow_curriculum`);
- the actor reads the image (flattened) beside its joint sensors; every update logs the visual randomization's
  entropy (`visual_dr_entropy_nats`, and per change `visual_dr_entropy_<name>`) and its width.
"""

# isort: off
import ksim_entropy  # noqa: F401  (first: its JAX shims apply before ksim loads)
from ksim_entropy.runtime import configure_headless, quiet_start_up_logs

configure_headless()
quiet_start_up_logs()
# isort: on

import sys  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ksim  # noqa: E402
import mujoco  # noqa: E402
import xax  # noqa: E402
from jaxtyping import Array, PyTree  # noqa: E402
from ksim.task.rl import RLLoopCarry, RLLoopConstants  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quadruped import DEFAULTS, QuadrupedTask, robot_xml  # noqa: E402

from ksim_entropy.camera import RayCastCamera  # noqa: E402
from ksim_entropy.policy import RecurrentActorCritic  # noqa: E402
from ksim_entropy.visual import ImageRandomization, RandomizedImage  # noqa: E402

IMAGE_HW = (12, 16)  # pixels
CAMERA = '<camera name="front" pos="0.11 0 0.02" xyaxes="0 -1 0 0.3 0 1" fovy="70"/>'
NO_CONTACT = 'contype="0" conaffinity="0"'
PROPS = f"""
    <geom name="red_box" type="box" pos="1.2 0.4 0.15" size="0.15 0.15 0.15" rgba="0.85 0.2 0.2 1" {NO_CONTACT}/>
    <geom name="blue_ball" type="sphere" pos="1.6 -0.5 0.2" size="0.2" rgba="0.2 0.3 0.9 1" {NO_CONTACT}/>
    <geom name="green_post" type="cylinder" pos="2.0 0.1 0.3" size="0.08 0.3" rgba="0.2 0.8 0.3 1" {NO_CONTACT}/>"""


class CameraQuadrupedTask(QuadrupedTask):
    """Walk forward, seeing the props ahead through a randomized camera as well as through the joint sensors."""

    def get_mujoco_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_string(robot_xml(on_torso=CAMERA, in_world=PROPS))

    def get_observations(self, physics_model: ksim.PhysicsModel) -> dict[str, ksim.Observation]:
        height, width = IMAGE_HW
        camera = RayCastCamera.create(physics_model, "front", height=height, width=width)  # ksim-entropy
        randomization = ImageRandomization(follow_curriculum=True)  # ksim-entropy: widths scheduled by the curriculum
        return {**super().get_observations(physics_model), "camera": RandomizedImage.create(camera, randomization)}

    num_actor_inputs = QuadrupedTask.num_actor_inputs + IMAGE_HW[0] * IMAGE_HW[1] * 3
    num_critic_inputs = num_actor_inputs + 3

    def actor_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        image = obs["camera"]
        pixels = jnp.reshape(image, (*image.shape[:-3], -1)) - 0.5  # centred on mid-grey
        return jnp.concatenate([super().actor_observation(model, obs, cmd), pixels], axis=-1)

    def after_update(
        self, constants: RLLoopConstants, carry: RLLoopCarry, trajectories: ksim.Trajectory, metrics: Mapping
    ) -> tuple[RLLoopCarry, dict[str, jax.Array]]:
        carry, metrics = super().after_update(constants, carry, trajectories, metrics)
        randomization = constants.constants.observations["camera"].randomization  # ksim-entropy: its entropy, logged
        width = randomization.width_at(carry.env_states.curriculum_state.level[0])
        entropies = randomization.entropies(width)
        metrics["visual_dr_width"] = width
        metrics["visual_dr_entropy_nats"] = sum(entropies.values())
        metrics.update({f"visual_dr_entropy_{name}": value for name, value in entropies.items()})
        return carry, metrics


if __name__ == "__main__":
    config = CameraQuadrupedTask.get_config(DEFAULTS, use_cli=sys.argv[1:])
    CameraQuadrupedTask.launch(config, use_cli=[])
