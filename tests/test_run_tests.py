"""`tools/run_tests.py` (`bootstrap.py test`): parallel pass, then the wall-clock tests alone; pytest's exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import run_tests  # noqa: E402

SUITE = """
import os
from pathlib import Path

import pytest

OUT = Path(os.environ["WHERE_OUT"])


def record(name):
    (OUT / name).write_text(os.environ.get("PYTEST_XDIST_WORKER", "main"))


def test_plain_a():
    record("plain_a")


def test_plain_b():
    record("plain_b")


@pytest.mark.real_time
def test_clock():
    record("clock")
"""


def run(tmp_path: Path, suite: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    project = tmp_path / "project"
    (project / "out").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    real_time: wall clock\n")
    (project / "test_suite.py").write_text(suite)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_tests.py"), *args, "-p", "no:cacheprovider", "-q"],
        cwd=project,
        env={"WHERE_OUT": str(project / "out"), "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def where(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (tmp_path / "project" / "out").iterdir()}


def test_real_time_tests_run_alone_after_the_rest_ran_on_workers(tmp_path):
    status, output = run(tmp_path, SUITE, "--workers", "2")
    assert status == 0, output
    ran = where(tmp_path)
    assert ran["clock"] == "main"  # not on an xdist worker
    assert {ran["plain_a"], ran["plain_b"]} <= {"gw0", "gw1"}
    assert output.index("pass 1") < output.index("pass 2")


def test_one_worker_is_one_plain_pass(tmp_path):
    status, output = run(tmp_path, SUITE, "--workers", "1")
    assert status == 0, output
    assert set(where(tmp_path).values()) == {"main"}
    assert "pass 2" not in output


def test_a_failure_in_either_pass_fails_and_no_tests_at_all_is_status_5(tmp_path):
    failing_clock = SUITE.replace('record("clock")', "assert False, 'late'")
    assert run(tmp_path, failing_clock)[0] == 1
    assert run(tmp_path / "empty", "")[0] == 5


def test_the_passes_and_their_status():
    assert run_tests.passes(1, ["-x"]) == [["-x"]]
    assert run_tests.passes(2, ["-n", "4"]) == [["-n", "4"]]
    assert run_tests.passes(2, ["-mslow"]) == [["-mslow"]]
    parallel, alone = run_tests.passes(2, ["-x"])
    assert parallel == ["-n", "2", "--dist", "loadfile", "-m", "not real_time", "-x"]
    assert alone == ["-m", "real_time", "-x"]
    assert run_tests.combined_status([0, 5]) == 0
    assert run_tests.combined_status([5, 5]) == 5
    assert run_tests.combined_status([5, 2]) == 2
    assert run_tests.combined_status([1, 0]) == 1


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_bad_worker_count_is_one_line(tmp_path, workers):
    status, output = run(tmp_path, SUITE, "--workers", workers)
    assert status == 2
    assert "--workers must be >= 1" in output


CHOSEN = ["tests/bridge/test_kinfer_sim.py", "tests/test_run_tests.py"]


def test_the_suite_marks_the_wall_clock_tests():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", "-m", "real_time", *CHOSEN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    selected = [line for line in done.stdout.splitlines() if "::" in line]
    assert selected and all(line.startswith("tests/bridge/test_kinfer_sim.py::") for line in selected), done.stdout


FLAKY_CLOCK = """
import os
from pathlib import Path

import pytest

OUT = Path(os.environ["WHERE_OUT"])


def tries(name):
    path = OUT / name
    path.write_text(path.read_text() + "x" if path.exists() else "x")
    return len(path.read_text())


@pytest.mark.real_time
def test_steady_clock():
    tries("steady")


@pytest.mark.real_time
@pytest.mark.parametrize("late", [1])
def test_stalled_once(late):
    assert tries("stalled") > late, "missed a deadline"


@pytest.mark.real_time
def test_always_late():
    tries("late")
    assert os.environ.get("ALWAYS_LATE") != "1", "missed every deadline"
"""


def test_a_wall_clock_failure_gets_one_more_try_alone(tmp_path):
    status, output = run(tmp_path, FLAKY_CLOCK, "--workers", "2")
    assert status == 0, output
    assert "failed once: test_suite.py::test_stalled_once[1]" in output
    assert "second try: passed" in output
    # only the failed test ran again
    assert {name: len(count) for name, count in where(tmp_path).items()} == {"steady": 1, "stalled": 2, "late": 1}


def test_a_wall_clock_test_that_fails_twice_fails_the_run(tmp_path):
    status, output = run(tmp_path, FLAKY_CLOCK, "--workers", "2", env={"ALWAYS_LATE": "1"})
    assert status == 1, output
    assert "failed once: test_suite.py::test_always_late" in output
    assert "second try: failed again" in output
    assert len(where(tmp_path)["late"]) == 2
