"""The K-Bot: where its model lives, how to load it (offline by default), and its nominal pose.

The project ships its own K-Bot (`assets/kbot/kbot.mjcf` + `metadata.json`), physically identical to K-Scale's
kbot-headless (see `assets/kbot/README.md`). A `robot_source` string selects the model:

- ``"local"`` (default): the project's asset, no network;
- a directory path: any directory holding one ``*.mjcf`` (or ``robot.mjcf``) and ``metadata.json``;
- ``"kscale:<name>"``: the official model through the K-Scale API (needs network and, for private models, an API key).
"""

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path

import ksim
import mujoco
import mujoco_scenes.mjcf
from kscale.web.gen.api import RobotURDFMetadataOutput

__all__ = [
    "KBOT_FOOT_BODIES",
    "KBOT_FOOT_COLLISION_GEOMS",
    "KBOT_NOMINAL_POSE_RAD",
    "KBOT_STANDING_BASE_HEIGHT_M",
    "RobotFiles",
    "RobotLoadError",
    "kbot_asset_dir",
    "load_metadata",
    "load_robot_model",
    "resolve_robot_files",
]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # ksim_entropy/

# Nominal standing pose (rad), by joint name: slightly bent knees, elbows at 90°. The same pose K-Scale's K-Bot
# walking examples use as joint biases (kscalelabs/ksim examples/kbot, kbot-joystick). Joints not listed are 0.
KBOT_NOMINAL_POSE_RAD: dict[str, float] = {
    "dof_left_hip_pitch_04": math.radians(20.0),
    "dof_left_knee_04": math.radians(50.0),
    "dof_left_ankle_02": math.radians(-30.0),
    "dof_right_hip_pitch_04": math.radians(-20.0),
    "dof_right_knee_04": math.radians(-50.0),
    "dof_right_ankle_02": math.radians(30.0),
    "dof_right_shoulder_roll_03": math.radians(-10.0),
    "dof_right_elbow_02": math.radians(90.0),
    "dof_left_shoulder_roll_03": math.radians(10.0),
    "dof_left_elbow_02": math.radians(-90.0),
}


# Height (m) of the floating base above a flat floor when the K-Bot stands in the nominal pose: MuJoCo settles it at
# 0.70 m within 0.3 s of a drop, before the unbalanced pose tips over (tests/test_robot.py checks it against MuJoCo).
KBOT_STANDING_BASE_HEIGHT_M = 0.70

# The K-Bot's feet: bodies, and the two collision capsules under each (the only geoms that touch the floor).
KBOT_FOOT_BODIES: tuple[str, str] = ("LFootBushing_GPF_1517_12", "RFootBushing_GPF_1517_12")
KBOT_FOOT_COLLISION_GEOMS: dict[str, tuple[str, str]] = {
    foot: (f"{foot}_collision_capsule_0", f"{foot}_collision_capsule_1") for foot in KBOT_FOOT_BODIES
}


class RobotLoadError(ValueError):
    """A robot model or its metadata is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class RobotFiles:
    """Resolved paths of one robot description."""

    mjcf: Path
    metadata: Path


def kbot_asset_dir() -> Path:
    """Directory of the project's K-Bot asset: the checkout's `assets/kbot`, else the copy packed into the wheel."""
    for candidate in (_PACKAGE_DIR.parent / "assets" / "kbot", _PACKAGE_DIR / "_assets" / "kbot"):
        if candidate.is_dir():
            return candidate
    raise RobotLoadError(f"K-Bot asset directory not found (looked in {_PACKAGE_DIR.parent / 'assets' / 'kbot'})")


def _files_in_directory(directory: Path) -> RobotFiles:
    if not directory.is_dir():
        raise RobotLoadError(f"Robot directory does not exist: {directory}")
    mjcfs = sorted(directory.glob("*.mjcf")) + sorted(directory.glob("*.xml"))
    if not mjcfs:
        raise RobotLoadError(f"No *.mjcf or *.xml robot model in {directory}")
    preferred = [p for p in mjcfs if p.stem in ("kbot", "robot")]
    mjcf = preferred[0] if preferred else mjcfs[0]
    metadata = directory / "metadata.json"
    if not metadata.is_file():
        raise RobotLoadError(f"Missing metadata.json next to {mjcf}")
    return RobotFiles(mjcf=mjcf, metadata=metadata)


def _download_from_kscale(name: str) -> RobotFiles:
    async def fetch() -> Path:
        return Path(await ksim.get_mujoco_model_path(name, name="robot"))

    try:
        mjcf = asyncio.run(fetch())
    except Exception as err:  # network, auth and API errors all end here
        raise RobotLoadError(f"Could not fetch robot '{name}' from the K-Scale API: {err}") from err
    files = _files_in_directory(mjcf.parent)
    return RobotFiles(mjcf=mjcf, metadata=files.metadata)


def resolve_robot_files(robot_source: str = "local") -> RobotFiles:
    """Map a `robot_source` config value to the MJCF and metadata files it names."""
    if robot_source == "local":
        return _files_in_directory(kbot_asset_dir())
    if robot_source.startswith("kscale:"):
        name = robot_source.removeprefix("kscale:")
        if not name:
            raise RobotLoadError("robot_source 'kscale:' needs a model name, e.g. 'kscale:kbot-headless'")
        return _download_from_kscale(name)
    path = Path(robot_source).expanduser().resolve()
    if path.exists():
        return _files_in_directory(path)
    raise RobotLoadError(
        f"Unknown robot_source '{robot_source}': use 'local', an existing directory, or 'kscale:<model name>'"
    )


def load_robot_model(files: RobotFiles, scene: str | None = "smooth") -> mujoco.MjModel:
    """Compile the robot MJCF, placed in a mujoco-scenes `scene` (which adds the floor), or bare if `scene` is None."""
    if not files.mjcf.is_file():
        raise RobotLoadError(f"Robot model file not found: {files.mjcf}")
    if scene is not None and scene not in mujoco_scenes.mjcf.list_scenes():
        raise RobotLoadError(f"Unknown scene '{scene}'; available: {sorted(mujoco_scenes.mjcf.list_scenes())}")
    try:
        if scene is None:
            return mujoco.MjModel.from_xml_path(str(files.mjcf))
        return mujoco_scenes.mjcf.load_mjmodel(files.mjcf, scene=scene)
    except Exception as err:  # mujoco.FatalError / ValueError / XML ParseError
        raise RobotLoadError(f"Malformed robot model {files.mjcf}: {err}") from err


def load_metadata(files: RobotFiles, mj_model: mujoco.MjModel | None = None) -> ksim.Metadata:
    """Parse `metadata.json` (kscale's RobotURDFMetadataOutput schema) and check it against the model's joints.

    Every actuated joint must have kp, kd and a soft torque limit (N·m); a model given as `mj_model` must not
    have actuated joints the metadata lacks.
    """
    try:
        text = files.metadata.read_text()
        json.loads(text)
        parsed = RobotURDFMetadataOutput.model_validate_json(text)
    except FileNotFoundError as err:
        raise RobotLoadError(f"Robot metadata file not found: {files.metadata}") from err
    except Exception as err:  # json.JSONDecodeError, pydantic.ValidationError
        raise RobotLoadError(f"Malformed robot metadata {files.metadata}: {err}") from err
    metadata = ksim.Metadata.from_kscale_metadata(parsed)
    joints = metadata.joint_name_to_metadata or {}
    if not joints:
        raise RobotLoadError(f"Robot metadata {files.metadata} has no joint_name_to_metadata")
    for name, joint in joints.items():
        missing = [f for f in ("kp", "kd", "soft_torque_limit") if getattr(joint, f) is None]
        if missing:
            raise RobotLoadError(f"Joint '{name}' in {files.metadata} lacks {', '.join(missing)}")
    if mj_model is not None:
        actuated = [mj_model.joint(mj_model.actuator_trnid[i, 0]).name for i in range(mj_model.nu)]
        unknown = sorted(set(actuated) - set(joints))
        if unknown:
            raise RobotLoadError(f"Actuated joints missing from {files.metadata}: {unknown}")
    return metadata
