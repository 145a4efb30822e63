"""How well does the deterministic policy stand, checkpoint by checkpoint? JSON + PNG.

    python bench/standing_eval.py RUN_DIR [--curve LEARNING.json] [--episodes 5] [--seconds 20] --out FILE.json

A training curve's episode length is that of the *sampling* policy (σ ≈ 0.05 rad of exploration noise on every
joint) under the training disturbances; what a user deploys is the mean action. This exports every checkpoint a
`tasks.walk` run kept (`RUN_DIR/checkpoints/ckpt.<update>.bin`; train with `only_save_most_recent=false` to keep
them) to `.kinfer` and runs each through the sim-to-sim gate at zero command: CPU MuJoCo at 1 ms (RK4), kinfer's
runtime, a ±0.02 rad start, on the floor, levels nominal / 20 ms latency / 2× sensor noise / a 0.5 m/s push every 2 s
(`ksim_entropy.sim2real.sim2sim`). Per checkpoint and level: success rate (episodes that did not fall) and mean standing
time (s, the episode length for those that did not fall). With `--curve` (the JSON `bench/learning.py` wrote for the
run) each checkpoint is placed at its wall time and env-step count.
"""

import argparse
import json
import math
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from emit import emit_json

import ksim_entropy  # noqa: F401  (headless rendering defaults before anything imports mujoco)
from ksim_entropy.cli.export import export_checkpoint
from ksim_entropy.kbot.robot import RobotFiles, resolve_robot_files
from ksim_entropy.sim2real.sim2sim import DEFAULT_LEVELS, GateOptions, run_gate

LEVEL_NAMES = ("nominal", "latency 20 ms", "noise x2", "push 0.5 m/s")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(update, path) of every `ckpt.<update>.bin` in the run's checkpoints folder, oldest first."""
    found = []
    for path in (run_dir / "checkpoints").glob("ckpt.*.bin"):
        match = re.fullmatch(r"ckpt\.(\d+)\.bin", path.name)
        if match and not path.is_symlink():
            found.append((int(match.group(1)), path))
    return sorted(found)


def curve_position(curve: dict | None, update: int) -> dict[str, float | None]:
    """Wall time (s) and env-steps of the first curve point at or after `update` (None without a curve)."""
    if curve is None:
        return {"wall_s": None, "env_steps": None}
    points = [p for run in curve.get("runs", []) for p in run.get("points", [])]
    later = [p for p in points if p["update"] >= update]
    point = (
        min(later, key=lambda p: p["update"]) if later else (max(points, key=lambda p: p["update"]) if points else None)
    )
    return (
        {"wall_s": point["wall_s"], "env_steps": point["env_steps"]} if point else {"wall_s": None, "env_steps": None}
    )


def evaluate(ckpt: Path, files: RobotFiles, episodes: int, seconds: float, work_dir: Path) -> dict[str, dict]:
    """Export one checkpoint into `work_dir` and gate it at zero command: per level, success rate and standing (s)."""
    update = ckpt.stem.split(".")[-1]
    policy = export_checkpoint(ckpt, work_dir / f"policy_{update}.kinfer", overwrite=True)
    levels = [level for level in DEFAULT_LEVELS if level.name in LEVEL_NAMES]
    gate = run_gate(policy, files, levels, GateOptions(episodes=episodes, seconds=seconds, command=(0.0, 0.0, 0.0)))
    per_level = {}
    for level in gate.levels:
        times = [seconds if t is None else t for t in level.fell_at_s]
        per_level[level.name] = {"success_rate": level.success_rate, "standing_s": sum(times) / len(times)}
    return per_level


def plot(rows: list[dict], path: Path, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_wall = all(r["wall_s"] is not None for r in rows)
    x = [r["wall_s"] / 60 if use_wall else r["update"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in LEVEL_NAMES:
        axes[0].plot(x, [r["levels"][name]["standing_s"] for r in rows], marker="o", label=name)
        axes[1].plot(x, [r["levels"][name]["success_rate"] for r in rows], marker="o", label=name)
    axes[0].axhline(seconds, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("mean standing time of the mean action (s)")
    axes[1].set_ylabel("episodes that did not fall")
    for ax in axes:
        ax.set_xlabel("wall time (min)" if use_wall else "update")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Deterministic K-Bot standing, gate simulator (1 ms RK4), zero command")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a tasks.walk experiment directory (holds checkpoints/)")
    parser.add_argument("--curve", type=Path, help="bench/learning.py's JSON for this run (wall time, env-steps)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (the PNG goes beside it)")
    args = parser.parse_args()
    found = checkpoints(args.run_dir)
    if not found:
        raise SystemExit(f"error: no checkpoints/ckpt.<update>.bin in {args.run_dir}")
    if args.episodes < 1 or not args.seconds > 0:
        raise SystemExit("error: need --episodes >= 1 and --seconds > 0")
    curve = json.loads(args.curve.read_text()) if args.curve else None
    files = resolve_robot_files("local")
    start = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for update, ckpt in found:
            print(f"[standing] update {update}: export and gate", file=sys.stderr, flush=True)
            per_level = evaluate(ckpt, files, args.episodes, args.seconds, Path(tmp))
            rows.append({"update": update, **curve_position(curve, update), "levels": per_level})
            nominal = per_level["nominal"]
            summary = f"nominal {nominal['standing_s']:.1f} s, success {nominal['success_rate']:.2f}"
            print(f"[standing] update {update}: {summary}", file=sys.stderr, flush=True)
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, png, args.seconds)
    result = {
        "bench": "standing_eval",
        "command": "python bench/standing_eval.py " + " ".join(sys.argv[1:]),
        "run_dir": str(args.run_dir),
        "options": {"episodes": args.episodes, "seconds": args.seconds, "command": [0.0, 0.0, 0.0]},
        "checkpoints": rows,
        "png": str(png),
        "wall_s": time.monotonic() - start,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    if not all(math.isfinite(r["levels"]["nominal"]["standing_s"]) for r in rows):
        raise SystemExit("error: non-finite standing time")
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
