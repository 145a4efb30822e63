"""Real logs as the policy sees them: windows of the actor's input vector, for domain-adversarial training (DANN).

`observation_windows` turns a `StepLog` (kinfer NDJSON, read by the bridge) into (N, W, D) float32 windows of W
consecutive control steps, through the task's own `actor_inputs`, the function the policy's observations and the
exported `.kinfer` go through. A window never spans a dropped step or a row with a missing value. Logs whose
channels, widths, units or control period do not match the policy are refused with `WindowError` naming the
problem. `write_windows` / `read_windows` keep them in one `.npz` with what they were made from.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ksim_entropy.formats.jsonfile import atomic_write
from ksim_entropy.formats.schema import LogReport, StepLog

__all__ = ["FORMAT", "WINDOW_GROUPS", "WindowError", "observation_windows", "read_windows", "write_windows"]

# kinfer groups the actor reads, in `actor_inputs`' argument order.
WINDOW_GROUPS: tuple[str, ...] = ("joint_angles", "joint_vels", "projected_g", "gyro", "command")
PERIOD_TOLERANCE = 0.1  # the log's median control period may differ from the task's by 10 %
FORMAT = "ksim-entropy/observation-windows-v1"


class WindowError(ValueError):
    """A log or windows file that does not match the policy's observations."""


def observation_windows(
    log: StepLog,
    actor_inputs: Callable[..., np.ndarray],
    *,
    widths: dict[str, int],
    control_period_s: float,
    window_steps: int,
    stride: int,
    report: LogReport | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """(N, W, D) windows of ``actor_inputs(joint_angles, joint_vels, projected_g, gyro, command)`` along `log`.

    `widths` are the channels the policy expects per group (e.g. 20 joints, 3 commands); `report` (from
    `read_ndjson`) adds its unit checks: a group suspected in degrees or with a unit warning is refused. Returns
    the windows and counts: rows, rows with a missing value, step gaps, windows.
    """
    if window_steps < 1 or stride < 1:
        raise WindowError(f"window_steps and stride must be >= 1, got {window_steps} and {stride}")
    name = log.source or "the log"
    missing = [g for g in WINDOW_GROUPS if g not in log.groups]
    if missing:
        raise WindowError(f"{name}: the policy reads {missing}, which the log does not have")
    for group in WINDOW_GROUPS:
        got = log.groups[group].shape[1]
        if group in widths and got != widths[group]:
            raise WindowError(f"{name}: '{group}' has {got} channels, the policy reads {widths[group]}")
    if report is not None:
        bad = {**report.suspected_degrees, **report.unit_warnings}
        bad = {g: why for g, why in bad.items() if g in WINDOW_GROUPS and g not in report.converted_to_rad}
        if bad:
            raise WindowError(f"{name}: units do not match the policy's (rad, rad/s, m/s²): {bad}")
    if log.t_us.shape[0] > 1:
        period_s = float(np.median(np.diff(log.t_us))) * 1e-6
        if abs(period_s - control_period_s) > PERIOD_TOLERANCE * control_period_s:
            raise WindowError(
                f"{name}: median control period {period_s * 1e3:.2f} ms, the policy runs at "
                f"{control_period_s * 1e3:.2f} ms"
            )
    rows = np.asarray(actor_inputs(*(log.groups[g] for g in WINDOW_GROUPS)), dtype=np.float64)
    finite = np.isfinite(rows).all(axis=1)
    # A new run of rows starts at a jump in step_id and after a missing value (which ends its run, and is dropped).
    consecutive = np.concatenate([[False], np.diff(log.step_id) == 1])
    cuts = np.flatnonzero(~consecutive | np.concatenate([[True], ~finite[:-1]]))[1:]
    windows = []
    for run, usable in zip(np.split(rows, cuts), np.split(finite, cuts), strict=True):
        windows += _slide(run[usable], window_steps, stride)
    counts = {
        "rows": int(rows.shape[0]),
        "rows_with_missing_values": int(np.sum(~finite)),
        "step_gaps": int(np.sum(~consecutive[1:])),
        "windows": len(windows),
    }
    out = np.stack(windows).astype(np.float32) if windows else np.zeros((0, window_steps, rows.shape[1]), np.float32)
    return out, counts


def _slide(rows: np.ndarray, window_steps: int, stride: int) -> list[np.ndarray]:
    return [rows[s : s + window_steps] for s in range(0, rows.shape[0] - window_steps + 1, stride)]


def write_windows(path: Path, windows: np.ndarray, meta: dict, *, overwrite: bool = False) -> Path:
    """Save `windows` and `meta` (task id, sources, counts) to `path` (.npz); refuses to overwrite unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    meta_json = json.dumps({"format": FORMAT, **meta}, sort_keys=True)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, windows=windows.astype(np.float32), meta=np.array(meta_json))

    atomic_write(path, write)
    return path


def read_windows(path: str | Path, *, task_id: str, num_inputs: int) -> tuple[np.ndarray, dict]:
    """Windows written by `write_windows` for `task_id`; `WindowError` when the file is not such windows."""
    path = Path(path)
    if not path.is_file():
        raise WindowError(f"{path}: no such windows file (make one with `python -m tasks.windows`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            windows, meta = np.asarray(data["windows"]), json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as err:
        raise WindowError(f"{path}: not an observation-windows file ({err})") from err
    if meta.get("format") != FORMAT:
        raise WindowError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("task_id") != task_id:
        raise WindowError(f"{path}: windows of task {meta.get('task_id')!r}, this task is {task_id!r}")
    if windows.ndim != 3 or windows.shape[2] != num_inputs:
        raise WindowError(f"{path}: windows of shape {windows.shape}, the policy reads {num_inputs} inputs per step")
    return windows, meta


def check_window_array(windows: object, owner: str, *, min_steps: int = 1) -> None:
    """ValueError naming `owner` unless `windows` is a finite float array (N, W >= `min_steps`, D)."""
    x = windows
    floating = isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)
    if not floating or x.ndim != 3 or x.shape[1] < min_steps:
        steps = f"W >= {min_steps}" if min_steps > 1 else "W"
        shape = getattr(x, "shape", None)
        raise ValueError(f"{owner}: real_windows must be a float array (N, {steps}, D), got shape {shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{owner}: real_windows hold {int(np.sum(~np.isfinite(x)))} non-finite values")
