"""Gap report: metrics and efficiency bands on synthetic pairs, plots, offline HTML (in headless Chromium), CLI.

Two synthetic pairs from one generator: a clean pair (different seeds) and a gapped pair (joint 3's angle offset by
+0.25 rad ≈ 2.3 σ, the gyroscope 1.6× as spread). Each report is built once per module (~8 s each on 2 cores).
"""

import contextlib
import html
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from threadpoolctl import threadpool_limits

from ksim_entropy.bridge import report as report_module
from ksim_entropy.bridge.cli import main
from ksim_entropy.bridge.logs import read_ndjson, write_ndjson
from ksim_entropy.bridge.report import GapReportError, efficiency_band, gap_report
from ksim_entropy.bridge.report import analysis as report_analysis
from ksim_entropy.formats.schema import StepLog

REPO = Path(__file__).resolve().parents[2]
DIAGNOSE = "ksim_entropy.bridge.diagnose"
NUM_JOINTS = 20
JOINT_NAMES = tuple(f"dof_{i:02d}" for i in range(NUM_JOINTS))
SHIFTED_JOINT, SHIFT_RAD, GYRO_SCALE = 3, 0.25, 1.6
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLI_PREFIX = "python -m ksim_entropy.bridge"


def make_log(
    seed: int,
    n: int = 2000,
    *,
    num_joints: int = NUM_JOINTS,
    shift_joint: int | None = None,
    gyro_scale: float = 1.0,
    joint_names: tuple[str, ...] | None = None,
) -> StepLog:
    """A 50 Hz gait-like log: per-joint sinusoids plus sensor noise, an IMU that follows the gait, fixed commands."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.02
    base, amp = np.linspace(-0.5, 0.5, num_joints), np.linspace(0.1, 0.4, num_joints)
    omega = 2 * np.pi * 1.2
    arg = omega * t[:, None] + rng.uniform(0, 2 * np.pi) + np.linspace(0, np.pi, num_joints)
    angles = base + amp * np.sin(arg) + 0.02 * rng.standard_normal((n, num_joints))
    vels = amp * omega * np.cos(arg) + 0.05 * rng.standard_normal((n, num_joints))
    output = angles + 0.05 + 0.01 * rng.standard_normal((n, num_joints))
    ph = arg[:, 0]
    noise = lambda: 0.05 * rng.standard_normal((n, 3))  # noqa: E731
    projected_g = np.column_stack([0.3 * np.sin(ph), 0.2 * np.cos(ph), np.full(n, -9.8)]) + noise()
    gyro = (np.column_stack([0.4 * np.sin(ph), 0.3 * np.cos(ph), 0.1 * np.sin(2 * ph)]) + noise()) * gyro_scale
    accel = projected_g + 6 * noise()
    steps = np.arange(n)
    command = np.column_stack(
        [np.array([0.0, 0.3, 0.6])[(steps // 100) % 3], np.zeros(n), np.array([0.0, 0.5])[(steps // 150) % 2]]
    )  # the same schedule in every log; yvel is constant (exercises the constant-channel paths)
    if shift_joint is not None:
        angles[:, shift_joint] += SHIFT_RAD
    return StepLog.from_arrays(
        joint_angles=angles,
        joint_vels=vels,
        projected_g=projected_g,
        accel=accel,
        gyro=gyro,
        command=command,
        output=output,
        dt_s=0.02,
        joint_names=joint_names,
    )


class FakeDiagnosis:
    """Stands in for diagnose.Diagnosis: ranked findings (one with a NaN in its evidence) and to_dict()."""

    def __init__(self) -> None:
        finding = types.SimpleNamespace
        self.findings = (
            finding(
                kind="observation_mismatch",
                channels=("joint_angles[3]",),
                severity=0.9,
                evidence={"joint_angles[3]:w1_over_sigma": 2.3, "undefined": float("nan")},
                message="FAKE: joint_angles[3] reads differently while the commanded motion matches",
            ),
            finding(kind="dynamics_mismatch", channels=(), severity=0.1, evidence={}, message="FAKE: second finding"),
        )

    def to_dict(self) -> dict:
        return {"findings": ["..."], "statistics": {"x": np.float64("nan")}, "skipped": {"temporal": "FAKE reason"}}


def fake_diagnose_module(calls: list) -> types.ModuleType:
    module = types.ModuleType(DIAGNOSE)

    def diagnose(real: StepLog, sim: StepLog, *, replay: StepLog | None = None) -> FakeDiagnosis:
        calls.append((real, sim, replay))
        return FakeDiagnosis()

    module.diagnose = diagnose
    return module


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """OpenBLAS threads spin-wait: on a busy 2-core machine they cost ~10× the CPU of the classifier's solves."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> report_module.GapReport:
    """Same generator, two seeds, in memory (joint names kept); the diagnosis module made unavailable."""
    sim, real = make_log(1, joint_names=JOINT_NAMES), make_log(2, joint_names=JOINT_NAMES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, DIAGNOSE, None)  # import fails with ModuleNotFoundError
        return gap_report(sim, real, tmp_path_factory.mktemp("clean") / "report", progress=None)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[report_module.GapReport, list]:
    """Logs written and read back (the real one with a malformed line), a time-aligned replay, a fake diagnosis."""
    logs = tmp_path_factory.mktemp("gapped_logs")
    real_log = make_log(2, shift_joint=SHIFTED_JOINT, gyro_scale=GYRO_SCALE)
    write_ndjson(make_log(1, n=2400), logs / "sim.ndjson")
    write_ndjson(real_log, logs / "real.ndjson")
    with open(logs / "real.ndjson", "a", encoding="utf-8") as file:
        file.write('{"step_id": "oops"}\n')
    sim, sim_report = read_ndjson(logs / "sim.ndjson")
    real, real_report = read_ndjson(logs / "real.ndjson")
    noise = np.random.default_rng(9).standard_normal
    replay = StepLog.from_arrays(
        **{name: block + 0.01 * noise(block.shape) for name, block in real.groups.items()}, t_us=real.t_us
    )
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, DIAGNOSE, fake_diagnose_module(calls))
        report = gap_report(
            sim,
            real,
            tmp_path_factory.mktemp("gapped") / "report",
            sim_report=sim_report,
            real_report=real_report,
            replay=replay,
            progress=None,
        )
    return report, calls


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, str, Path]:
    """`gap` with task scores and --overwrite into a directory holding user files: (exit status, stdout, stderr, out).

    In-process (`main`), which spares a second interpreter start; `python -m` is run by the bad-input test.
    """
    work = tmp_path_factory.mktemp("cli")
    write_ndjson(make_log(1), work / "sim.ndjson")
    write_ndjson(make_log(2), work / "real.ndjson")
    out = work / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "user_plot.png").write_bytes(b"not ours")
    (out / "hist_bogus.png").write_bytes(b"stale")  # listed by the "previous" report below: removed
    (out / "report.json").write_text(json.dumps({"files": {"plots": {"x": "hist_bogus.png", "y": "user_plot.png"}}}))
    args = ["gap", "--sim", work / "sim.ndjson", "--real", work / "real.ndjson", "--out", out, "--overwrite"]
    args += ["--sim-score", "2.0", "--real-score", "1.3"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main([str(a) for a in args])
    return status, stdout.getvalue(), stderr.getvalue(), out


def load_json(path: Path) -> dict:
    def no_constant(name: str) -> None:
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


# --------------------------------------------------------------------------------------------------- report.json


def test_clean_pair_scores_near_100_percent_and_is_ready(clean: report_module.GapReport) -> None:
    data = load_json(clean.json_path)
    assert data == clean.data
    expected = {"schema", "created_utc", "inputs", "common_groups", "skipped_groups", "transfer_efficiency"}
    expected |= {"ranking", "channels", "groups", "paired", "diagnosis", "recommendations", "definitions", "files"}
    assert set(data) == expected
    eff = data["transfer_efficiency"]
    assert eff["basis"] == "distribution_overlap" and eff["task_score_pct"] is None
    assert eff["percent"] == eff["overlap_pct"] >= 90.0, eff
    assert eff["band"] == "ready" and len(eff["c2st_channels"]) == 3 * NUM_JOINTS + 12
    assert data["ranking"][0]["gap"] < 0.25
    assert [r["action"] for r in data["recommendations"]] == ["ready"]
    assert data["diagnosis"] == {
        "available": False,
        "reason": f"diagnosis not available ({DIAGNOSE} is not installed)",
    }
    assert data["inputs"]["sim"]["quality"] is None and data["inputs"]["sim"]["steps"] == 2000
    assert "joint_angles/dof_03" in data["channels"]  # joint names carried into channel names


def test_clean_pair_channel_and_group_metrics(clean: report_module.GapReport) -> None:
    channels, groups = clean.data["channels"], clean.data["groups"]
    assert len(channels) == 3 * NUM_JOINTS + 12
    knee = channels["joint_angles/dof_03"]
    for key in ("w1", "ks_statistic", "ks_pvalue", "entropy_knn_sim_nats", "kl_gaussian_real_sim_nats", "gap"):
        assert math.isfinite(knee[key]), key
    assert knee["gap"] == pytest.approx(knee["w1"] / knee["std_sim"])
    constant = channels["command[1]"]  # zero in both logs: W1/KS only, with a note
    assert constant["usable"] and constant["gap"] == 0.0 and "skipped" in constant["note"]
    assert constant["spread_ratio"] is None and "entropy_knn_sim_nats" not in constant
    assert groups["command"]["excluded_channels"] == ["command[1]"]
    for name, group in groups.items():
        assert 0.4 < group["c2st_accuracy"] < 0.6, (name, group)
    ranked = [r["gap"] for r in clean.data["ranking"]]
    assert ranked == sorted(ranked, reverse=True) and clean.ranking[0] == clean.data["ranking"][0]["channel"]


def test_gapped_pair_ranks_the_shifted_channel_first_and_widens(gapped: tuple) -> None:
    report, _ = gapped
    data = load_json(report.json_path)
    shifted = f"joint_angles[{SHIFTED_JOINT}]"
    assert report.ranking[0] == shifted
    assert set(report.ranking[1:4]) == {"gyro/x", "gyro/y", "gyro/z"}
    assert data["channels"][shifted]["shift"] == pytest.approx(SHIFT_RAD / data["channels"][shifted]["std_sim"], 0.05)
    assert data["channels"]["gyro/x"]["spread_ratio"] == pytest.approx(GYRO_SCALE, rel=0.1)
    eff = data["transfer_efficiency"]
    assert eff["percent"] < 50.0 and eff["band"] == "widen_randomization"
    assert data["groups"]["joint_angles"]["c2st_accuracy"] > 0.9 and data["groups"]["gyro"]["c2st_accuracy"] > 0.8
    assert data["inputs"]["sim"]["steps"] == 2400 and data["inputs"]["real"]["steps"] == 2000


def test_gapped_recommendations_follow_band_quality_diagnosis_and_gaps(gapped: tuple) -> None:
    report, _ = gapped
    recs = report.data["recommendations"]
    assert [r["scope"] for r in recs] == ["overall", "log_quality", "diagnosis", "diagnosis"] + ["channel"] * 4
    assert recs[0]["action"] == "widen_randomization" and "Widen the domain randomization" in recs[0]["message"]
    assert "real log has issues" in recs[1]["message"] and "malformed" in recs[1]["message"]
    assert (
        recs[2]["message"].startswith("FAKE: joint_angles[3]") and recs[2]["action"] == "diagnosis:observation_mismatch"
    )
    assert recs[4] == {
        "scope": "channel",
        "action": "joint_angles:offset",
        "channels": [f"joint_angles[{SHIFTED_JOINT}]"],
        "message": recs[4]["message"],
    }
    assert "+0.25" in recs[4]["message"] and "zero offset" in recs[4]["message"]
    assert recs[4]["message"].endswith("The diagnosis names it too: observation_mismatch.")
    assert {r["action"] for r in recs[5:]} == {"gyro:wider"}


def test_gapped_report_includes_diagnosis_and_replay_metrics(gapped: tuple) -> None:
    report, calls = gapped
    diagnosis = report.data["diagnosis"]
    assert diagnosis["available"] and [f["kind"] for f in diagnosis["findings"]] == [
        "observation_mismatch",
        "dynamics_mismatch",
    ]
    assert diagnosis["findings"][0]["evidence"]["undefined"] is None  # NaN → null
    # The randomizers behind the findings, for `tasks.walk c2st_report=`: a joint-angle reading → the zero offsets.
    pointer = diagnosis["randomizers"]
    assert pointer["names"][0] == "joint_zero_offset" and "actuator_kp_scale" in pointer["names"]
    assert pointer["not_pointed"] == {}
    assert diagnosis["result"]["statistics"] == {"x": None}
    ((real, sim, replay),) = calls
    assert len(real) == 2000 and len(sim) == 2400 and replay is not None  # diagnose(real, sim, replay=...)
    paired = report.data["paired"]
    knee = paired["channels"][f"joint_angles[{SHIFTED_JOINT}]"]
    assert paired["n_steps"] == 2000 and knee["lag_steps"] == 0 and knee["pearson_r"] > 0.9
    assert knee["rmse"] == pytest.approx(0.01, rel=0.1)  # replay = real + N(0, 0.01²) noise
    html = report.html_path.read_text(encoding="utf-8")
    assert "FAKE: second finding" in html and "FAKE reason" in html and "real log has issues" in html


@pytest.mark.parametrize(
    ("percent", "band"),
    [
        (0.0, "widen_randomization"),
        (49.99, "widen_randomization"),
        (50.0, "fine_tune"),
        (80.0, "fine_tune"),
        (80.01, "ready"),
        (100.0, "ready"),
        (130.0, "ready"),
    ],
)
def test_efficiency_bands(percent: float, band: str) -> None:
    assert efficiency_band(percent) == band


def test_run_diagnosis_reports_a_failing_diagnosis(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(DIAGNOSE)

    def diagnose(real: StepLog, sim: StepLog, *, replay: StepLog | None = None) -> None:
        raise ValueError("real log has 5 steps")

    module.diagnose = diagnose
    monkeypatch.setitem(sys.modules, DIAGNOSE, module)
    log = make_log(1, n=50)
    assert report_analysis._run_diagnosis(log, log, None) == {
        "available": False,
        "reason": "diagnosis failed: real log has 5 steps",
    }


# --------------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("sim", "real", "kwargs", "message"),
    [
        (make_log(1, n=60), make_log(2, n=60, num_joints=12), {}, "joint_angles has 20 channels in sim but 12"),
        (
            StepLog.from_arrays(gyro=np.ones((60, 3)), dt_s=0.02),
            StepLog.from_arrays(joint_angles=np.ones((60, 3)), dt_s=0.02),
            {},
            "no channel group in common: sim has ['gyro'], real has ['joint_angles']",
        ),
        (make_log(1, n=60), make_log(2, n=60), {"sim_score": 1.0}, "give both sim_score and real_score"),
        (make_log(1, n=60), make_log(2, n=60), {"sim_score": 0.0, "real_score": 1.0}, "sim_score must be > 0"),
        (make_log(1, n=60), make_log(2, n=60), {"max_channels_plotted": 0}, "max_channels_plotted must be"),
    ],
)
def test_unusable_inputs_raise_before_writing(
    tmp_path: Path, sim: StepLog, real: StepLog, kwargs: dict, message: str
) -> None:
    with pytest.raises(GapReportError, match=re.escape(message)):
        gap_report(sim, real, tmp_path / "out", progress=None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_all_nan_channels_are_unusable(tmp_path: Path) -> None:
    sim = make_log(1, n=60)
    real = StepLog.from_arrays(joint_angles=np.full((60, NUM_JOINTS), np.nan), dt_s=0.02)
    with pytest.raises(GapReportError, match="no channel has enough finite samples in both logs"):
        gap_report(sim, real, tmp_path / "out", progress=None)


def test_refuses_a_non_empty_out_dir_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty; pass overwrite=True"):
        gap_report(make_log(1, n=60), make_log(2, n=60), tmp_path, progress=None)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"] and (tmp_path / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        gap_report(make_log(1, n=60), make_log(2, n=60), tmp_path / "file", overwrite=True, progress=None)


# --------------------------------------------------------------------------------------------------- files


def test_png_plots_are_valid_images_with_content(clean: report_module.GapReport, gapped: tuple) -> None:
    for report in (clean, gapped[0]):
        names = report.data["files"]["plots"]
        groups = ("joint_angles", "joint_vels", "projected_g", "accel", "gyro", "command", "output")
        assert set(names) == {"gap_ranking", "group_c2st", "scatter", "timeseries", "errors"} | {
            f"hist_{g}" for g in groups
        }
        assert sorted(p.name for p in report.plots) == sorted(names.values())
        for path in report.plots:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
            pixels = mpimg.imread(path)[..., :3]
            assert pixels.shape[0] > 200 and pixels.shape[1] > 600, (path, pixels.shape)
            drawn = np.mean(pixels.min(axis=2) < 0.9)  # anything but white
            coloured = np.mean(pixels.max(axis=2) - pixels.min(axis=2) > 0.25)  # plot colours, not black text
            assert drawn > 0.02 and coloured > 0.002, (path, drawn, coloured)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value is not None:
                self.links.append((tag, name, value))
                if tag == "img":
                    self.images.append(value)


def test_html_references_only_local_files(clean: report_module.GapReport, gapped: tuple) -> None:
    for report in (clean, gapped[0]):
        page = report.html_path.read_text(encoding="utf-8")
        parser = _Links()
        parser.feed(page)
        assert parser.images and sorted(parser.images) == sorted(report.data["files"]["plots"].values())
        for tag, attr, value in parser.links:
            assert not re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", value, re.I), (tag, attr, value)  # no scheme at all
            assert value.startswith("#") or (report.out_dir / value).is_file(), (tag, attr, value)
        assert not re.search(r"https?://|@import|url\(", page), "external resource in report.html"
        assert "default-src 'none'" in page  # CSP: the browser itself refuses anything else
        assert page.rstrip().endswith("</html>") and page.index('id="recommendations"') > page.index('id="detail"')


# --------------------------------------------------------------------------------------------------- browser


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    command += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command += [f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _images_loaded(tmp_path: Path, html_path: Path) -> tuple[int, int]:
    dom = _chromium(tmp_path, "--dump-dom", html_path.as_uri()).stdout
    found = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert found, f"the page's load script did not run; DOM starts with {dom[:300]!r}"
    return int(found[1]), int(found[2])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_report_renders_offline_in_headless_chromium(clean: report_module.GapReport, tmp_path: Path) -> None:
    expected = len(clean.plots)
    assert _images_loaded(tmp_path, clean.html_path) == (expected, expected)
    screenshot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", clean.html_path.as_uri())
    pixels = mpimg.imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    bars = np.mean((pixels[..., 2] > 0.55) & (pixels[..., 0] < 0.45) & (pixels[..., 1] < 0.6))  # the blue gap bars
    assert bars > 0.002, f"no plot pixels in the screenshot {screenshot}"
    broken = tmp_path / "broken"  # control: the check sees a missing image
    shutil.copytree(clean.out_dir, broken)
    (broken / "errors.png").unlink()
    assert _images_loaded(tmp_path, broken / "report.html") == (expected - 1, expected)


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_gap_writes_the_report_and_keeps_user_files(cli_run: tuple) -> None:
    status, stdout, stderr, out = cli_run
    assert status == 0, stderr
    assert f"report written to {out / 'report.html'}" in stdout
    assert stdout.count("records from 2000 lines") == 2  # both log summaries
    assert "transfer efficiency: 65.0 % (task score) -> fine tune" in stdout
    assert "[5/5] plots" in stderr and "done in" in stderr
    data = load_json(out / "report.json")
    eff = data["transfer_efficiency"]
    assert (eff["basis"], eff["band"], eff["percent"]) == ("task_score", "fine_tune", pytest.approx(65.0))
    assert eff["overlap_pct"] >= 90.0 and data["recommendations"][0]["action"] == "fine_tune"
    assert data["inputs"]["sim"]["quality"]["ok"] is True
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "user_plot.png").read_bytes() == b"not ours"
    assert not (out / "hist_bogus.png").exists()
    diagnosis = data["diagnosis"]  # whatever diagnose module this checkout has
    assert diagnosis["available"] == (importlib.util.find_spec(DIAGNOSE) is not None), diagnosis
    if diagnosis["available"]:
        page = (out / "report.html").read_text(encoding="utf-8")
        assert all(html.escape(finding["message"]) in page for finding in diagnosis["findings"])


def test_cli_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ndjson(make_log(1, n=100), tmp_path / "log.ndjson")
    assert main(["summary", str(tmp_path / "log.ndjson")]) == 0
    out = capsys.readouterr().out
    assert "100 records from 100 lines (0 blank) — OK" in out and "joint_angles [20 × rad]: clean" in out


@pytest.fixture(scope="module")
def cli_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli_bad")
    write_ndjson(make_log(1, n=120), work / "sim.ndjson")
    write_ndjson(make_log(2, n=120, num_joints=12), work / "real12.ndjson")
    (work / "garbage.ndjson").write_bytes(np.random.default_rng(0).bytes(3000))
    (work / "full").mkdir()
    (work / "full" / "x.txt").write_text("x")
    return work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gap", "--sim", "missing.ndjson", "--real", "sim.ndjson", "--out", "o"], "missing.ndjson: no such file"),
        (["gap", "--sim", "garbage.ndjson", "--real", "sim.ndjson", "--out", "o"], "no valid step record"),
        (["summary", "garbage.ndjson"], "no valid step record"),
        (["gap", "--sim", "sim.ndjson", "--real", "real12.ndjson", "--out", "o"], "20 channels in sim but 12 in real"),
        (
            ["gap", "--sim", "sim.ndjson", "--real", "sim.ndjson", "--out", "o", "--num-joints", "12"],
            "no record has joint_angles of the expected width 12",
        ),
        (["gap", "--sim", "sim.ndjson", "--real", "sim.ndjson", "--out", "full"], "is not empty; pass overwrite"),
        (["gap", "--sim", "sim.ndjson", "--real", "sim.ndjson", "--out", "o", "--sim-score", "1"], "give both"),
        (["gap", "--sim", "sim.ndjson", "--real", "sim.ndjson", "--out", "o", "--num-joints", "0"], "must be >= 1"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    cli_logs: Path, args: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cli_logs)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{CLI_PREFIX} {args[0]}: error: ") and message in lines[0], lines
    assert not (cli_logs / "o").exists() and (cli_logs / "full" / "x.txt").read_text() == "x"


def test_cli_process_exits_2_without_traceback(cli_logs: Path) -> None:
    args = ["gap", "--sim", cli_logs / "garbage.ndjson", "--real", cli_logs / "sim.ndjson", "--out", cli_logs / "o"]
    proc = subprocess.run(
        [sys.executable, "-m", "ksim_entropy.bridge", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"{CLI_PREFIX} gap: error: {cli_logs / 'garbage.ndjson'}: no valid step record")
    code = "import sys, ksim_entropy.bridge.cli; print(sorted({'ksim', 'mujoco', 'jax', 'xax'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    imported = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert imported.stdout.strip() == "[]", imported.stderr  # the bridge never imports the training stack


def without(log: StepLog, mode: str, *names: str) -> StepLog:
    """`log` with groups `names` left out ("missing") or zero-wide ("empty", as `"command": []` reads)."""
    groups = {k: v for k, v in log.groups.items() if not (mode == "missing" and k in names)}
    groups |= {name: np.zeros((len(log), 0)) for name in names if mode == "empty"}
    return StepLog(log.step_id, log.t_us, groups, log.joint_names, log.source)


@pytest.mark.parametrize(
    ("sim_groups", "real_groups", "message"),
    [
        (("empty", "command"), ("empty", "command"), None),  # a policy without commands: was a TypeError traceback
        (("empty", "command"), ("missing", "command"), None),
        (("empty", "command", "output"), ("missing", "joint_vels", "output"), None),
        (("empty", "joint_angles", "joint_vels", "output"), ("empty", "command"), None),
        (
            ("missing", "joint_angles", "joint_vels", "projected_g", "accel", "gyro", "output"),
            ("empty", "command"),
            "no channel group in common",
        ),
    ],
)
def test_cli_gap_on_empty_or_missing_groups_reports_or_says_why(
    tmp_path: Path, sim_groups: tuple, real_groups: tuple, message: str | None, capsys: pytest.CaptureFixture
) -> None:
    write_ndjson(without(make_log(1, n=300), *sim_groups), tmp_path / "sim.ndjson")
    write_ndjson(without(make_log(2, n=300), *real_groups), tmp_path / "real.ndjson")
    args = ["gap", "--sim", str(tmp_path / "sim.ndjson"), "--real", str(tmp_path / "real.ndjson")]
    status = main([*args, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    if message is None:
        assert status == 0, err
        data = load_json(tmp_path / "out" / "report.json")
        assert data["diagnosis"]["available"], data["diagnosis"]
        empty = [
            f"{name} ({side})"
            for side, (mode, *names) in (("sim", sim_groups), ("real", real_groups))
            for name in names
            if mode == "empty"
        ]
        assert data["skipped_groups"]["empty"] == empty
        assert "no values (0 wide)" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    else:
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and message in lines[0], err


def test_cli_profile_of_an_empty_group_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ndjson(without(make_log(1, n=100), "empty", "command"), tmp_path / "log.ndjson")
    args = ["profile", str(tmp_path / "log.ndjson"), "--out", str(tmp_path / "p.json"), "--groups", "gyro,command"]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "group 'command': has no value" in lines[0], lines
