"""Does learning from a robot's own logs make the standing policy stand better on it? JSON + PNG.

    python bench/transfer_eval.py --out bench/results/transfer_stand_cpu [--robot-seed 0] [--updates 150]
        [--seeds 0 1] [--arms plain,fitted_kl,dann] [--push-mps 0.1 0.2 0.3] [--episodes 16]

The "real" robot is the stand-in (`ksim_entropy.testing.reality.HiddenRobot.random(--robot-seed)`: 1 kHz physics and
PD, hidden masses, friction, gains, latency, encoder offsets, IMU biases, noise). Every step is the user's own
command, run as a subprocess, its output kept in `<out>_runs/`:

1. logs of the robot: `--fit-seconds` of the excitation script on a stand, and `--windows-seconds` standing on the
   floor under the source policy (`assets/policies/kbot-stand`) with 0.1 m/s pushes, as kinfer NDJSON;
2. `tasks.fit --suspended` on the first (the weighed mass given, ±1 %) → `fitted.json`; `tasks.windows` on the
   second → `real_windows.npz`;
3. each arm fine-tunes the shipped standing checkpoint for `--updates` PPO updates at learning rate 1e-4, per seed,
   then `tasks.walk` exports it:
   - `plain`: nominal randomization (the control: as much training, nothing from the robot);
   - `fitted_kl`: `randomization=fitted.json finetune_kl=0.1` (issue 35 item 2);
   - `dann`: `dann_windows=real_windows.npz` (item 1);
   - `fitted`: `randomization=fitted.json` without the KL;
   - `matched`: the nominal ranges' widths entropy-matched to the fitted ones (`entropy_target_path=fitted.json`);
   - `c2st`: the nominal ranges' widths moved by a C2ST against the real windows (`randomization_mode=uniform
     c2st_windows=real_windows.npz`, item 3);
4. every policy (and the source, untouched) stands `--episodes` × 20 s at zero command on the stand-in robot and on
   the nominal robot (the same 1 kHz simulator without the hidden values), pushed by a horizontal velocity impulse
   of each `--push-mps` every 2-4 s; the episode seeds are the same for every policy. Reported per robot and push:
   mean standing time (s; an episode ends when the robot falls) and success (the share that stood 20 s); transfer
   efficiency = standing on the stand-in robot / standing on the nominal robot.

Already there, each is reused: an arm's `policy.kinfer`, standing results for the same options
(`<arm>_s<seed>/transfer_eval.json`, `source_transfer_eval.json`), the logs, the fit and the windows. So an
interrupted bench resumes where it stopped, and arms can be added later.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emit import emit_json

import ksim_entropy  # noqa: F401  (headless rendering defaults before anything imports mujoco)
from ksim_entropy.bridge.logs import write_ndjson
from ksim_entropy.formats.jsonfile import write_json
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.ppo.checkpoint import inspect_checkpoint
from ksim_entropy.testing.reality import HiddenRobot, reality_log

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "assets" / "policies" / "kbot-stand"
EPISODE_S = 20.0
CTRL_DT_S = 0.02
ARMS: dict[str, list[str]] = {
    "plain": [],
    "fitted_kl": ["randomization={fitted}", "finetune_kl=0.1"],
    "dann": ["dann_windows={windows}"],
    "fitted": ["randomization={fitted}"],
    "matched": ["entropy_target_path={fitted}"],
    "c2st": ["randomization_mode=uniform", "c2st_windows={windows}"],
}


def run(cmd: list[str], log_path: Path) -> None:
    """Run one command from the project root, its output into `log_path`; exit if it fails."""
    print(f"[transfer] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (
        log_path.open("w") as log,
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith(("update ", "error", "[fit]", "stage", "wrote")):
                print(f"[transfer]   {line.rstrip()}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[1:3])} exited with {proc.returncode}; see {log_path}")


def robot_data(hidden: HiddenRobot, args: argparse.Namespace, runs: Path) -> tuple[Path, Path]:
    """The robot's logs, fitted.json and real_windows.npz (made once, then reused)."""
    files = resolve_robot_files("local")
    excite, fitted, windows = runs / "excite.ndjson", runs / "fitted.json", runs / "real_windows.npz"
    if not excite.exists():
        write_ndjson(reality_log(hidden, seconds=args.fit_seconds, seed=100, files=files), excite)
    standing = []
    for i in range(round(args.windows_seconds / EPISODE_S)):
        path = runs / f"standing_{i}.ndjson"
        if not path.exists():
            log = reality_log(
                hidden, seconds=EPISODE_S, seed=200 + i, suspended=False, files=files, policy=SOURCE / "policy.kinfer",
                push_mps=0.1,
            )  # fmt: skip
            write_ndjson(log, path)
        standing.append(path)
    if not fitted.exists():
        fit = [sys.executable, "-m", "tasks.fit", "--real", str(excite), "--suspended", "--out", str(fitted)]
        run([*fit, "--mass-scale", f"{hidden.mass_scale:.6f}", "--mass-scale-std", "0.01"], runs / "fit.log")
    if not windows.exists():
        run([sys.executable, "-m", "tasks.windows", *map(str, standing), "--out", str(windows)], runs / "windows.log")
    return fitted, windows


def fine_tune(arm: str, seed: int, data: dict[str, Path], args: argparse.Namespace, runs: Path) -> Path:
    """One arm's fine-tune of the shipped checkpoint; the exported policy's path."""
    exp_dir = runs / f"{arm}_s{seed}"
    policy = exp_dir / "policy.kinfer"
    if policy.exists():
        return policy
    if exp_dir.exists():
        raise SystemExit(f"error: {exp_dir} exists without policy.kinfer (an interrupted run); remove it to rerun")
    start = inspect_checkpoint(SOURCE / "ckpt.bin").num_steps
    cmd = [
        sys.executable,
        "-m",
        "tasks.walk",
        "preset=stand",
        f"load_from_ckpt_path={SOURCE / 'ckpt.bin'}",
        "learning_rate=1e-4",
        f"random_seed={seed}",
        f"max_steps={start + args.updates}",
        f"exp_dir={exp_dir}",
        "sim2sim_gate=false",
        *(o.format(**data) for o in ARMS[arm]),
    ]
    run(cmd, runs / f"{arm}_s{seed}.log")
    return policy


def standing(policy: Path, hidden: HiddenRobot, push_mps: float, episodes: int) -> dict:
    """Standing time (s) of `episodes` seeded 20 s episodes of `policy` on `hidden` under pushes of `push_mps`."""
    files = resolve_robot_files("local")
    times = []
    for seed in range(episodes):
        log = reality_log(
            hidden, seconds=EPISODE_S, seed=1000 + seed, suspended=False, files=files, policy=policy,
            push_mps=push_mps, stop_at_fall=True,
        )  # fmt: skip
        times.append(len(log) * CTRL_DT_S)
    return {
        "standing_s": statistics.fmean(times),
        "success": sum(t >= EPISODE_S for t in times) / episodes,
        "episodes_s": [round(t, 2) for t in times],
    }


def evaluate(policy: Path, hidden: HiddenRobot, args: argparse.Namespace, cache: Path) -> dict:
    """Standing on the stand-in and on the nominal robot at every push speed, and their ratio (kept in `cache`)."""
    options = {"robot_seed": args.robot_seed, "push_mps": args.push_mps, "episodes": args.episodes}
    if cache.exists() and (saved := json.loads(cache.read_text())).get("options") == options:
        return saved["levels"]
    out = {}
    for push in args.push_mps:
        real, nominal = (
            standing(policy, hidden, push, args.episodes),
            standing(policy, HiddenRobot(), push, args.episodes),
        )
        out[f"{push:g}"] = {
            "stand_in": real,
            "nominal": nominal,
            "transfer_efficiency": real["standing_s"] / nominal["standing_s"],
        }
    write_json({"options": options, "levels": out}, cache, overwrite=True)
    return out


def summarize(results: dict[str, list[dict]], pushes: list[float]) -> dict:
    """Per arm and push: the mean, min and max over seeds of the stand-in standing time and success."""
    summary = {}
    for arm, rows in results.items():
        summary[arm] = {}
        for push in map(lambda p: f"{p:g}", pushes):
            stand = [r["levels"][push]["stand_in"]["standing_s"] for r in rows]
            success = [r["levels"][push]["stand_in"]["success"] for r in rows]
            efficiency = [r["levels"][push]["transfer_efficiency"] for r in rows]
            summary[arm][push] = {
                "stand_in_standing_s": {"mean": statistics.fmean(stand), "min": min(stand), "max": max(stand)},
                "stand_in_success": {"mean": statistics.fmean(success), "min": min(success), "max": max(success)},
                "transfer_efficiency": {"mean": statistics.fmean(efficiency)},
                "nominal_standing_s": statistics.fmean(r["levels"][push]["nominal"]["standing_s"] for r in rows),
            }
    return summary


def plot(summary: dict, pushes: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(summary)
    for i, (arm, per_push) in enumerate(summary.items()):
        x = [j + i * width for j in range(len(pushes))]
        for ax, key in zip(axes, ("stand_in_standing_s", "stand_in_success"), strict=True):
            values = [per_push[f"{p:g}"][key] for p in pushes]
            mean = [v["mean"] for v in values]
            err = [
                [m - v["min"] for m, v in zip(mean, values, strict=True)],
                [v["max"] - m for m, v in zip(mean, values, strict=True)],
            ]
            ax.bar(x, mean, width, yerr=err, capsize=3, label=arm)
        axes[0].scatter(x, [per_push[f"{p:g}"]["nominal_standing_s"] for p in pushes], marker="_", color="k", s=80)
    for ax, label in zip(axes, ("standing time on the stand-in robot (s)", "episodes that stood 20 s"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(pushes))], [f"push {p:g} m/s" for p in pushes])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].axhline(EPISODE_S, color="grey", lw=0.8, ls="--")
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "Standing on the stand-in robot after fine-tuning (bars: mean over seeds, whiskers: min-max; -: nominal)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results stem: <out>.json, <out>.png, <out>_runs/")
    parser.add_argument("--robot-seed", type=int, default=0, help="HiddenRobot.random seed of the stand-in robot")
    parser.add_argument("--updates", type=int, default=150, help="PPO updates of every fine-tune")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", default="plain,fitted_kl,dann", help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--push-mps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--episodes", type=int, default=16, help="20 s episodes per policy, robot and push")
    parser.add_argument("--fit-seconds", type=float, default=120.0, help="excitation log on a stand (s)")
    parser.add_argument("--windows-seconds", type=float, default=60.0, help="standing logs for DANN's windows (s)")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise SystemExit(f"error: unknown arms {unknown}; choose from {', '.join(ARMS)}")
    if args.updates < 1 or args.episodes < 1 or not args.seeds or min(args.push_mps) < 0:
        raise SystemExit("error: need --updates >= 1, --episodes >= 1, a seed, and --push-mps >= 0")
    if round(args.windows_seconds / EPISODE_S) < 1:
        raise SystemExit(f"error: --windows-seconds must be at least {EPISODE_S} s")
    start = time.monotonic()
    runs = args.out.parent / f"{args.out.name}_runs"
    runs.mkdir(parents=True, exist_ok=True)
    hidden = HiddenRobot.random(args.robot_seed, 20)
    fitted, windows = robot_data(hidden, args, runs)
    data = {"fitted": fitted, "windows": windows}
    print("[transfer] the source policy", file=sys.stderr, flush=True)
    source = evaluate(SOURCE / "policy.kinfer", hidden, args, runs / "source_transfer_eval.json")
    results = {"source": [{"seed": None, "levels": source}]}
    for arm in arms:
        results[arm] = []
        for seed in args.seeds:
            policy = fine_tune(arm, seed, data, args, runs)
            print(f"[transfer] {arm} seed {seed}: standing", file=sys.stderr, flush=True)
            levels = evaluate(policy, hidden, args, policy.parent / "transfer_eval.json")
            results[arm].append({"seed": seed, "policy": str(policy), "levels": levels})
            summary = results[arm][-1]["levels"][f"{args.push_mps[len(args.push_mps) // 2]:g}"]["stand_in"]
            print(f"[transfer] {arm} seed {seed}: {summary['standing_s']:.1f} s", file=sys.stderr, flush=True)
    summary = summarize(results, args.push_mps)
    png = args.out.with_suffix(".png")
    plot(summary, args.push_mps, png)
    emit_json(
        {
            "bench": "transfer_eval",
            "command": "python bench/transfer_eval.py " + " ".join(sys.argv[1:]),
            "robot": {"seed": args.robot_seed, "hidden": dataclasses.asdict(hidden)},
            "options": {k: v for k, v in vars(args).items() if k != "out"},
            "summary": summary,
            "results": results,
            "png": str(png),
            "wall_s": time.monotonic() - start,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        },
        args.out.with_suffix(".json"),
    )


if __name__ == "__main__":
    main()
