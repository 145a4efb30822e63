"""Entropy matching: how the policy's simulated observations compare with a real-robot entropy profile.

A target is an `EntropyProfile` from the bridge (``ksim-bridge profile real.ndjson --out profile.json``): per channel
group of the real log, each channel's mean and std. Each group is paired with the ksim observation that carries the
same signal in the same unit (for the K-Bot: joint_angles ↔ ``noisy_joint_position`` in rad, joint_vels ↔
``noisy_joint_velocity`` in rad/s, projected_g ↔ ``noisy_projected_gravity`` in m/s², gyro ↔ ``noisy_imu_gyro`` in
rad/s). Every PPO update the rollout's observations are summarised the same way (independent-channel Gaussian) and
compared:

- entropy per group, H = Σ_c ½·log(2πe·σ_c²) nats;
- the 2-Wasserstein distance between the two diagonal Gaussians, √(Σ_c (μ−μ')² + (σ−σ')²);
- the entropy ratio exp((H_sim − H_real) / C) over all C matched channels: the geometric mean of σ_sim / σ_real.

The seed's controller compares H_sim with 1.5·H_real and 0.7·H_real; differential entropies in nats are often
negative (a joint angle with σ = 0.05 rad has −1.58 nats), where those products flip meaning, so the same bands
are applied to the entropy ratio above, which is what "1.5× the entropy" means for volumes: above `high` (1.5) the
simulation is more diverse than the robot and the widths shrink ×0.9, below `low` (0.7) they grow ×1.1.
"""

from collections.abc import Mapping
from pathlib import Path

import attrs
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ksim_entropy.temperature import gaussian_entropy

__all__ = ["EntropyTarget", "GroupTarget", "MatchRule", "observation_entropy", "observation_gap"]

STD_FLOOR = 1e-6  # the bridge's profile floor: a constant channel would otherwise have −inf entropy


@attrs.define(frozen=True, kw_only=True)
class GroupTarget:
    """One profile group paired with the observation that carries it (hashable: ksim passes it as a static arg)."""

    group: str
    observation: str
    channels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def entropy_nats(self) -> float:
        return float(np.sum(gaussian_entropy(np.asarray(self.std))))


@attrs.define(frozen=True, kw_only=True)
class EntropyTarget:
    """Profile groups paired with observations: what the simulated observation statistics are matched to."""

    groups: tuple[GroupTarget, ...]
    source: str = ""

    @classmethod
    def from_profile(cls, profile: object, observations: Mapping[str, str]) -> "EntropyTarget":
        """Pair `profile` groups with observation keys (`observations`: group → observation key)."""
        have = dict(profile.groups)  # type: ignore[attr-defined]
        if not observations:
            raise ValueError("entropy target: no observation is paired with a profile group")
        missing = [g for g in observations if g not in have]
        if missing:
            raise ValueError(f"entropy target: the profile has no group {missing}; it has {sorted(have)}")
        groups = tuple(
            GroupTarget(
                group=g,
                observation=key,
                channels=tuple(have[g].channels),
                mean=tuple(float(v) for v in have[g].mean),
                std=tuple(float(v) for v in have[g].std),
            )
            for g, key in observations.items()
        )
        return cls(groups=groups, source=str(getattr(profile, "source", "")))

    @classmethod
    def load(cls, path: str | Path, observations: Mapping[str, str]) -> "EntropyTarget":
        from ksim_entropy.bridge.profile import EntropyProfile  # pure NumPy; raises EntropyProfileError

        return cls.from_profile(EntropyProfile.load(path), observations)

    @property
    def num_channels(self) -> int:
        return sum(len(g.channels) for g in self.groups)


@attrs.define(frozen=True, kw_only=True)
class MatchRule:
    """Every `every_updates` PPO updates: ratio > high → widths × shrink; ratio < low → widths × grow."""

    low: float = attrs.field(default=0.7)
    high: float = attrs.field(default=1.5)
    shrink: float = attrs.field(default=0.9)
    grow: float = attrs.field(default=1.1)
    every_updates: int = attrs.field(default=10)

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.low < 1.0 < self.high:
            raise ValueError(f"entropy match bands need 0 < low < 1 < high, got low={self.low}, high={self.high}")
        if not 0.0 < self.shrink < 1.0 < self.grow:
            raise ValueError(f"need 0 < shrink < 1 < grow, got shrink={self.shrink}, grow={self.grow}")
        if self.every_updates < 1:
            raise ValueError(f"every_updates must be >= 1, got {self.every_updates}")

    def factor(self, ratio: Array) -> Array:
        return jnp.where(ratio > self.high, self.shrink, jnp.where(ratio < self.low, self.grow, 1.0))


def _samples(obs: Mapping[str, Array], key: str, channels: int | None = None) -> Array:
    if key not in obs:
        raise KeyError(f"entropy matching: no observation {key!r}; the task has {sorted(obs)}")
    x = jnp.asarray(obs[key], dtype=jnp.float32)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"entropy matching: observation {key!r} has {x.shape[-1]} channels, the profile {channels}")
    return x


def observation_entropy(obs: Mapping[str, Array], keys: Mapping[str, str]) -> dict[str, Array]:
    """Independent-channel Gaussian entropy (nats) of each observation group over all rollout samples."""
    out = {}
    for label, key in keys.items():
        x = _samples(obs, key)
        out[label] = jnp.sum(gaussian_entropy(jnp.maximum(jnp.std(x, axis=0, ddof=1), STD_FLOOR)))
    return out


def observation_gap(obs: Mapping[str, Array], target: EntropyTarget) -> dict[str, Array]:
    """Per group: simulated entropy, target entropy and W2 (keys `<group>/…`); totals and the entropy ratio."""
    out: dict[str, Array] = {}
    h_sim = h_real = w2_sq = jnp.float32(0.0)
    for g in target.groups:
        x = _samples(obs, g.observation, len(g.channels))
        mean, std = jnp.mean(x, axis=0), jnp.maximum(jnp.std(x, axis=0, ddof=1), STD_FLOOR)
        hs = jnp.sum(gaussian_entropy(std))
        hr = jnp.float32(g.entropy_nats)
        d2 = jnp.sum((mean - jnp.asarray(g.mean)) ** 2 + (std - jnp.asarray(g.std)) ** 2)
        out[f"{g.group}/entropy_sim"], out[f"{g.group}/entropy_real"], out[f"{g.group}/w2"] = hs, hr, jnp.sqrt(d2)
        h_sim, h_real, w2_sq = h_sim + hs, h_real + hr, w2_sq + d2
    out["entropy_sim"], out["entropy_real"], out["w2"] = h_sim, h_real, jnp.sqrt(w2_sq)
    out["entropy_ratio"] = jnp.exp((h_sim - h_real) / target.num_channels)
    return out
