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

The target may instead be a fitted randomization (`fitted.json` from ``python -m tasks.fit``): a uniform range per
physical parameter. A `RandomizationTarget` pairs each fitted parameter with the randomizer that draws it and
compares the two distributions directly, per dimension: the 2-Wasserstein distance between two uniforms has the
closed form W2² = (m − m')² + (r − r')²/12 (means m, range widths r), and the entropy ratio is the geometric mean of
r / r'. Each randomizer's width has one W2-optimal value (closed form below), which the ``smooth`` controller
approaches by a fixed fraction per decision; the ``band`` controller applies the seed's rule above to each
parameter's own entropy ratio. A width stretches a range about a fixed centre, so a fitted range off that centre
stays out of reach at every width: build the ranges from the same file (``randomization=fitted.json``) to centre
them on the fit; the W2 that remains at the best width says how far off they are.
"""

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ksim_entropy.distributions import Uniform
from ksim_entropy.formats.fitted import FittedRandomization
from ksim_entropy.ppo.temperature import gaussian_entropy
from ksim_entropy.randomization import (
    ActuatorKdScale,
    ActuatorKpScale,
    BodyMassScale,
    DomainRandomization,
    JointArmature,
    JointDamping,
    JointFrictionLoss,
    JointZeroOffset,
    RandomizedParameter,
)

__all__ = [
    "FITTED_RANDOMIZERS",
    "EntropyTarget",
    "GroupTarget",
    "MatchRule",
    "ParameterTarget",
    "RandomizationTarget",
    "load_target",
    "observation_entropy",
    "observation_gap",
]

logger = logging.getLogger(__name__)

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
        from ksim_entropy.formats.profile import EntropyProfile  # pure NumPy; raises EntropyProfileError

        return cls.from_profile(EntropyProfile.load(path), observations)

    @property
    def num_channels(self) -> int:
        return sum(len(g.channels) for g in self.groups)


@attrs.define(frozen=True, kw_only=True)
class MatchRule:
    """Every `every_updates` PPO updates, one decision.

    ``band`` (the seed's rule): entropy ratio > high → widths × shrink; < low → widths × grow; else unchanged.
    ``smooth`` (fitted targets only): each width moves `rate` of the way to its W2-optimal value, w ← w + rate·(w* − w),
    so it converges geometrically, never overshoots and has no dead band.
    """

    low: float = attrs.field(default=0.7)
    high: float = attrs.field(default=1.5)
    shrink: float = attrs.field(default=0.9)
    grow: float = attrs.field(default=1.1)
    every_updates: int = attrs.field(default=10)
    controller: Literal["band", "smooth"] = attrs.field(default="band")
    rate: float = attrs.field(default=0.2)

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.low < 1.0 < self.high:
            raise ValueError(f"entropy match bands need 0 < low < 1 < high, got low={self.low}, high={self.high}")
        if not 0.0 < self.shrink < 1.0 < self.grow:
            raise ValueError(f"need 0 < shrink < 1 < grow, got shrink={self.shrink}, grow={self.grow}")
        if self.every_updates < 1:
            raise ValueError(f"every_updates must be >= 1, got {self.every_updates}")
        if self.controller not in ("band", "smooth"):
            raise ValueError(f"entropy match controller must be 'band' or 'smooth', got {self.controller!r}")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"entropy match rate must be in (0, 1], got {self.rate}")

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


# ---------------------------------------------------------------------------- a fitted randomization as the target
# fitted.json name → the randomizer that draws that quantity (and, for per-joint fields, the mode that means the same:
# the fit's `joint_damping` is added N·m·s/rad, its friction loss and armature are scales). "zero_offset/" is per joint.
FITTED_RANDOMIZERS: dict[str, tuple[type[RandomizedParameter], str | None]] = {
    "mass_scale": (BodyMassScale, None),
    "frictionloss_scale": (JointFrictionLoss, "scale"),
    "armature_scale": (JointArmature, "scale"),
    "joint_damping": (JointDamping, "add"),
    "kp_scale": (ActuatorKpScale, None),
    "kd_scale": (ActuatorKdScale, None),
    "zero_offset/": (JointZeroOffset, None),
}


def uniform_w2(low_a: ArrayLike, high_a: ArrayLike, low_b: ArrayLike, high_b: ArrayLike) -> Array:
    """2-Wasserstein distance between products of 1-D uniforms: √Σ_d (Δmean_d² + Δwidth_d²/12)."""
    la, ha, lb, hb = (jnp.asarray(v, dtype=jnp.float32) for v in (low_a, high_a, low_b, high_b))
    d_mean, d_width = (la + ha - lb - hb) / 2.0, (ha - la) - (hb - lb)
    return jnp.sqrt(jnp.sum(d_mean**2 + d_width**2 / 12.0))


@attrs.define(frozen=True, kw_only=True)
class ParameterTarget:
    """One randomizer (`index` in the `DomainRandomization`, uniform `dist`) and its fitted range per dimension."""

    name: str
    index: int
    dist: Uniform
    low: tuple[float, ...]
    high: tuple[float, ...]
    max_width: float
    fitted: str  # the fitted.json name ("kp_scale", "zero_offset/*")

    def w2(self, width: ArrayLike) -> Array:
        low, high = self.dist.bounds(width)
        return uniform_w2(low, high, self.low, self.high)

    def entropy_ratio(self, width: ArrayLike) -> Array:
        """Geometric mean over dimensions of (range width at `width`) / (fitted range width)."""
        low, high = self.dist.bounds(width)
        return jnp.exp(jnp.mean(jnp.log(high - low) - jnp.log(np.subtract(self.high, self.low))))

    @property
    def best_width(self) -> float:
        """The width in [0, max_width] that minimises W2 to the fitted range, closed form.

        Bounds c − w·(c − L), c + w·(H − c) have mean c + w·s and width w·R, so
        w* = Σ(s·(m' − c) + R·r'/12) / Σ(s² + R²/12) over dimensions (m', r': fitted mean and width).
        """
        with jax.ensure_compile_time_eval():  # static numbers, also when asked inside a jitted step
            lo, hi = (np.asarray(b, dtype=np.float64) for b in self.dist.bounds(1.0))
            c = np.asarray(self.dist.bounds(0.0)[0], dtype=np.float64)
        s, r = (hi + lo) / 2.0 - c, hi - lo
        m_t, r_t = (np.add(self.low, self.high)) / 2.0, np.subtract(self.high, self.low)
        best = float(np.sum(s * (m_t - c) + r * r_t / 12.0) / np.sum(s**2 + r**2 / 12.0))
        return min(max(best, 0.0), self.max_width)


@attrs.define(frozen=True, kw_only=True)
class RandomizationTarget:
    """Fitted ranges paired with the randomizers of a `DomainRandomization` (see the module doc)."""

    parameters: tuple[ParameterTarget, ...]
    source: str = ""

    @classmethod
    def from_fitted(
        cls, fitted: FittedRandomization, randomization: DomainRandomization, actuator_joints: Sequence[str]
    ) -> "RandomizationTarget":
        """Pair every randomizer of a kind the fit estimates with the fitted range(s).

        `actuator_joints` names the joint of each actuator in model order (per-joint zero offsets match by name).
        """
        fitted_names = set(fitted.names())
        targets = []
        for index, p in enumerate(randomization.parameters):
            match = [(k, mode) for k, (kind, mode) in FITTED_RANDOMIZERS.items() if type(p) is kind]
            if not match:
                continue
            key, mode = match[0]
            if mode is not None and getattr(p, "mode", mode) != mode:
                continue  # e.g. a damping *scale*: the fit's damping is an added N·m·s/rad
            if key.endswith("/"):
                joints = [actuator_joints[a] for a in p.actuator_ids]  # type: ignore[attr-defined]
                names = [key + j for j in joints]
                if p.dims == 1:
                    raise ValueError(
                        f"{p.get_name()} shares one draw across joints; the fit has one range per joint: "
                        "create it with shared=False to match it"
                    )
            else:
                names = [key] * p.dims
            missing = [n for n in names if n not in fitted_names]
            if missing:
                if len(missing) < len(names):
                    raise ValueError(f"{fitted.robot} fit has no {missing[:3]}... for {p.get_name()}")
                continue
            if not isinstance(p.dist, Uniform):
                raise ValueError(
                    f"{p.get_name()} draws from a {type(p.dist).__name__}; a fitted target is a uniform range, "
                    "so match it with family='uniform'"
                )
            targets.append(
                ParameterTarget(
                    name=p.get_name(),
                    index=index,
                    dist=p.dist,
                    low=tuple(fitted[n].low for n in names),
                    high=tuple(fitted[n].high for n in names),
                    max_width=p.max_width,
                    fitted=key + "*" if key.endswith("/") else key,
                )
            )
        if not targets:
            raise ValueError(
                f"the fit ({sorted(fitted_names)[:4]}...) has no parameter this task randomizes "
                f"({randomization.names}): nothing to match"
            )
        target = cls(parameters=tuple(targets), source=fitted.robot)
        target.warn_unreachable()
        return target

    def warn_unreachable(self) -> None:
        """Log each fitted range the randomizer cannot cover at its W2-optimal width (its centre is elsewhere)."""
        for t in self.parameters:
            low, high = (np.asarray(b) for b in t.dist.bounds(t.best_width))
            if np.any(np.asarray(t.low) < low - 1e-6) or np.any(np.asarray(t.high) > high + 1e-6):
                logger.warning(
                    "%s: at its best width %.3g the training range does not cover the fitted %s range; "
                    "W2 stays %.3g. Centre the ranges on the fit (randomization=fitted.json).",
                    t.name,
                    t.best_width,
                    t.fitted,
                    float(t.w2(t.best_width)),
                )

    def gap(self, widths: Array) -> dict[str, Array]:
        """Per fitted randomizer `<name>/w2` and `<name>/entropy_ratio`; total `w2` (root of the summed squares)."""
        out: dict[str, Array] = {}
        total = jnp.float32(0.0)
        for t in self.parameters:
            w2 = t.w2(widths[t.index])
            out[f"{t.name}/w2"], out[f"{t.name}/entropy_ratio"] = w2, t.entropy_ratio(widths[t.index])
            total = total + w2**2
        out["w2"] = jnp.sqrt(total)
        return out

    def next_widths(self, widths: Array, rule: MatchRule) -> Array:
        """One decision of `rule` on every fitted randomizer's width (the others are left as they are)."""
        for t in self.parameters:
            w = widths[t.index]
            if rule.controller == "smooth":
                new = w + rule.rate * (t.best_width - w)
            else:
                new = w * rule.factor(t.entropy_ratio(w))
            widths = widths.at[t.index].set(new)
        return widths


def load_target(
    path: str | Path,
    observations: Mapping[str, str],
    randomization: DomainRandomization,
    actuator_joints: Sequence[str],
) -> EntropyTarget | RandomizationTarget:
    """The target in `path`: an entropy profile (matched on `observations`) or a fitted randomization."""
    from ksim_entropy.formats.fitted import FORMAT as FITTED_FORMAT
    from ksim_entropy.formats.jsonfile import JsonFileError, read_json

    try:
        data = read_json(Path(path))
    except JsonFileError:
        data = None  # the profile reader names the problem
    if isinstance(data, Mapping) and data.get("format") == FITTED_FORMAT:
        fitted = FittedRandomization.load(path)
        if sorted(fitted.joint_names) != sorted(actuator_joints):
            raise ValueError(
                f"{path}: fitted for joints {list(fitted.joint_names)[:3]}... ({len(fitted.joint_names)}), this "
                f"task's actuators drive {list(actuator_joints)[:3]}... ({len(actuator_joints)}): another robot?"
            )
        return RandomizationTarget.from_fitted(fitted, randomization, actuator_joints)
    return EntropyTarget.load(path, observations)
