"""Detector 1, wiring: swapped channels (an assignment between real and sim channels by distribution)."""

import numpy as np
from scipy.optimize import linear_sum_assignment

from ksim_entropy.bridge.diagnose.core import (
    SCALE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    cost_matrix,
    severity_of,
)

_FAMILIES = (("projected_g", "accel", "gyro"), ("joint_angles", "joint_vels"), ("output",))


def detect_swaps(real: Channels, sim: Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict, dict]:
    """Detector 1: channels swapped within a sensor family; the finding, statistics and corrections made to real."""
    evidence: dict[str, float] = {}
    channels: list[str] = []
    corrections: dict[str, str] = {}
    worst_identity = 0.0
    best_ratio = 0.0
    for family in _FAMILIES:
        groups = [g for g in family if g in real.blocks and g in sim.blocks]
        # whole groups swapped
        for a_index, a in enumerate(groups):
            for b in groups[a_index + 1 :]:
                ra, rb, sa, sb = real.blocks[a], real.blocks[b], sim.blocks[a], sim.blocks[b]
                if not ra.shape[1] == rb.shape[1] == sa.shape[1] == sb.shape[1]:
                    continue
                fa, fb = np.full(ra.shape[1], SCALE_FLOORS[a]), np.full(rb.shape[1], SCALE_FLOORS[b])
                identity = np.diag(cost_matrix(ra, sa, fa, fa)).sum() + np.diag(cost_matrix(rb, sb, fb, fb)).sum()
                swapped = np.diag(cost_matrix(ra, sb, fb, fb)).sum() + np.diag(cost_matrix(rb, sa, fa, fa)).sum()
                per_channel = identity / (2 * ra.shape[1])
                ratio = identity / max(swapped, 1e-12)
                worst_identity = max(worst_identity, per_channel)
                if per_channel >= th.swap_min_cost and ratio >= th.swap_min_cost_ratio:
                    best_ratio = max(best_ratio, ratio)
                    real.blocks[a], real.blocks[b] = rb.copy(), ra.copy()
                    evidence[f"{a}<->{b}:cost_identity_per_channel"] = per_channel
                    evidence[f"{a}<->{b}:cost_swapped_per_channel"] = swapped / (2 * ra.shape[1])
                    evidence[f"{a}<->{b}:cost_ratio"] = ratio
                    channels += [*real.names(a), *real.names(b)]
                    corrections[a] = f"taken from the real log's {b} (groups swapped)"
                    corrections[b] = f"taken from the real log's {a} (groups swapped)"
        # channels permuted inside a group
        for group in groups:
            r, s = real.blocks[group], sim.blocks[group]
            if r.shape[1] != s.shape[1] or r.shape[1] < 2:
                continue
            floors = np.full(r.shape[1], SCALE_FLOORS[group])
            cost = cost_matrix(r, s, floors, floors)
            if not np.isfinite(cost).all():
                continue
            diag = np.diag(cost)
            worst_identity = max(worst_identity, float(diag.max()))
            # identity wins ties: moving a channel must save more than a small fraction of the threshold
            rows, cols = linear_sum_assignment(cost + 0.05 * th.swap_min_cost * (1.0 - np.eye(r.shape[1])))
            perm = dict(zip(rows.tolist(), cols.tolist(), strict=True))
            accepted = _accepted_cycles(perm, cost, th)
            if not accepted:
                continue
            names = real.names(group)
            fixed = r.copy()
            for i in accepted:
                j = perm[i]
                fixed[:, j] = r[:, i]
                ratio = diag[i] / max(cost[i, j], 1e-12)
                best_ratio = max(best_ratio, ratio)
                evidence[f"{names[i]}->{names[j]}:cost_identity"] = float(diag[i])
                evidence[f"{names[i]}->{names[j]}:cost_swapped"] = float(cost[i, j])
                corrections[names[j]] = f"taken from the real log's {names[i]} (channels swapped)"
                channels.append(names[i])
            real.blocks[group] = fixed
    statistics = {"max_identity_cost": worst_identity, "best_cost_ratio": best_ratio}
    if not channels:
        return None, statistics, corrections
    pairs = sorted({k.rsplit(":", 1)[0] for k in evidence})
    finding = Finding(
        "swapped_channels",
        tuple(dict.fromkeys(channels)),
        severity_of(best_ratio, th.swap_min_cost_ratio),
        evidence,
        "real channels carry another channel's signal: " + ", ".join(pairs),
    )
    return finding, statistics, corrections


def _accepted_cycles(perm: dict[int, int], cost: np.ndarray, th: DiagnosisThresholds) -> list[int]:
    """Members of the permutation's cycles in which every channel is clearly swapped."""
    accepted: list[int] = []
    seen: set[int] = set()
    for start in perm:
        if start in seen or perm[start] == start:
            continue
        cycle = [start]
        while perm[cycle[-1]] != start:
            cycle.append(perm[cycle[-1]])
        seen.update(cycle)
        if all(
            cost[i, i] >= th.swap_min_cost and cost[i, i] >= th.swap_min_cost_ratio * cost[i, perm[i]] for i in cycle
        ):
            accepted += cycle
    return accepted
