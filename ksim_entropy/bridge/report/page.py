"""The gap report's HTML page: readable offline (no CDN, font or script from elsewhere; a CSP forbids them)."""

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ksim_entropy.bridge.report.analysis import BAND_TEXT
from ksim_entropy.formats.schema import CHANNEL_GROUPS

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
        f'<p><span class="band band-{_e(eff["band"])}">{_e(BAND_TEXT[eff["band"]])}</span></p>'
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


def render_html(
    data: Mapping[str, Any], files: Mapping[str, str], summaries: Mapping[str, str | None], limit: int
) -> str:
    """The report page from report.json's content (`data`), the plot files and the logs' quality summaries."""
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
