"""Sim-to-real gap report: per-channel and per-group metrics, transfer efficiency, diagnosis, plots, JSON and HTML.

`gap_report(sim, real, out_dir)` compares two `StepLog`s channel by channel and writes into `out_dir`:

- ``report.json``: every metric, the log-quality reports, the diagnosis, the transfer efficiency and the
  recommendations (strict JSON: no NaN or Infinity; a value that does not exist is ``null``).
- ``report.html``: the same, readable, for any browser *offline*: no CDN, font or script from elsewhere (a CSP
  meta tag forbids them), the plots referenced by relative path. Relative paths rather than data URIs because the
  PNGs are deliverables of their own (for slides, tickets), so embedding would store each plot twice and make the
  HTML several MB; the directory is self-contained: move or zip it whole.
- PNG plots (matplotlib's Agg canvas, no pyplot state): ``gap_ranking.png`` (channels ranked by their normalised
  gap), ``group_c2st.png`` (domain-classifier accuracy per group), ``hist_<group>.png`` (sim vs real histograms),
  ``scatter.png`` (quantile–quantile, or time-aligned with a replay), ``timeseries.png`` and ``errors.png``.

Definitions (also written into the report):

- Gap of a channel: ``W1(sim, real) / σ_sim``, the 1-Wasserstein distance in units of the sim standard deviation
  (of the pooled sample when sim is constant). ``shift = (μ_real − μ_sim) / σ_sim``, ``spread = σ_real / σ_sim``.
- Transfer efficiency, default (distribution overlap): ``100 % × (1 − 2·max(0, acc − 0.5))``, where ``acc`` is the
  held-out accuracy of `classifier_two_sample_test` (quadratic logistic regression, 5-fold CV) telling sim steps
  from real steps on all common channels: 100 % when no classifier does better than chance, 0 % when it separates
  them perfectly. With task scores (e.g. the mean tracking reward in sim and on the robot) it is
  ``100 % × real_score / sim_score``; both numbers are reported and the task-score one drives the recommendations.
- Bands: efficiency < 50 % → widen the randomization or collect more data; 50–80 % → fine-tune; > 80 % → ready,
  keep monitoring.

Time-aligned comparisons (per-step errors, lag) need a sim run that replays the real one step for step (`replay`);
equal lengths alone do not make two runs aligned, so without a replay the scatter is quantile–quantile and the
"errors" are the optimal-transport displacements ``(Q_real(u) − Q_sim(u)) / σ_sim`` (their mean |·| is the gap).
"""

import dataclasses
import datetime
import html
import importlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ksim_entropy.bridge.jsonfile import atomic_write
from ksim_entropy.bridge.metrics import (
    MetricInputError,
    classifier_two_sample_test,
    compare_channels,
    compare_groups,
    cross_correlation_lag,
    ks_statistic,
    mean_abs_diff,
    pearson_r,
    rmse,
    wasserstein_1d,
)
from ksim_entropy.bridge.schema import CHANNEL_GROUPS, LogReport, StepLog

__all__ = [
    "GapReport",
    "GapReportError",
    "Progress",
    "TransferEfficiency",
    "check_out_dir",
    "efficiency_band",
    "gap_report",
    "stderr_progress",
]

Progress = Callable[[str], None]

SCHEMA = "ksim_entropy.gap_report/1"
READY_PCT = 80.0  # efficiency above this: ready
FINE_TUNE_PCT = 50.0  # efficiency from this up to READY_PCT: fine-tune; below: widen randomization / more data
ADVICE_GAP = 0.25  # channels whose gap (W1 / σ_sim) reaches this get channel-specific advice
MAX_CHANNEL_ADVICE = 5
MAX_DIAGNOSIS_ADVICE = 3
SPREAD_FACTOR = 1.5  # σ_real / σ_sim beyond this factor (either way) counts as a spread mismatch
MIN_CHANNEL_SAMPLES = 10  # finite samples per side for a channel to be compared
MIN_COMPLETE_ROWS = 50  # rows with every common channel finite, per side, for the domain classifier
TIMESERIES_WINDOW_S = 10.0
MAX_LAG_STEPS = 50  # replay-vs-real lags searched within ± this many steps (1 s at 50 Hz)
QUANTILES = np.linspace(0.005, 0.995, 199)
SIM_COLOR, REAL_COLOR, REPLAY_COLOR = "#1f77b4", "#d62728", "#2ca02c"
DPI = 100
_DIAGNOSE_MODULE = "ksim_entropy.bridge.diagnose"
_OWN_PNG = re.compile(r"^(gap_ranking|group_c2st|scatter|timeseries|errors|hist_[a-z_]+)\.png$")
_BAND_TEXT = {
    "widen_randomization": "widen randomization / collect more data",
    "fine_tune": "fine-tune",
    "ready": "ready, monitor",
}


class GapReportError(ValueError):
    """The logs cannot be compared: no common channels, mismatched layouts, too little finite data, bad scores."""


def stderr_progress(message: str) -> None:
    """Default progress sink: one line per stage on stderr."""
    print(f"gap_report: {message}", file=sys.stderr, flush=True)


def efficiency_band(percent: float) -> str:
    """Recommendation band of a transfer efficiency (%): < 50 widen_randomization, 50–80 fine_tune, > 80 ready."""
    if not math.isfinite(percent):
        raise GapReportError(f"transfer efficiency must be finite, got {percent!r}")
    if percent < FINE_TUNE_PCT:
        return "widen_randomization"
    return "fine_tune" if percent <= READY_PCT else "ready"


@dataclass(frozen=True)
class TransferEfficiency:
    """Headline transfer efficiency (%) and both of its estimates; see the module docstring for definitions."""

    percent: float  # the one the recommendations use: task_score_pct when scores were given, else overlap_pct
    basis: str  # "task_score" or "distribution_overlap"
    band: str  # efficiency_band(percent)
    overlap_pct: float  # 100 × (1 − 2·max(0, acc − 0.5))
    overlap_pct_ci95: tuple[float, float]  # from the normal approximation of acc's binomial error
    c2st_accuracy: float  # held-out accuracy of the sim-vs-real classifier, in [0, 1]
    c2st_p_value: float  # one-sided binomial p-value of acc against 0.5
    c2st_n_test: int  # rows classified (sim + real)
    c2st_channels: tuple[str, ...]  # channels the classifier saw
    task_score_pct: float | None = None  # 100 × real_score / sim_score
    sim_score: float | None = None
    real_score: float | None = None


@dataclass(frozen=True)
class GapReport:
    """What `gap_report` wrote: paths, the headline numbers, and `data` (the content of report.json)."""

    out_dir: Path
    json_path: Path
    html_path: Path
    plots: tuple[Path, ...]
    efficiency: TransferEfficiency
    ranking: tuple[str, ...]  # compared channels, largest gap first
    recommendations: tuple[Mapping[str, Any], ...]
    data: Mapping[str, Any]


# --------------------------------------------------------------------------------------------------- JSON helpers


def _json_safe(value: Any) -> Any:
    """Plain JSON types only: numpy → Python, non-finite floats → None, anything else → str."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------------------------------- inputs


def _log_facts(log: StepLog, quality: LogReport | None) -> dict[str, Any]:
    """Size, duration (s) and control period (ms) of a log, with its reading report when there is one."""
    dt = log.dt_s()
    dt = dt[dt > 0]
    return {
        "source": log.source,
        "steps": len(log),
        "duration_s": float((log.t_us[-1] - log.t_us[0]) / 1e6) if len(log) > 1 else 0.0,
        "median_dt_ms": float(np.median(dt) * 1e3) if dt.size else None,
        "groups": {name: int(block.shape[1]) for name, block in log.groups.items()},
        "quality": None if quality is None else quality.to_dict(),
    }


def _group_channel_names(sim: StepLog, real: StepLog, group: str) -> tuple[str, ...]:
    """Channel names of a common group: the joint names of whichever log has them (they must agree)."""
    if sim.joint_names and real.joint_names and sim.joint_names != real.joint_names:
        raise GapReportError(f"joint_names differ between sim ({sim.joint_names}) and real ({real.joint_names})")
    return (sim if sim.joint_names else real).channel_names([group])


def _common_layout(sim: StepLog, real: StepLog) -> tuple[dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """Common groups → channel names, and the groups not compared; raises on width mismatches.

    A zero-width group (e.g. `command: []` of a policy without commands) holds no channel: it counts as absent.
    """
    empty = {
        side: [n for n, b in log.groups.items() if b.shape[1] == 0] for side, log in (("sim", sim), ("real", real))
    }
    sim_groups = [name for name in sim.group_names if name not in empty["sim"]]
    real_groups = [name for name in real.group_names if name not in empty["real"]]
    common = [name for name in sim_groups if name in real_groups]
    if not common:
        left_out = f" (0 wide, left out: sim {empty['sim']}, real {empty['real']})" if any(empty.values()) else ""
        raise GapReportError(f"no channel group in common: sim has {sim_groups}, real has {real_groups}{left_out}")
    for name in common:
        width_sim, width_real = sim.group(name).shape[1], real.group(name).shape[1]
        if width_sim != width_real:
            raise GapReportError(
                f"{name} has {width_sim} channels in sim but {width_real} in real: the logs come from different "
                "robots or policies (check --num-joints / the joint count)"
            )
    skipped = {
        "sim_only": [name for name in sim_groups if name not in real_groups],
        "real_only": [name for name in real_groups if name not in sim_groups],
        "empty": [f"{name} ({side})" for side, names in empty.items() for name in names],
    }
    return {name: _group_channel_names(sim, real, name) for name in common}, skipped


def _task_efficiency(sim_score: float | None, real_score: float | None) -> float | None:
    if sim_score is None and real_score is None:
        return None
    if sim_score is None or real_score is None:
        raise GapReportError("give both sim_score and real_score (task scores), or neither")
    for name, value in (("sim_score", sim_score), ("real_score", real_score)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise GapReportError(f"{name} must be a finite number, got {value!r}")
    if sim_score <= 0:
        raise GapReportError(f"sim_score must be > 0 for the ratio real_score / sim_score, got {sim_score!r}")
    return 100.0 * real_score / sim_score


def check_out_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """`out_dir` as a Path if a report may be written there (new, empty, or `overwrite`); creates nothing.

    Raises `FileExistsError` naming the directory when it is a file, or not empty and `overwrite` is False.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty; pass overwrite=True (CLI: --overwrite) to replace the report files in it "
            "(other files are never touched)"
        )
    return out


def _check_no_clash(out: Path, names: Sequence[str], logs: Sequence[StepLog]) -> None:
    """Refuse to write a report file over one of the input logs."""
    targets = {(out / name).resolve() for name in names}
    for log in logs:
        if log.source and Path(log.source).resolve() in targets:
            raise GapReportError(f"{log.source} is an input log; choose another out_dir")


def _stale_plots(out: Path, keep: Sequence[str]) -> list[Path]:
    """PNGs listed by an earlier report.json in `out` that this run does not write (only names this module makes)."""
    try:
        previous = json.loads((out / "report.json").read_text(encoding="utf-8"))
        names = list(previous["files"]["plots"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [
        out / n for n in names if isinstance(n, str) and _OWN_PNG.match(n) and n not in keep and (out / n).is_file()
    ]


# --------------------------------------------------------------------------------------------------- metrics


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _varies(values: np.ndarray) -> bool:
    finite = _finite(values)
    return finite.size > 1 and bool(np.ptp(finite) > 0)


def _basic_metrics(s: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """W1, KS and moments: what is defined for constant channels too."""
    ks = ks_statistic(s, r)
    return {
        "w1": float(wasserstein_1d(s, r)),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "mean_sim": float(s.mean()),
        "mean_real": float(r.mean()),
        "std_sim": float(s.std(ddof=1)),
        "std_real": float(r.std(ddof=1)),
    }


def _gap_terms(s: np.ndarray, r: np.ndarray, metrics: Mapping[str, float]) -> dict[str, Any]:
    """Gap, shift and spread in units of σ_sim (σ of the pooled sample when sim is constant)."""
    sim_varies = bool(np.ptp(s) > 0)
    scale = metrics["std_sim"] if sim_varies else float(np.concatenate([s, r]).std(ddof=1))
    return {
        "scale": scale,
        "scale_basis": "sim_std" if sim_varies else "pooled_std",
        "gap": metrics["w1"] / scale if scale > 0 else 0.0,  # scale 0: both sides the same constant
        "shift": (metrics["mean_real"] - metrics["mean_sim"]) / scale if scale > 0 else 0.0,
        "spread_ratio": metrics["std_real"] / metrics["std_sim"] if sim_varies else None,
    }


def _channel_metrics(name: str, group: str, sim_col: np.ndarray, real_col: np.ndarray, seed: int) -> dict[str, Any]:
    """All 1-D metrics of one channel, finite samples only; `usable` False (with a `note`) when it cannot compare."""
    s, r = _finite(sim_col), _finite(real_col)
    record: dict[str, Any] = {"group": group, "n_sim": int(s.size), "n_real": int(r.size)}
    if min(s.size, r.size) < MIN_CHANNEL_SAMPLES:
        note = f"only {s.size} sim / {r.size} real finite samples (needs {MIN_CHANNEL_SAMPLES})"
        return {**record, "usable": False, "note": note}
    try:
        metrics = compare_channels(s[:, None], r[:, None], [name], seed=seed)[name]
    except MetricInputError as err:
        try:
            metrics = _basic_metrics(s, r)
        except MetricInputError as basic_err:
            return {**record, "usable": False, "note": str(basic_err)}
        record["note"] = f"entropies, KL and MMD skipped: {err}"
    return {**record, "usable": True, **metrics, **_gap_terms(s, r, metrics)}


def _all_channel_metrics(
    sim: StepLog, real: StepLog, layout: Mapping[str, Sequence[str]], seed: int
) -> dict[str, dict[str, Any]]:
    out = {}
    for group, names in layout.items():
        for j, name in enumerate(names):
            out[name] = _channel_metrics(name, group, sim.group(group)[:, j], real.group(group)[:, j], seed)
    if not any(record["usable"] for record in out.values()):
        raise GapReportError(
            "no channel has enough finite samples in both logs: "
            + "; ".join(f"{n}: {r['note']}" for n, r in out.items())
        )
    return out


def _group_metrics(
    sim: StepLog, real: StepLog, group: str, names: Sequence[str], channels: Mapping[str, Mapping[str, Any]], seed: int
) -> dict[str, Any]:
    """Multivariate metrics of one group over its usable, non-constant channels; `error` instead when undefined."""
    sim_block, real_block = sim.group(group), real.group(group)
    keep = [
        j
        for j, name in enumerate(names)
        if channels[name]["usable"] and _varies(sim_block[:, j]) and _varies(real_block[:, j])
    ]
    excluded = [name for j, name in enumerate(names) if j not in keep]
    if not keep:
        return {"error": "no usable non-constant channel", "excluded_channels": excluded}
    kept = [names[j] for j in keep]
    try:
        metrics = compare_groups(
            sim_block[:, keep], real_block[:, keep], kept, {group: kept}, seed=seed, nan_policy="omit"
        )[group]
    except MetricInputError as err:
        return {"error": str(err), "excluded_channels": excluded}
    return {**metrics, "excluded_channels": excluded}


def _complete_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.isfinite(matrix).all(axis=1)]


def _transfer_efficiency(
    sim: StepLog,
    real: StepLog,
    layout: Mapping[str, Sequence[str]],
    channels: Mapping[str, Mapping[str, Any]],
    task_pct: float | None,
    scores: tuple[float | None, float | None],
    seed: int,
) -> TransferEfficiency:
    """Domain-classifier overlap on all usable common channels, and the task-score ratio when given."""
    names = [name for group in layout for name in layout[group]]
    use = [j for j, name in enumerate(names) if channels[name]["usable"]]
    sim_matrix, real_matrix = sim.matrix(list(layout))[0][:, use], real.matrix(list(layout))[0][:, use]
    sim_rows, real_rows = _complete_rows(sim_matrix), _complete_rows(real_matrix)
    if min(len(sim_rows), len(real_rows)) < MIN_COMPLETE_ROWS:
        finite = np.minimum(np.isfinite(sim_matrix).mean(axis=0), np.isfinite(real_matrix).mean(axis=0))
        worst = ", ".join(f"{names[use[j]]} ({100 * finite[j]:.0f} %)" for j in np.argsort(finite)[:3])
        raise GapReportError(
            f"too few steps with every compared channel finite: sim {len(sim_rows)}, real {len(real_rows)} "
            f"(needs {MIN_COMPLETE_ROWS} each); least finite channels: {worst}"
        )
    c2st = classifier_two_sample_test(sim_rows, real_rows, seed=seed)
    acc = c2st.accuracy
    half_width = 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / c2st.n_test)
    overlap = _overlap_pct(acc)
    ci = (_overlap_pct(min(1.0, acc + half_width)), _overlap_pct(max(0.0, acc - half_width)))
    percent, basis = (overlap, "distribution_overlap") if task_pct is None else (task_pct, "task_score")
    return TransferEfficiency(
        percent=percent,
        basis=basis,
        band=efficiency_band(percent),
        overlap_pct=overlap,
        overlap_pct_ci95=ci,
        c2st_accuracy=acc,
        c2st_p_value=c2st.p_value,
        c2st_n_test=c2st.n_test,
        c2st_channels=tuple(names[j] for j in use),
        task_score_pct=task_pct,
        sim_score=scores[0],
        real_score=scores[1],
    )


def _overlap_pct(accuracy: float) -> float:
    return 100.0 * (1.0 - 2.0 * max(0.0, accuracy - 0.5))


def _paired_metrics(
    replay: StepLog, real: StepLog, layout: Mapping[str, Sequence[str]], channels: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Per-step errors of a time-aligned replay against real: RMSE, MAE, Pearson r, lag (steps and s)."""
    if len(replay) != len(real):
        raise GapReportError(
            f"replay has {len(replay)} steps but real has {len(real)}; a replay must align step by step"
        )
    missing = [
        group for group in layout if group not in replay.groups or replay.group(group).shape != real.group(group).shape
    ]
    if missing:
        raise GapReportError(f"replay lacks (or has another width for) the common groups {missing}")
    dt = real.dt_s()
    dt_s = float(np.median(dt[dt > 0])) if np.any(dt > 0) else None
    out = {}
    for group, names in layout.items():
        for j, name in enumerate(names):
            out[name] = _paired_channel(replay.group(group)[:, j], real.group(group)[:, j], channels[name], dt_s)
    return {"n_steps": len(real), "dt_s": dt_s, "channels": out}


def _paired_channel(
    rep: np.ndarray, real: np.ndarray, channel: Mapping[str, Any], dt_s: float | None
) -> dict[str, Any]:
    both = np.isfinite(rep) & np.isfinite(real)
    rep, real = rep[both], real[both]
    if rep.size < MIN_CHANNEL_SAMPLES:
        return {"n": int(rep.size), "note": f"only {rep.size} steps finite in both (needs {MIN_CHANNEL_SAMPLES})"}
    record: dict[str, Any] = {
        "n": int(rep.size),
        "rmse": float(rmse(rep, real)),
        "mae": float(mean_abs_diff(rep, real)),
    }
    scale = channel.get("scale")
    record["rmse_over_scale"] = record["rmse"] / scale if scale else None
    try:
        record["pearson_r"] = float(pearson_r(rep, real))
        lag = cross_correlation_lag(rep, real, max_lag=min(MAX_LAG_STEPS, rep.size // 4), dt_s=dt_s)
        record.update(lag_steps=int(lag.lag_samples), lag_s=lag.lag_s, lag_correlation=float(lag.correlation))
    except MetricInputError as err:
        record["note"] = f"correlation and lag skipped: {err}"
    return record


# --------------------------------------------------------------------------------------------------- diagnosis


def _finding_dict(finding: Any) -> dict[str, Any]:
    """A `diagnose.Finding` as plain JSON (kind, channels, severity, evidence, message)."""
    fields = ("kind", "channels", "severity", "evidence", "message")
    return _json_safe({name: getattr(finding, name) for name in fields})


def _run_diagnosis(real: StepLog, sim: StepLog, replay: StepLog | None) -> dict[str, Any]:
    """`ksim_entropy.bridge.diagnose.diagnose` when that module exists, else a "not available" record."""
    try:
        module = importlib.import_module(_DIAGNOSE_MODULE)
    except ModuleNotFoundError as err:
        if err.name != _DIAGNOSE_MODULE:
            raise
        return {"available": False, "reason": f"diagnosis not available ({_DIAGNOSE_MODULE} is not installed)"}
    try:
        diagnosis = module.diagnose(real, sim, replay=replay)
    except ValueError as err:  # the diagnosis found the data unusable; the rest of the report still stands
        return {"available": False, "reason": f"diagnosis failed: {err}"}
    findings = [_finding_dict(f) for f in diagnosis.findings]
    return {"available": True, "findings": findings, "result": _json_safe(diagnosis.to_dict())}


# --------------------------------------------------------------------------------------------------- recommendations

_OVERALL_ADVICE = {
    "widen_randomization": (
        "Transfer efficiency {pct:.1f} % is below 50 %: the robot behaves outside what the policy saw in simulation. "
        "Widen the domain randomization around the largest gaps below (or re-centre it on the measured values), "
        "or collect more real data to fit it, then retrain."
    ),
    "fine_tune": (
        "Transfer efficiency {pct:.1f} % is between 50 and 80 %: the policy transfers in part. Fine-tune: narrow "
        "the randomization around the measured real values of the largest gaps and continue training from this "
        "checkpoint, or fine-tune on real rollouts."
    ),
    "ready": (
        "Transfer efficiency {pct:.1f} % is above 80 %: sim and real agree. Ready to deploy; keep logging and re-run "
        "this report to monitor drift."
    ),
}
_CHANNEL_ADVICE = {
    ("joint_angles", "offset"): "{ch} sits {delta:+.3g} rad from sim on average: check the joint's zero offset "
    "(calibration), or gravity sag in sim (link masses, kp).",
    ("joint_angles", "wider"): "{ch} varies {ratio:.2f}× as much on the robot: add backlash / position noise, or "
    "randomize kp and friction more widely for this joint.",
    ("joint_angles", "narrower"): "{ch} moves {ratio:.2f}× as much on the robot: check torque limits, kp/kd and "
    "friction of this joint.",
    ("joint_vels", "offset"): "{ch} has a velocity bias of {delta:+.3g} rad/s: check velocity estimation and "
    "filtering on the robot.",
    ("joint_vels", "wider"): "{ch} is {ratio:.2f}× as spread on the robot: raise joint-velocity observation noise, "
    "or check encoder filtering.",
    ("joint_vels", "narrower"): "{ch} is {ratio:.2f}× as spread on the robot: damping or armature is too low in sim, "
    "or the robot filters velocities.",
    ("projected_g", "offset"): "{ch} differs by {delta:+.3g} m/s² on average: the IMU tilt differs; check the IMU "
    "mounting orientation in the MJCF or the standing posture.",
    ("gyro", "offset"): "{ch} has a bias of {delta:+.3g} rad/s: calibrate the gyro bias or randomize it in sim.",
    ("accel", "offset"): "{ch} has a bias of {delta:+.3g} m/s²: calibrate the accelerometer or randomize its bias.",
    ("command", "any"): "{ch}: the commands differ between the runs; match the sim command sampling (ranges, zero "
    "fraction) to what the robot receives before reading the other gaps.",
    ("output", "any"): "{ch}: the policy outputs differ, usually as a consequence of the input gaps above; if the "
    "inputs match, check the actuator model (kp, kd, armature).",
}
_IMU_SPREAD = "{ch} is {ratio:.2f}× as spread on the robot: match the IMU noise randomization to the measured level."
_SHAPE = "{ch}: the distributions differ in shape (KS D = {ks:.2f}, gap {gap:.2f} σ_sim); compare its histogram."


def _gap_pattern(record: Mapping[str, Any]) -> str:
    """Offset (mean shift explains most of W1), wider / narrower (σ_real vs σ_sim), or shape."""
    if abs(record["mean_real"] - record["mean_sim"]) >= 0.5 * record["w1"]:
        return "offset"
    ratio = record["spread_ratio"]
    if ratio is not None and ratio > SPREAD_FACTOR:
        return "wider"
    if ratio is not None and ratio < 1 / SPREAD_FACTOR:
        return "narrower"
    return "shape"


def _channel_advice(name: str, record: Mapping[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    """Advice for one channel from its gap pattern; `kinds`: diagnosis findings that blame this channel."""
    group, pattern = record["group"], _gap_pattern(record)
    template = _CHANNEL_ADVICE.get((group, "any")) or _CHANNEL_ADVICE.get((group, pattern))
    if template is None:
        template = _IMU_SPREAD if pattern in ("wider", "narrower") else _SHAPE
    fields = {
        "ch": name,
        "delta": record["mean_real"] - record["mean_sim"],
        "ratio": record["spread_ratio"] or 0.0,
        "ks": record["ks_statistic"],
        "gap": record["gap"],
    }
    return {
        "scope": "channel",
        "action": f"{group}:{pattern}",
        "channels": [name],
        "message": template.format(**fields) + (f" The diagnosis names it too: {', '.join(kinds)}." if kinds else ""),
    }


def _quality_advice(side: str, quality: LogReport | None) -> list[dict[str, Any]]:
    if quality is None or quality.ok:
        return []
    issues = quality.issues()
    more = f" (+{len(issues) - 3} more)" if len(issues) > 3 else ""
    return [
        {
            "scope": "log_quality",
            "action": "fix_logging",
            "channels": [],
            "message": f"The {side} log has issues: {'; '.join(issues[:3])}{more}. Fix them (or re-record) before "
            "trusting the gaps they touch.",
        }
    ]


def _recommendations(
    efficiency: TransferEfficiency,
    ranking: Sequence[str],
    channels: Mapping[str, Mapping[str, Any]],
    diagnosis: Mapping[str, Any],
    qualities: Mapping[str, LogReport | None],
) -> list[dict[str, Any]]:
    """Overall band advice first, then log quality, diagnosis findings and the largest channel gaps."""
    overall = {
        "scope": "overall",
        "action": efficiency.band,
        "channels": [],
        "message": _OVERALL_ADVICE[efficiency.band].format(pct=efficiency.percent),
    }
    out = [overall]
    for side, quality in qualities.items():
        out.extend(_quality_advice(side, quality))
    findings = diagnosis.get("findings", [])
    for finding in findings[:MAX_DIAGNOSIS_ADVICE]:
        action = f"diagnosis:{finding['kind']}"
        out.append(
            {"scope": "diagnosis", "action": action, "channels": finding["channels"], "message": finding["message"]}
        )
    large = [name for name in ranking if channels[name]["gap"] >= ADVICE_GAP][:MAX_CHANNEL_ADVICE]
    for name in large:
        kinds = [f["kind"] for f in findings if name in f["channels"]]
        out.append(_channel_advice(name, channels[name], kinds))
    return out


# --------------------------------------------------------------------------------------------------- plots


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
        s, r = _finite(sim.group(group)[:, j]), _finite(real.group(group)[:, j])
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
            x, y = np.quantile(_finite(s), QUANTILES), np.quantile(_finite(r), QUANTILES)
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
    return (np.quantile(_finite(r), u) - np.quantile(_finite(s), u)) / (scale or 1.0)


def _write_plots(
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


# --------------------------------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #dfe3ea; --card: #ffffff; --bg: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.5;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
  margin: 18px 0; }
.muted { color: var(--muted); font-size: 13px; }
nav { font-size: 14px; } nav a { margin-right: 14px; color: #2b59c3; text-decoration: none; }
.headline { display: flex; gap: 28px; align-items: center; flex-wrap: wrap; }
.pct { font-size: 56px; font-weight: 700; line-height: 1; }
.band { display: inline-block; padding: 3px 10px; border-radius: 12px; color: #fff; font-weight: 600; }
.band-widen_randomization { background: #c0392b; } .band-fine_tune { background: #d68910; }
.band-ready { background: #1e8449; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 10px; flex: 1; }
.fact { background: var(--bg); border-radius: 8px; padding: 8px 12px; }
.fact b { display: block; font-size: 18px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
th { white-space: nowrap; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
pre { background: #f7f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 10px; font-size: 12px;
  overflow-x: auto; white-space: pre-wrap; margin: 6px 0; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 900px) { .two { grid-template-columns: 1fr; } }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 6px; background: #fff; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
ol.recs li { margin: 8px 0; } .tag { font-size: 11px; font-weight: 600; color: #fff; background: #5b6475;
  border-radius: 4px; padding: 1px 6px; margin-right: 6px; text-transform: uppercase; }
.tag-overall { background: #2b59c3; } .tag-diagnosis { background: #8e44ad; } .tag-log_quality { background: #c0392b; }
code { font-size: 12px; }
"""

# Sets data-images-loaded="<ok>/<total>" on <body> once the page has loaded (used by the headless-browser test).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + images.length);
});
"""
_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)

    def cell(value: Any) -> str:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return f'<td class="num">{_fmt(value)}</td>' if number else f"<td>{_e(value)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _html_summary(data: Mapping[str, Any]) -> str:
    eff = data["transfer_efficiency"]
    lo, hi = eff["overlap_pct_ci95"]
    overlap = (
        f"{eff['overlap_pct']:.1f} % (95 % CI {lo:.0f}–{hi:.0f} %), classifier accuracy {eff['c2st_accuracy']:.3f}"
    )
    task = (
        "not given"
        if eff["task_score_pct"] is None
        else (f"{eff['task_score_pct']:.1f} % (real {eff['real_score']:.4g} / sim {eff['sim_score']:.4g})")
    )
    top = ", ".join(f"{r['channel']} ({r['gap']:.2f})" for r in data["ranking"][:3])
    facts = [
        ("distribution overlap", overlap),
        ("task-score ratio", task),
        ("compared", f"{len(data['ranking'])} channels in {len(data['groups'])} groups"),
        ("largest gaps (W1 / σ_sim)", top),
    ]
    fact_html = "".join(f'<div class="fact"><span class="muted">{_e(k)}</span><b>{_e(v)}</b></div>' for k, v in facts)
    basis = "task-score ratio" if eff["basis"] == "task_score" else "distribution overlap"
    return (
        '<section id="summary"><h2>Summary</h2><div class="headline"><div>'
        f'<div class="pct">{eff["percent"]:.0f} %</div><div class="muted">transfer efficiency ({_e(basis)})</div>'
        f'<p><span class="band band-{_e(eff["band"])}">{_e(_BAND_TEXT[eff["band"]])}</span></p>'
        f'<a href="#recommendations">→ recommendations</a></div><div class="facts">{fact_html}</div></div></section>'
    )


def _html_logs(data: Mapping[str, Any], summaries: Mapping[str, str | None]) -> str:
    parts = []
    for side in ("sim", "real", "replay"):
        facts = data["inputs"].get(side)
        if facts is None:
            continue
        period = "—" if facts["median_dt_ms"] is None else f"{facts['median_dt_ms']:.2f} ms"
        head = f"{facts['steps']} steps, {facts['duration_s']:.1f} s, median period {period}"
        text = summaries.get(side) or "no reading report given"
        parts.append(
            f"<div><h3>{side}: {_e(facts['source'] or '(in memory)')}</h3><p class='muted'>{_e(head)}</p>"
            f"<pre>{_e(text)}</pre></div>"
        )
    skipped = data["skipped_groups"]
    what = {"sim_only": "only in sim", "real_only": "only in real", "empty": "no values (0 wide)"}
    note = "; ".join(f"{what.get(k, k)}: {', '.join(v)}" for k, v in skipped.items() if v)
    extra = f"<p>Groups not compared — {_e(note)}.</p>" if note else ""
    return f'<section id="logs"><h2>Log quality</h2><div class="two">{"".join(parts)}</div>{extra}</section>'


def _evidence_text(evidence: Any, shown: int = 4) -> str:
    """`name = value` pairs (3 significant digits), the first `shown` of them; anything else as compact JSON."""
    if not isinstance(evidence, Mapping):
        text = json.dumps(evidence, separators=(",", ":"))
        return text if len(text) <= 200 else text[:197] + "..."
    pairs = [f"{k} = {_fmt(v)}" for k, v in list(evidence.items())[:shown]]
    more = f"; +{len(evidence) - shown} more (report.json)" if len(evidence) > shown else ""
    return "; ".join(pairs) + more


def _html_diagnosis(diagnosis: Mapping[str, Any]) -> str:
    if not diagnosis["available"]:
        return f'<section id="diagnosis"><h2>Diagnosis</h2><p>{_e(diagnosis["reason"])}</p></section>'
    rows = []
    for i, f in enumerate(diagnosis["findings"], 1):
        channels = ", ".join(f["channels"][:6]) + (" …" if len(f["channels"]) > 6 else "")
        evidence = _evidence_text(f["evidence"])
        rows.append((i, f["severity"], f["kind"], channels, f["message"], evidence))
    table = (
        _table(["#", "severity", "kind", "channels", "finding", "evidence"], rows) if rows else "<p>No findings.</p>"
    )
    notes = []
    result = diagnosis["result"] if isinstance(diagnosis["result"], Mapping) else {}
    for key, title in (("corrections", "corrected before the later detectors"), ("skipped", "skipped")):
        entries = result.get(key)
        if isinstance(entries, Mapping) and entries:
            items = "".join(f"<li><b>{_e(name)}</b>: {_e(why)}</li>" for name, why in entries.items())
            notes.append(f"<h3>{_e(title.capitalize())}</h3><ul>{items}</ul>")
    return f'<section id="diagnosis"><h2>Diagnosis</h2>{table}{"".join(notes)}</section>'


def _html_channels(data: Mapping[str, Any], files: Mapping[str, str], limit: int) -> str:
    channels = data["channels"]
    rows = []
    for r in data["ranking"][:limit]:
        c = channels[r["channel"]]
        rows.append(
            (
                r["rank"],
                r["channel"],
                c["w1"],
                c["scale"],
                c["gap"],
                c["shift"],
                c["spread_ratio"],
                c["ks_statistic"],
                c["mean_sim"],
                c["mean_real"],
                c["std_sim"],
                c["std_real"],
            )
        )
    headers = [
        "#",
        "channel",
        "W1",
        "σ_sim",
        "gap",
        "shift",
        "σ_real/σ_sim",
        "KS D",
        "μ sim",
        "μ real",
        "σ sim",
        "σ real",
    ]
    unusable = [f"{n}: {c['note']}" for n, c in channels.items() if not c["usable"]]
    skipped = f"<p>Not compared: {_e('; '.join(unusable))}</p>" if unusable else ""
    return (
        '<section id="channels"><h2>Channel gaps</h2>'
        + _figure(files["gap_ranking"], "Channels ranked by gap = W1(sim, real) / σ_sim, coloured by group")
        + _table(headers, rows)
        + f'<p class="muted">Units: the channel\'s own (see the groups). Shift = (μ_real − μ_sim) / σ_sim. '
        f"Full metrics (entropies, KL, MMD, KS p-values) for all channels are in report.json.</p>{skipped}</section>"
    )


def _html_groups(data: Mapping[str, Any], files: Mapping[str, str]) -> str:
    rows = []
    for group, g in data["groups"].items():
        if "error" in g:
            rows.append((group, CHANNEL_GROUPS[group], "—", "—", "—", "—", "—", "—", f"not computed: {g['error']}"))
            continue
        excluded = f"constant, left out: {', '.join(g['excluded_channels'])}" if g["excluded_channels"] else ""
        rows.append(
            (
                group,
                CHANNEL_GROUPS[group],
                int(g["n_channels"]),
                g["c2st_accuracy"],
                g["c2st_p_value"],
                g["mmd2_unbiased"],
                g["mmd_p_value"],
                g["w2_gaussian"],
                excluded,
            )
        )
    headers = ["group", "unit", "channels", "C2ST acc", "C2ST p", "MMD²", "MMD p", "W2 (Gaussian)", "note"]
    return (
        '<section id="groups"><h2>Channel groups</h2>'
        + _figure(files["group_c2st"], "Held-out accuracy of a sim-vs-real classifier per group and on all channels")
        + _table(headers, rows)
        + "</section>"
    )


def _html_plots(data: Mapping[str, Any], files: Mapping[str, str], limit: int) -> str:
    hists = "".join(
        _figure(files[f"hist_{g}"], f"{g} ({CHANNEL_GROUPS[g]}): sim (blue) vs real (red) histograms, density")
        for g in data["groups"]
        if f"hist_{g}" in files
    )
    aligned = data["paired"] is not None
    paired_table = ""
    if aligned:
        rows = []
        for r in data["ranking"][:limit]:
            c = data["paired"]["channels"][r["channel"]]
            lag_ms = None if c.get("lag_s") is None else 1e3 * c["lag_s"]
            rows.append(
                (r["channel"], c.get("rmse"), c.get("rmse_over_scale"), c.get("pearson_r"), c.get("lag_steps"), lag_ms)
            )
        headers = ["channel", "RMSE", "RMSE / σ_sim", "Pearson r", "lag (steps)", "lag (ms)"]
        paired_table = "<h3>Replay vs real, per step (largest gaps first)</h3>" + _table(headers, rows)
    scatter = (
        "Replay vs real, time-aligned" if aligned else "Quantile–quantile plots (points on the diagonal: same law)"
    )
    errors = "Per-step replay errors" if aligned else "Transport displacements Q_real(u) − Q_sim(u)"
    return (
        f'<section id="distributions"><h2>Distributions</h2>{hists}</section>'
        '<section id="detail"><h2>Largest gaps in detail</h2>'
        + _figure(files["scatter"], scatter)
        + _figure(files["timeseries"], "Time series overlay")
        + _figure(files["errors"], f"{errors}, in units of σ_sim")
        + paired_table
        + "</section>"
    )


def _html_definitions(data: Mapping[str, Any]) -> str:
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in data["definitions"].items())
    return f'<section id="definitions"><h2>Definitions</h2><ul>{items}</ul></section>'


def _html_recommendations(recs: Sequence[Mapping[str, Any]]) -> str:
    items = "".join(
        f'<li><span class="tag tag-{_e(r["scope"])}">{_e(r["scope"].replace("_", " "))}</span>{_e(r["message"])}</li>'
        for r in recs
    )
    return f'<section id="recommendations"><h2>Recommendations</h2><ol class="recs">{items}</ol></section>'


def _render_html(
    data: Mapping[str, Any], files: Mapping[str, str], summaries: Mapping[str, str | None], limit: int
) -> str:
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in [
            ("summary", "Summary"),
            ("logs", "Log quality"),
            ("diagnosis", "Diagnosis"),
            ("channels", "Channel gaps"),
            ("groups", "Groups"),
            ("distributions", "Distributions"),
            ("detail", "Detail"),
            ("definitions", "Definitions"),
            ("recommendations", "Recommendations"),
        ]
    )
    sources = " · ".join(f"{side}: {data['inputs'][side]['source'] or '(in memory)'}" for side in ("sim", "real"))
    body = "".join(
        [
            _html_summary(data),
            _html_logs(data, summaries),
            _html_diagnosis(data["diagnosis"]),
            _html_channels(data, files, limit),
            _html_groups(data, files),
            _html_plots(data, files, limit),
            _html_definitions(data),
            _html_recommendations(data["recommendations"]),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Sim-to-real gap report</title><style>{_CSS}</style></head><body><main>"
        f'<h1>Sim-to-real gap report</h1><p class="muted">{_e(sources)} · created {_e(data["created_utc"])}</p>'
        f"<nav>{nav}</nav>{body}</main><script>{_SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------------------------------- entry point

_DEFINITIONS = {
    "gap": "W1(sim, real) / σ_sim per channel: the 1-Wasserstein distance between the sim and real samples (finite "
    "values only) in units of the sim standard deviation (of the pooled sample when sim is constant).",
    "transfer efficiency (distribution overlap)": "100 % × (1 − 2·max(0, acc − 0.5)), acc = held-out accuracy of "
    "a quadratic logistic-regression classifier telling sim steps from real steps on all compared channels "
    "(classifier_two_sample_test, 5-fold cross-validation, ≤ 5000 steps per side). 100 % = indistinguishable.",
    "transfer efficiency (task score)": "100 % × real_score / sim_score (e.g. mean tracking reward), when given; it "
    "then drives the recommendations.",
    "bands": "< 50 %: widen randomization or collect more data; 50–80 %: fine-tune; > 80 %: ready, monitor.",
    "channel advice": f"channels with gap ≥ {ADVICE_GAP} (at most {MAX_CHANNEL_ADVICE}); offset when the mean shift "
    f"is at least half of W1, wider / narrower when σ_real / σ_sim is beyond {SPREAD_FACTOR}× either way.",
}


def _check_limits(max_channels_plotted: int, detail_channels: int) -> None:
    for name, value in (("max_channels_plotted", max_channels_plotted), ("detail_channels", detail_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GapReportError(f"{name} must be an int >= 1, got {value!r}")


def _analyse(
    sim: StepLog,
    real: StepLog,
    replay: StepLog | None,
    scores: tuple[float | None, float | None],
    qualities: Mapping[str, LogReport | None],
    seed: int,
    stage: Callable[[str], None],
) -> tuple[dict[str, Any], TransferEfficiency, dict[str, tuple[str, ...]]]:
    """Every number of the report (no files): report.json's content, less `files`."""
    task_pct = _task_efficiency(*scores)
    layout, skipped = _common_layout(sim, real)
    stage(f"per-channel metrics ({sum(map(len, layout.values()))} channels)")
    channels = _all_channel_metrics(sim, real, layout, seed)
    ranking = sorted((n for n, c in channels.items() if c["usable"]), key=lambda n: -channels[n]["gap"])
    stage(f"per-group metrics ({len(layout)} groups)")
    groups = {group: _group_metrics(sim, real, group, names, channels, seed) for group, names in layout.items()}
    stage("transfer efficiency (domain classifier on all common channels)")
    efficiency = _transfer_efficiency(sim, real, layout, channels, task_pct, scores, seed)
    paired = None if replay is None else _paired_metrics(replay, real, layout, channels)
    stage("diagnosis")
    diagnosis = _run_diagnosis(real, sim, replay)
    recs = _recommendations(efficiency, ranking, channels, diagnosis, qualities)
    logs = {"sim": sim, "real": real, "replay": replay}
    inputs = {side: None if log is None else _log_facts(log, qualities.get(side)) for side, log in logs.items()}
    data = {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "inputs": inputs,
        "common_groups": {group: list(names) for group, names in layout.items()},
        "skipped_groups": skipped,
        "transfer_efficiency": dataclasses.asdict(efficiency),
        "ranking": [
            {"rank": i, "channel": n, "group": channels[n]["group"], "gap": channels[n]["gap"]}
            for i, n in enumerate(ranking, 1)
        ],
        "channels": channels,
        "groups": groups,
        "paired": paired,
        "diagnosis": diagnosis,
        "recommendations": recs,
        "definitions": _DEFINITIONS,
    }
    return data, efficiency, layout


def gap_report(
    sim: StepLog,
    real: StepLog,
    out_dir: str | os.PathLike[str],
    *,
    sim_report: LogReport | None = None,
    real_report: LogReport | None = None,
    replay: StepLog | None = None,
    replay_report: LogReport | None = None,
    sim_score: float | None = None,
    real_score: float | None = None,
    overwrite: bool = False,
    max_channels_plotted: int = 20,
    detail_channels: int = 6,
    seed: int = 0,
    progress: Progress | None = stderr_progress,
) -> GapReport:
    """Compare a sim and a real log and write report.json, report.html and PNG plots into `out_dir`.

    `sim_report` / `real_report` / `replay_report`: the `LogReport`s from reading the logs (shown, and used for
    advice). `replay`: a sim run time-aligned with `real` step for step (same length; e.g. the real outputs replayed
    open-loop), for per-step errors and aligned plots; it is also passed to the diagnosis. `sim_score` /
    `real_score`: task scores (higher is better, sim > 0) for the task-score efficiency. `max_channels_plotted`: most
    channels in one figure or table (largest gaps first); `detail_channels`: channels in the scatter, time-series and
    error figures. `seed`: subsampling and classifier folds. `progress` gets one line per stage (None: silent).
    Refuses a non-empty `out_dir` unless `overwrite`, which replaces only this report's own files. Raises
    `GapReportError` when the logs cannot be compared, `FileExistsError` for a non-empty `out_dir`.
    """
    _check_limits(max_channels_plotted, detail_channels)
    total, started, count = 5, time.monotonic(), [0]

    def stage(message: str) -> None:
        count[0] += 1
        if progress is not None:
            progress(f"[{count[0]}/{total}] {message} (t={time.monotonic() - started:.1f} s)")

    out = check_out_dir(out_dir, overwrite)
    _check_no_clash(out, ["report.json", "report.html"], [log for log in (sim, real, replay) if log is not None])
    qualities = {"sim": sim_report, "real": real_report, "replay": replay_report}
    data, efficiency, layout = _analyse(sim, real, replay, (sim_score, real_score), qualities, seed, stage)
    stage(f"plots into {out}")
    out.mkdir(parents=True, exist_ok=True)
    files = _write_plots(out, sim, real, replay, layout, data, efficiency, (max_channels_plotted, detail_channels))
    for path in _stale_plots(out, list(files.values())):  # read from the previous report.json, not yet replaced
        path.unlink()
    data["files"] = {"json": "report.json", "html": "report.html", "plots": files}
    safe = _json_safe(data)
    text = json.dumps(safe, indent=1, ensure_ascii=False, allow_nan=False)
    summaries = {side: None if q is None else q.summary() for side, q in qualities.items()}
    page = _render_html(safe, files, summaries, max_channels_plotted)
    json_path, html_path = out / "report.json", out / "report.html"
    atomic_write(json_path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    atomic_write(html_path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    if progress is not None:
        progress(f"done in {time.monotonic() - started:.1f} s: {html_path}")
    return GapReport(
        out_dir=out,
        json_path=json_path,
        html_path=html_path,
        plots=tuple(out / name for name in files.values()),
        efficiency=efficiency,
        ranking=tuple(r["channel"] for r in safe["ranking"]),
        recommendations=tuple(safe["recommendations"]),
        data=safe,
    )
