"""`python -m tasks.deploy` against K-Scale's own KOS simulator, kos-sim 0.0.14, not the stand-in.

kos-sim runs from its own environment (`.venv-kos-sim`, made by `python3 bootstrap.py kos-sim`, which `.ci/run`
calls), with its robot cache seeded offline from `assets/kbot` (`ksim_entropy.deploy.kos_sim`), on 127.0.0.1. Without
that environment the tests skip and say why. kos-sim drops the robot from 1.5 m, so it lies on the floor and rocks as
it moves: its IMU turns, which lets the loop judge the gyroscope's unit (kos-sim sends rad/s, the proto says deg/s).

Timing is tolerant (kos-sim steps its physics on the same event loop that answers, in 20 ms bursts: on a busy
2-core machine single reads took up to 230 ms), so that the run is judged on what it sent and read.
"""

import json

import numpy as np
import pytest

from ksim_entropy.bridge.logs import read_ndjson
from ksim_entropy.deploy.kos_sim import KosSimProcess, kos_sim_installed, kos_sim_python
from ksim_entropy.deploy.loop import Excitation
from ksim_entropy.deploy.robot_map import RobotMap
from tests.deploy.parts import END_STALL_TICKS, write_tiny_policy
from tests.deploy.test_deploy import _assert_log_intact
from tests.deploy.test_kos_quirks import _gyro_scale

pytestmark = pytest.mark.skipif(
    not kos_sim_installed(),
    reason=f"kos-sim not installed (no finished environment for {kos_sim_python()}): `python3 bootstrap.py kos-sim` "
    "needs the package registry once (kos-sim 0.0.14, kmv 0.1.13, numpy < 2.3)",
)

SECONDS = 6.0
TIMING = ("--read-timeout", "15", "--max-slow-reads", "3", "--command-timeout", "15")
TIMING += ("--max-overruns", "1000", "--stall-timeout", "25")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files, joint_names):
    """A policy run and an excitation run, one after the other, against one kos-sim; {name: (status, output, dir)}."""
    from ksim_entropy.cli.deploy import main

    out = tmp_path_factory.mktemp("kos_sim")
    model = write_tiny_policy(out / "tiny.kinfer", joint_names)
    results = {}
    with KosSimProcess(files=files) as sim:
        for name, source in (("policy", [str(model)]), ("excite", ["--excite"])):
            argv = [*source, "--port", str(sim.port), "--log", str(out / f"{name}.ndjson"), "--duration", str(SECONDS)]
            results[name] = main([*argv, *TIMING])
    return results, out


@pytest.mark.parametrize("name", ["policy", "excite"])
def test_a_run_completes_at_50_hz_and_its_log_reads_back(runs, name, files, joint_names):
    results, out = runs
    assert results[name] == 0
    summary = json.loads((out / f"{name}.deploy.json").read_text())
    assert summary["reason"] == "completed"
    assert round(SECONDS * 50) - END_STALL_TICKS <= summary["steps"] <= round(SECONDS * 50)
    assert summary["steps"] - summary["skipped_ticks"] >= 0.8 * summary["steps"], summary  # ticks that ran a step
    robot = RobotMap.from_files(files, joint_names)
    assert summary["actuator_ids"] == list(robot.ids)  # by name from the metadata: kos-sim maps ids the same way
    log = _assert_log_intact(out / f"{name}.ndjson", _Result(summary), joint_names)
    dt_ms = np.diff(log.t_us) / 1e3 / np.diff(log.step_id)
    assert abs(np.median(dt_ms) - 20.0) < 0.5
    # the gyroscope: kos-sim sends rad/s; the loop found so and converted, and the logged gyro agrees with the rate
    # of the logged projected gravity (from the quaternion) after the soft start
    assert summary["gyro_unit"] == "rad", summary["gyro_check"]
    assert "not deg/s as its proto says" in summary["gyro_check"]
    assert _gyro_scale(log, int(np.searchsorted(log.step_id, 100))) == pytest.approx(1.0, abs=0.25)
    # kos-sim reports no kp: the final damping is sent and said to be unconfirmed
    assert summary["stop_actions"][1] == "damping only (kp = 0)"
    assert summary["stop_actions"][2].startswith("damping not confirmed: KOS does not report kp")


def test_the_excitation_moves_each_joint_by_its_own_id_in_radians(runs, joint_names):
    """Each joint's measured angle follows its own target (independent multi-sines per joint: a swapped id would
    follow another's), with about the commanded amplitude (a deg/rad mix-up would be 57× off)."""
    _, out = runs
    log, _ = read_ndjson(out / "excite.ndjson", joint_names=joint_names)
    late = np.asarray(log.step_id) >= 60
    targets, measured = log.groups["output"][late], log.groups["joint_angles"][late]
    n = len(joint_names)
    correlation = np.corrcoef(np.hstack([targets, measured]).T)[:n, n:]
    assert (np.argmax(correlation, axis=1) == np.arange(n)).sum() >= n - 2, np.round(correlation, 2)
    assert 0.5 < np.median(measured.std(axis=0) / targets.std(axis=0)) < 2.0
    assert np.median(targets.std(axis=0)) > 0.5 * Excitation().amplitude_rad  # the joints were asked to move


class _Result:
    """The summary's counts in the shape `_assert_log_intact` reads."""

    def __init__(self, summary: dict) -> None:
        self.steps, self.skipped_ticks = summary["steps"], summary["skipped_ticks"]
