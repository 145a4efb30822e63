"""`python -m tasks.walk randomization=fitted.json`: the fitted ranges become the walking task's randomization."""

import math

import numpy as np
import pytest

from ksim_entropy.formats.fitted import FittedParameter, FittedRandomization, FittedRandomizationError
from ksim_entropy.kbot.fitted_ranges import PHYSICS_PARAMETERS
from ksim_entropy.kbot.walk import SENSOR_NOISE
from tests.walk_parts import walk_task

RANGES = {  # name: (low, high, prior)
    "mass_scale": (1.02, 1.06, (0.7, 1.3)),
    "frictionloss_scale": (0.88, 0.95, (0.25, 3.0)),
    "armature_scale": (0.80, 0.84, (0.5, 2.0)),
    "joint_damping": (0.21, 0.22, (0.0, 2.0)),
    "kp_scale": (1.09, 1.10, (0.7, 1.3)),
    "kd_scale": (1.20, 1.22, (0.5, 1.5)),
    "action_latency_s": (0.0, 0.0125, (0.0, 0.03)),
    "obs_latency_s": (0.0, 0.0125, (0.0, 0.02)),
    "gyro_bias/x": (0.019, 0.0193, (-1.0, 1.0)),
    "gyro_bias/y": (-0.031, -0.030, (-1.0, 1.0)),
    "gyro_bias/z": (0.005, 0.006, (-1.0, 1.0)),
    "foot_friction": (0.556, 1.5, (0.2, 1.5)),  # a lower bound from standing logs
}


def _task(tmp_path, **overrides):
    return walk_task(tmp_path / "run", **overrides)


def _fitted(joints, ranges=RANGES):
    params = [
        FittedParameter(n, (lo + hi) / 2, lo, hi, "1", (hi - lo) / 4, True, prior)
        for n, (lo, hi, prior) in ranges.items()
    ]
    offsets = np.linspace(-0.02, 0.02, len(joints))
    params += [
        FittedParameter(f"zero_offset/{j}", o, o - 0.005, o + 0.005, "rad", 0.0025, True, (-0.05, 0.05))
        for j, o in zip(joints, offsets, strict=True)
    ]
    params += [FittedParameter("noise_std/gyro", 0.004, 0.0039, 0.0041, "rad/s", 1e-4, True, (0.0, 1.0))]
    return FittedRandomization("kbot", tuple(joints), tuple(params), -6.8, {"logs": ["test"]}), offsets


@pytest.fixture(scope="module")
def model_and_joints(tmp_path_factory):
    task = _task(tmp_path_factory.mktemp("plain"))
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    return mj_model, task.joint_names(mj_model)


def test_fitted_ranges_replace_the_defaults(model_and_joints, tmp_path):
    mj_model, joints = model_and_joints
    fitted, offsets = _fitted(joints)
    path = fitted.save(tmp_path / "fitted.json")
    task = _task(tmp_path, randomization=str(path))
    randomization = task.get_domain_randomization(mj_model)
    by_name = {type(p).__name__: p for p in randomization.parameters}
    expected = dict(
        zip(
            PHYSICS_PARAMETERS,
            (
                "BodyMassScale",
                "JointFrictionLoss",
                "JointArmature",
                "JointDamping",
                "ActuatorKpScale",
                "ActuatorKdScale",
            ),
            strict=True,
        )
    )
    for name, cls in expected.items():
        low, high = (np.asarray(b) for b in by_name[cls].dist.bounds(1.0))
        np.testing.assert_allclose(low, RANGES[name][0], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(high, RANGES[name][1], rtol=1e-6, err_msg=name)
    low, high = (np.asarray(b) for b in by_name["GeomFriction"].dist.bounds(1.0))
    np.testing.assert_allclose([low.min(), high.max()], RANGES["foot_friction"][:2], rtol=1e-6)
    low, high = (np.asarray(b) for b in by_name["JointZeroOffset"].dist.bounds(1.0))
    np.testing.assert_allclose(low, offsets - 0.005, atol=1e-7)
    np.testing.assert_allclose(high, offsets + 0.005, atol=1e-7)
    latency = task.get_actuators(mj_model).latency
    assert (latency.min_s, latency.max_s) == pytest.approx(RANGES["action_latency_s"][:2])
    gyro = task.get_observations(mj_model)["noisy_imu_gyro"]
    assert (gyro.latency.min_s, gyro.latency.max_s) == pytest.approx(RANGES["obs_latency_s"][:2])
    assert float(gyro.sensor_noise.uniform_mag) == pytest.approx(0.004 * math.sqrt(3))  # same variance
    assert float(gyro.sensor_noise.bias_mag) == pytest.approx(0.031)  # the largest |bound| of the axes
    joint = task.get_observations(mj_model)["noisy_joint_position"]
    assert float(joint.sensor_noise.uniform_mag) == SENSOR_NOISE["joint_position"][0]  # not fitted: default


def test_a_fitted_file_of_another_robot_or_without_sim2real_is_refused(model_and_joints, tmp_path):
    mj_model, joints = model_and_joints
    fitted, _ = _fitted([f"j{i}" for i in range(len(joints))])
    path = fitted.save(tmp_path / "other.json")
    with pytest.raises(FittedRandomizationError, match="another robot"):
        _task(tmp_path, randomization=str(path)).get_domain_randomization(mj_model)
    with pytest.raises(FittedRandomizationError, match="no such file|not found|No such"):
        _task(tmp_path, randomization=str(tmp_path / "missing.json")).get_domain_randomization(mj_model)
    with pytest.raises(ValueError, match="needs sim2real=True"):
        _task(tmp_path, randomization=str(path), sim2real=False).fitted_ranges(mj_model)


def test_fitted_ranges_and_a_real_log_profile_work_together(model_and_joints, tmp_path):
    """randomization=fitted.json sets the ranges; entropy_target_path=profile.json then adapts their widths (the
    matched mode): the curriculum the task builds carries both."""
    from ksim_entropy.curriculum import RandomizationCurriculum
    from ksim_entropy.formats.profile import EntropyProfile
    from ksim_entropy.testing.reality import HiddenRobot, reality_log

    mj_model, joints = model_and_joints
    fitted, _ = _fitted(joints)
    fitted_path = fitted.save(tmp_path / "fitted.json")
    profile_path = EntropyProfile.from_log(reality_log(HiddenRobot(), seconds=2.0, seed=1)).save(tmp_path / "p.json")
    task = _task(tmp_path, randomization=str(fitted_path), entropy_target_path=str(profile_path))
    curriculum = task.get_curriculum(mj_model)
    assert isinstance(curriculum, RandomizationCurriculum) and curriculum.mode == "matched"
    assert curriculum.target is not None
    kp = next(p for p in curriculum.randomization.parameters if type(p).__name__ == "ActuatorKpScale")
    low, high = (np.asarray(b) for b in kp.dist.bounds(1.0))
    np.testing.assert_allclose([low.min(), high.max()], RANGES["kp_scale"][:2], rtol=1e-6)


def test_a_fitted_file_as_the_matching_target(model_and_joints, tmp_path):
    """entropy_target_path=fitted.json: each fitted physics parameter's randomizer is matched to its fitted range;
    with the ranges built from the same file the W2-optimal width is exactly 1 and W2 there is 0."""
    from ksim_entropy.curriculum import RandomizationCurriculum
    from ksim_entropy.ppo.matching import RandomizationTarget

    _, joints = model_and_joints
    fitted, _ = _fitted(joints)
    path = fitted.save(tmp_path / "fitted.json")
    task = _task(tmp_path, randomization=str(path), entropy_target_path=str(path), entropy_match_controller="smooth")
    curriculum = task.get_curriculum(task.get_mujoco_model())
    assert isinstance(curriculum, RandomizationCurriculum) and curriculum.mode == "matched"
    assert isinstance(curriculum.target, RandomizationTarget) and curriculum.match_rule.controller == "smooth"
    assert sorted(t.fitted for t in curriculum.target.parameters) == sorted([*PHYSICS_PARAMETERS, "zero_offset/*"])
    for t in curriculum.target.parameters:
        assert t.best_width == pytest.approx(1.0, abs=1e-5), t.name
        assert float(t.w2(1.0)) < 1e-6, t.name
