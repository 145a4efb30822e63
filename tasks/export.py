"""Export a `tasks.walk` checkpoint to `.kinfer`: `python -m tasks.export CKPT [OUT] [--overwrite]`.

OUT defaults to `policy.kinfer` in the checkpoint's run directory. An existing file is never replaced without
`--overwrite`. The checkpoint is checked first (corrupt file, another task's checkpoint, incompatible network).
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: headless defaults before anything imports mujoco)
# isort: on

import argparse
import sys
from pathlib import Path

from ksim_entropy.checkpoint import CheckpointError
from ksim_entropy.export import ExportError, export_kinfer
from ksim_entropy.robot import RobotLoadError
from tasks.walk import KBotWalkingTask


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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        path = export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)
    except (CheckpointError, ExportError, RobotLoadError, FileExistsError) as err:
        sys.exit(f"error: {err}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
