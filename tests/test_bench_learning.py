"""bench/learning.py: its reading of xax's records and summaries, and a few-update smoke of the bench itself."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import learning  # noqa: E402


def _record(update, samples, phase="train", **train):
    return {
        "state": {"num_steps": update, "num_samples": samples, "phase": phase},
        "train": train,
        "reward": {"_total": 1.5},
        "curriculum": {"level": 0.25},
    }


def test_curve_point_reads_a_training_record():
    point = learning.curve_point(_record(7, 7168, episode_length_s=3.5, temperature_alpha=0.004), wall_s=12.345)
    assert point == {
        "wall_s": 12.35,
        "update": 7,
        "env_steps": 7168,
        "episode_length_s": 3.5,
        "reward": 1.5,
        "alpha": 0.004,
        "curriculum_level": 0.25,
    }
    assert learning.curve_point(_record(7, 7168, phase="valid"), wall_s=1.0) is None
    assert learning.curve_point({"status": {"message": "Step 1"}}, wall_s=1.0) is None
    nan = learning.curve_point(_record(1, 10, episode_length_s=float("nan")), wall_s=1.0)
    assert "episode_length_s" not in nan  # no episode ended yet: no point invented


def test_summary_times_the_threshold_and_averages_the_final_window():
    args = argparse.Namespace(minutes=10.0, final_minutes=2.0, threshold_s=10.0, settle_updates=20)
    points = [
        {"wall_s": 60.0 * m, "update": 10 * m, "env_steps": 1000 * m, "episode_length_s": float(2 * m)}
        for m in range(11)
    ]
    summary = learning.summarize(points, args)
    assert summary["threshold_wall_s"] == 300.0 and summary["threshold_env_steps"] == 5000
    assert summary["final_episode_length_s"] == pytest.approx((16 + 18 + 20) / 3)
    assert summary["updates"] == 100
    assert summary["entropy_error_max_abs"] is None  # no entropy in these points
    arms = learning.arm_summary([{"summary": summary}, {"summary": {**summary, "final_episode_length_s": 8.0}}])
    assert arms["final_episode_length_s"] == {"mean": pytest.approx(13.0), "min": 8.0, "max": 18.0, "n": 2}


def test_entropy_tracking_after_the_settling_updates():
    points = [
        {"update": u, "entropy": -1.0 + e, "target_entropy": -1.0, "alpha": a}
        for u, e, a in [(10, 0.9, 0.1), (30, 0.05, 0.004), (40, -0.08, 0.002), (50, 0.01, 0.003)]
    ]
    out = learning.entropy_tracking(points, settle_updates=20)
    assert out["entropy_error_max_abs"] == pytest.approx(0.08)
    assert out["entropy_error_mean"] == pytest.approx((0.05 - 0.08 + 0.01) / 3)
    assert (out["alpha_min"], out["alpha_max"]) == (0.002, 0.004)


@pytest.mark.parametrize(
    ("text", "message"),
    [("nope", "unknown arm 'nope'"), ("x:lr", r"\['lr'\] are not key=value"), ("a b:k=v", "must be letters")],
)
def test_bad_arms_are_refused(text, message):
    with pytest.raises(SystemExit, match=message):
        learning.parse_arm(text)


def _output(path, command, arm_runs, minutes=60.0):
    args = argparse.Namespace(minutes=minutes, final_minutes=5.0, threshold_s=10.0, settle_updates=20)
    runs = []
    for arm, seed, final in arm_runs:
        points = [{"wall_s": 60.0 * m, "update": m, "env_steps": 10 * m, "episode_length_s": final} for m in range(61)]
        overrides = learning.ARMS[arm]
        runs.append({"arm": arm, "seed": seed, "overrides": overrides, "points": points, "standing": []})
        runs[-1]["summary"] = learning.summarize(points, args)
    config = {"preset": "stand", "minutes": minutes, "threshold_s": 10.0, "final_minutes": 5.0, "overrides": []}
    result = {"bench": "learning", "command": command, "machine": {}, "config": config, "runs": runs}
    path.write_text(json.dumps(result))
    return path


def test_merge_joins_runs_of_separate_invocations_and_recomputes_the_spread(tmp_path):
    a = _output(tmp_path / "a.json", "python bench/learning.py a", [("auto", 0, 9.0), ("fixed", 0, 4.0)])
    b = _output(tmp_path / "b.json", "python bench/learning.py b", [("auto", 1, 12.0)])
    merged = learning.merge([a, b])
    assert [(r["arm"], r["seed"], r["command"][-1]) for r in merged["runs"]] == [
        ("auto", 0, "a"),
        ("fixed", 0, "a"),
        ("auto", 1, "b"),
    ]
    assert merged["arms"]["auto"]["final_episode_length_s"] == {"mean": 10.5, "min": 9.0, "max": 12.0, "n": 2}
    assert merged["arms"]["fixed"]["final_episode_length_s"]["n"] == 1
    assert merged["config"]["seeds"] == [0, 1] and merged["config"]["arms"]["fixed"] == learning.ARMS["fixed"]
    learning.plot(merged, tmp_path / "merged.png")
    assert (tmp_path / "merged.png").stat().st_size > 10_000


def test_the_plot_has_a_gate_row_only_when_checkpoints_were_gated(tmp_path):
    result = json.loads(_output(tmp_path / "a.json", "a", [("auto", 0, 9.0)]).read_text())
    learning.plot(result, tmp_path / "ungated.png")
    gate = {"nominal": {"standing_s": 20.0}, "push 0.5 m/s": {"standing_s": 3.0}}
    result["runs"][0]["standing"] = [{"wall_s": 600.0, "update": 10, "env_steps": 100, "levels": gate}]
    learning.plot(result, tmp_path / "gated.png")
    heights = [imread(tmp_path / f"{name}.png").shape[0] for name in ("ungated", "gated")]
    assert heights == [800, 1200]  # 100 dpi: two rows of axes in 8 in, three in 12 in


def test_merge_refuses_incomparable_or_repeated_runs(tmp_path):
    a = _output(tmp_path / "a.json", "a", [("auto", 0, 9.0)])
    with pytest.raises(SystemExit, match="auto seed 0 is in more than one input"):
        learning.merge([a, _output(tmp_path / "b.json", "b", [("auto", 0, 9.0)])])
    with pytest.raises(SystemExit, match="minutes 30.0 vs 60.0"):
        learning.merge([a, _output(tmp_path / "c.json", "c", [("auto", 1, 9.0)], minutes=30.0)])
    (tmp_path / "d.json").write_text('{"bench": "walk_throughput"}')
    with pytest.raises(SystemExit, match="not an output of bench/learning.py"):
        learning.merge([a, tmp_path / "d.json"])


@pytest.mark.slow
def test_learning_bench_smoke(tmp_path):
    out = tmp_path / "learning_smoke"
    cmd = [
        sys.executable,
        "bench/learning.py",
        "--out",
        str(out),
        "--preset",
        "cpu",
        "--minutes",
        "5",
        "--seeds",
        "0",
        "--arms",
        "fixed",
        "--every-s",
        "0.1",
        "--standing-episodes",
        "1",
        "--standing-seconds",
        "2",
        "num_envs=2",
        "batch_size=2",
        "max_steps=3",
        "export_kinfer=false",
        "hidden_size=16",
        "render_length_seconds=0.1",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    (run,) = result["runs"]
    assert run["arm"] == "fixed" and run["summary"]["updates"] == 3
    assert [p["update"] for p in run["points"]] == sorted(p["update"] for p in run["points"])
    assert run["points"][-1]["alpha"] == pytest.approx(0.004, rel=1e-5)  # the fixed arm's α
    assert out.with_suffix(".png").stat().st_size > 10_000
    # The kept final checkpoint's mean action went through the gate at zero command (untrained: it falls).
    (standing,) = run["standing"]
    assert standing["update"] == 3 and set(standing["levels"]) == {
        "nominal",
        "latency 20 ms",
        "noise x2",
        "push 0.5 m/s",
    }
    assert 0.0 < standing["levels"]["nominal"]["standing_s"] <= 2.0
    assert run["summary"]["final_standing_s"] == standing["levels"]["nominal"]["standing_s"]
    progress = [line for line in Path(run["log"]).read_text().splitlines() if line.startswith("update ")]
    assert progress and "env-steps" in progress[0] and "α 4.00e-03" in progress[0]  # the console progress line
