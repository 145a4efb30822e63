"""`EntropyBridgedKBotTask`: the entropy-bridged PPO task (`ksim_entropy.ppo.mixins.EntropyBridgedTask`) for the K-Bot.

The K-Bot specifics of the mixins live here: which policy observations pair with the sensor groups of a kinfer log,
and the policy's action-std clamp that bounds its entropy.
"""

from dataclasses import dataclass
from typing import Generic, TypeVar

import jax
import xax

from ksim_entropy.ppo.mixins import EntropyBridgedConfig, EntropyBridgedTask
from ksim_entropy.ppo.temperature import gaussian_entropy_range

__all__ = ["KBOT_ENTROPY_OBSERVATIONS", "EntropyBridgedKBotTask", "KBotEntropyConfig"]

KBOT_ENTROPY_OBSERVATIONS: dict[str, str] = {
    "joint_angles": "noisy_joint_position",  # rad
    "joint_vels": "noisy_joint_velocity",  # rad/s
    "projected_g": "noisy_projected_gravity",  # m/s²
    "gyro": "noisy_imu_gyro",  # rad/s
}


@jax.tree_util.register_dataclass
@dataclass
class KBotEntropyConfig(EntropyBridgedConfig):
    """`EntropyBridgedConfig` plus the K-Bot policy's action-std clamp (what bounds its entropy)."""

    min_std: float = xax.field(value=0.01, help="Minimum action std before var_scale (rad).")
    max_std: float = xax.field(value=1.0, help="Maximum action std (rad).")
    var_scale: float = xax.field(value=0.5, help="Scale on the softplus action std.")


KBotConfigT = TypeVar("KBotConfigT", bound=KBotEntropyConfig)


class EntropyBridgedKBotTask(EntropyBridgedTask[KBotConfigT], Generic[KBotConfigT]):
    """`EntropyBridgedTask` for the K-Bot.

    Its four sensor groups as kinfer logs them (`ksim_entropy.formats.schema`) are paired with the policy's noisy
    observations, and the entropy range is that of `ksim_entropy.policy.RecurrentActor` (std in
    [min_std·var_scale, max_std] rad).
    """

    def get_action_entropy_range(self) -> tuple[float, float]:
        cfg = self.config
        return gaussian_entropy_range(cfg.min_std * cfg.var_scale, cfg.max_std)

    def get_entropy_observations(self) -> dict[str, str]:
        return dict(KBOT_ENTROPY_OBSERVATIONS)
