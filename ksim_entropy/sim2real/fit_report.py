"""What a randomization fit shows a person: its convergence and the real vs replayed encoders, as PNG plus JSON.

Written next to `fitted.json` by ``python -m tasks.fit``:

- ``<stem>_convergence.png``: the best loss per CMA-ES generation and per refinement step, stages marked;
- ``<stem>_replay.png``: for the joints the prior fitted worst, the logged joint angles against the replay at the
  prior's centre (before) and at the fit (after), over the first log windows, plus every joint's RMS residual;
- ``<stem>_summary.json``: loss history, stages, per-joint RMS residuals before and after (rad, rad/s), and the
  distribution distances between logged and replayed encoder readings (the bridge's Gaussian W2 over all joints,
  rad and rad/s, and the unbiased MMD² with a median-bandwidth Gaussian kernel) before and after.

Pure arrays and matplotlib's Agg canvas (no pyplot state); files are written atomically and never replace an
existing file unless `overwrite`.
"""

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ksim_entropy.bridge.metrics import mmd2_unbiased, w2_gaussian
from ksim_entropy.formats.jsonfile import atomic_write, write_json
from ksim_entropy.sim2real.fit import FitResult

__all__ = ["fit_summary", "report_paths", "write_fit_report"]

_DPI = 100
_SHOWN_JOINTS = 4
_SHOWN_WINDOWS = 6


def report_paths(fitted_path: str | Path) -> dict[str, Path]:
    """The report files that go with `fitted_path` (same folder and stem)."""
    path = Path(fitted_path)
    stem = path.with_suffix("")
    return {
        "convergence": Path(f"{stem}_convergence.png"),
        "replay": Path(f"{stem}_replay.png"),
        "summary": Path(f"{stem}_summary.json"),
    }


def _replays(result: FitResult) -> tuple[Any, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if result.windows is None or result.before is None or result.after is None:
        raise ValueError("this FitResult carries no windows and replays (fit_randomization's results do)")
    return result.windows, result.before, result.after


def _rms(result: FitResult) -> dict[str, np.ndarray]:
    windows, before, after = _replays(result)
    out = {}
    for when, (angles, vels) in (("before", before), ("after", after)):
        out[f"angle_{when}"] = np.sqrt(np.mean((angles - windows.angles) ** 2, axis=(0, 1)))
        out[f"vel_{when}"] = np.sqrt(np.mean((vels - windows.vels) ** 2, axis=(0, 1)))
    return out


def _distances(result: FitResult) -> dict[str, dict[str, float]]:
    """W2 (Gaussian) and MMD² between the logged and replayed readings, all windows' steps pooled, per stage."""
    windows, before, after = _replays(result)
    out: dict[str, dict[str, float]] = {}
    for when, (angles, vels) in (("before", before), ("after", after)):
        joints = angles.shape[-1]
        pairs = {"angle": (angles, windows.angles), "velocity": (vels, windows.vels)}
        for kind, (replayed, logged) in pairs.items():
            x, y = replayed.reshape(-1, joints), logged.reshape(-1, joints)
            out.setdefault(f"w2_{kind}", {})[when] = w2_gaussian(x, y)
            out.setdefault(f"mmd2_{kind}", {})[when] = mmd2_unbiased(x, y)
    return out


def fit_summary(result: FitResult) -> dict[str, Any]:
    """JSON-ready facts of a fit: losses, stages, per-joint RMS residuals and distribution distances, before/after."""
    rms = _rms(result)
    joints = result.fitted.joint_names
    return {
        "distribution_distance": _distances(result),
        "seconds": result.seconds,
        "final_loss": result.fitted.final_loss,
        "loss_history": [float(v) for v in result.loss_history],
        "stages": [{"stage": name, "first_index": index} for name, index in result.stages],
        "rms_angle_rad": {
            when: dict(zip(joints, rms[f"angle_{when}"].tolist(), strict=True)) for when in ("before", "after")
        },
        "rms_velocity_rad_s": {
            when: dict(zip(joints, rms[f"vel_{when}"].tolist(), strict=True)) for when in ("before", "after")
        },
    }


def _save(fig: Figure, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=_DPI, format="png", facecolor="white"))


def _plot_convergence(result: FitResult, path: Path, overwrite: bool) -> None:
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    losses = np.asarray(result.loss_history)
    ax.plot(np.arange(losses.size), losses, "o-", ms=3, color="#4c72b0")
    for name, index in result.stages:
        ax.axvline(index - 0.5, color="0.6", ls="--", lw=1)
        ax.text(index, losses.max(), f" {name}", va="top", fontsize=9, color="0.3")
    ax.set_xlabel("CMA-ES generation, then refinement step")
    ax.set_ylabel("loss = mean ½·log(MSE) over encoder channels")
    ax.set_title(f"Randomization fit: final loss {result.fitted.final_loss:.3f} in {result.seconds:.0f} s")
    _save(fig, path, overwrite)


def _plot_replay(result: FitResult, path: Path, overwrite: bool) -> None:
    windows, before, after = _replays(result)
    rms = _rms(result)
    joints = result.fitted.joint_names
    shown = np.argsort(rms["angle_before"])[::-1][:_SHOWN_JOINTS]
    count = min(_SHOWN_WINDOWS, windows.angles.shape[0])
    horizon = windows.horizon
    fig = Figure(figsize=(12, 2.3 * (len(shown) + 1) + 0.6), layout="constrained")
    axes = fig.subplots(len(shown) + 1, 1)
    for ax, j in zip(axes[:-1], shown, strict=False):
        for w in range(count):
            t = w * (horizon + 2) + np.arange(horizon)  # windows side by side, a gap between them
            labels = ("log", "before (prior centre)", "after (fit)") if w == 0 else (None, None, None)
            ax.plot(t, windows.angles[w, :, j], "k.-", lw=1.5, label=labels[0])
            ax.plot(t, before[0][w, :, j], "-", color="#c44e52", alpha=0.8, label=labels[1])
            ax.plot(t, after[0][w, :, j], "--", color="#55a868", lw=2, label=labels[2])
        ax.set_title(
            f"{joints[j]}: RMS {rms['angle_before'][j]:.2e} → {rms['angle_after'][j]:.2e} rad", fontsize=10, loc="left"
        )
        ax.set_ylabel("angle (rad)")
        ax.set_xticks([])
    axes[0].legend(loc="upper right", fontsize=8, ncols=3)
    ax = axes[-1]
    x = np.arange(len(joints))
    ax.bar(x - 0.2, rms["angle_before"], 0.4, color="#c44e52", label="before")
    ax.bar(x + 0.2, rms["angle_after"], 0.4, color="#55a868", label="after")
    ax.set_yscale("log")
    ax.set_xticks(x, [name.removeprefix("dof_") for name in joints], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("RMS residual (rad)")
    ax.legend(fontsize=8)
    fig.suptitle(f"Logged encoders vs replay over {count} windows of {horizon} control steps")
    _save(fig, path, overwrite)


def write_fit_report(result: FitResult, fitted_path: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the convergence and replay PNGs and the summary JSON beside `fitted_path`; returns their paths."""
    paths = report_paths(fitted_path)
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist; pass --overwrite to replace them")
    _plot_convergence(result, paths["convergence"], overwrite)
    _plot_replay(result, paths["replay"], overwrite)
    write_json(fit_summary(result), paths["summary"], overwrite=overwrite)
    return paths
