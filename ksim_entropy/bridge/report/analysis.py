"""The gap report's numbers: inputs, per-channel and per-group metrics, transfer efficiency, diagnosis, advice."""

import dataclasses
import datetime
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ksim_entropy.bridge.diagnose.randomizers import pointed_randomizers
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
from ksim_entropy.formats.schema import LogReport, StepLog

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
MAX_LAG_STEPS = 50  # replay-vs-real lags searched within ± this many steps (1 s at 50 Hz)
_DIAGNOSE_MODULE = "ksim_entropy.bridge.diagnose"
_OWN_PNG = re.compile(r"^(gap_ranking|group_c2st|scatter|timeseries|errors|hist_[a-z_]+)\.png$")
BAND_TEXT = {
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


def json_safe(value: Any) -> Any:
    """Plain JSON types only: numpy → Python, non-finite floats → None, anything else → str."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


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


def check_no_clash(out: Path, names: Sequence[str], logs: Sequence[StepLog]) -> None:
    """Refuse to write a report file over one of the input logs."""
    targets = {(out / name).resolve() for name in names}
    for log in logs:
        if log.source and Path(log.source).resolve() in targets:
            raise GapReportError(f"{log.source} is an input log; choose another out_dir")


def stale_plots(out: Path, keep: Sequence[str]) -> list[Path]:
    """PNGs listed by an earlier report.json in `out` that this run does not write (only names this module makes)."""
    try:
        previous = json.loads((out / "report.json").read_text(encoding="utf-8"))
        names = list(previous["files"]["plots"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [
        out / n for n in names if isinstance(n, str) and _OWN_PNG.match(n) and n not in keep and (out / n).is_file()
    ]


def finite_values(values: np.ndarray) -> np.ndarray:
    """The finite entries of `values` (flattened)."""
    return values[np.isfinite(values)]


def _varies(values: np.ndarray) -> bool:
    finite = finite_values(values)
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
    s, r = finite_values(sim_col), finite_values(real_col)
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


def _finding_dict(finding: Any) -> dict[str, Any]:
    """A `diagnose.Finding` as plain JSON (kind, channels, severity, evidence, message)."""
    fields = ("kind", "channels", "severity", "evidence", "message")
    return json_safe({name: getattr(finding, name) for name in fields})


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
    return {
        "available": True,
        "findings": findings,
        "randomizers": pointed_randomizers(findings).to_dict(),  # what `tasks.walk c2st_report=` moves
        "result": json_safe(diagnosis.to_dict()),
    }


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


def check_limits(max_channels_plotted: int, detail_channels: int) -> None:
    """Raise `GapReportError` unless both limits are ints >= 1."""
    for name, value in (("max_channels_plotted", max_channels_plotted), ("detail_channels", detail_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GapReportError(f"{name} must be an int >= 1, got {value!r}")


def analyse(
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
