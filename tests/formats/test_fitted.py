"""`fitted.json` (ksim_entropy.formats.fitted): strict round trip, clear errors, IMU moments against closed forms."""

import json
import math

import numpy as np
import pytest

from ksim_entropy.formats.fitted import FittedParameter, FittedRandomization, FittedRandomizationError, imu_moments
from ksim_entropy.formats.schema import StepLog


def _fitted() -> FittedRandomization:
    return FittedRandomization(
        robot="kbot",
        joint_names=("a", "b"),
        parameters=(
            FittedParameter("kp_scale", 1.05, 1.0, 1.1, "1", 0.02, True, (0.7, 1.3)),
            FittedParameter("zero_offset/a", 0.0, -0.05, 0.05, "rad", 0.03, False, (-0.05, 0.05), "flat"),
            FittedParameter("zero_offset/b", 0.01, 0.0, 0.02, "rad", 0.005, True, (-0.05, 0.05)),
        ),
        final_loss=-4.5,
        coverage={"seconds": 60.0, "windows": 48},
    )


def test_round_trip_is_exact_and_never_overwrites(tmp_path):
    path = _fitted().save(tmp_path / "fitted.json")
    loaded = FittedRandomization.load(path)
    assert loaded == _fitted()
    assert [p.name for p in loaded.per_joint("zero_offset")] == ["zero_offset/a", "zero_offset/b"]
    assert loaded["kp_scale"].mean == 1.05
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        _fitted().save(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), "not a fitted randomization"),
        (lambda d: d.pop("final_loss"), "missing keys \\['final_loss'\\]"),
        (lambda d: d["parameters"][0].update(low=1.2), "need low <= mean <= high"),
        (lambda d: d["parameters"][0].update(uncertainty="x"), "field 'uncertainty': must be a number"),
        (lambda d: d["parameters"][0].update(identifiable=1), "must be true or false"),
        (lambda d: d["parameters"].append(dict(d["parameters"][0])), "repeated \\['kp_scale'\\]"),
        (lambda d: d["parameters"].pop(2), "zero_offset: no value for joints \\['b'\\]"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, edit, message):
    data = _fitted().to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FittedRandomizationError, match=message):
        FittedRandomization.load(path).per_joint("zero_offset")


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(FittedRandomizationError, match="no such file"):
        FittedRandomization.load(tmp_path / "none.json")
    (tmp_path / "t.json").write_text("{nan")
    with pytest.raises(FittedRandomizationError, match="not valid JSON"):
        FittedRandomization.load(tmp_path / "t.json")


def test_imu_moments_match_the_closed_form():
    rng = np.random.default_rng(0)
    n = 4000
    gravity = np.array([0.3, -0.2, -9.8])
    gyro = rng.normal([0.01, -0.02, 0.0], 0.005, (n, 3))
    projected = gravity + rng.normal(0.0, 0.02, (n, 3))
    accel = -gravity + np.array([0.1, 0.0, -0.2]) + rng.normal(0.0, 0.05, (n, 3))
    log = StepLog.from_arrays(
        step_id=np.arange(n), t_us=np.arange(n) * 20000, gyro=gyro, accel=accel, projected_g=projected
    )
    est = imu_moments(log)
    for axis, truth in zip("xyz", [0.01, -0.02, 0.0], strict=True):
        value, sigma = est[f"gyro_bias/{axis}"]
        assert sigma == pytest.approx(0.005 / math.sqrt(n), rel=0.1)
        assert abs(value - truth) < 4 * sigma
    for axis, truth in zip("xyz", [0.1, 0.0, -0.2], strict=True):
        value, sigma = est[f"accel_bias/{axis}"]
        assert abs(value - truth) < 4 * sigma  # noise of accel and projected_g both enter the mean
    assert est["noise_std/gyro"][0] == pytest.approx(0.005, rel=0.05)
    assert est["noise_std/accel"][0] == pytest.approx(0.05, rel=0.05)
    assert est["noise_std/projected_g"][0] == pytest.approx(0.02, rel=0.05)
    with pytest.raises(FittedRandomizationError, match="no 'gyro' channels"):
        imu_moments(StepLog.from_arrays(step_id=np.arange(20), t_us=np.arange(20), accel=accel[:20]))
