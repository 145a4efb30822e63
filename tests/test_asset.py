"""Tests for the project's own K-Bot model in assets/kbot/.

The first group always runs. The second group checks physical equivalence with K-Scale's reference K-Bot
(kbot-headless) and is skipped when the reference is not available: set ``KBOT_REFERENCE_DIR`` or place it at
``<repo>/../shared/robots/kbot-headless``.
"""

from __future__ import annotations

import os
from pathlib import Path

import mujoco
import numpy as np
import pytest
from kscale.web.gen.api import RobotURDFMetadataOutput
from mujoco_scenes.mjcf import load_mjmodel

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO_ROOT / "assets" / "kbot"
MJCF = ASSET_DIR / "kbot.mjcf"
METADATA = ASSET_DIR / "metadata.json"

FOOT_CAPSULES = {
    "LFootBushing_GPF_1517_12_collision_capsule_0",
    "LFootBushing_GPF_1517_12_collision_capsule_1",
    "RFootBushing_GPF_1517_12_collision_capsule_0",
    "RFootBushing_GPF_1517_12_collision_capsule_1",
}
N_STATES = 60
QACC_RTOL = 1e-6


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, n: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) for i in range(n)]


def _joint_names(model: mujoco.MjModel) -> list[str]:
    return _names(model, mujoco.mjtObj.mjOBJ_JOINT, model.njnt)


def _collision_geoms(model: mujoco.MjModel) -> list[int]:
    return [g for g in range(model.ngeom) if model.geom_contype[g] or model.geom_conaffinity[g]]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-9))


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(MJCF))


# --------------------------------------------------------------------------- always-on checks
def test_joints_and_motors(model: mujoco.MjModel) -> None:
    assert model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    assert list(model.jnt_type[1:]) == [mujoco.mjtJoint.mjJNT_HINGE] * 20
    assert model.nq == 27 and model.nv == 26 and model.nu == 20
    hinges = _joint_names(model)[1:]
    motors = _names(model, mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu)
    assert motors == [f"{j}_ctrl" for j in hinges]
    assert [model.joint(int(model.actuator_trnid[a, 0])).name for a in range(model.nu)] == hinges
    assert np.all(model.jnt_limited[1:]) and np.all(model.actuator_ctrllimited)


def test_metadata_schema(model: mujoco.MjModel) -> None:
    import ksim

    meta = RobotURDFMetadataOutput.model_validate_json(METADATA.read_text())
    hinges = _joint_names(model)[1:]
    assert meta.joint_name_to_metadata is not None
    assert list(meta.joint_name_to_metadata) == hinges  # MJCF order
    ids = set()
    for name, joint in meta.joint_name_to_metadata.items():
        for field in ("kp", "kd", "soft_torque_limit"):
            assert float(getattr(joint, field)) > 0, (name, field)
        assert joint.actuator_type in meta.actuator_type_to_metadata, name
        assert joint.id is not None and joint.nn_id == hinges.index(name)
        assert float(joint.min_angle_deg) < float(joint.max_angle_deg)
        ids.add(joint.id)
    assert len(ids) == 20
    assert float(meta.control_frequency) > 0
    converted = ksim.Metadata.from_kscale_metadata(meta)
    assert set(converted.joint_name_to_metadata) == set(hinges)
    # The metadata's actuator types agree with the MJCF joint classes (same armature/frictionloss/torque).
    for name, joint in meta.joint_name_to_metadata.items():
        act = meta.actuator_type_to_metadata[joint.actuator_type]
        dof = model.joint(name).dofadr[0]
        assert model.dof_armature[dof] == pytest.approx(float(act.armature))
        assert model.dof_frictionloss[dof] == pytest.approx(float(act.frictionloss))
        assert model.jnt_actfrcrange[model.joint(name).id][1] == pytest.approx(float(act.max_torque))


def test_only_foot_capsules_collide(model: mujoco.MjModel) -> None:
    names = [model.geom(g).name for g in _collision_geoms(model)]
    assert sorted(names) == sorted(FOOT_CAPSULES)
    for g in _collision_geoms(model):
        assert model.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE


def test_visuals_are_massless_and_do_not_collide(model: mujoco.MjModel) -> None:
    for g in range(model.ngeom):
        if model.geom(g).name not in FOOT_CAPSULES:
            assert model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0, model.geom(g).name
    # Removing every visual geom must not change any body's inertia.
    spec = mujoco.MjSpec.from_file(str(MJCF))
    for geom in list(spec.geoms):
        if geom.name not in FOOT_CAPSULES:
            spec.delete(geom)
    stripped = spec.compile()
    assert stripped.ngeom == 4
    np.testing.assert_array_equal(stripped.body_mass, model.body_mass)
    np.testing.assert_array_equal(stripped.body_inertia, model.body_inertia)
    np.testing.assert_array_equal(stripped.body_ipos, model.body_ipos)


def test_total_mass(model: mujoco.MjModel) -> None:
    assert 30.0 < model.body_mass.sum() < 45.0


def test_sites_and_sensors(model: mujoco.MjModel) -> None:
    sites = set(_names(model, mujoco.mjtObj.mjOBJ_SITE, model.nsite))
    assert {"imu_site", "base_site", "left_foot", "right_foot"} <= sites
    sensors = set(_names(model, mujoco.mjtObj.mjOBJ_SENSOR, model.nsensor))
    assert {"imu_acc", "imu_gyro", "left_foot_touch", "right_foot_touch"} <= sensors


def test_loads_in_smooth_scene() -> None:
    scene = load_mjmodel(str(MJCF), scene="smooth")
    assert mujoco.mj_name2id(scene, mujoco.mjtObj.mjOBJ_GEOM, "floor") >= 0
    assert scene.vis.global_.offwidth >= 640 and scene.vis.global_.offheight >= 480
    data = mujoco.MjData(scene)
    mujoco.mj_forward(scene, data)
    assert np.all(np.isfinite(data.qacc))


# --------------------------------------------------------------------------- equivalence with the reference
def _reference_dir() -> Path:
    env = os.environ.get("KBOT_REFERENCE_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "robots" / "kbot-headless"


@pytest.fixture(scope="module")
def reference_path() -> Path:
    path = _reference_dir() / "robot.mjcf"
    if not path.is_file():
        pytest.skip(f"reference K-Bot not found at {path} (set KBOT_REFERENCE_DIR)")
    return path.resolve()


@pytest.fixture(scope="module")
def reference(reference_path: Path) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(reference_path))


def _random_states(model: mujoco.MjModel, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(qpos, qvel, ctrl) samples; every fourth one puts some joints up to 0.15 rad outside their range."""
    rng = np.random.default_rng(seed)
    lo, hi = model.jnt_range[1:, 0], model.jnt_range[1:, 1]
    states = []
    for i in range(n):
        qpos = np.empty(model.nq)
        qpos[:3] = rng.uniform([-1.0, -1.0, 0.3], [1.0, 1.0, 1.5])
        quat = rng.normal(size=4)
        qpos[3:7] = quat / np.linalg.norm(quat)
        qpos[7:] = rng.uniform(lo, hi)
        if i % 4 == 3:
            outside = rng.random(lo.shape) < 0.5
            below = rng.random(lo.shape) < 0.5
            delta = rng.uniform(0.0, 0.15, lo.shape)
            qpos[7:] = np.where(outside, np.where(below, lo - delta, hi + delta), qpos[7:])
        qvel = rng.normal(scale=1.0, size=model.nv)
        ctrl = rng.uniform(model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1])
        states.append((qpos, qvel, ctrl))
    return states


def _forward(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray, ctrl: np.ndarray) -> mujoco.MjData:
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.ctrl[:] = qpos, qvel, ctrl
    mujoco.mj_forward(model, data)
    return data


def _lowest_foot_point(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    z = np.inf
    for g in _collision_geoms(model):
        if model.geom_bodyid[g] == 0:  # the floor
            continue
        radius, half = model.geom_size[g, :2]
        axis = data.geom_xmat[g].reshape(3, 3)[:, 2]
        ends = data.geom_xpos[g][None, :] + np.outer([-half, half], axis)
        z = min(z, ends[:, 2].min() - radius)
    return float(z)


def _place_on_floor(model: mujoco.MjModel, qpos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift the base vertically so the lowest foot point is up to 1 cm inside the floor (contacts active)."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    qpos = qpos.copy()
    qpos[2] += -_lowest_foot_point(model, data) + rng.uniform(-0.01, -0.0005)
    return qpos


def test_same_names_and_order(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    assert _joint_names(model) == _joint_names(reference)
    for obj, n in [
        (mujoco.mjtObj.mjOBJ_BODY, "nbody"),
        (mujoco.mjtObj.mjOBJ_ACTUATOR, "nu"),
        (mujoco.mjtObj.mjOBJ_SITE, "nsite"),
        (mujoco.mjtObj.mjOBJ_SENSOR, "nsensor"),
    ]:
        assert _names(model, obj, getattr(model, n)) == _names(reference, obj, getattr(reference, n)), n
    np.testing.assert_array_equal(model.body_parentid, reference.body_parentid)
    np.testing.assert_array_equal(model.sensor_type, reference.sensor_type)
    np.testing.assert_array_equal(model.sensor_objtype, reference.sensor_objtype)
    np.testing.assert_array_equal(model.sensor_objid, reference.sensor_objid)
    np.testing.assert_array_equal(model.sensor_noise, reference.sensor_noise)
    assert model.nq == reference.nq and model.nv == reference.nv


def test_same_mass_properties(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    assert model.body_mass.sum() == pytest.approx(reference.body_mass.sum(), rel=1e-3)
    np.testing.assert_allclose(model.body_mass, reference.body_mass, rtol=1e-12)
    np.testing.assert_allclose(model.body_inertia, reference.body_inertia, rtol=1e-12)
    np.testing.assert_allclose(model.body_ipos, reference.body_ipos, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.body_iquat, reference.body_iquat, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.body_pos, reference.body_pos, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.body_quat, reference.body_quat, rtol=1e-12, atol=1e-15)


def test_same_joint_and_actuator_parameters(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    for field in [
        "jnt_type", "jnt_axis", "jnt_range", "jnt_limited", "jnt_actfrclimited", "jnt_actfrcrange", "qpos0",
        "dof_armature", "dof_frictionloss", "dof_damping",
        "actuator_trnid", "actuator_gear", "actuator_ctrlrange", "actuator_ctrllimited",
    ]:  # fmt: skip
        np.testing.assert_allclose(getattr(model, field), getattr(reference, field), rtol=1e-12, err_msg=field)


def test_same_collision_geoms_and_sites(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    ours, theirs = _collision_geoms(model), _collision_geoms(reference)
    assert [model.geom(g).name for g in ours] == [reference.geom(g).name for g in theirs]
    for field in [
        "geom_type", "geom_bodyid", "geom_size", "geom_pos", "geom_quat", "geom_friction", "geom_solref",
        "geom_solimp", "geom_solmix", "geom_margin", "geom_gap", "geom_condim", "geom_priority", "geom_contype",
        "geom_conaffinity",
    ]:  # fmt: skip
        a, b = getattr(model, field)[ours], getattr(reference, field)[theirs]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=field)
    for field in ["site_bodyid", "site_type", "site_size", "site_pos", "site_quat"]:
        np.testing.assert_allclose(getattr(model, field), getattr(reference, field), rtol=1e-12, err_msg=field)


def test_same_options(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    for field in ["timestep", "gravity", "magnetic", "integrator", "cone", "solver", "iterations", "tolerance"]:
        np.testing.assert_array_equal(getattr(model.opt, field), getattr(reference.opt, field), err_msg=field)


def test_same_dynamics_bare(model: mujoco.MjModel, reference: mujoco.MjModel) -> None:
    worst_qacc = worst_sensor = 0.0
    for qpos, qvel, ctrl in _random_states(reference, N_STATES, seed=0):
        ours, theirs = _forward(model, qpos, qvel, ctrl), _forward(reference, qpos, qvel, ctrl)
        worst_qacc = max(worst_qacc, _rel_err(ours.qacc, theirs.qacc))
        worst_sensor = max(worst_sensor, _rel_err(ours.sensordata, theirs.sensordata))
    print(f"bare: max relative qacc error {worst_qacc:.3g}, sensordata {worst_sensor:.3g}")
    assert worst_qacc <= QACC_RTOL
    assert worst_sensor <= QACC_RTOL


def test_same_dynamics_with_floor_contacts(reference_path: Path) -> None:
    ours_model = load_mjmodel(str(MJCF), scene="smooth")
    ref_model = load_mjmodel(str(reference_path), scene="smooth")
    rng = np.random.default_rng(1)
    worst_qacc = worst_sensor = 0.0
    with_contacts = 0
    for qpos, qvel, ctrl in _random_states(ref_model, N_STATES, seed=2):
        qpos = _place_on_floor(ref_model, qpos, rng)
        ours, theirs = _forward(ours_model, qpos, qvel, ctrl), _forward(ref_model, qpos, qvel, ctrl)
        assert ours.ncon == theirs.ncon
        with_contacts += theirs.ncon > 0
        worst_qacc = max(worst_qacc, _rel_err(ours.qacc, theirs.qacc))
        worst_sensor = max(worst_sensor, _rel_err(ours.sensordata, theirs.sensordata))
    print(f"floor: max relative qacc error {worst_qacc:.3g}, sensordata {worst_sensor:.3g}, contacts {with_contacts}")
    assert with_contacts >= N_STATES * 0.9
    assert worst_qacc <= QACC_RTOL
    assert worst_sensor <= QACC_RTOL
