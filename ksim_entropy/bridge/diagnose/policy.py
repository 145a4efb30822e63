"""Detector 7, the policy: an overconfident (collapsed) policy."""

import math

import numpy as np

from ksim_entropy.bridge.diagnose.core import (
    SCALE_FLOORS,
    Channels,
    DiagnosisThresholds,
    Finding,
    severity_of,
    spread_of,
)


def detect_overconfident(real: Channels, sim: Channels, th: DiagnosisThresholds) -> tuple[Finding | None, dict]:
    """Detector 7: a policy whose outputs vary far less on the robot (collapsed); the finding (or None), statistics."""
    r, s = real.blocks["output"], sim.blocks["output"]
    floor = SCALE_FLOORS["output"]
    delta = np.array([math.log(spread_of(r[:, c], floor) / spread_of(s[:, c], floor)) for c in range(r.shape[1])])
    drop = -float(np.median(delta))
    stats = {"median_entropy_drop_nats": drop, "max_entropy_drop_nats": -float(np.min(delta))}
    if drop < th.entropy_drop_nats:
        return None, stats
    names = real.names("output")
    collapsed = np.flatnonzero(-delta >= th.entropy_drop_nats)
    evidence = {"median_entropy_drop_nats": drop, "collapsed_fraction": collapsed.size / delta.size}
    evidence |= {f"{names[c]}:entropy_change_nats": float(delta[c]) for c in collapsed}
    finding = Finding(
        "overconfident_policy",
        tuple(names[c] for c in collapsed),
        severity_of(drop, th.entropy_drop_nats),
        evidence,
        f"the action distribution collapses on the robot: output entropy {-drop:+.2f} nats per joint (median), "
        f"std ×{math.exp(-drop):.2f}; {collapsed.size}/{delta.size} joints",
    )
    return finding, stats
