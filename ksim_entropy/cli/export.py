"""Export a `tasks.walk` checkpoint to `.kinfer`: `python -m tasks.export CKPT [OUT] [--overwrite] [--no-gate]`.

OUT defaults to `policy.kinfer` in the checkpoint's run directory. An existing file is never replaced without
`--overwrite`. The checkpoint is checked first (corrupt file, another task's checkpoint, incompatible network).
Then the sim-to-sim gate (`tasks.sim2sim`) runs on the exported policy and writes `sim2sim.json` / `sim2sim.png`
beside it; the exit status is 1 when the gate fails (the policy is still written), 0 when it passes.
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import sys
from pathlib import Path

from ksim_entropy.cli.sim2sim import gate
from ksim_entropy.export import ExportError, export_kinfer
from ksim_entropy.kbot.robot import RobotLoadError, resolve_robot_files
from ksim_entropy.kbot.walk import KBotWalkingTask
from ksim_entropy.ppo.checkpoint import CheckpointError
from ksim_entropy.sim2real.sim2sim import GateOptions


def default_output(ckpt: Path) -> Path:
    """`policy.kinfer` in the run directory that holds `checkpoints/<ckpt>`."""
    run_dir = ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else ckpt.parent
    return run_dir / "policy.kinfer"


def export_checkpoint(ckpt: Path, out: Path | None = None, *, overwrite: bool = False) -> Path:
    """Load a walking-task checkpoint and write its actor as `.kinfer`; returns the written path."""
    task = KBotWalkingTask.from_checkpoint(ckpt)
    out = default_output(ckpt) if out is None else out
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    return export_kinfer(task.kinfer_policy(task.load_policy_model(ckpt)), out, overwrite=overwrite)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="ckpt.bin of a tasks.walk run")
    parser.add_argument("output", type=Path, nargs="?", help="the .kinfer file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-gate", action="store_true", help="skip the sim-to-sim gate")
    parser.add_argument("--gate-episodes", type=int, default=GateOptions().episodes, help="gate episodes per level")
    parser.add_argument("--gate-seconds", type=float, default=GateOptions().seconds, help="gate episode length (s)")
    args = parser.parse_args(argv)
    try:
        options = GateOptions(episodes=args.gate_episodes, seconds=args.gate_seconds)
        path = export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)
        print(f"wrote {path}")
        if args.no_gate:
            return
        robot = KBotWalkingTask.from_checkpoint(args.checkpoint).config.robot_source
        result = gate(path, resolve_robot_files(robot), path.parent, options, overwrite=args.overwrite)
    except (CheckpointError, ExportError, RobotLoadError, FileExistsError, ValueError) as err:
        sys.exit(f"error: {err}")
    if not result.passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
