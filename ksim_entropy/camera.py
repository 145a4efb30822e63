"""A colour camera for MJX, which has no renderer: one ray per pixel against the scene's primitive geoms.

`RayCastCamera` is a ksim observation. It takes a MuJoCo camera's pose from the physics data (`cam_xpos`,
`cam_xmat`, so a camera on a moving body moves with it) and its vertical field of view from the model, casts one ray
through each pixel's centre, and colours the nearest hit with the geom's RGB (its material's, if it has one) under a
headlight: ``rgb · (ambient + (1 − ambient)·|n·d|)``, n the surface normal and d the ray's direction. A ray that hits
nothing within `max_distance_m` gets `background`. The output is float32, shape (height, width, 3), in [0, 1];
row 0 is the top of the image, column 0 its left, as in MuJoCo's renderer (the camera looks along its frame's −z, x
to the right, y up).

What is cast: every geom whose alpha (its material's, if it has one) is > 0, as `mujoco.mj_ray` does, of the
primitive types plane, sphere, capsule, ellipsoid, cylinder and box. A plane is seen from its front (+z) side only and
is infinite along an axis whose size is 0. Mesh geoms are not cast: a scene with visible meshes is refused unless
`skip_meshes=True` (they are then invisible). The geometry (sizes, colours) is read from the model given to `create`;
the pose of every geom from the physics data at each step.
"""

import math
from typing import ClassVar, Self

import attrs
import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ksim_entropy.randomization import model_names

__all__ = ["RayCastCamera", "pixel_directions"]

_PRIMITIVES = {
    mujoco.mjtGeom.mjGEOM_PLANE: "plane",
    mujoco.mjtGeom.mjGEOM_SPHERE: "sphere",
    mujoco.mjtGeom.mjGEOM_CAPSULE: "capsule",
    mujoco.mjtGeom.mjGEOM_ELLIPSOID: "ellipsoid",
    mujoco.mjtGeom.mjGEOM_CYLINDER: "cylinder",
    mujoco.mjtGeom.mjGEOM_BOX: "box",
}
_MISS = jnp.inf


def pixel_directions(height: int, width: int, fovy_deg: float) -> np.ndarray:
    """Unit ray directions through every pixel's centre in the camera frame, (height·width, 3), row-major."""
    half = math.tan(math.radians(fovy_deg) / 2.0)
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    x = (cols - width / 2.0) / (height / 2.0) * half
    y = -(rows - height / 2.0) / (height / 2.0) * half
    dirs = np.stack([x, y, -np.ones_like(x)], axis=-1).reshape(-1, 3)
    return dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def _nearest(t1: Array, t2: Array) -> Array:
    """The smaller of two ray parameters that is >= 0 (inf when neither is)."""
    t1 = jnp.where(t1 >= 0, t1, _MISS)
    t2 = jnp.where(t2 >= 0, t2, _MISS)
    return jnp.minimum(t1, t2)


def _quadratic(a: Array, b: Array, c: Array) -> Array:
    """Nearest t >= 0 solving a·t² + 2b·t + c = 0 (inf without a real root); a > 0."""
    disc = b * b - a * c
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    safe_a = jnp.where(a > 1e-12, a, 1.0)
    t = _nearest((-b - root) / safe_a, (-b + root) / safe_a)
    return jnp.where((disc >= 0) & (a > 1e-12), t, _MISS)


def _plane(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    t = jnp.where(v[..., 2] < -1e-12, -p[..., 2] / jnp.where(v[..., 2] < -1e-12, v[..., 2], -1.0), _MISS)
    t = jnp.where(p[..., 2] >= 0, t, _MISS)
    hit = p + t[..., None] * v
    for axis in (0, 1):  # size 0: infinite along that axis
        inside = (size[..., axis] <= 0) | (jnp.abs(hit[..., axis]) <= size[..., axis])
        t = jnp.where(inside, t, _MISS)
    return t, jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), p.shape)


def _sphere(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    r = size[..., 0]
    t = _quadratic(jnp.sum(v * v, -1), jnp.sum(p * v, -1), jnp.sum(p * p, -1) - r * r)
    return t, p + jnp.where(jnp.isfinite(t), t, 0.0)[..., None] * v


def _ellipsoid(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    ps, vs = p / size, v / size
    t = _quadratic(jnp.sum(vs * vs, -1), jnp.sum(ps * vs, -1), jnp.sum(ps * ps, -1) - 1.0)
    hit = p + jnp.where(jnp.isfinite(t), t, 0.0)[..., None] * v
    return t, hit / (size * size)


def _side(r: Array, half: Array, p: Array, v: Array) -> tuple[Array, Array]:
    """A z-aligned cylinder's curved side of radius r between z = ±half."""
    pxy, vxy = p[..., :2], v[..., :2]
    t = _quadratic(jnp.sum(vxy * vxy, -1), jnp.sum(pxy * vxy, -1), jnp.sum(pxy * pxy, -1) - r * r)
    z = p[..., 2] + jnp.where(jnp.isfinite(t), t, 0.0) * v[..., 2]
    t = jnp.where(jnp.abs(z) <= half, t, _MISS)
    hit = p + jnp.where(jnp.isfinite(t), t, 0.0)[..., None] * v
    return t, hit * jnp.array([1.0, 1.0, 0.0])


def _pick(candidates: list[tuple[Array, Array]]) -> tuple[Array, Array]:
    """The nearest of several (t, normal) candidates."""
    ts = jnp.stack([t for t, _ in candidates])
    normals = jnp.stack([n for _, n in candidates])
    best = jnp.argmin(ts, axis=0)
    return jnp.min(ts, axis=0), jnp.take_along_axis(normals, best[None, ..., None], axis=0)[0]


def _capsule(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    r, half = size[..., 0], size[..., 1]
    parts = [_side(r, half, p, v)]
    for sign in (-1.0, 1.0):
        centre = jnp.stack([jnp.zeros_like(half), jnp.zeros_like(half), sign * half], -1)
        t, n = _sphere(size, p - centre, v)
        parts.append((t, n))
    return _pick(parts)


def _cylinder(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    r, half = size[..., 0], size[..., 1]
    parts = [_side(r, half, p, v)]
    moving = jnp.abs(v[..., 2]) > 1e-12
    for sign in (-1.0, 1.0):
        t = jnp.where(moving, (sign * half - p[..., 2]) / jnp.where(moving, v[..., 2], 1.0), _MISS)
        t = jnp.where(t >= 0, t, _MISS)
        hit = p + jnp.where(jnp.isfinite(t), t, 0.0)[..., None] * v
        t = jnp.where(jnp.sum(hit[..., :2] ** 2, -1) <= r * r, t, _MISS)
        parts.append((t, jnp.broadcast_to(jnp.array([0.0, 0.0, sign]), p.shape)))
    return _pick(parts)


def _box(size: Array, p: Array, v: Array) -> tuple[Array, Array]:
    safe = jnp.where(jnp.abs(v) > 1e-12, v, 1e-12)
    t_low, t_high = (-size - p) / safe, (size - p) / safe
    near, far = jnp.minimum(t_low, t_high), jnp.maximum(t_low, t_high)
    t_near, t_far = jnp.max(near, -1), jnp.min(far, -1)
    hit = (t_near <= t_far) & (t_far >= 0)
    t = jnp.where(hit, jnp.where(t_near >= 0, t_near, t_far), _MISS)
    axis = jnp.where(t_near >= 0, jnp.argmax(near, -1), jnp.argmin(far, -1))
    return t, jax.nn.one_hot(axis, 3) * -jnp.sign(v)


_INTERSECT = {
    "plane": _plane,
    "sphere": _sphere,
    "capsule": _capsule,
    "ellipsoid": _ellipsoid,
    "cylinder": _cylinder,
    "box": _box,
}


def _visible_rgba(model: ksim.PhysicsModel | mujoco.MjModel, geom: int) -> np.ndarray:
    matid = int(np.asarray(model.geom_matid)[geom])
    return np.asarray(np.asarray(model.mat_rgba)[matid] if matid >= 0 else np.asarray(model.geom_rgba)[geom], float)


@attrs.define(frozen=True, kw_only=True)
class RayCastCamera(ksim.Observation):
    """An RGB image (height, width, 3) in [0, 1] from a MuJoCo camera, ray cast in JAX (see the module docstring).

    Build it with `create`. Attributes hold only hashable, static values (ksim compiles observations as constants).
    """

    camera_id: int = attrs.field()
    height: int = attrs.field()
    width: int = attrs.field()
    fovy_deg: float = attrs.field()
    geoms: tuple[tuple[str, tuple[int, ...]], ...] = attrs.field()  # (primitive type, geom ids), grouped by type
    sizes: tuple[tuple[float, float, float], ...] = attrs.field()  # per geom, in `geoms` order
    colors: tuple[tuple[float, float, float], ...] = attrs.field()  # RGB per geom, in `geoms` order
    background: tuple[float, float, float] = attrs.field(default=(0.55, 0.7, 0.9))
    ambient: float = attrs.field(default=0.35)
    max_distance_m: float = attrs.field(default=50.0)

    supported: ClassVar[tuple[str, ...]] = tuple(_PRIMITIVES.values())

    @classmethod
    def create(
        cls,
        physics_model: ksim.PhysicsModel | mujoco.MjModel,
        camera_name: str,
        *,
        height: int = 32,
        width: int = 32,
        background: tuple[float, float, float] = (0.55, 0.7, 0.9),
        ambient: float = 0.35,
        max_distance_m: float = 50.0,
        skip_meshes: bool = False,
    ) -> Self:
        """A camera for `camera_name` of `physics_model` (a MuJoCo or MJX model); `height` × `width` pixels."""
        names = model_names(physics_model, physics_model.name_camadr, physics_model.ncam)
        if camera_name not in names:
            raise ValueError(f"no camera {camera_name!r} in the model; it has {names or 'none'}")
        if height < 1 or width < 1:
            raise ValueError(f"a camera image needs height and width >= 1 pixel, got {height} × {width}")
        if not 0.0 <= ambient <= 1.0 or not max_distance_m > 0:
            raise ValueError(f"need 0 <= ambient <= 1 and max_distance_m > 0, got {ambient}, {max_distance_m}")
        if len(background) != 3 or not all(0.0 <= c <= 1.0 for c in background):
            raise ValueError(f"background must be 3 values in [0, 1], got {background!r}")
        by_type: dict[str, list[int]] = {name: [] for name in _PRIMITIVES.values()}
        meshes, geom_names = [], model_names(physics_model, physics_model.name_geomadr, physics_model.ngeom)
        for geom in range(physics_model.ngeom):
            if _visible_rgba(physics_model, geom)[3] <= 0:
                continue
            kind = _PRIMITIVES.get(int(np.asarray(physics_model.geom_type)[geom]))
            if kind is None:
                meshes.append(geom_names[geom] or f"geom {geom}")
            else:
                by_type[kind].append(geom)
        if meshes and not skip_meshes:
            shown = ", ".join(meshes[:5]) + (f" and {len(meshes) - 5} more" if len(meshes) > 5 else "")
            raise ValueError(
                f"{len(meshes)} visible geoms are meshes or other types RayCastCamera does not cast ({shown}); "
                f"it casts {', '.join(cls.supported)}: pass skip_meshes=True to leave them out of the image"
            )
        geoms = tuple((kind, tuple(ids)) for kind, ids in by_type.items() if ids)
        order = [g for _, ids in geoms for g in ids]
        return cls(
            camera_id=names.index(camera_name),
            height=int(height),
            width=int(width),
            fovy_deg=float(np.asarray(physics_model.cam_fovy)[names.index(camera_name)]),
            geoms=geoms,
            sizes=tuple(tuple(float(s) for s in np.asarray(physics_model.geom_size)[g]) for g in order),
            colors=tuple(tuple(float(c) for c in _visible_rgba(physics_model, g)[:3]) for g in order),
            background=tuple(float(c) for c in background),
            ambient=float(ambient),
            max_distance_m=float(max_distance_m),
        )

    def render(self, geom_xpos: Array, geom_xmat: Array, cam_xpos: Array, cam_xmat: Array) -> Array:
        """The image, (height, width, 3) float32 in [0, 1], for given world poses.

        Positions (n, 3, m) and rotation matrices (n, 3, 3) of the geoms and cameras: MuJoCo's `geom_xpos`,
        `geom_xmat`, `cam_xpos` and `cam_xmat`.
        """
        return self._cast(geom_xpos, geom_xmat, cam_xpos, cam_xmat)[0]

    def render_depth(self, geom_xpos: Array, geom_xmat: Array, cam_xpos: Array, cam_xmat: Array) -> tuple[Array, Array]:
        """Per pixel, the distance along the ray to the nearest hit (m; inf for none) and the geom id hit (−1: none)."""
        _, dist, geom = self._cast(geom_xpos, geom_xmat, cam_xpos, cam_xmat)
        return dist, geom

    def _cast(self, geom_xpos: Array, geom_xmat: Array, cam_xpos: Array, cam_xmat: Array) -> tuple[Array, Array, Array]:
        origin = jnp.asarray(cam_xpos)[self.camera_id]
        dirs = jnp.asarray(pixel_directions(self.height, self.width, self.fovy_deg), jnp.float32)
        dirs = dirs @ jnp.asarray(cam_xmat)[self.camera_id].T  # camera frame → world, (P, 3)
        ts, normals, ids = [], [], []
        start = 0
        for kind, geom_ids in self.geoms:
            idx = np.asarray(geom_ids)
            rot = jnp.asarray(geom_xmat)[idx]  # (G, 3, 3)
            p = jnp.einsum("gji,gj->gi", rot, origin - jnp.asarray(geom_xpos)[idx])[:, None, :]  # (G, 1, 3) local
            v = jnp.einsum("gji,pj->gpi", rot, dirs)  # (G, P, 3) local
            size = jnp.asarray(self.sizes[start : start + len(idx)], jnp.float32)[:, None, :]
            t, n_local = _INTERSECT[kind](size, jnp.broadcast_to(p, v.shape), v)
            ts.append(t)
            normals.append(jnp.einsum("gij,gpj->gpi", rot, n_local))
            ids.append(np.broadcast_to(idx[:, None], t.shape))
            start += len(idx)
        num_pixels = self.height * self.width
        if not ts:
            t_all = jnp.full((1, num_pixels), _MISS)
            n_all = jnp.zeros((1, num_pixels, 3))
            colors = jnp.zeros((1, 3))
            id_all = np.full((1, num_pixels), -1)
        else:
            t_all, n_all = jnp.concatenate(ts), jnp.concatenate(normals)
            colors = jnp.asarray(self.colors, jnp.float32)
            id_all = np.concatenate(ids)
        best = jnp.argmin(t_all, axis=0)
        dist = jnp.take_along_axis(t_all, best[None], axis=0)[0]
        hit = dist <= self.max_distance_m
        normal = jnp.take_along_axis(n_all, best[None, :, None], axis=0)[0]
        normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
        shade = self.ambient + (1.0 - self.ambient) * jnp.abs(jnp.sum(normal * dirs, -1))
        rgb = jnp.where(hit[:, None], colors[best] * shade[:, None], jnp.asarray(self.background, jnp.float32))
        geom = jnp.where(hit, jnp.asarray(id_all)[best, jnp.arange(num_pixels)], -1)
        image = jnp.clip(rgb, 0.0, 1.0).reshape(self.height, self.width, 3).astype(jnp.float32)
        shape = (self.height, self.width)
        return image, jnp.where(hit, dist, _MISS).reshape(shape), geom.reshape(shape)

    def observe(self, state: ksim.ObservationInput, curriculum_level: Array, rng: PRNGKeyArray) -> Array:
        data = state.physics_state.data
        return self.render(data.geom_xpos, data.geom_xmat, data.cam_xpos, data.cam_xmat)
