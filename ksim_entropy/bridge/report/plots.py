"""The gap report's PNG plots (matplotlib's Agg canvas, no pyplot state)."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ksim_entropy.bridge.report.analysis import (
    ADVICE_GAP,
    TransferEfficiency,
    finite_values,
)
from ksim_entropy.formats.jsonfile import atomic_write
from ksim_entropy.formats.schema import CHANNEL_GROUPS, StepLog

SIM_COLOR, REAL_COLOR, REPLAY_COLOR = "#1f77b4", "#d62728", "#2ca02c"
TIMESERIES_WINDOW_S = 10.0
QUANTILES = np.linspace(0.005, 0.995, 199)
DPI = 100


def _short(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def _group_colors(groups: Sequence[str]) -> dict[str, str]:
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]
    return {group: palette[i % len(palette)] for i, group in enumerate(CHANNEL_GROUPS) if group in groups}


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", facecolor="white"))


def _grid(
    n: int, max_cols: int, cell: tuple[float, float], title: str, *, left: float = 0.3, wspace: float = 0.12
) -> tuple[Figure, list[Any]]:
    """Figure with `n` axes in rows of `max_cols` cells (w, h in inches) under a title; `left` margin in inches.

    Fixed margins instead of a layout engine: constrained layout triples the drawing time of a 20-axes grid.
    """
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    width, height = cell[0] * cols + left + 0.2, cell[1] * rows + 0.9
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width, right=1 - 0.2 / width, bottom=0.45 / height, top=1 - 0.9 / height, wspace=wspace, hspace=0.6
    )
    fig.suptitle(title, fontsize=13, x=left / width, y=1 - 0.15 / height, ha="left", va="top")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend(fig: Figure, labels: Sequence[tuple[str, str]]) -> None:
    """Colour patches at the top right of a `_grid` figure."""
    width, height = fig.get_size_inches()
    fig.legend(
        handles=[Patch(color=color, alpha=0.6, label=label) for label, color in labels],
        loc="upper right",
        bbox_to_anchor=(1 - 0.2 / width, 1 - 0.1 / height),
        ncols=len(labels),
        frameon=False,
    )


def _plot_ranking(path: Path, ranking: Sequence[str], channels: Mapping[str, Mapping[str, Any]], limit: int) -> None:
    shown = list(ranking[:limit])
    colors = _group_colors([channels[n]["group"] for n in shown])
    fig = Figure(figsize=(11, 1.2 + 0.24 * len(shown)), layout="constrained")
    ax = fig.subplots()
    gaps = [channels[n]["gap"] for n in shown]
    ax.barh(range(len(shown)), gaps, color=[colors[channels[n]["group"]] for n in shown])
    ax.set_yticks(range(len(shown)), shown, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(ADVICE_GAP, color="0.4", ls="--", lw=1)
    ax.set_xlabel("gap = W1(sim, real) / σ_sim")
    more = f" (top {len(shown)} of {len(ranking)})" if len(ranking) > len(shown) else ""
    ax.set_title(f"Channels ranked by gap{more}; dashed: advice threshold {ADVICE_GAP}")
    ax.legend(handles=[Patch(color=c, label=g) for g, c in colors.items()], loc="lower right", fontsize=8)
    _save(fig, path)


def _plot_c2st(path: Path, groups: Mapping[str, Mapping[str, Any]], efficiency: TransferEfficiency) -> None:
    names = [g for g in groups if "c2st_accuracy" in groups[g]] + ["all common"]
    accs = [groups[g]["c2st_accuracy"] for g in names[:-1]] + [efficiency.c2st_accuracy]
    fig = Figure(figsize=(8, 1.2 + 0.4 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(names)), accs, color=["#4c72b0"] * (len(names) - 1) + ["#c44e52"])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0.4, 1.0)
    ax.axvline(0.5, color="0.3", ls="--", lw=1)
    ax.set_xlabel("held-out accuracy of a sim-vs-real classifier (0.5 = indistinguishable)")
    ax.set_title("Domain classifier per channel group")
    for i, acc in enumerate(accs):
        ax.text(min(acc, 0.97), i, f" {acc:.3f}", va="center", ha="left" if acc < 0.9 else "right", fontsize=9)
    _save(fig, path)


def _bins(s: np.ndarray, r: np.ndarray) -> np.ndarray:
    lo, hi = np.quantile(np.concatenate([s, r]), [0.005, 0.995])
    if hi <= lo:
        pad = max(abs(lo) * 0.05, 1e-3)
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, 41)


def _plot_histograms(
    path: Path,
    group: str,
    names: Sequence[str],
    sim: StepLog,
    real: StepLog,
    channels: Mapping[str, Mapping[str, Any]],
    limit: int,
) -> None:
    usable = [j for j, n in enumerate(names) if channels[n]["usable"]]
    if len(usable) > limit:  # the largest gaps, in channel order
        usable = sorted(sorted(usable, key=lambda j: -channels[names[j]]["gap"])[:limit])
    unit = CHANNEL_GROUPS[group]
    fig, axes = _grid(len(usable), 5, (3.0, 2.2), f"{group} ({unit}): sim vs real")
    for ax, j in zip(axes, usable, strict=True):
        s, r = finite_values(sim.group(group)[:, j]), finite_values(real.group(group)[:, j])
        bins = _bins(s, r)
        for values, color in ((s, SIM_COLOR), (r, REAL_COLOR)):  # stairs: one polygon, not 40 bar patches
            ax.stairs(np.histogram(values, bins, density=True)[0], bins, fill=True, color=color, alpha=0.45)
        ax.set_title(f"{_short(names[j])}  gap {channels[names[j]]['gap']:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=4)
        ax.set_yticks([])
    _legend(fig, [("sim", SIM_COLOR), ("real", REAL_COLOR)])
    _save(fig, path)


def _columns(log: StepLog, layout: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[np.ndarray]:
    index = {name: (group, j) for group, members in layout.items() for j, name in enumerate(members)}
    return [log.group(index[n][0])[:, index[n][1]] for n in names]


def _plot_scatter(
    path: Path, names: Sequence[str], sims: Sequence[np.ndarray], reals: Sequence[np.ndarray], aligned: bool
) -> None:
    title = "Replay vs real, step by step" if aligned else "Quantile–quantile: real vs sim quantiles (0.5 %–99.5 %)"
    fig, axes = _grid(len(names), 3, (3.8, 3.4), title, left=0.7, wspace=0.35)
    for ax, name, s, r in zip(axes, names, sims, reals, strict=True):
        if aligned:
            both = np.isfinite(s) & np.isfinite(r)
            step = max(1, int(both.sum()) // 3000)
            x, y = s[both][::step], r[both][::step]
            ax.plot(x, y, ".", ms=2, alpha=0.4, color=REPLAY_COLOR)
        else:
            x, y = np.quantile(finite_values(s), QUANTILES), np.quantile(finite_values(r), QUANTILES)
            ax.plot(x, y, "o", ms=3, color="#4c72b0")
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("replay" if aligned else "sim", fontsize=8)
        ax.set_ylabel("real", fontsize=8)
        ax.tick_params(labelsize=7)
    _save(fig, path)


def _window(log: StepLog, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = (log.t_us - log.t_us[0]) / 1e6
    inside = t <= TIMESERIES_WINDOW_S
    return t[inside], column[inside]


def _plot_timeseries(
    path: Path, names: Sequence[str], traces: Sequence[tuple[str, str, StepLog, Sequence[np.ndarray]]]
) -> None:
    fig, axes = _grid(len(names), 1, (11.0, 1.8), f"Time series, first {TIMESERIES_WINDOW_S:g} s of each log", left=0.8)
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        for k, (_, color, log, columns) in enumerate(traces):
            t, y = _window(log, columns[i])
            ax.plot(t, y, color=color, lw=1.6 if k == 0 else 0.9)  # the first trace wider: both show where equal
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time since the log's first step (s)", fontsize=9)
    _legend(fig, [(label, color) for label, color, _, _ in traces])
    _save(fig, path)


def _plot_errors(path: Path, names: Sequence[str], errors: Sequence[np.ndarray], aligned: bool) -> None:
    what = "per-step error (replay − real)" if aligned else "transport displacement Q_real(u) − Q_sim(u)"
    shown = [(name, e) for name, e in zip(names, errors, strict=True) if e.size]
    fig = Figure(figsize=(11, 1.4 + 0.55 * max(len(shown), 1)), layout="constrained")
    ax = fig.subplots()
    if shown:
        values = [e for _, e in shown]
        ax.violinplot(values, positions=range(len(shown)), orientation="horizontal", widths=0.8, showmedians=True)
        ax.set_yticks(range(len(shown)), [name for name, _ in shown], fontsize=8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no step has both values finite", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(0.0, color="0.3", lw=1, ls="--")
    ax.set_xlabel(f"{what}, in units of σ_sim")
    ax.set_title("Error distribution of the channels with the largest gaps")
    _save(fig, path)


def _displacements(s: np.ndarray, r: np.ndarray, scale: float) -> np.ndarray:
    u = np.linspace(0.01, 0.99, 981)  # 1 %–99 %: the extreme quantiles of a finite sample are mostly noise
    return (np.quantile(finite_values(r), u) - np.quantile(finite_values(s), u)) / (scale or 1.0)


def write_plots(
    out: Path,
    sim: StepLog,
    real: StepLog,
    replay: StepLog | None,
    layout: Mapping[str, Sequence[str]],
    result: Mapping[str, Any],
    efficiency: TransferEfficiency,
    limits: tuple[int, int],
) -> dict[str, str]:
    """Write every figure; returns plot key → file name (relative to `out`)."""
    max_channels, detail = limits
    channels, ranking = result["channels"], [r["channel"] for r in result["ranking"]]
    files = {"gap_ranking": "gap_ranking.png", "group_c2st": "group_c2st.png"}
    _plot_ranking(out / files["gap_ranking"], ranking, channels, max_channels)
    _plot_c2st(out / files["group_c2st"], result["groups"], efficiency)
    for group, names in layout.items():
        if any(channels[n]["usable"] for n in names):
            files[f"hist_{group}"] = f"hist_{group}.png"
            _plot_histograms(out / files[f"hist_{group}"], group, names, sim, real, channels, max_channels)
    top = list(ranking[: min(detail, max_channels)])
    sims, reals = _columns(sim, layout, top), _columns(real, layout, top)
    files.update(scatter="scatter.png", timeseries="timeseries.png", errors="errors.png")
    traces = [("sim", SIM_COLOR, sim, sims), ("real", REAL_COLOR, real, reals)]
    if replay is not None:
        replays = _columns(replay, layout, top)
        _plot_scatter(out / files["scatter"], top, replays, reals, aligned=True)
        traces = [("replay", REPLAY_COLOR, replay, replays), ("real", REAL_COLOR, real, reals)]
        both = [np.isfinite(p) & np.isfinite(r) for p, r in zip(replays, reals, strict=True)]
        errors = [
            (p[m] - r[m]) / (channels[n]["scale"] or 1.0) for p, r, m, n in zip(replays, reals, both, top, strict=True)
        ]
    else:
        _plot_scatter(out / files["scatter"], top, sims, reals, aligned=False)
        errors = [_displacements(s, r, channels[n]["scale"]) for s, r, n in zip(sims, reals, top, strict=True)]
    _plot_timeseries(out / files["timeseries"], top, traces)
    _plot_errors(out / files["errors"], top, errors, aligned=replay is not None)
    return files
