"""Learning curves of `python -m tasks.walk`: arms × seeds at one wall-clock budget each, as JSON + PNG.

    python bench/learning.py --out bench/results/learning_stand_cpu [--minutes 60] [--seeds 0,1]
        [--arms auto,fixed] [--arm NAME:key=value,key=value ...] [key=value ...]
    python bench/learning.py --out bench/results/learning_stand_alpha_cpu --merge A.json B.json ...

Each run is a fresh `python -m tasks.walk preset=<--preset> random_seed=<seed> max_train_seconds=<budget>` process
(one at a time: the runs share the machine), with the arm's overrides and then the trailing `key=value`s. The run's
stdout is kept in `<out>_runs/<arm>_s<seed>.log`, its experiment directory (checkpoints, `policy.kinfer`, the logged
records in `metrics.jsonl`) in `<out>_runs/<arm>_s<seed>/`. A curve point is taken from every record xax logs, read
as the run appends it (one per log interval, ~1 s), thinned to
one per `--every-s` seconds of wall time since the process started (imports and compilation included):
update, env-steps, episode length (s, mean over the episodes that ended in the last 32 updates; see
`ksim_entropy.progress`), the fraction of them that reached the time limit, total reward per step, policy entropy
(nats/dim), its target and the temperature α, and the curriculum level.

A curve's episode length is the *sampling* policy's (exploration noise on every action). So by default each run also
keeps a checkpoint every `--standing-every-min` minutes and, after it ends, exports each one and runs its mean
action through the sim-to-sim gate at zero command (`standing_eval.py`: 1 ms CPU MuJoCo, kinfer, nominal / 20 ms
latency / 2× noise / pushes): the deployable policy's standing time against wall time, the bottom row of the PNG.

Per run the summary gives the episode length over the last `--final-minutes` of the budget, the first wall time and
env-step count at which it reached `--threshold-s`, how many updates in a row α spent on a bound at most, and after
`--settle-updates` the largest and mean gap between the policy entropy and its target and the range of α. Per arm:
the mean, min and max of those over seeds. Built-in arms: ``auto`` (the preset's auto-tuned temperature) and
``fixed`` (ksim's kbot-joystick `entropy_coef` = 0.004 as a constant α in the same loss).

An hour per run does not fit many runs into one sitting, so `--merge` joins the outputs of several invocations
(other arms or seeds, same preset, budget and summary windows) into one JSON + PNG: each run keeps the command that
made it, the per-arm spread is recomputed over all of them, and an arm × seed given twice is an error.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emit import emit_json
from standing_eval import checkpoints, curve_position, evaluate
from walk_throughput import json_records

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.progress import METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]

ARMS: dict[str, list[str]] = {
    "auto": [],
    "fixed": ["temperature_mode=fixed", "initial_alpha=0.004"],
}

FIELDS = {  # curve key: (record group, metric key)
    "episode_length_s": ("train", "episode_length_s"),
    "episode_success": ("train", "episode_success"),
    "reward": ("reward", "_total"),
    "entropy": ("train", "policy_entropy_per_dim"),
    "target_entropy": ("train", "temperature_target_entropy"),
    "alpha": ("train", "temperature_alpha"),
    "alpha_bound_updates": ("train", "temperature_bound_updates"),
    "curriculum_level": ("curriculum", "level"),
}


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`NAME:key=value,key=value` (or a built-in NAME) → (name, overrides)."""
    name, _, rest = text.partition(":")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise SystemExit(f"error: arm name {name!r} must be letters, digits, '-' or '_' (in {text!r})")
    if not rest:
        if name not in ARMS:
            raise SystemExit(f"error: unknown arm {name!r}; built-in arms are {', '.join(ARMS)}, or NAME:key=value,...")
        return name, list(ARMS[name])
    overrides = [kv for kv in rest.split(",") if kv]
    bad = [kv for kv in overrides if "=" not in kv]
    if bad:
        raise SystemExit(f"error: arm {name!r}: {bad} are not key=value")
    return name, overrides


def curve_point(record: dict, wall_s: float) -> dict | None:
    """One curve point from one xax JSON record, or None if the record is not a training update."""
    state = record.get("state")
    if not isinstance(state, dict) or state.get("phase") != "train" or "train" not in record:
        return None
    point = {"wall_s": round(wall_s, 2), "update": int(state["num_steps"]), "env_steps": int(state["num_samples"])}
    for key, (group, name) in FIELDS.items():
        value = record.get(group, {}).get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            point[key] = float(value)
    return point


class MetricsTail:
    """Records appended to a run's metrics file since the last call (whole lines; the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path, self._handle, self._partial = path, None, ""

    def records(self) -> list[dict]:
        if self._handle is None:
            if not self.path.is_file():
                return []
            self._handle = self.path.open(encoding="utf-8")
        text = self._partial + self._handle.read()
        complete, _, self._partial = text.rpartition("\n")
        return json_records(complete)


def train_one(name: str, overrides: list[str], seed: int, args: argparse.Namespace, runs_dir: Path) -> dict:
    """Run one training process to its budget; its curve and summary."""
    exp_dir = runs_dir / f"{name}_s{seed}"
    if exp_dir.exists():
        raise SystemExit(f"error: {exp_dir} exists; pick another --out or remove it")
    cmd = [
        sys.executable,
        "-m",
        "tasks.walk",
        f"preset={args.preset}",
        f"random_seed={seed}",
        f"max_train_seconds={args.minutes * 60.0}",
        f"exp_dir={exp_dir}",
        "sim2sim_gate=false",
        *(
            ["only_save_most_recent=false", f"save_every_n_seconds={args.standing_every_min * 60.0}"]
            if args.standing_every_min > 0
            else []
        ),
        *overrides,
        *args.overrides,
    ]
    print(f"[learning] {name} seed {seed}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    points: list[dict] = []
    start = time.monotonic()
    log_path = runs_dir / f"{name}_s{seed}.log"
    metrics = MetricsTail(exp_dir / METRICS_FILE)

    def take_points() -> None:
        wall = time.monotonic() - start
        for record in metrics.records():
            point = curve_point(record, wall)
            if point and (not points or point["wall_s"] - points[-1]["wall_s"] >= args.every_s):
                points.append(point)

    with (
        log_path.open("w") as log,
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:  # at least one progress line every 10 s while training
            log.write(line)
            if line.startswith("update "):
                print(f"[learning] {name} s{seed} | {line.rstrip()}", file=sys.stderr, flush=True)
            take_points()
        rc = proc.wait()
        take_points()
    if rc != 0:
        raise SystemExit(f"error: {name} seed {seed} exited with {rc}; see {log_path}")
    standing = standing_curve(exp_dir, points, args) if args.standing_every_min > 0 else []
    return {
        "arm": name,
        "seed": seed,
        "overrides": overrides,
        "log": str(log_path),
        "points": points,
        "standing": standing,
        "summary": {**summarize(points, args), **standing_summary(standing, args)},
    }


def standing_curve(exp_dir: Path, points: list[dict], args: argparse.Namespace) -> list[dict]:
    """The deterministic policy of every kept checkpoint through the gate at zero command (`standing_eval.py`)."""
    files = resolve_robot_files("local")
    rows = []
    for update, ckpt in checkpoints(exp_dir):
        print(f"[learning] standing of update {update}", file=sys.stderr, flush=True)
        levels = evaluate(ckpt, files, args.standing_episodes, args.standing_seconds, exp_dir)
        rows.append({"update": update, **curve_position({"runs": [{"points": points}]}, update), "levels": levels})
    return rows


def standing_summary(rows: list[dict], args: argparse.Namespace) -> dict:
    """The last checkpoint's nominal standing, and the first wall time at which every nominal episode stood."""
    if not rows:
        return {}
    full = next((r for r in rows if r["levels"]["nominal"]["success_rate"] == 1.0), None)
    return {
        "final_standing_s": rows[-1]["levels"]["nominal"]["standing_s"],
        "final_standing_success": rows[-1]["levels"]["nominal"]["success_rate"],
        "first_full_standing_wall_s": full["wall_s"] if full else None,
    }


def summarize(points: list[dict], args: argparse.Namespace) -> dict:
    """Final episode length, time to threshold and α-on-bound count of one curve."""
    budget_s = args.minutes * 60.0
    tail = [p for p in points if p["wall_s"] >= budget_s - args.final_minutes * 60.0 and "episode_length_s" in p]
    reached = next((p for p in points if p.get("episode_length_s", 0.0) >= args.threshold_s), None)
    last = points[-1] if points else {}
    return {
        "updates": last.get("update", 0),
        "env_steps": last.get("env_steps", 0),
        "final_episode_length_s": statistics.fmean(p["episode_length_s"] for p in tail) if tail else None,
        "final_episode_success": statistics.fmean(p.get("episode_success", 0.0) for p in tail) if tail else None,
        "final_entropy": last.get("entropy"),
        "final_curriculum_level": last.get("curriculum_level"),
        "threshold_wall_s": reached["wall_s"] if reached else None,
        "threshold_env_steps": reached["env_steps"] if reached else None,
        "max_alpha_bound_updates": max((p.get("alpha_bound_updates", 0.0) for p in points), default=0.0),
        **entropy_tracking(points, args.settle_updates),
    }


def entropy_tracking(points: list[dict], settle_updates: int) -> dict:
    """How closely the policy entropy followed its target after `settle_updates` updates (nats/dim), and α's range."""
    late = [p for p in points if p["update"] > settle_updates and "entropy" in p and "target_entropy" in p]
    errors = [p["entropy"] - p["target_entropy"] for p in late]
    alphas = [p["alpha"] for p in late if "alpha" in p]
    return {
        "entropy_error_max_abs": max((abs(e) for e in errors), default=None),
        "entropy_error_mean": statistics.fmean(errors) if errors else None,
        "alpha_min": min(alphas, default=None),
        "alpha_max": max(alphas, default=None),
    }


def arm_summary(runs: list[dict]) -> dict:
    """Mean, min and max over seeds of each numeric summary field."""
    out: dict[str, dict] = {}
    for key in runs[0]["summary"]:
        values = [r["summary"][key] for r in runs if r["summary"][key] is not None]
        if values:
            out[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}
    return out


def plot(result: dict, path: Path) -> None:
    """Episode length against wall time and env-steps, entropy and α against updates; colour: arm, dashes: seed."""
    from matplotlib.figure import Figure

    gated = any(r["wall_s"] is not None for run in result["runs"] for r in run.get("standing", []))
    fig = Figure(figsize=(13, 12 if gated else 8), dpi=100)
    axes = fig.subplots(3 if gated else 2, 2)  # the bottom row only when checkpoints were gated
    colors, seeds = {}, sorted({run["seed"] for run in result["runs"]})
    for run in result["runs"]:
        color = colors.setdefault(run["arm"], f"C{len(colors)}")
        style = {"color": color, "ls": ("-", "--", "-.", (0, (5, 1, 1, 1)))[seeds.index(run["seed"]) % 4]}
        pts = [p for p in run["points"] if "episode_length_s" in p]
        label = f"{run['arm']} s{run['seed']}"
        axes[0, 0].plot([p["wall_s"] / 60 for p in pts], [p["episode_length_s"] for p in pts], **style, label=label)
        axes[0, 1].plot([p["env_steps"] / 1e6 for p in pts], [p["episode_length_s"] for p in pts], **style)
        ent = [p for p in run["points"] if "entropy" in p]
        axes[1, 0].plot([p["update"] for p in ent], [p["entropy"] for p in ent], **style)
        tgt = [p for p in ent if "target_entropy" in p]
        axes[1, 0].plot([p["update"] for p in tgt], [p["target_entropy"] for p in tgt], color=color, ls=":", lw=1)
        alpha = [p for p in run["points"] if "alpha" in p]
        axes[1, 1].plot([p["update"] for p in alpha], [p["alpha"] for p in alpha], **style)
        rows = [r for r in run.get("standing", []) if r["wall_s"] is not None]
        for col, level in ((0, "nominal"), (1, "push 0.5 m/s")) if gated else ():
            axes[2, col].plot(
                [r["wall_s"] / 60 for r in rows], [r["levels"][level]["standing_s"] for r in rows], **style, marker="o"
            )
    threshold = result["config"]["threshold_s"]
    for ax in axes[0]:
        ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_ylabel("episode length (s)")
    axes[0, 0].set_xlabel("wall time (min, compilation included)")
    axes[0, 1].set_xlabel("env-steps (M)")
    axes[1, 0].set_xlabel("update")
    axes[1, 0].set_ylabel("policy entropy (nats/dim; dotted: target)")
    axes[1, 1].set_xlabel("update")
    axes[1, 1].set_ylabel("temperature α")
    axes[1, 1].set_yscale("symlog", linthresh=1e-4)  # log either side of zero: a signed α goes negative
    for col, level in ((0, "nominal"), (1, "a 0.5 m/s push every 2 s")) if gated else ():
        axes[2, col].set_xlabel("wall time (min)")
        axes[2, col].set_ylabel(f"mean action standing (s), gate: {level}")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"tasks.walk preset={result['config']['preset']}, {result['config']['minutes']} min per run")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def write_result(result: dict, out: Path) -> None:
    """`<out>.png` and `<out>.json` (also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(result, out.with_suffix(".png"))
    emit_json(result, out.with_suffix(".json"))


MERGE_KEYS = ("preset", "minutes", "threshold_s", "final_minutes")  # what runs of one comparison must share


def merge(paths: list[Path]) -> dict:
    """One result from several `learning.py` outputs: their runs, each arm's spread over all of them."""
    sources = []
    for path in paths:
        try:
            source = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: cannot read {path}: {err}") from None
        if not isinstance(source, dict) or source.get("bench") != "learning":
            raise SystemExit(f"error: {path} is not an output of bench/learning.py")
        sources.append(source)
    first = sources[0]["config"]
    arms: dict[str, list[str]] = {}
    runs, seen = [], set()
    for path, source in zip(paths, sources, strict=True):
        differ = [k for k in MERGE_KEYS if source["config"].get(k) != first.get(k)]
        if differ:
            mismatch = ", ".join(f"{k} {source['config'].get(k)!r} vs {first.get(k)!r}" for k in differ)
            raise SystemExit(f"error: {path} is not comparable with {paths[0]}: {mismatch}")
        for run in source["runs"]:
            if run["arm"] in arms and arms[run["arm"]] != run["overrides"]:
                raise SystemExit(f"error: arm {run['arm']!r} has other overrides in {path}: {run['overrides']}")
            if (run["arm"], run["seed"]) in seen:
                raise SystemExit(f"error: {run['arm']} seed {run['seed']} is in more than one input (again in {path})")
            arms[run["arm"]] = run["overrides"]
            seen.add((run["arm"], run["seed"]))
            runs.append({**run, "command": source["command"]})
    return {
        "bench": "learning",
        "command": "python bench/learning.py " + " ".join(sys.argv[1:]),
        "merged_from": [
            {"path": str(p), "command": s["command"], "overrides": s["config"]["overrides"]}
            for p, s in zip(paths, sources, strict=True)
        ],
        "machine": sources[0]["machine"],
        "config": {
            **{k: first[k] for k in MERGE_KEYS},
            "seeds": sorted({seed for _, seed in seen}),
            "arms": arms,
            "overrides": "per input, in merged_from",
        },
        "arms": {name: arm_summary([r for r in runs if r["arm"] == name]) for name in arms},
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Writes <out>.json and <out>.png; runs in <out>_runs/.")
    parser.add_argument("--preset", default="stand")
    parser.add_argument("--minutes", type=float, default=60.0, help="Wall-clock budget per run.")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default="auto,fixed", help="Comma-separated built-in arms.")
    parser.add_argument("--arm", action="append", default=[], help="An extra arm, NAME:key=value,key=value.")
    parser.add_argument("--every-s", type=float, default=5.0, help="Curve resolution (s of wall time).")
    parser.add_argument("--threshold-s", type=float, default=10.0, help="Episode length the summary times.")
    parser.add_argument("--final-minutes", type=float, default=5.0, help="Window of the final episode length.")
    parser.add_argument("--settle-updates", type=int, default=20, help="Entropy tracking is judged after these.")
    parser.add_argument(
        "--standing-every-min",
        type=float,
        default=10.0,
        help="Keep a checkpoint this often and gate each one's mean action at zero command after the run (0: off).",
    )
    parser.add_argument("--standing-episodes", type=int, default=3, help="Gate episodes per level and checkpoint.")
    parser.add_argument("--standing-seconds", type=float, default=20.0, help="Gate episode length (s).")
    parser.add_argument("--merge", type=Path, nargs="+", help="Join these outputs into --out instead of training.")
    parser.add_argument("overrides", nargs="*", help="key=value for every run (after the arm's).")
    args = parser.parse_args()
    if args.merge:
        if any(p.resolve() == args.out.with_suffix(".json").resolve() for p in args.merge):
            raise SystemExit(f"error: --out {args.out} would overwrite one of the inputs; pick another --out")
        write_result(merge(args.merge), args.out)
        return
    if not args.minutes > 0 or not args.every_s > 0:
        raise SystemExit("error: --minutes and --every-s must be > 0")
    if args.standing_every_min < 0 or args.standing_episodes < 1 or not args.standing_seconds > 0:
        raise SystemExit("error: need --standing-every-min >= 0, --standing-episodes >= 1, --standing-seconds > 0")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError as err:
        raise SystemExit(f"error: --seeds must be integers separated by commas, got {args.seeds!r}") from err
    arms = [parse_arm(a) for a in args.arms.split(",") if a] + [parse_arm(a) for a in args.arm]
    if not arms or not seeds:
        raise SystemExit("error: no arms or no seeds to run")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise SystemExit(f"error: {bad} are not key=value")
    runs_dir = args.out.parent / f"{args.out.name}_runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:  # seed-major: an interrupted bench still has every arm at the first seeds
        for name, overrides in arms:
            runs.append(train_one(name, overrides, seed, args, runs_dir))
    result = {
        "bench": "learning",
        "command": "python bench/learning.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "preset": args.preset,
            "minutes": args.minutes,
            "seeds": seeds,
            "arms": {name: overrides for name, overrides in arms},
            "overrides": args.overrides,
            "threshold_s": args.threshold_s,
            "final_minutes": args.final_minutes,
        },
        "arms": {name: arm_summary([r for r in runs if r["arm"] == name]) for name, _ in arms},
        "runs": runs,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
