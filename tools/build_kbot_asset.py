"""Generate the project's own K-Bot model, ``assets/kbot/``, from K-Scale's reference K-Bot.

The reference (K-Scale's ``kbot-headless``: ``robot.mjcf``, ``metadata.json``, ``meshes/``; MIT licensed,
copyright K-Scale Labs) is *reference data*: none of its files is copied into this project. This script loads
it with MuJoCo, reads the **compiled** numbers (kinematic tree, inertias, joints, actuators, foot collision
capsules, sites, sensors, cameras) and writes them, with full float precision, into an MJCF of our own layout:

* ``assets/kbot/kbot.mjcf``: same bodies, joints, motors, foot collision geoms, sites and sensors as the
  reference, so the compiled model is physically identical; the STL meshes are replaced by primitive visual
  geoms (capsules along the links, cylinders for the actuators, boxes for the torso and hands) that have no
  mass (every body carries an explicit ``<inertial>`` and the compiler is told never to infer inertia from
  geoms) and never collide (``contype=0 conaffinity=0``).
* ``assets/kbot/metadata.json``: per-joint KOS ids, gains and limits plus per-actuator-type data in kscale's
  ``RobotURDFMetadataOutput`` schema, joints in MJCF order.

Usage::

    python tools/build_kbot_asset.py [--reference DIR] [--out DIR]

``--reference`` defaults to ``$KBOT_REFERENCE_DIR`` or ``<repo>/../shared/robots/kbot-headless``.
After writing, the script compiles both models and checks that the physics-relevant arrays agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import mujoco
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "assets" / "kbot"
MODEL_NAME = "kbot"

# Sensors attached to a site through ``site=...``; all other supported sensors are frame sensors
# (``objtype=... objname=...``).
SITE_SENSORS: dict[int, str] = {
    mujoco.mjtSensor.mjSENS_TOUCH: "touch",
    mujoco.mjtSensor.mjSENS_ACCELEROMETER: "accelerometer",
    mujoco.mjtSensor.mjSENS_VELOCIMETER: "velocimeter",
    mujoco.mjtSensor.mjSENS_GYRO: "gyro",
    mujoco.mjtSensor.mjSENS_FORCE: "force",
    mujoco.mjtSensor.mjSENS_TORQUE: "torque",
    mujoco.mjtSensor.mjSENS_MAGNETOMETER: "magnetometer",
}
FRAME_SENSORS: dict[int, str] = {
    mujoco.mjtSensor.mjSENS_FRAMEPOS: "framepos",
    mujoco.mjtSensor.mjSENS_FRAMEQUAT: "framequat",
    mujoco.mjtSensor.mjSENS_FRAMEXAXIS: "framexaxis",
    mujoco.mjtSensor.mjSENS_FRAMEYAXIS: "frameyaxis",
    mujoco.mjtSensor.mjSENS_FRAMEZAXIS: "framezaxis",
    mujoco.mjtSensor.mjSENS_FRAMELINVEL: "framelinvel",
    mujoco.mjtSensor.mjSENS_FRAMEANGVEL: "frameangvel",
    mujoco.mjtSensor.mjSENS_FRAMELINACC: "framelinacc",
    mujoco.mjtSensor.mjSENS_FRAMEANGACC: "frameangacc",
}
SITE_TYPES = {
    mujoco.mjtGeom.mjGEOM_SPHERE: "sphere",
    mujoco.mjtGeom.mjGEOM_CAPSULE: "capsule",
    mujoco.mjtGeom.mjGEOM_ELLIPSOID: "ellipsoid",
    mujoco.mjtGeom.mjGEOM_CYLINDER: "cylinder",
    mujoco.mjtGeom.mjGEOM_BOX: "box",
}
CAMERA_MODES = {
    mujoco.mjtCamLight.mjCAMLIGHT_FIXED: "fixed",
    mujoco.mjtCamLight.mjCAMLIGHT_TRACK: "track",
    mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM: "trackcom",
}

# Look of the primitive visuals: (rgba) per material, and actuator housing size (radius, half-length) per type.
MATERIALS: dict[str, str] = {
    "kbot_shell": "0.36 0.37 0.4 1",
    "kbot_dark": "0.12 0.12 0.13 1",
    "kbot_motor": "0.03 0.03 0.035 1",
    "kbot_accent": "0.93 0.45 0.12 1",
    "kbot_sensor": "0.1 0.6 0.3 1",
    "kbot_collision": "1 0.28 0.1 0.5",
}
MOTOR_SIZE: dict[str, tuple[float, float]] = {
    "robstride_04": (0.052, 0.028),
    "robstride_03": (0.046, 0.024),
    "robstride_02": (0.037, 0.02),
    "robstride_00": (0.031, 0.017),
}


def default_reference_dir() -> Path:
    """Reference location: ``$KBOT_REFERENCE_DIR`` or ``<repo>/../shared/robots/kbot-headless``."""
    env = os.environ.get("KBOT_REFERENCE_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "robots" / "kbot-headless"


def fmt(values: float | Iterable[float]) -> str:
    """Format numbers with full float precision (shortest repr that round-trips exactly)."""
    if isinstance(values, int | float | np.floating | np.integer):
        return repr(float(values))
    return " ".join(repr(float(v)) for v in values)


def short(values: Iterable[float], digits: int = 5) -> str:
    """Format numbers for purely visual attributes, where precision does not matter."""
    return " ".join(f"{float(v) + 0.0:.{digits}g}" for v in values)  # + 0.0 turns -0.0 into 0.0


def sub(parent: ET.Element, tag: str, **attrib: str) -> ET.Element:
    """Append a child element, dropping attributes whose value is empty."""
    return ET.SubElement(parent, tag, {k: v for k, v in attrib.items() if v != ""})


def pose(pos: np.ndarray, quat: np.ndarray) -> dict[str, str]:
    """Pos/quat attributes, omitted where they equal the MJCF defaults exactly."""
    out: dict[str, str] = {}
    if np.any(pos != 0):
        out["pos"] = fmt(pos)
    if np.any(quat != np.array([1.0, 0.0, 0.0, 0.0])):
        out["quat"] = fmt(quat)
    return out


def unique_row(rows: np.ndarray, what: str) -> np.ndarray:
    """Return the single distinct row of ``rows``; raise if they disagree (a class default must fit all)."""
    if not np.all(rows == rows[0]):
        raise ValueError(f"{what}: values differ across members of one class: {rows}")
    return rows[0]


def equivalent_box(mass: float, inertia: np.ndarray) -> np.ndarray:
    """Half-sizes of the uniform box with the given mass and principal inertia (for visuals only)."""
    ix, iy, iz = inertia
    sq = np.array([iy + iz - ix, ix + iz - iy, ix + iy - iz]) * 3.0 / (2.0 * mass)
    return np.sqrt(np.clip(sq, 1e-6, None))


class Builder:
    """Turns a compiled reference ``MjModel`` plus its metadata into our MJCF and metadata files."""

    def __init__(self, ref: mujoco.MjModel, ref_meta: dict) -> None:
        self.m = ref
        self.meta = ref_meta["joint_name_to_metadata"]
        self.ref_meta = ref_meta
        self.hinges = [j for j in range(ref.njnt) if ref.jnt_type[j] != mujoco.mjtJoint.mjJNT_FREE]
        self.jnt_class = {j: self.meta[ref.joint(j).name]["actuator_type"] for j in self.hinges}
        self.classes = sorted(set(self.jnt_class.values()))
        self.children: dict[int, list[int]] = {b: [] for b in range(ref.nbody)}
        for b in range(1, ref.nbody):
            self.children[int(ref.body_parentid[b])].append(b)
        self.collision = [g for g in range(ref.ngeom) if ref.geom_contype[g] != 0 or ref.geom_conaffinity[g] != 0]
        self.foot_bodies = {int(ref.geom_bodyid[g]) for g in self.collision}
        self._check_supported()

    # ------------------------------------------------------------------ checks on the reference
    def _check_supported(self) -> None:
        m = self.m
        for name, n in [("ntendon", m.ntendon), ("neq", m.neq), ("nkey", m.nkey), ("nlight", m.nlight)]:
            if n:
                raise NotImplementedError(f"reference has {name}={n}; extend the builder")
        if np.any(m.qpos0[7:] != 0) or np.any(m.jnt_pos != 0):
            raise NotImplementedError("joint ref / joint pos offsets are not supported")
        if np.any(m.jnt_stiffness != 0) or np.any(m.dof_damping != 0):
            raise NotImplementedError("joint stiffness / damping are not supported")
        for j in range(m.njnt):
            for field, default in [("jnt_solref", [0.02, 1.0]), ("jnt_solimp", [0.9, 0.95, 0.001, 0.5, 2.0])]:
                if not np.allclose(getattr(m, field)[j], default, rtol=0, atol=0):
                    raise NotImplementedError(f"non-default {field} on joint {m.joint(j).name}")
        for a in range(m.nu):
            if (
                m.actuator_trntype[a] != mujoco.mjtTrn.mjTRN_JOINT
                or m.actuator_dyntype[a] != mujoco.mjtDyn.mjDYN_NONE
                or m.actuator_gaintype[a] != mujoco.mjtGain.mjGAIN_FIXED
                or m.actuator_biastype[a] != mujoco.mjtBias.mjBIAS_NONE
                or m.actuator_gainprm[a, 0] != 1.0
                or m.actuator_forcelimited[a]
                or np.any(m.actuator_gear[a, 1:] != 0)
            ):
                raise NotImplementedError(f"actuator {m.actuator(a).name} is not a plain joint motor")
        if set(self.meta) != {m.joint(j).name for j in self.hinges}:
            raise ValueError("reference metadata.json and robot.mjcf disagree on the joint names")

    # ------------------------------------------------------------------ MJCF
    def mjcf(self) -> ET.Element:
        root = ET.Element("mujoco", {"model": MODEL_NAME})
        root.append(ET.Comment(" Generated by tools/build_kbot_asset.py from K-Scale's kbot-headless; do not edit. "))
        # inertiafromgeom="false": geoms never contribute mass; every body below has an explicit <inertial>.
        sub(root, "compiler", angle="radian", autolimits="true", inertiafromgeom="false")
        self._option(root)
        visual = sub(root, "visual")
        sub(visual, "global", offwidth="640", offheight="480")
        self._defaults(root)
        asset = sub(root, "asset")
        for name, rgba in MATERIALS.items():
            sub(asset, "material", name=name, rgba=rgba, specular="0.3", shininess="0.3")
        worldbody = sub(root, "worldbody")
        for b in self.children[0]:
            self._body(worldbody, b)
        self._actuators(root)
        self._sensors(root)
        ET.indent(root, space="  ")
        return root

    def _option(self, root: ET.Element) -> None:
        """Write <option> attributes only where the reference differs from MuJoCo's defaults."""
        default = mujoco.MjModel.from_xml_string("<mujoco/>").opt
        attrs: dict[str, str] = {}
        for field in ["timestep", "gravity", "magnetic", "tolerance", "impratio", "density", "viscosity"]:
            ours, theirs = np.atleast_1d(getattr(self.m.opt, field)), np.atleast_1d(getattr(default, field))
            if np.any(ours != theirs):
                attrs[field] = fmt(ours)
        for field in ["integrator", "cone", "solver", "iterations", "ls_iterations", "jacobian", "noslip_iterations"]:
            if getattr(self.m.opt, field) != getattr(default, field):
                raise NotImplementedError(f"non-default option {field}; extend the builder")
        if self.m.opt.disableflags or self.m.opt.enableflags:
            raise NotImplementedError("option flags are not supported")
        if attrs:
            sub(root, "option", **attrs)

    def _defaults(self, root: ET.Element) -> None:
        m = self.m
        default = sub(root, "default")
        for cls in self.classes:
            joints = [j for j in self.hinges if self.jnt_class[j] == cls]
            dofs = [int(m.jnt_dofadr[j]) for j in joints]
            acts = [a for a in range(m.nu) if m.actuator_trnid[a, 0] in joints]
            d = sub(default, "default", **{"class": cls})
            sub(
                d,
                "joint",
                armature=fmt(unique_row(m.dof_armature[dofs, None], f"{cls} armature")),
                frictionloss=fmt(unique_row(m.dof_frictionloss[dofs, None], f"{cls} frictionloss")),
                actuatorfrcrange=fmt(unique_row(m.jnt_actfrcrange[joints], f"{cls} actuatorfrcrange")),
            )
            sub(d, "motor", ctrlrange=fmt(unique_row(m.actuator_ctrlrange[acts], f"{cls} ctrlrange")))
        d = sub(default, "default", **{"class": "visual"})
        sub(d, "geom", contype="0", conaffinity="0", group="2", material="kbot_shell")
        col = self.collision
        d = sub(default, "default", **{"class": "collision"})
        sub(
            d,
            "geom",
            type="capsule",
            contype=str(int(unique_row(m.geom_contype[col, None], "contype")[0])),
            conaffinity=str(int(unique_row(m.geom_conaffinity[col, None], "conaffinity")[0])),
            condim=str(int(unique_row(m.geom_condim[col, None], "condim")[0])),
            priority=str(int(unique_row(m.geom_priority[col, None], "priority")[0])),
            group=str(int(unique_row(m.geom_group[col, None], "group")[0])),
            friction=fmt(unique_row(m.geom_friction[col], "friction")),
            solref=fmt(unique_row(m.geom_solref[col], "solref")),
            solimp=fmt(unique_row(m.geom_solimp[col], "solimp")),
            solmix=fmt(unique_row(m.geom_solmix[col, None], "solmix")),
            margin=fmt(unique_row(m.geom_margin[col, None], "margin")),
            gap=fmt(unique_row(m.geom_gap[col, None], "gap")),
            material="kbot_collision",
        )
        for g in col:
            if m.geom_type[g] != mujoco.mjtGeom.mjGEOM_CAPSULE:
                raise NotImplementedError(f"collision geom {m.geom(g).name} is not a capsule")

    def _body(self, parent: ET.Element, b: int) -> None:
        m = self.m
        body = sub(parent, "body", name=m.body(b).name, **pose(m.body_pos[b], m.body_quat[b]))
        sub(
            body,
            "inertial",
            pos=fmt(m.body_ipos[b]),
            quat=fmt(m.body_iquat[b]),
            mass=fmt(m.body_mass[b]),
            diaginertia=fmt(m.body_inertia[b]),
        )
        for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
            if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                sub(body, "freejoint", name=m.joint(j).name)
                continue
            if m.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                raise NotImplementedError("only free and hinge joints are supported")
            if not (m.jnt_limited[j] and m.jnt_actfrclimited[j]):
                raise NotImplementedError(f"joint {m.joint(j).name} must be limited")
            sub(
                body,
                "joint",
                name=m.joint(j).name,
                **{"class": self.jnt_class[j]},
                axis=fmt(m.jnt_axis[j]),
                range=fmt(m.jnt_range[j]),
            )
        self._visuals(body, b)
        for g in self.collision:
            if m.geom_bodyid[g] == b:
                sub(
                    body,
                    "geom",
                    name=m.geom(g).name,
                    **{"class": "collision"},
                    size=fmt(m.geom_size[g, :2]),
                    **pose(m.geom_pos[g], m.geom_quat[g]),
                )
        for s in range(m.nsite):
            if m.site_bodyid[s] == b:
                sub(
                    body,
                    "site",
                    name=m.site(s).name,
                    type=SITE_TYPES[m.site_type[s]],
                    size=fmt(m.site_size[s]),
                    **pose(m.site_pos[s], m.site_quat[s]),
                )
        for c in range(m.ncam):
            if m.cam_bodyid[c] == b:
                sub(
                    body,
                    "camera",
                    name=m.camera(c).name,
                    mode=CAMERA_MODES[m.cam_mode[c]],
                    fovy=fmt(m.cam_fovy[c]),
                    **pose(m.cam_pos[c], m.cam_quat[c]),
                )
        for child in self.children[b]:
            self._body(body, child)

    def _visuals(self, body: ET.Element, b: int) -> None:
        """Primitive, massless, non-colliding visual geoms standing in for the reference's STL meshes."""
        m = self.m
        name = m.body(b).name
        mass = float(m.body_mass[b])
        joints = [j for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]) if j in self.jnt_class]
        for j in joints:  # actuator housing: a cylinder along the joint axis at the joint
            radius, half = MOTOR_SIZE.get(self.jnt_class[j], (0.03, 0.02))
            axis = m.jnt_axis[j] * half
            sub(
                body,
                "geom",
                name=f"{name}_motor_visual",
                **{"class": "visual"},
                type="cylinder",
                size=short([radius]),
                fromto=short(np.concatenate([-axis, axis])),
                material="kbot_motor",
            )
        if b in self.foot_bodies:  # feet: copies of the collision capsules, 2 mm fatter to avoid z-fighting
            for i, g in enumerate(g for g in self.collision if m.geom_bodyid[g] == b):
                sub(
                    body,
                    "geom",
                    name=f"{name}_sole_visual_{i}",
                    **{"class": "visual"},
                    type="capsule",
                    size=short(m.geom_size[g, :2] + [0.002, 0.0]),
                    pos=short(m.geom_pos[g]),
                    quat=short(m.geom_quat[g]),
                    material="kbot_accent",
                )
            return
        children = self.children[b]
        if m.body_jntnum[b] and m.jnt_type[m.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE:
            # floating base: a small marker sphere at the origin (the torso child carries the visible shell)
            sub(body, "geom", name=f"{name}_visual", **{"class": "visual"}, type="sphere", size="0.01")
            return
        if len(children) > 2 or not children:
            # torso, hands, IMU: the uniform box with this body's mass and inertia, around the COM
            half = equivalent_box(mass, m.body_inertia[b])
            is_imu = mass < 0.05
            sub(
                body,
                "geom",
                name=f"{name}_visual",
                **{"class": "visual"},
                type="box",
                size=short(np.maximum(half, 0.008)),
                pos=short(m.body_ipos[b]),
                quat=short(m.body_iquat[b]),
                material="kbot_sensor" if is_imu else ("kbot_dark" if len(children) > 2 else "kbot_shell"),
            )
            return
        # limb links: a capsule from the joint to each child joint, thickness growing with the link's mass
        radius = min(max(0.018 + 0.011 * mass, 0.02), 0.045)
        for child in children:
            end = m.body_pos[child]
            if np.linalg.norm(end) < 1e-6:
                continue
            sub(
                body,
                "geom",
                name=f"{m.body(child).name}_link_visual",
                **{"class": "visual"},
                type="capsule",
                size=short([radius]),
                fromto=short(np.concatenate([np.zeros(3), end])),
            )

    def _actuators(self, root: ET.Element) -> None:
        m = self.m
        actuator = sub(root, "actuator")
        for a in range(m.nu):
            j = int(m.actuator_trnid[a, 0])
            attrs = {"name": m.actuator(a).name, "joint": m.joint(j).name, "class": self.jnt_class[j]}
            if m.actuator_gear[a, 0] != 1.0:
                attrs["gear"] = fmt(m.actuator_gear[a, 0])
            if not m.actuator_ctrllimited[a]:
                raise NotImplementedError("unlimited ctrl is not supported")
            sub(actuator, "motor", **attrs)

    def _sensors(self, root: ET.Element) -> None:
        m = self.m
        sensor = sub(root, "sensor")
        for s in range(m.nsensor):
            typ, objtype, objid = int(m.sensor_type[s]), int(m.sensor_objtype[s]), int(m.sensor_objid[s])
            if m.sensor_reftype[s] != mujoco.mjtObj.mjOBJ_UNKNOWN or m.sensor_cutoff[s] != 0:
                raise NotImplementedError("sensor reference frames / cutoffs are not supported")
            if objtype != mujoco.mjtObj.mjOBJ_SITE:
                raise NotImplementedError("only site-attached sensors are supported")
            site = m.site(objid).name
            noise = fmt(m.sensor_noise[s]) if m.sensor_noise[s] else ""
            if typ in SITE_SENSORS:
                sub(sensor, SITE_SENSORS[typ], name=m.sensor(s).name, site=site, noise=noise)
            elif typ in FRAME_SENSORS:
                sub(sensor, FRAME_SENSORS[typ], name=m.sensor(s).name, objtype="site", objname=site, noise=noise)
            else:
                raise NotImplementedError(f"sensor type {mujoco.mjtSensor(typ).name} is not supported")

    # ------------------------------------------------------------------ metadata
    def metadata(self) -> dict:
        """Joint metadata in MJCF (= actuator/ctrl) order; ``nn_id`` is the index into the ctrl vector."""
        m = self.m
        joints: dict[str, dict] = {}
        for a in range(m.nu):
            name = m.joint(int(m.actuator_trnid[a, 0])).name
            src = self.meta[name]
            joints[name] = {
                "id": int(src["id"]),
                "kp": src["kp"],
                "kd": src["kd"],
                "armature": None,
                "friction": None,
                "offset": None,
                "flipped": None,
                "actuator_type": src["actuator_type"],
                "nn_id": a,
                "soft_torque_limit": src["soft_torque_limit"],
                "min_angle_deg": src["min_angle_deg"],
                "max_angle_deg": src["max_angle_deg"],
            }
        types = self.ref_meta["actuator_type_to_metadata"]
        return {
            "joint_name_to_metadata": joints,
            "actuator_type_to_metadata": {k: types[k] for k in sorted(types)},
            "control_frequency": self.ref_meta["control_frequency"],
        }


# ---------------------------------------------------------------------- verification
def compare_models(ours: mujoco.MjModel, ref: mujoco.MjModel) -> list[str]:
    """Physics-relevant compiled arrays that differ between the two models (empty list: identical)."""
    problems: list[str] = []

    def names(model: mujoco.MjModel, obj: mujoco.mjtObj, n: int) -> list[str]:
        return [mujoco.mj_id2name(model, obj, i) or "" for i in range(n)]

    for obj, n in [
        (mujoco.mjtObj.mjOBJ_BODY, "nbody"),
        (mujoco.mjtObj.mjOBJ_JOINT, "njnt"),
        (mujoco.mjtObj.mjOBJ_ACTUATOR, "nu"),
        (mujoco.mjtObj.mjOBJ_SITE, "nsite"),
        (mujoco.mjtObj.mjOBJ_SENSOR, "nsensor"),
        (mujoco.mjtObj.mjOBJ_CAMERA, "ncam"),
    ]:
        if names(ours, obj, getattr(ours, n)) != names(ref, obj, getattr(ref, n)):
            problems.append(f"{n}: names/order differ")
    if problems:
        return problems
    fields = [
        "body_parentid", "body_pos", "body_quat", "body_ipos", "body_iquat", "body_mass", "body_inertia",
        "body_jntnum", "body_dofnum", "body_invweight0",
        "jnt_type", "jnt_axis", "jnt_range", "jnt_limited", "jnt_actfrclimited", "jnt_actfrcrange", "jnt_pos",
        "jnt_solref", "jnt_solimp", "jnt_margin", "jnt_stiffness", "qpos0",
        "dof_armature", "dof_frictionloss", "dof_damping", "dof_invweight0",
        "actuator_trnid", "actuator_gear", "actuator_ctrlrange", "actuator_ctrllimited", "actuator_forcerange",
        "actuator_gainprm", "actuator_biasprm",
        "site_bodyid", "site_type", "site_size", "site_pos", "site_quat",
        "sensor_type", "sensor_objtype", "sensor_objid", "sensor_dim", "sensor_noise",
        "cam_bodyid", "cam_pos", "cam_quat", "cam_fovy", "cam_mode",
    ]  # fmt: skip
    for field in fields:
        a, b = getattr(ours, field), getattr(ref, field)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-12, atol=1e-15):
            problems.append(field)
    col_ours = [g for g in range(ours.ngeom) if ours.geom_contype[g] or ours.geom_conaffinity[g]]
    col_ref = [g for g in range(ref.ngeom) if ref.geom_contype[g] or ref.geom_conaffinity[g]]
    if [ours.geom(g).name for g in col_ours] != [ref.geom(g).name for g in col_ref]:
        problems.append("collision geoms: names/order differ")
    else:
        for field in [
            "geom_type", "geom_bodyid", "geom_size", "geom_pos", "geom_quat", "geom_friction", "geom_solref",
            "geom_solimp", "geom_solmix", "geom_margin", "geom_gap", "geom_condim", "geom_priority",
            "geom_contype", "geom_conaffinity",
        ]:  # fmt: skip
            a, b = getattr(ours, field)[col_ours], getattr(ref, field)[col_ref]
            if not np.allclose(a, b, rtol=1e-12, atol=1e-15):
                problems.append(field)
    return problems


def build(reference: Path, out: Path) -> tuple[Path, Path]:
    """Write ``kbot.mjcf`` and ``metadata.json`` into ``out`` and verify the model against ``reference``."""
    ref = mujoco.MjModel.from_xml_path(str(reference / "robot.mjcf"))
    ref_meta = json.loads((reference / "metadata.json").read_text())
    builder = Builder(ref, ref_meta)
    out.mkdir(parents=True, exist_ok=True)
    mjcf_path, meta_path = out / "kbot.mjcf", out / "metadata.json"
    ET.ElementTree(builder.mjcf()).write(mjcf_path, encoding="unicode", xml_declaration=False)
    with mjcf_path.open("a") as f:
        f.write("\n")
    meta_path.write_text(json.dumps(builder.metadata(), indent=2) + "\n")

    ours = mujoco.MjModel.from_xml_path(str(mjcf_path))
    problems = compare_models(ours, ref)
    if problems:
        raise SystemExit(f"generated model differs from the reference in: {', '.join(problems)}")
    if not math.isclose(ours.body_mass.sum(), ref.body_mass.sum(), rel_tol=1e-12):
        raise SystemExit("total mass differs from the reference")
    return mjcf_path, meta_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=default_reference_dir(), help="kbot-headless directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    if not (args.reference / "robot.mjcf").is_file():
        print(f"reference robot.mjcf not found under {args.reference}", file=sys.stderr)
        return 1
    mjcf_path, meta_path = build(args.reference, args.out)
    model = mujoco.MjModel.from_xml_path(str(mjcf_path))
    print(f"wrote {mjcf_path} ({model.nbody - 1} bodies, {model.nu} motors, {model.body_mass.sum():.6f} kg)")
    print(f"wrote {meta_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
