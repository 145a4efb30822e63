"""Fitting the randomization to logs of the stand-in robot (small, fixed seeds; bench/ holds the full-size check)."""

import numpy as np
import pytest

from ksim_entropy.bridge.fitted import FittedRandomization
from ksim_entropy.bridge.schema import StepLog
from ksim_entropy.fit import FitError, FitOptions, fit_randomization
from ksim_entropy.reality import HiddenRobot, reality_log
from ksim_entropy.robot import resolve_robot_files

OPTIONS = FitOptions(windows=16, generations=6, population=8, refine_iterations=2, progress=False)


@pytest.fixture(scope="module")
def hidden_and_log():
    hidden = HiddenRobot.random(0, 20)
    return hidden, reality_log(hidden, seconds=20.0, seed=100)


def test_small_fit_writes_a_valid_file_with_imu_biases_and_loop_latency(hidden_and_log, tmp_path):
    hidden, log = hidden_and_log
    options = FitOptions(**{**OPTIONS.__dict__, "mass_scale": hidden.mass_scale, "mass_scale_std": 0.01})
    result = fit_randomization([log], resolve_robot_files("local"), options=options, partial_path=tmp_path / "p.json")
    fitted = FittedRandomization.load(tmp_path / "p.json")
    assert fitted == result.fitted
    truth = hidden.values(fitted.joint_names)
    for name in [f"{k}/{a}" for k in ("gyro_bias", "accel_bias") for a in "xyz"]:
        assert abs(fitted[name].mean - truth[name]) <= 0.2 * abs(truth[name]) + 3 * fitted[name].uncertainty, name
    loop = hidden.action_latency_s + hidden.obs_latency_s
    assert abs(fitted["loop_latency_s"].mean - loop) <= 0.02  # within one control step
    assert not fitted["action_latency_s"].identifiable and not fitted["obs_latency_s"].identifiable
    # every range lies in its prior; an unidentifiable parameter keeps the whole prior
    for p in fitted.parameters:
        assert p.prior[0] <= p.low <= p.mean <= p.high <= p.prior[1], p.name
        if not p.identifiable and p.name.startswith("zero_offset"):
            assert (p.low, p.high) == p.prior
    assert result.loss_history[-1] <= result.loss_history[0]
    assert np.isfinite(result.loss_history).all()


def test_bad_logs_are_refused_before_fitting(hidden_and_log):
    _, log = hidden_and_log
    files = resolve_robot_files("local")
    short = log.select(slice(0, 20))
    with pytest.raises(FitError, match="too short"):
        fit_randomization([short], files, options=OPTIONS)
    other = StepLog(log.step_id, log.t_us, log.groups, tuple(f"j{i}" for i in range(20)), "other robot")
    with pytest.raises(FitError, match="a log of another robot"):
        fit_randomization([other], files, options=OPTIONS)
    gappy = StepLog(log.step_id * 2, log.t_us, log.groups, log.joint_names, "gappy")
    with pytest.raises(FitError, match="not consecutive"):
        fit_randomization([gappy], files, options=OPTIONS)
    with pytest.raises(FitError, match="only suspended logs"):
        fit_randomization([log], files, suspended=False, options=OPTIONS)
