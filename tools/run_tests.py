"""The test suite in two passes: the wall-clock tests alone, everything else on pytest-xdist workers first.

    python tools/run_tests.py [--workers N] [pytest arguments ...]     (`python3 bootstrap.py test` runs this)

Tests marked `real_time` (KOS servers, the deploy loop, kinfer-sim; `tests/conftest.py` marks them) run a control
loop against the wall clock, and a second busy worker makes them miss their deadlines. So the first pass runs every
other test on `--workers` processes (default: 2, at most the CPU count; files stay whole, `--dist loadfile`, so a
module's fixture is built once), and the second pass runs the `real_time` tests in one process on a quiet machine.

One plain pass instead when `--workers 1`, when pytest-xdist is not installed, or when the pytest arguments choose
their own workers (`-n`) or markers (`-m`). Exit status: pytest's; 5 (no tests collected) only when neither pass
collected a test.
"""

import argparse
import importlib.util
import os
import subprocess
import sys

NO_TESTS = 5  # pytest's exit status when it collected nothing
MARKER = "real_time"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="pytest-xdist workers")
    args, pytest_args = parser.parse_known_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    statuses = []
    for number, pass_args in enumerate(passes(args.workers, pytest_args), start=1):
        print(f"[run_tests] pass {number}: pytest {' '.join(pass_args)}", flush=True)
        statuses.append(subprocess.run([sys.executable, "-m", "pytest", *pass_args], check=False).returncode)
    return combined_status(statuses)


if __name__ == "__main__":
    sys.exit(main())
