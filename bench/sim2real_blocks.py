"""Which sim-to-real block carries the extra work: XLA's static cost of the walk training step with all of ours
(`sim2real=true`), with one block swapped back to plain ksim's, and plain ksim. Prints JSON.

    python bench/sim2real_blocks.py [--blocks NAME ...] [--out FILE]

Each variant is built and cold-compiled once (~1-2 min each on 2 CPU cores) in this process; what is reported is
deterministic: `xla_cost` (flops and bytes accessed of the compiled `_rl_train_loop_step`), the optimized HLO's
instruction count, and each block's share of the gap (full minus the variant without the block, over full minus
plain). XLA counts each loop body once, so one control step and one physics substep weigh like the work done once
per rollout (the physics draws) or per update: a map of where the extra program is, not a run-time ablation. The
`executed_*` figures weigh each instruction by the loop trips that run it (`executed_cost.py`; the solver loop at
its iteration cap): the thunks XLA:CPU executes per training step, the bytes they write, and those of copies. The
run-time ratio is `sim2real_paired.py --instances`.

Blocks (the `sim2real=false` branch of each `KBotWalkingTask.get_*` hook, or a subset of the randomized physics):
observations (delayed, noisy, biased sensors → ksim's noisy observations), action_delay (DelayedActuators → the
native PD servos alone), events (force push and wind → ksim's velocity push), physics (DomainRandomization and its
curriculum → ksim's randomizers), and physics_<group> (one group of DomainRandomization's parameters left out).
"""

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("DISABLE_TENSORBOARD", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)

import ksim  # noqa: E402
from emit import emit_json  # noqa: E402
from executed_cost import executed_cost  # noqa: E402
from sim2real_paired import CONFIG, Variant  # noqa: E402

from ksim_entropy.actuation import NativePDActuators  # noqa: E402
from ksim_entropy.kbot.walk import PRESETS, KBotWalkingTask  # noqa: E402
from ksim_entropy.randomization import DomainRandomization  # noqa: E402

PHYSICS_GROUPS = {  # DomainRandomization parameter classes left out by each physics_<group> block
    "mass": ("BodyMassScale", "BodyMassOffset", "CenterOfMassOffset"),
    "dof": ("JointFrictionLoss", "JointDamping", "JointArmature"),
    "contact_imu": ("GeomFriction", "ImuMisalignment"),
    "actuator": ("ActuatorKpScale", "ActuatorKdScale", "TorqueLimitScale", "JointZeroOffset"),
}


def _as_plain(task: KBotWalkingTask) -> KBotWalkingTask:
    """A shallow copy of `task` whose config says sim2real=false, to call one hook's plain-ksim branch."""
    twin = copy.copy(task)
    twin.config = dataclasses.replace(task.config, sim2real=False)
    return twin


def _plain_hook(name: str) -> Callable:
    def hook(self: KBotWalkingTask, *args: object) -> object:
        return getattr(KBotWalkingTask, name)(_as_plain(self), *args)

    return hook


def _without(classes: tuple[str, ...]) -> Callable:
    def hook(self: KBotWalkingTask, physics_model: ksim.PhysicsModel) -> DomainRandomization:
        full = KBotWalkingTask.get_domain_randomization(self, physics_model)
        return DomainRandomization(parameters=[p for p in full.parameters if type(p).__name__ not in classes])

    return hook


BLOCKS: dict[str, dict[str, Callable]] = {  # block -> the hooks its variant overrides
    "observations": {"get_observations": _plain_hook("get_observations")},
    "action_delay": {"get_actuators": lambda self, physics_model, metadata=None: NativePDActuators()},
    "events": {"get_events": _plain_hook("get_events")},
    "physics": {
        "get_physics_randomizers": _plain_hook("get_physics_randomizers"),
        "get_curriculum": _plain_hook("get_curriculum"),
    },
    **{f"physics_{g}": {"get_domain_randomization": _without(classes)} for g, classes in PHYSICS_GROUPS.items()},
}


def without_block(name: str) -> type[KBotWalkingTask]:
    """The walking task with block `name` (a key of BLOCKS) swapped for plain ksim's."""
    return type(f"KBotWalkingTaskWithout_{name}", (KBotWalkingTask,), dict(BLOCKS[name]))


# MJX's solver loop runs until converged or `iterations`; at the walk's tolerance (1e-10) the slowest of the vmapped
# environments, which sets the loop's trips, hit the cap at 1,152 (plain ksim) and 1,151 (ours) of
# 1,152 substeps sampled.
SOLVER_TRIPS = PRESETS["cpu"]["iterations"]


def step_cost(task_class: type[KBotWalkingTask], sim2real: bool) -> dict[str, float]:
    """XLA's static cost, HLO size and executed cost (`executed_cost`: instructions weighted by the loop trips that
    run them) of one cold-compiled training step of `task_class` (CONFIG's sizes)."""
    with tempfile.TemporaryDirectory() as exp_dir:
        variant = Variant(sim2real, steps=0, exp_dir=exp_dir, unroll=False, task_class=task_class)
        variant.compile_step(describe=True)
        described = variant.stats["train_step"]
        executed = executed_cost(variant.hlo_text(), unknown_trips=SOLVER_TRIPS).as_dict()
        return {
            **described["xla_cost"],
            "hlo_instructions": described["hlo_instructions"],
            **{f"executed_{k}": v for k, v in executed.items()},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", nargs="+", choices=sorted(BLOCKS), default=list(BLOCKS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    def progress(name: str) -> None:
        print(f"compiling {name} ...", file=sys.stderr, flush=True)

    progress("full (sim2real=true)")
    full = step_cost(KBotWalkingTask, sim2real=True)
    progress("plain ksim (sim2real=false)")
    plain = step_cost(KBotWalkingTask, sim2real=False)
    gap = {k: full[k] - plain[k] for k in ("flops", "bytes_accessed")}
    executed = ("executed_instructions", "executed_output_bytes", "executed_input_bytes", "executed_copy_bytes")
    without: dict[str, dict] = {}
    for name in args.blocks:
        progress(f"without {name}")
        cost = step_cost(without_block(name), sim2real=True)
        share = {f"{k}_share_of_gap": round((full[k] - cost[k]) / gap[k], 3) for k in gap}
        without[name] = {**cost, **share}
    emit_json(
        {
            "bench": "walk training step, XLA static cost with each sim2real block swapped for plain ksim's",
            "config": CONFIG,
            "full": full,
            "plain": plain,
            "ratios": {k: round(full[k] / plain[k], 4) for k in (*gap, *executed)},
            "without": without,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
