"""pytest plugin for `run_tests.py`: records failed tests, and can run only those on a second try.

$RUN_TESTS_FAILED_IDS: a file each failed test's node id is appended to (a failure in setup, call or teardown).
$RUN_TESTS_ONLY_IDS: a file of node ids; every other collected test is deselected.
"""

import os


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001 (pytest's Config and Items)
    """Keep only the tests listed in $RUN_TESTS_ONLY_IDS, when it is set."""
    path = os.environ.get("RUN_TESTS_ONLY_IDS")
    if not path:
        return
    with open(path, encoding="utf-8") as listed:
        wanted = set(listed.read().split())
    keep = [item for item in items if item.nodeid in wanted]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
    items[:] = keep


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001 (pytest's TestReport)
    """Append a failed test's node id to $RUN_TESTS_FAILED_IDS, when it is set."""
    path = os.environ.get("RUN_TESTS_FAILED_IDS")
    if path and report.failed:
        with open(path, "a", encoding="utf-8") as out:
            out.write(report.nodeid + "\n")
