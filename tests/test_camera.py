"""The ray-cast camera (`ksim_entropy.camera`) against MuJoCo's own ray caster, `mujoco.mj_ray`, pixel by pixel."""

import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from ksim_entropy.camera import RayCastCamera, pixel_directions

SCENE = """<mujoco><worldbody>
  <camera name="fixed" pos="0.3 -2.2 1.1" xyaxes="1 0.1 0 0 0.45 1" fovy="50"/>
  <geom name="floor" type="plane" size="3 3 0.1" rgba="0.4 0.4 0.4 1"/>
  <body name="thing" pos="0 0 0.5" euler="0.3 0.2 0.1">
    <freejoint/>
    <camera name="riding" pos="0 -0.6 0.3" xyaxes="1 0 0 0 0.3 1" fovy="80"/>
    <geom type="box" size="0.2 0.1 0.15" rgba="0.9 0.2 0.2 1"/>
    <geom type="sphere" pos="0.4 0 0.2" size="0.12" rgba="0.2 0.9 0.2 1"/>
    <geom type="capsule" fromto="-0.4 0 0 -0.4 0 0.4" size="0.06" rgba="0.2 0.2 0.9 1"/>
    <geom type="cylinder" pos="0 0.3 0.3" euler="1 0 0" size="0.08 0.1" rgba="0.9 0.9 0.2 1"/>
    <geom type="ellipsoid" pos="0.2 -0.3 -0.2" size="0.1 0.15 0.07" rgba="0.2 0.9 0.9 1"/>
    <geom name="hidden" type="box" size="0.05 0.05 0.05" pos="0 0 0.5" rgba="1 1 1 0"/>
  </body>
</worldbody></mujoco>"""


def _scene(qpos: np.ndarray | None = None) -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_string(SCENE)
    data = mujoco.MjData(model)
    if qpos is not None:
        data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    return model, data


def _poses(data: mujoco.MjData) -> tuple[np.ndarray, ...]:
    return data.geom_xpos, data.geom_xmat.reshape(-1, 3, 3), data.cam_xpos, data.cam_xmat.reshape(-1, 3, 3)


def _mj_ray_image(model: mujoco.MjModel, data: mujoco.MjData, cam: int, height: int, width: int) -> tuple:
    dirs = pixel_directions(height, width, model.cam_fovy[cam]) @ data.cam_xmat[cam].reshape(3, 3).T
    geom = np.zeros(1, np.int32)
    dist, ids = [], []
    for v in dirs:
        dist.append(mujoco.mj_ray(model, data, data.cam_xpos[cam], v, None, 1, -1, geom))
        ids.append(int(geom[0]))
    return np.asarray(dist).reshape(height, width), np.asarray(ids).reshape(height, width)


@pytest.mark.parametrize(
    ("camera", "qpos"),
    [
        ("fixed", None),
        ("riding", np.array([0.3, 0.2, 0.7, 0.9, 0.1, -0.3, 0.2])),  # a camera on a moved, turned body moves with it
    ],
)
def test_every_pixel_hits_the_geom_mj_ray_hits_at_its_distance(camera, qpos):
    model, data = _scene(None if qpos is None else np.r_[qpos[:3], qpos[3:] / np.linalg.norm(qpos[3:])])
    cam = RayCastCamera.create(model, camera, height=36, width=48)
    dist, geom = jax.jit(cam.render_depth)(*_poses(data))
    ref_dist, ref_geom = _mj_ray_image(model, data, cam.camera_id, 36, 48)
    assert len(np.unique(ref_geom)) >= 5  # the view holds most of the scene: a real comparison, not sky only
    assert np.mean(np.asarray(geom) == ref_geom) >= 0.999  # an edge pixel may round either way
    same = (np.asarray(geom) == ref_geom) & (ref_geom >= 0)
    np.testing.assert_allclose(np.asarray(dist)[same], ref_dist[same], atol=1e-4)
    assert np.all(np.isinf(np.asarray(dist)[np.asarray(geom) < 0]))  # a miss has no distance
    hidden = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "hidden")
    assert hidden not in np.asarray(geom)  # alpha 0: invisible, as for mj_ray


def test_colours_shading_and_background():
    model, data = _scene()
    cam = RayCastCamera.create(model, "fixed", height=36, width=48, ambient=0.35, background=(0.1, 0.2, 0.3))
    image = np.asarray(cam.render(*_poses(data)))
    _, geom = (np.asarray(a) for a in cam.render_depth(*_poses(data)))
    assert image.shape == (36, 48, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[geom < 0], np.broadcast_to([0.1, 0.2, 0.3], image[geom < 0].shape), atol=1e-6)
    for g in np.unique(geom[geom >= 0]):
        rgb = model.geom_rgba[g, :3]
        shade = image[geom == g] / rgb  # every pixel of a geom is its colour times one shade per pixel
        assert np.allclose(shade, shade[:, :1], atol=1e-5)
        assert np.all(shade >= 0.35 - 1e-6) and np.all(shade <= 1.0 + 1e-6)
    floor = image[geom == 0][:, 0] / 0.4  # a plane under a headlight: brighter where the ray meets it more head-on
    assert floor.max() - floor.min() > 0.1


def test_observe_on_mjx_data_equals_the_cpu_render():
    model, data = _scene()
    mjx_model = mjx.put_model(model)
    mjx_data = mjx.forward(mjx_model, mjx.put_data(model, data))
    cam = RayCastCamera.create(mjx_model, "fixed", height=12, width=16)  # ksim hands observations an MJX model
    state = ksim.ObservationInput(
        commands={},
        physics_state=ksim.PhysicsState(
            most_recent_action=jnp.zeros(0), data=mjx_data, event_states={}, actuator_state=None, action_latency=0
        ),
        obs_carry=None,
    )
    observed = jax.jit(lambda s: cam.observe(s, jnp.float32(1.0), jax.random.PRNGKey(0)))(state)
    np.testing.assert_allclose(np.asarray(observed), np.asarray(cam.render(*_poses(data))), atol=1e-3)  # float32 MJX


def test_bad_cameras_and_mesh_scenes_are_refused_with_the_reason():
    model, _ = _scene()
    with pytest.raises(ValueError, match=r"no camera 'head' in the model; it has \['fixed', 'riding'\]"):
        RayCastCamera.create(model, "head")
    with pytest.raises(ValueError, match="height and width >= 1"):
        RayCastCamera.create(model, "fixed", height=0)
    mesh_model = _with_mesh()
    with pytest.raises(ValueError, match=r"1 visible geoms are meshes .* \(tetra\); it casts plane, sphere"):
        RayCastCamera.create(mesh_model, "look")
    cam = RayCastCamera.create(mesh_model, "look", skip_meshes=True, height=4, width=4)
    assert [kind for kind, _ in cam.geoms] == ["plane"]


def _with_mesh() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(
        """<mujoco><asset><mesh name="tetra" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/></asset><worldbody>
        <camera name="look" pos="0 -2 1" xyaxes="1 0 0 0 0.5 1"/>
        <geom type="plane" size="1 1 0.1"/><geom name="tetra" type="mesh" mesh="tetra" pos="0 0 0.3"/>
        </worldbody></mujoco>"""
    )
