"""Detector 6, sensors: a sensor that reads a different distribution for the same commanded motion."""

import numpy as np

from ksim_entropy.bridge.diagnose.core import (
    SCALE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    finite_values,
    severity_of,
    spread_of,
)
from ksim_entropy.bridge.diagnose.dynamics import Comparison
from ksim_entropy.bridge.metrics import ks_statistic, wasserstein_1d
from ksim_entropy.formats.schema import JOINT_GROUPS

_OBSERVATION_GROUPS = ("joint_angles", "joint_vels", "projected_g", "accel", "gyro")


def detect_observation(
    real: Channels,
    sim: Channels,
    comparison: Comparison | None,
    excluded_joints: set[int],
    th: DiagnosisThresholds,
    skipped: dict[str, str],
) -> tuple[Finding | None, dict]:
    """Detector 6: sensors that read a different distribution for the same commanded motion."""
    output_z = None
    if (
        "output" in real.blocks
        and "output" in sim.blocks
        and real.blocks["output"].shape[1] == sim.blocks["output"].shape[1]
    ):
        output_z = _w1_z(real.blocks["output"], sim.blocks["output"], SCALE_FLOORS["output"])
        if not np.isfinite(output_z).any():
            output_z = None
            skipped["observation_mismatch:command_gate"] = "no finite output in a log: commanded motion not compared"
    else:
        skipped["observation_mismatch:command_gate"] = "no common output group: commanded motion not compared"
    stats = {"max_w1_z": 0.0, "max_ks": 0.0}
    if output_z is not None:
        stats["max_output_w1_z"] = float(np.nanmax(output_z))
    offsets = None
    if comparison is not None and comparison.comparable.any():
        offsets = np.where(comparison.comparable, comparison.angle_offset_rad, np.nan)
        offsets[sorted(excluded_joints)] = np.nan
        stats["max_abs_angle_offset_rad"] = float(np.nanmax(np.abs(offsets))) if np.isfinite(offsets).any() else 0.0
    evidence: dict[str, float] = {}
    channels: list[str] = []
    scores: list[tuple[float, float]] = []
    ungated: list[str] = []
    empty: list[str] = []
    for group in _OBSERVATION_GROUPS:
        if (
            group not in real.blocks
            or group not in sim.blocks
            or real.blocks[group].shape[1] != sim.blocks[group].shape[1]
        ):
            continue
        r, s = real.blocks[group], sim.blocks[group]
        z, ks = _w1_z(r, s, SCALE_FLOORS[group]), _ks(r, s)
        joint_level = group in JOINT_GROUPS
        for c, name in enumerate(real.names(group)):
            if joint_level and c in excluded_joints:
                continue
            if not np.isfinite(z[c]):
                empty.append(name)
                continue
            offset = offsets[c] if offsets is not None and group == "joint_angles" else float("nan")
            shifted = bool(abs(offset) >= th.angle_offset_rad)
            gate = output_z[c] if joint_level and output_z is not None else None
            if gate is None and output_z is not None:
                gate = float(np.nanmedian(output_z))
            marginal = False
            if gate is not None and not gate < th.command_match:  # NaN: this joint's motion is unknown
                ungated.append(name)
            else:
                stats["max_w1_z"] = max(stats["max_w1_z"], float(z[c]))
                stats["max_ks"] = max(stats["max_ks"], float(ks[c]))
                marginal = bool(z[c] >= th.observation_w1 and ks[c] >= th.observation_ks)
            if not (marginal or shifted):
                continue
            channels.append(name)
            evidence[f"{name}:w1_z"] = float(z[c])
            evidence[f"{name}:ks"] = float(ks[c])
            evidence[f"{name}:median_shift"] = float(np.nanmedian(r[:, c]) - np.nanmedian(s[:, c]))
            floor = SCALE_FLOORS[group]
            evidence[f"{name}:spread_ratio"] = spread_of(r[:, c], floor) / spread_of(s[:, c], floor)
            if marginal:
                scores.append((min(z[c] / th.observation_w1, ks[c] / th.observation_ks), 1.0))
            if shifted:
                evidence[f"{name}:offset_rad"] = float(offset)
                scores.append((abs(offset), th.angle_offset_rad))
    if empty:
        skipped["observation_mismatch:no_data"] = (
            f"{len(empty)} channels have fewer than 2 finite values in a log: " + ", ".join(empty[:6])
        )
    if ungated:
        skipped["observation_mismatch:channels"] = (
            f"{len(ungated)} channels' distributions not judged: their commanded motion differs "
            f"(output W1/σ >= {th.command_match})"
        )
    if not channels:
        return None, stats
    finding = Finding(
        "observation_mismatch",
        tuple(channels),
        max(severity_of(v, t) for v, t in scores),
        evidence,
        f"{len(channels)} sensor channels read differently while the commanded motion matches: "
        + ", ".join(channels[:6]),
    )
    return finding, stats


def _w1_z(r: np.ndarray, s: np.ndarray, floor: float) -> np.ndarray:
    """W1(real_c, sim_c) / max(σ_sim_c, floor) per column (NaN where a side has fewer than 2 finite values)."""
    out = np.full(r.shape[1], np.nan)
    for c in range(r.shape[1]):
        x, y = finite_values(r[:, c]), finite_values(s[:, c])
        if x.size >= 2 and y.size >= 2:
            out[c] = float(wasserstein_1d(x, y)) / spread_of(y, floor)
    return out


def _ks(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = np.full(r.shape[1], np.nan)
    for c in range(r.shape[1]):
        x, y = finite_values(r[:, c]), finite_values(s[:, c])
        if x.size >= 2 and y.size >= 2:
            out[c] = float(ks_statistic(x, y).statistic)
    return out
