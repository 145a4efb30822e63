"""Robot loading: the shipped K-Bot loads offline; missing or malformed files give errors that name the problem."""

import json
import shutil

import pytest

from ksim_entropy.kbot.robot import (
    KBOT_FOOT_BODIES,
    KBOT_FOOT_COLLISION_GEOMS,
    KBOT_NOMINAL_POSE_RAD,
    RobotLoadError,
    kbot_asset_dir,
    load_metadata,
    load_robot_model,
    resolve_robot_files,
)


@pytest.fixture
def asset_copy(tmp_path):
    target = tmp_path / "kbot"
    shutil.copytree(kbot_asset_dir(), target)
    return target


def test_local_kbot_loads_offline_with_metadata():
    files = resolve_robot_files("local")
    model = load_robot_model(files, scene="smooth")
    metadata = load_metadata(files, model)
    assert model.nu == 20
    assert set(metadata.joint_name_to_metadata) >= {model.joint(i).name for i in range(1, model.njnt)}
    # Nominal pose is within every joint's range.
    for name, q in KBOT_NOMINAL_POSE_RAD.items():
        lo, hi = model.joint(name).range
        assert lo <= q <= hi, name


def test_directory_source_is_accepted(asset_copy):
    files = resolve_robot_files(str(asset_copy))
    assert files.mjcf.parent == asset_copy
    assert load_robot_model(files, scene=None).nu == 20


@pytest.mark.parametrize("source", ["nonexistent-dir-xyz", "kscale:", "https://example.invalid"])
def test_unknown_sources_are_rejected(source):
    with pytest.raises(RobotLoadError, match="robot_source|does not exist|needs a model name"):
        resolve_robot_files(source)


def test_missing_mjcf(asset_copy):
    for path in asset_copy.glob("*.mjcf"):
        path.unlink()
    with pytest.raises(RobotLoadError, match=r"No \*\.mjcf"):
        resolve_robot_files(str(asset_copy))


def test_missing_metadata(asset_copy):
    (asset_copy / "metadata.json").unlink()
    with pytest.raises(RobotLoadError, match="metadata.json"):
        resolve_robot_files(str(asset_copy))


def test_malformed_mjcf(asset_copy):
    mjcf = next(asset_copy.glob("*.mjcf"))
    mjcf.write_text(mjcf.read_text()[:-200])  # truncated XML
    files = resolve_robot_files(str(asset_copy))
    with pytest.raises(RobotLoadError, match="Malformed robot model"):
        load_robot_model(files, scene="smooth")


def test_unknown_scene():
    with pytest.raises(RobotLoadError, match="Unknown scene 'lava'"):
        load_robot_model(resolve_robot_files("local"), scene="lava")


def test_malformed_metadata_json(asset_copy):
    (asset_copy / "metadata.json").write_text("{not json")
    with pytest.raises(RobotLoadError, match="Malformed robot metadata"):
        load_metadata(resolve_robot_files(str(asset_copy)))


def test_metadata_missing_gain_is_named(asset_copy):
    path = asset_copy / "metadata.json"
    data = json.loads(path.read_text())
    data["joint_name_to_metadata"]["dof_left_knee_04"]["kp"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(RobotLoadError, match="dof_left_knee_04.*kp"):
        load_metadata(resolve_robot_files(str(asset_copy)))


def test_metadata_missing_joint_is_named(asset_copy):
    path = asset_copy / "metadata.json"
    data = json.loads(path.read_text())
    del data["joint_name_to_metadata"]["dof_right_ankle_02"]
    path.write_text(json.dumps(data))
    files = resolve_robot_files(str(asset_copy))
    with pytest.raises(RobotLoadError, match="dof_right_ankle_02"):
        load_metadata(files, load_robot_model(files, scene=None))


def test_foot_constants_name_the_collision_capsules():
    model = load_robot_model(resolve_robot_files("local"), scene=None)
    colliding = {model.geom(g).name for g in range(model.ngeom) if model.geom_conaffinity[g] or model.geom_contype[g]}
    assert colliding == {g for geoms in KBOT_FOOT_COLLISION_GEOMS.values() for g in geoms}
    for foot, geoms in KBOT_FOOT_COLLISION_GEOMS.items():
        assert {model.body(int(model.geom(g).bodyid[0])).name for g in geoms} == {foot}
    assert set(KBOT_FOOT_COLLISION_GEOMS) == set(KBOT_FOOT_BODIES)


def test_standing_height_is_where_mujoco_settles_the_nominal_pose():
    # CPU MuJoCo at tasks.walk's settings, PD servos holding the nominal pose: after the drop from the model's initial
    # height the base settles at KBOT_STANDING_BASE_HEIGHT_M (± 1 cm) before the unbalanced pose starts to tip.
    import numpy as np

    from ksim_entropy.kbot.robot import KBOT_STANDING_BASE_HEIGHT_M
    from ksim_entropy.sim2real.sim import KBotSimulator

    sim = KBotSimulator(resolve_robot_files("local"))
    names = [sim.model.joint(i).name for i in range(1, sim.model.njnt)]
    nominal = np.array([KBOT_NOMINAL_POSE_RAD.get(n, 0.0) for n in names])
    sim.reset()
    heights = []
    for _ in range(20):  # 0.4 s
        sim.step(nominal)
        heights.append(float(sim.data.qpos[2]))
    settled = heights[10:]  # 0.2-0.4 s
    assert max(settled) - min(settled) < 0.01
    assert abs(float(np.mean(settled)) - KBOT_STANDING_BASE_HEIGHT_M) < 0.01
