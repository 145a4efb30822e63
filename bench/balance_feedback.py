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
4. Which of the stand preset's pushes a robot that does not step can survive at all (`push_capture`): a linear
   inverted pendulum of the measured mass and centre-of-mass height, whose centre of pressure can move as far as the
   ankles' torque limits allow (1), recovers from a horizontal velocity up to v = reach × √(g / h). Each push of the
   task's own `ForcePushEvent` gives the body F·t / m; per curriculum level: the fraction of pushes within v (closed
   form and Monte Carlo), and the mean episode length (s) of a robot that survives every push within v and falls
   1 s after the first one beyond it (20 s episodes, the event's onset times): what the training curve could show
   at that level without a step.

Standing is a balance problem, not a posture one: if (2) stands, a policy with these inputs can; the gains say how
strong its feedback has to be. A scripted controller is a measurement here, never a policy we ship.
"""

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from emit import emit_json

from ksim_entropy.events import ForcePushEvent
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
GRAVITY_MPS2 = 9.81
CAPTURE_LEVELS = (0.25, 0.5, 0.67, 1.0)
FALL_AFTER_PUSH_S = 1.0  # how long an uncapturable push takes to end the episode (the PD-alone fall takes 1.28 s)


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
            "com_height_m": float(data.subtree_com[1][2]),
            "com_ahead_of_ankles_cm": 100 * com_ahead_m,
            "ankle_torque_limit_total_nm": float(limit),
            "com_range_the_ankles_can_hold_cm": 100 * float(limit) / weight_n,
            "forward_margin_cm": 100 * (float(limit) / weight_n - com_ahead_m),
            "foot_bodies": len(feet),
        }


def fraction_within(speed_mps: float, mass_kg: float, max_force_n: float, duration_s: tuple[float, float]) -> float:
    """P(F·t / m ≤ speed), F ~ U(0, max_force_n), t ~ U(a, b): ∫ min(1, k / t) dt / (b − a) with k = speed·m / F_max."""
    a, b = duration_s
    if max_force_n <= 0:
        return 1.0
    k = speed_mps * mass_kg / max_force_n
    if k >= b:
        return 1.0
    if k <= a:
        return k * math.log(b / a) / (b - a)
    return ((k - a) + k * math.log(b / k)) / (b - a)


def push_capture(balance: dict, push: ForcePushEvent, *, samples: int, seed: int, episode_s: float = 20.0) -> dict:
    """Which of `push`'s pushes an ankle strategy recovers from, per curriculum level (see the module docstring)."""
    mass, reach_m = balance["mass_kg"], balance["com_range_the_ankles_can_hold_cm"] / 100
    capture_mps = reach_m * math.sqrt(GRAVITY_MPS2 / balance["com_height_m"])
    rng = np.random.default_rng(seed)
    lo, hi = push.interval_s
    per_level = {}
    for level in CAPTURE_LEVELS:
        max_force = push.max_force_n * level
        impulse = rng.uniform(0, max_force, samples) * rng.uniform(*push.duration_s, samples) / mass
        length = np.full(samples, episode_s)
        onset, alive = rng.uniform(lo, hi, samples), np.ones(samples, dtype=bool)
        while alive.any():
            force, duration = rng.uniform(0, max_force, samples), rng.uniform(*push.duration_s, samples)
            fails = alive & (onset < episode_s) & (force * duration / mass > capture_mps)
            length[fails] = np.minimum(episode_s, onset[fails] + duration[fails] + FALL_AFTER_PUSH_S)
            alive &= ~fails & (onset < episode_s)
            onset = onset + rng.uniform(lo, hi, samples)
        per_level[f"{level:g}"] = {
            "max_push_mps": float(max_force * push.duration_s[1] / mass),
            "fraction_within_closed_form": fraction_within(capture_mps, mass, max_force, push.duration_s),
            "fraction_within_monte_carlo": float(np.mean(impulse <= capture_mps)),
            "mean_episode_s_without_stepping": float(length.mean()),
            "fraction_20s_without_stepping": float(np.mean(length >= episode_s)),
        }
    return {
        "capture_speed_mps": capture_mps,
        "push": {"max_force_n": push.max_force_n, "duration_s": push.duration_s, "interval_s": push.interval_s},
        "levels": per_level,
    }


def stand_preset_push(physics_model: object) -> ForcePushEvent:
    """The push event the stand preset trains with (`tasks.walk`'s own `get_events`)."""
    from ksim_entropy.kbot.walk import KBotWalkingTask, WalkConfig, preset_config

    task = KBotWalkingTask(WalkConfig(**preset_config("stand")))
    return task.get_events(physics_model)["push"]


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
    balance = balancer.balance_margin()
    capture = push_capture(balance, stand_preset_push(balancer.sim.model), samples=200_000, seed=args.seed)
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
        "balance": balance,
        "push_capture": capture,
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
