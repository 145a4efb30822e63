"""Real logs as DANN windows: `python -m tasks.windows LOG [LOG ...] --out real_windows.npz`.

Reads kinfer NDJSON logs (the bridge's reader and unit checks), turns each into windows of the walking policy's
input vector (`KBotWalkingTask.actor_inputs`, the function the exported `.kinfer` runs) and writes them with their
sources to one `.npz`, for `tasks.walk dann_windows=real_windows.npz`. A log whose channels, widths, units or control
period do not match the policy is refused with a one-line error; an existing output is kept unless `--overwrite`.
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from ksim_entropy.bridge.logs import LogReadError, read_ndjson
from ksim_entropy.formats.windows import WindowError, observation_windows, write_windows
from ksim_entropy.kbot.robot import RobotLoadError, load_robot_model
from ksim_entropy.kbot.walk import COMMAND_NAMES, KBotWalkingTask, WalkConfig, preset_config


def make_windows(
    logs: list[Path], task: KBotWalkingTask, *, window_steps: int, stride: int, angle_unit: str = "rad"
) -> tuple[np.ndarray, dict]:
    """Windows of every log, stacked, and per-log counts."""
    mj_model = load_robot_model(task.robot_files, scene=None)
    nominal = np.asarray(task.nominal_pose(mj_model), dtype=np.float32)
    joints = len(nominal)
    widths = {"joint_angles": joints, "joint_vels": joints, "projected_g": 3, "gyro": 3, "command": len(COMMAND_NAMES)}
    inputs = functools.partial(task.actor_inputs, nominal)
    parts, sources = [], []
    for path in logs:
        log, report = read_ndjson(path, num_joints=joints, num_commands=len(COMMAND_NAMES), angle_unit=angle_unit)
        windows, counts = observation_windows(
            log,
            lambda *groups: np.asarray(inputs(*(g.astype(np.float32) for g in groups))),
            widths=widths,
            control_period_s=task.config.ctrl_dt,
            window_steps=window_steps,
            stride=stride,
            report=report,
        )
        parts.append(windows)
        sources.append({"path": str(path), **counts})
    windows = np.concatenate(parts) if parts else np.zeros((0, window_steps, task.num_actor_inputs), np.float32)
    meta = {"task_id": task.config.task_id, "window_steps": window_steps, "stride": stride, "sources": sources}
    return windows, meta


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+", help="kinfer NDJSON logs of the real robot")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--window-steps", type=int, default=32, help="control steps per window (default 32)")
    parser.add_argument("--stride", type=int, default=8, help="steps between window starts (default 8)")
    parser.add_argument("--angle-unit", choices=("rad", "deg", "auto"), default="rad", help="joint units in the logs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        task = KBotWalkingTask(WalkConfig(**preset_config("cpu")))
        windows, meta = make_windows(
            args.logs, task, window_steps=args.window_steps, stride=args.stride, angle_unit=args.angle_unit
        )
        if windows.shape[0] < 2:
            raise WindowError(f"the logs give {windows.shape[0]} windows of {args.window_steps} steps; need >= 2")
        write_windows(args.out, windows, meta, overwrite=args.overwrite)
    except (LogReadError, WindowError, RobotLoadError, FileExistsError) as err:
        sys.exit(f"error: {err}")
    rows = sum(s["rows"] for s in meta["sources"])
    print(f"wrote {args.out}: {windows.shape[0]} windows of {args.window_steps} steps from {rows} rows")


if __name__ == "__main__":
    main()
