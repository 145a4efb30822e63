"""The test suite in two passes: the wall-clock tests alone, everything else on pytest-xdist workers first.

    python tools/run_tests.py [--workers N] [pytest arguments ...]     (`python3 bootstrap.py test` runs this)

Tests marked `real_time` (KOS servers, the deploy loop, kinfer-sim; `tests/conftest.py` marks them; and processes
that must meet within a deadline, marked where they are) run against the wall clock, and a second busy worker makes
them miss their deadlines. So the first pass runs every
other test on `--workers` processes (default: 2, at most the CPU count; files stay whole, `--dist loadfile`, so a
module's fixture is built once), and the second pass runs the `real_time` tests in one process on a quiet machine.

A shared machine can still stall a wall-clock test past its deadline. So the second pass's failures (at most
`MAX_RERUNS` of them) run once more, on their own, and the run fails only if one fails again; the console says which
failed the first time. A test broken for good fails both times.

One plain pass instead when `--workers 1`, when pytest-xdist is not installed, or when the pytest arguments choose
their own workers (`-n`) or markers (`-m`). Exit status: pytest's; 5 (no tests collected) only when neither pass
collected a test.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NO_TESTS = 5  # pytest's exit status when it collected nothing
MARKER = "real_time"
MAX_RERUNS = 5  # more wall-clock failures than this are not a stall: no second try
TOOLS = Path(__file__).resolve().parent


def chooses_own(pytest_args: list[str], *flags: str) -> bool:
    """Whether the pytest arguments already give one of `flags` (as `-n 2`, `-n2` or `--numprocesses=2`)."""
    return any(arg == flag or arg.startswith(flag) for arg in pytest_args for flag in flags)


def passes(workers: int, pytest_args: list[str]) -> list[list[str]]:
    """The pytest argument lists to run, in order."""
    parallel = workers > 1 and importlib.util.find_spec("xdist") is not None
    if not parallel or chooses_own(pytest_args, "-n", "--numprocesses", "-m"):
        return [pytest_args]
    return [
        ["-n", str(workers), "--dist", "loadfile", "-m", f"not {MARKER}", *pytest_args],
        ["-m", MARKER, *pytest_args],
    ]


def combined_status(statuses: list[int]) -> int:
    """The first failing status; 5 only when every pass collected nothing."""
    failing = [s for s in statuses if s not in (0, NO_TESTS)]
    if failing:
        return failing[0]
    return NO_TESTS if all(s == NO_TESTS for s in statuses) else 0


def run_pytest(pytest_args: list[str], **files: Path) -> int:
    """pytest's exit status; `failed_ids=` / `only_ids=` files go to the `failed_ids` plugin (see there)."""
    env = dict(os.environ)
    if files:
        env.update({f"RUN_TESTS_{name.upper()}": str(path) for name, path in files.items()})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TOOLS), env.get("PYTHONPATH")) if p)
        pytest_args = ["-p", "failed_ids", *pytest_args]
    return subprocess.run([sys.executable, "-m", "pytest", *pytest_args], check=False, env=env).returncode


def run_real_time(pass_args: list[str]) -> int:
    """The wall-clock pass, and one more try for its failed tests (when no more than `MAX_RERUNS` failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "failed.txt"
        status = run_pytest(pass_args, failed_ids=ids)
        failed = list(dict.fromkeys(ids.read_text().split())) if ids.exists() else []
        if status in (0, NO_TESTS) or not failed or len(failed) > MAX_RERUNS:
            return status
        print(f"[run_tests] {len(failed)} wall-clock test(s) failed; one more try for each:", flush=True)
        for node in failed:
            print(f"[run_tests]   failed once: {node}", flush=True)
        ids.write_text("\n".join(failed) + "\n")
        status = run_pytest(pass_args, only_ids=ids)
    print(f"[run_tests] second try: {'passed' if status == 0 else 'failed again'}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="pytest-xdist workers")
    args, pytest_args = parser.parse_known_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    statuses = []
    plan = passes(args.workers, pytest_args)
    for number, pass_args in enumerate(plan, start=1):
        print(f"[run_tests] pass {number}: pytest {' '.join(pass_args)}", flush=True)
        wall_clock = len(plan) > 1 and number == len(plan)
        statuses.append(run_real_time(pass_args) if wall_clock else run_pytest(pass_args))
    return combined_status(statuses)


if __name__ == "__main__":
    sys.exit(main())
