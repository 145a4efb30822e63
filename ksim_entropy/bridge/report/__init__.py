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

import json
import os
import time

from ksim_entropy.bridge.report.analysis import (
    GapReport,
    GapReportError,
    Progress,
    TransferEfficiency,
    analyse,
    check_limits,
    check_no_clash,
    check_out_dir,
    efficiency_band,
    json_safe,
    stale_plots,
    stderr_progress,
)
from ksim_entropy.bridge.report.page import render_html
from ksim_entropy.bridge.report.plots import write_plots
from ksim_entropy.formats.jsonfile import atomic_write
from ksim_entropy.formats.schema import LogReport, StepLog

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
    check_limits(max_channels_plotted, detail_channels)
    total, started, count = 5, time.monotonic(), [0]

    def stage(message: str) -> None:
        count[0] += 1
        if progress is not None:
            progress(f"[{count[0]}/{total}] {message} (t={time.monotonic() - started:.1f} s)")

    out = check_out_dir(out_dir, overwrite)
    check_no_clash(out, ["report.json", "report.html"], [log for log in (sim, real, replay) if log is not None])
    qualities = {"sim": sim_report, "real": real_report, "replay": replay_report}
    data, efficiency, layout = analyse(sim, real, replay, (sim_score, real_score), qualities, seed, stage)
    stage(f"plots into {out}")
    out.mkdir(parents=True, exist_ok=True)
    files = write_plots(out, sim, real, replay, layout, data, efficiency, (max_channels_plotted, detail_channels))
    for path in stale_plots(out, list(files.values())):  # read from the previous report.json, not yet replaced
        path.unlink()
    data["files"] = {"json": "report.json", "html": "report.html", "plots": files}
    safe = json_safe(data)
    text = json.dumps(safe, indent=1, ensure_ascii=False, allow_nan=False)
    summaries = {side: None if q is None else q.summary() for side, q in qualities.items()}
    page = render_html(safe, files, summaries, max_channels_plotted)
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
