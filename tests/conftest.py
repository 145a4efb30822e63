"""Process defaults for the tests, as the entry points set them: headless MuJoCo (EGL), no TensorBoard server.

Tests that run a control loop against the wall clock are marked `real_time` here; `tools/run_tests.py` (`bootstrap.py
test`) runs them alone, after the rest has run on parallel workers.
"""

from pathlib import Path

import pytest

from ksim_entropy.runtime import configure_headless

configure_headless()

TESTS = Path(__file__).resolve().parent
# KOS servers and kos-sim (tests/deploy), the 30 s deploy run of the shipped policy, kinfer-sim's real-time loop.
REAL_TIME = (TESTS / "deploy", TESTS / "test_standing_policy.py", TESTS / "bridge" / "test_kinfer_sim.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under `REAL_TIME` as `real_time`."""
    for item in items:
        path = Path(item.path)
        if any(path == entry or entry in path.parents for entry in REAL_TIME):
            item.add_marker(pytest.mark.real_time)
