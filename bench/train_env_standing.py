"""Does a checkpoint stand in its own training environment? Mean action, MJX, condition by condition. JSON.

    python bench/train_env_standing.py CKPT [--seconds 20] [--envs 64] [--iterations 4 8]
        [--conditions nominal randomized training] [--only NAME ...] [--sampled] [--out FILE.json]

The sim-to-sim gate (`standing_eval.py`) runs an exported policy in CPU MuJoCo at 1 ms from a ±0.02 rad start. A
training curve's episode length comes from somewhere else: the task's own MJX environment, with its solver settings,
its reset noise, its randomization and its pushes. This rolls the checkpoint out there (`ksim_rollout`, the task's
config from the checkpoint, `--envs` environments, one episode each) under:

- `nominal`: curriculum level 0 (no physics randomization, and no reset noise: ksim scales the task's ±0.1 rad and
  ±0.5 rad/s on every joint by the level), no pushes, no wind; the sensor noise and biases and the sensor (0-20 ms)
  and command (4-12 ms) latencies stay on in every condition, as in training;
- `randomized`: level 1 (every randomized range at its full width, the full reset noise), no pushes, no wind;
- `training`: level 1 with the task's pushes and wind at full strength, as at the end of the stand preset's ramp;
- `only:<name>` (one per `--only` name): one randomized parameter (`body_mass_scale`, `joint_zero_offset`, ...) at its
  full width and every other fixed at its nominal value, with the full reset noise (level 1: a parameter fixed at
  width 0 and max width 0 counts as at its maximum), no pushes, no wind: which range the policy cannot stand;
  `only:none` fixes every parameter: nominal physics with the full reset noise, the baseline of the others;

for each Newton iteration count of `--iterations` (the physics solver's; the cpu preset uses 4, the stand and gpu
presets and kbot-joystick 8). Per condition: the fraction of environments that stood `--seconds`, quantiles of the
others' fall times (s) and how many ended on each termination (a fall can trip two). `--sampled` also rolls out
sampled actions (the curve's policy).
"""

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import ClassVar

import attrs
import jax
import numpy as np
from emit import emit_json
from jaxtyping import PyTree

import ksim_entropy  # noqa: F401  (headless rendering defaults before anything imports mujoco)
from ksim_entropy.kbot.walk import KBotWalkingTask, WalkConfig
from ksim_entropy.ppo.checkpoint import CheckpointError
from ksim_entropy.randomization import DomainRandomization
from ksim_entropy.sim2real.rollout_logs import ksim_rollout

CONDITIONS: dict[str, dict[str, object]] = {
    "nominal": {"randomization_width": 0.0, "push_max_force_n": 0.0, "wind_max_force_n": 0.0},
    "randomized": {"randomization_width": 1.0, "push_max_force_n": 0.0, "wind_max_force_n": 0.0},
    "training": {"randomization_width": 1.0},
}
COMMON = {"randomization_mode": "uniform", "randomization_max_width": 1.0, "disturbance_curriculum": False}


def first_episodes(done: np.ndarray, success: np.ndarray, ctrl_dt_s: float) -> tuple[int, list[float], np.ndarray]:
    """(environments that never fell, fall times (s) of those that did, index of each one's first episode end)."""
    ended = done.any(axis=1)
    first = np.where(ended, done.argmax(axis=1), done.shape[1])
    fell = [(int(f) + 1) * ctrl_dt_s for i, f in enumerate(first) if ended[i] and not success[i, f]]
    return done.shape[0] - len(fell), fell, first


def quantiles(values: list[float]) -> dict[str, float] | None:
    """Min, 10th percentile, median, 90th percentile and max of `values` (None when empty)."""
    if not values:
        return None
    found = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {name: round(float(v), 3) for name, v in zip(("min", "p10", "median", "p90", "max"), found, strict=True)}


class OneRandomizedParameter(KBotWalkingTask):
    """The walking task with every randomized range fixed (width and max width 0) but `only`'s ("none": all fixed).

    A fixed parameter counts as at its maximum in ksim's curriculum level, so the level (and the reset noise it
    scales) is that of the kept parameter: 1 at its full width.
    """

    only: ClassVar[str] = ""

    def get_domain_randomization(self, physics_model: PyTree) -> DomainRandomization:
        full = super().get_domain_randomization(physics_model)
        fixed = {"width": 0.0, "max_width": 0.0}
        kept = [p if p.get_name() == self.only else attrs.evolve(p, **fixed) for p in full.parameters]
        return DomainRandomization(parameters=kept)


def only_task(name: str) -> type[KBotWalkingTask]:
    """A task class whose randomization keeps only the parameter `name`."""
    return type(f"Only_{name}", (OneRandomizedParameter,), {"only": name})


def evaluate(
    model: PyTree,
    base: WalkConfig,
    overrides: dict[str, object],
    seconds: float,
    argmax: bool,
    task_class: type[KBotWalkingTask] = KBotWalkingTask,
) -> dict:
    config = dataclasses.replace(base, **overrides)
    task = task_class(config)
    start = time.perf_counter()
    trajectory = ksim_rollout(task, model, num_steps=round(seconds / config.ctrl_dt), seed=0, argmax=argmax)
    done, success = np.asarray(trajectory.done), np.asarray(trajectory.success)
    stood, fell, first = first_episodes(done, success, config.ctrl_dt)
    ended = np.flatnonzero(first < done.shape[1])
    ends = {
        name: int(np.asarray(flags)[ended, first[ended]].astype(bool).sum())
        for name, flags in trajectory.termination_components.items()
    }
    return {
        "stood_fraction": stood / done.shape[0],
        "fall_s_quantiles": quantiles(fell),
        "first_episode_ends": ends,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="a tasks.walk checkpoint (ckpt.bin)")
    parser.add_argument("--seconds", type=float, default=20.0, help="episode length to stand (s)")
    parser.add_argument("--envs", type=int, default=64, help="environments (one episode each)")
    parser.add_argument("--iterations", type=int, nargs="+", default=[4, 8], help="Newton iterations to try")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--only", nargs="+", default=[], help="randomized parameters to try one at a time, or none")
    parser.add_argument("--sampled", action="store_true", help="also roll out sampled actions")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        parser.error(f"no checkpoint at {args.ckpt}")
    if args.seconds <= 0 or args.envs < 1 or min(args.iterations) < 1:
        parser.error("--seconds must be > 0, --envs and --iterations >= 1")
    try:
        task = KBotWalkingTask.from_checkpoint(args.ckpt)
        model = task.load_policy_model(args.ckpt)  # the weights do not depend on the overrides below: load once
    except CheckpointError as err:
        parser.error(str(err))

    names = task.get_domain_randomization(task.get_mujoco_model()).names
    unknown = [name for name in args.only if name not in (*names, "none")]
    if unknown:
        parser.error(f"--only: no randomized parameters {unknown}; the task has {names}")
    conditions = [(c, CONDITIONS[c], KBotWalkingTask) for c in args.conditions]
    conditions += [(f"only:{name}", CONDITIONS["randomized"], only_task(name)) for name in args.only]
    rows = []
    for iterations in args.iterations:
        for condition, settings, task_class in conditions:
            for argmax in (True, False) if args.sampled else (True,):
                overrides = {**COMMON, **settings, "iterations": iterations, "num_envs": args.envs}
                overrides["batch_size"] = args.envs  # no update here; ksim only needs num_envs % batch_size == 0
                row = {"iterations": iterations, "condition": condition, "action": "mean" if argmax else "sampled"}
                row.update(evaluate(model, task.config, overrides, args.seconds, argmax, task_class))
                jax.clear_caches()  # each condition compiles its own rollout: 14 kept in one process exhaust memory
                print(f"[train_env_standing] {row}", file=sys.stderr, flush=True)
                rows.append(row)
    result = {
        "bench": "train_env_standing",
        "command": " ".join(["python", "bench/train_env_standing.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": platform.platform(),
        "checkpoint": str(args.ckpt),
        "seconds": args.seconds,
        "envs": args.envs,
        "rows": rows,
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
