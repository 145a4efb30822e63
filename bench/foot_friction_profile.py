"""Can standing logs tell the foot friction? A replay-loss profile over μ, at the truth and with small offset errors.

    python bench/foot_friction_profile.py [--seeds 0 1 2] [--seconds 60] [--push-mps 0.1] [--out PREFIX]

For each seed the stand-in K-Bot (`HiddenRobot.random(seed)`: hidden physics, latency, encoder zero offsets, IMU
biases and noise, foot friction μ) runs the shipped standing policy closed-loop on the floor for `--seconds` under
velocity pushes every 2-4 s (`reality_log(..., suspended=False)`). Its log is cut into `--windows` windows of
`--horizon` control steps and replayed on the floor (`ReplayModel(suspended=False)`, 1 ms physics, explicit servo)
over a grid of μ, with every other parameter held at:

- `truth`: the hidden robot's own values (the best any fit could hold them at);
- `offsets+2mrad`, `offsets+5mrad`: the truth with N(0, σ) added to each joint's zero offset (the suspended fit's
  identifiable offsets are within ~5 mrad: bench/results/fit_recovery_standing_cpu.json);
- `hip_yaw_offsets_0`: the truth with the two hip yaws' offsets at 0, the prior's centre, where the suspended fit
  leaves offsets it cannot identify.

Per μ, each window's loss is ½ mean over channels of log(mean squared residual + floor²) over the joint angles and
velocities (the fit's score); windows no μ replays (an unlogged push: best loss above 4× the median window's RMS)
are dropped, and a μ is kept unless its windows replay worse than the best μ's by more than 3 standard errors of
the per-window difference. Reported per seed and case: the kept range, whether it holds the truth, and the profile.
JSON to `<out>.json`, the profiles to `<out>.png`.
"""

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import numpy as np
from emit import emit_json

from ksim_entropy.actuation import use_native_pd
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.kbot.robot import KBOT_FOOT_COLLISION_GEOMS, load_metadata, load_robot_model, resolve_robot_files
from ksim_entropy.randomization import GeomFriction
from ksim_entropy.sim2real.fit import GLOBAL_PRIORS, fit_parameters
from ksim_entropy.sim2real.replay import ReplayModel, Windows, make_windows
from ksim_entropy.sim2real.sim import SimOptions
from ksim_entropy.testing.reality import HiddenRobot, reality_log

POLICY = Path(__file__).resolve().parents[1] / "assets" / "policies" / "kbot-stand" / "policy.kinfer"
MU_GRID = tuple(np.round(np.linspace(0.2, 1.5, 14), 3))
MAX_LOOP_S = 0.12  # the fit's loop-latency prior: the history each window carries
ANGLE_FLOOR_RAD, VEL_FLOOR_RAD_S = 1e-4, 1e-3  # the fit's residual floors
OUTLIER_RATIO, EXCLUDE_Z = 4.0, 3.0
CASES = ("truth", "offsets+2mrad", "offsets+5mrad", "hip_yaw_offsets_0")


def standing_windows(log: StepLog, hidden: HiddenRobot, count: int, horizon: int, history: int) -> Windows:
    """`count` windows spread evenly over a standing log, with the IMU readings (gyro bias removed) for the start."""
    angles, vels, outputs = (np.asarray(log.group(g), dtype=float) for g in ("joint_angles", "joint_vels", "output"))
    imu = (np.asarray(log.group("projected_g"), dtype=float), log.group("gyro") - np.asarray(hidden.gyro_bias_rad_s))
    starts = np.linspace(history, len(angles) - horizon - 2, count).round().astype(int)
    return make_windows(angles, vels, outputs, starts, horizon, history, imu)


def case_offsets(case: str, hidden: HiddenRobot, joints: tuple[str, ...], seed: int) -> np.ndarray:
    """The zero offsets (J,) rad the replay holds in `case`."""
    offsets = hidden.offsets(len(joints)).astype(float)
    rng = np.random.default_rng(1000 + seed)
    if case.startswith("offsets+"):
        offsets = offsets + rng.normal(0.0, float(case[len("offsets+") : -len("mrad")]) * 1e-3, offsets.size)
    elif case == "hip_yaw_offsets_0":
        offsets[[i for i, name in enumerate(joints) if "hip_yaw" in name]] = 0.0
    return offsets


def profile(replay: ReplayModel, windows: Windows, hidden: HiddenRobot, offsets: np.ndarray) -> dict:
    """The loss per window over `MU_GRID` with the physics at the truth and `offsets`, and the μ it keeps."""
    mu = np.array(MU_GRID)
    count = len(mu)
    truth = hidden.values(replay.joint_names)
    held = [hidden.mass_scale] + [truth[prior.name] for prior in GLOBAL_PRIORS]  # `fit_parameters`' order
    values = [np.full((count, 1), v) for v in held] + [np.repeat(offsets[None], count, 0), mu[:, None]]
    delay = (hidden.action_latency_s + hidden.obs_latency_s) / replay.dt_s
    angles, vels = replay.replay(values, np.full(count, delay), windows)
    msa = np.mean((angles - windows.angles[None]) ** 2, axis=2) + ANGLE_FLOOR_RAD**2
    msv = np.mean((vels - windows.vels[None]) ** 2, axis=2) + VEL_FLOOR_RAD_S**2
    per_window = 0.25 * (np.mean(np.log(msa), axis=2) + np.mean(np.log(msv), axis=2))  # (μ, W)
    best_per_window = per_window.min(axis=0)
    keep = best_per_window - np.median(best_per_window) <= math.log(OUTLIER_RATIO)
    table = per_window[:, keep]
    best = int(np.argmin(table.mean(axis=1)))
    difference = table - table[best][None]
    error = difference.std(axis=1, ddof=1) / math.sqrt(table.shape[1]) + 1e-12
    kept = difference.mean(axis=1) <= EXCLUDE_Z * error
    low, high = float(mu[kept].min()), float(mu[kept].max())
    return {
        "range": [low, high],
        "holds_truth": low <= hidden.foot_friction <= high,
        "best": float(mu[best]),
        "windows": int(keep.sum()),
        "loss": table.mean(axis=1).round(5).tolist(),
        "z_vs_best": (difference.mean(axis=1) / error).round(2).tolist(),
    }


def run_seed(seed: int, args: argparse.Namespace, replay: ReplayModel) -> dict:
    files = resolve_robot_files("local")
    hidden = HiddenRobot.random(seed, replay.num_joints)
    log = reality_log(
        hidden,
        seconds=args.seconds,
        seed=seed + 200,
        files=files,
        suspended=False,
        policy=POLICY,
        push_mps=args.push_mps,
    )
    history = round(MAX_LOOP_S / replay.dt_s) // replay.substeps + 1
    windows = standing_windows(log, hidden, args.windows, args.horizon, history)
    out = {"seed": seed, "truth": hidden.foot_friction, "cases": {}}
    for case in CASES:
        started = time.perf_counter()
        result = profile(replay, windows, hidden, case_offsets(case, hidden, replay.joint_names, seed))
        out["cases"][case] = result
        if not args.quiet:
            low, high = result["range"]
            print(
                f"seed {seed} {case:>18}: μ {hidden.foot_friction:.3f} -> kept [{low:.2f}, {high:.2f}], "
                f"best {result['best']:.2f} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        for case, result in run["cases"].items():
            ax.plot(MU_GRID, result["loss"], marker=".", label=case)
        ax.axvline(run["truth"], color="k", linestyle="--", linewidth=1, label="true μ")
        ax.set(title=f"seed {run['seed']}", xlabel="foot friction μ", ylabel="mean window loss (log-RMS)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--push-mps", type=float, default=0.1)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    files = resolve_robot_files("local")
    model = use_native_pd(load_robot_model(files), load_metadata(files))
    feet = [g for pair in KBOT_FOOT_COLLISION_GEOMS.values() for g in pair]
    parameters = [*fit_parameters(files), GeomFriction.create(model, geom_names=feet, low=0.2, high=1.5)]
    replay = ReplayModel(files, parameters, suspended=False, options=SimOptions(dt_s=0.001), servo="explicit")
    runs = [run_seed(seed, args, replay) for seed in args.seeds]
    result = {
        "benchmark": "foot_friction_profile",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "command": "python " + " ".join(sys.argv),
        "mu_grid": list(MU_GRID),
        "truth_held": {case: sum(r["cases"][case]["holds_truth"] for r in runs) for case in CASES},
        "seeds": len(runs),
        "runs": runs,
    }
    if args.out:
        emit_json(result, Path(args.out).with_suffix(".json"))
        plot(runs, Path(args.out).with_suffix(".png"))
    else:
        emit_json(result, None)


if __name__ == "__main__":
    main()
