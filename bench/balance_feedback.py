"""Can the K-Bot stand at all under its own servos, and with what feedback? Prints JSON.

    python bench/balance_feedback.py [--iterations 14] [--population 50] [--seed 1] [--out FILE]

CPU MuJoCo, `ksim_entropy.sim2real.sim.KBotSimulator` (the physics, servos and sensors `tasks.walk` trains on), the
nominal pose (`KBOT_NOMINAL_POSE_RAD`). Three measurements:

1. PD alone: how long the nominal pose stands with fixed targets (s), where the centre of mass sits against the ankle
   axes, and how much the ankle servos' soft torque limits leave to balance with (the margin in cm).
2. A linear feedback of the body's pitch (from projected gravity) and pitch rate (gyro) onto ankle, hip-pitch and knee
   targets, 8 numbers (ankle gain and damping, hip gain and damping, ankle / hip / knee offsets, knee gain), found
   by the cross-entropy method: each candidate's score is its mean standing time (s, up to 8 s) from three starts
   (pitch rate −0.3, 0, +0.3 rad/s) with 8 ms of command latency. The best mean is then run for 20 s.
3. That controller from random starts (joint angles + U(±0.02, ±0.05, ±0.1) rad, the task's reset noise is 0.1):
   mean standing time and the fraction that stand 10 s.

Standing is a balance problem, not a posture one: if (2) stands, a policy with these inputs can; the gains say how
strong its feedback has to be. A scripted controller is a measurement here, never a policy we ship.
"""

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from emit import emit_json

from ksim_entropy.kbot.robot import KBOT_FOOT_BODIES, resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator

PARAMETERS = (
    "ankle_gain_rad_per_rad",
    "ankle_damping_rad_per_radps",
    "hip_gain_rad_per_rad",
    "hip_damping_rad_per_radps",
    "ankle_offset_rad",
    "hip_offset_rad",
    "knee_offset_rad",
    "knee_gain_rad_per_rad",
)
INITIAL_STD = np.array([5.0, 0.7, 5.0, 0.7, 0.2, 0.2, 0.2, 3.0])
LATENCY_SUBSTEPS = 2  # of the 5 physics steps per control period: 8 ms on the previous targets
MIN_BASE_HEIGHT_M = 0.45  # `tasks.walk`'s fall termination


class Balancer:
    """The simulator and the left/right sagittal joints the feedback drives (right side mirrored)."""

    def __init__(self) -> None:
        self.sim = KBotSimulator(resolve_robot_files("local"))
        index = {name: i for i, name in enumerate(self.sim.joint_names)}
        self.pairs = {
            part: (index[f"dof_left_{part}"], index[f"dof_right_{part}"])
            for part in ("ankle_02", "hip_pitch_04", "knee_04")
        }

    def targets(self, p: np.ndarray, pitch: float, rate: float) -> np.ndarray:
        t = self.sim.nominal_pose_rad.copy()
        ka, da, kh, dh, oa, oh, ok, kk = p
        for part, u in (
            ("ankle_02", oa + ka * pitch + da * rate),
            ("hip_pitch_04", oh + kh * pitch + dh * rate),
            ("knee_04", ok + kk * pitch),
        ):
            left, right = self.pairs[part]
            t[left] += u
            t[right] -= u
        return t

    def stand_time(
        self, p: np.ndarray, *, seconds: float, pitch_rate0: float = 0.0, q0: np.ndarray | None = None
    ) -> float:
        """Seconds until the base drops below 0.45 m (or `seconds`), feedback `p` (zeros: PD alone)."""
        sim = self.sim
        sim.reset(q0)
        sim.data.qvel[4] = pitch_rate0  # about the world y axis: forward/backward tipping
        previous = sim.nominal_pose_rad.copy()
        for step in range(round(seconds / sim.options.ctrl_dt_s)):
            s = sim.sensors()
            # The IMU is mounted so that a forward tip shows as −y in projected gravity and +x in the gyro.
            pitch, rate = -s["projected_g"][1] / 9.81, s["gyro"][0]
            targets = self.targets(p, pitch, rate)
            for k in range(sim.options.substeps):
                sim.physics_step(previous if k < LATENCY_SUBSTEPS else targets)
            previous = targets
            if sim.data.qpos[2] < MIN_BASE_HEIGHT_M:
                return step * sim.options.ctrl_dt_s
        return seconds

    def score(self, p: np.ndarray, seconds: float = 8.0) -> float:
        return float(np.mean([self.stand_time(p, seconds=seconds, pitch_rate0=w) for w in (-0.3, 0.0, 0.3)]))

    def balance_margin(self) -> dict[str, float]:
        """Centre of mass against the ankle axes 0.3 s after the drop, PD alone, and what the ankles can hold."""
        sim = self.sim
        sim.reset()
        for _ in range(15):
            sim.step(sim.nominal_pose_rad)
        model, data = sim.model, sim.data
        ankle = model.joint("dof_left_ankle_02").id
        com_ahead_m = float(data.subtree_com[1][0] - data.xanchor[ankle][0])
        weight_n = float(model.body_subtreemass[1] * 9.81)
        limit = sim.torque_limit_nm[self.pairs["ankle_02"][0]] + sim.torque_limit_nm[self.pairs["ankle_02"][1]]
        feet = [model.body(name).id for name in KBOT_FOOT_BODIES]
        return {
            "mass_kg": float(model.body_subtreemass[1]),
            "com_ahead_of_ankles_cm": 100 * com_ahead_m,
            "ankle_torque_limit_total_nm": float(limit),
            "com_range_the_ankles_can_hold_cm": 100 * float(limit) / weight_n,
            "forward_margin_cm": 100 * (float(limit) / weight_n - com_ahead_m),
            "foot_bodies": len(feet),
        }


def cross_entropy(
    balancer: Balancer, iterations: int, population: int, elite: int, seed: int, log: Callable[[str], None]
) -> dict:
    rng = np.random.default_rng(seed)
    mean, std = np.zeros(len(PARAMETERS)), INITIAL_STD.copy()
    history = []
    for it in range(iterations):
        candidates = mean + std * rng.standard_normal((population, len(PARAMETERS)))
        scores = np.array([balancer.score(p) for p in candidates])
        best = candidates[np.argsort(-scores)[:elite]]
        mean, std = best.mean(axis=0), best.std(axis=0) + 1e-3
        history.append(
            {"iteration": it, "best_s": float(scores.max()), "elite_mean_s": float(np.sort(scores)[-elite:].mean())}
        )
        log(f"[balance] iteration {it}: best {scores.max():.2f} s, elite mean {history[-1]['elite_mean_s']:.2f} s")
    return {"mean": mean, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=14)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--elite", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.iterations < 1 or not 1 <= args.elite <= args.population:
        raise SystemExit("error: need --iterations >= 1 and 1 <= --elite <= --population")

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    start = time.monotonic()
    balancer = Balancer()
    zeros = np.zeros(len(PARAMETERS))
    pd_alone_s = balancer.stand_time(zeros, seconds=20.0)
    search = cross_entropy(balancer, args.iterations, args.population, args.elite, args.seed, log)
    best = search["mean"]
    rng = np.random.default_rng(args.seed + 100)
    resets = {}
    for noise in (0.02, 0.05, 0.1):
        times = [
            balancer.stand_time(best, seconds=10.0, q0=balancer.sim.nominal_pose_rad + rng.uniform(-noise, noise, 20))
            for _ in range(20)
        ]
        resets[f"{noise:g}"] = {"mean_s": float(np.mean(times)), "fraction_10s": float(np.mean(np.array(times) >= 10))}
    result = {
        "bench": "balance_feedback",
        "command": "python bench/balance_feedback.py " + " ".join(sys.argv[1:]),
        "pd_alone_stand_s": pd_alone_s,
        "balance": balancer.balance_margin(),
        "feedback": {name: float(v) for name, v in zip(PARAMETERS, best, strict=True)},
        "feedback_stand_s_20s_run": balancer.stand_time(best, seconds=20.0),
        "feedback_score_s_of_8": balancer.score(best),
        "feedback_from_noisy_resets": resets,
        "search": search["history"],
        "wall_s": time.monotonic() - start,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
