"""The presets' solver settings keep K-Bot foot contacts stable under aggressive PD targets (real MuJoCo).

Few line-search iterations make the contact solve diverge (joint speeds > 1000 rad/s or NaN within ~1 s); the check
runs the presets (must stay bounded) and the old 4-line-search-iteration setting (must still diverge, so the test
can fail). Bounded peaks of ~80-130 rad/s at the light wrists are physical for random 0.5 rad targets.
"""

import mujoco
import numpy as np
import pytest

from ksim_entropy.cli.walk import build_config
from ksim_entropy.kbot.robot import KBOT_NOMINAL_POSE_RAD
from ksim_entropy.kbot.walk import PRESETS, KBotWalkingTask
from ksim_entropy.terminations import UnstablePhysicsTermination


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return KBotWalkingTask(build_config(["preset=cpu", f"exp_dir={tmp_path_factory.mktemp('run')}"]))


BLOWUP_RADPS = 1000.0


def blowup_time_s(
    task, iterations: int, ls_iterations: int, seed: int, noise_rad: float = 0.5, seconds: float = 2.0
) -> float | None:
    """Hold random PD targets (new every control step) around the standing pose; time of the first blow-up."""
    model = task.get_mujoco_model()
    model = task.set_mujoco_model_opts(model)
    model.opt.iterations = iterations
    model.opt.ls_iterations = ls_iterations
    metadata = task.get_mujoco_model_metadata(model)
    names = [model.joint(i).name for i in range(1, model.njnt)]
    joints = metadata.joint_name_to_metadata
    kp, kd, limit = (np.array([getattr(joints[n], f) for n in names]) for f in ("kp", "kd", "soft_torque_limit"))
    nominal = np.array([KBOT_NOMINAL_POSE_RAD.get(n, 0.0) for n in names])
    substeps = round(task.config.ctrl_dt / task.config.dt)
    rng = np.random.default_rng(seed)
    data = mujoco.MjData(model)
    data.qpos[7:] = nominal
    for step in range(round(seconds / model.opt.timestep)):
        if step % substeps == 0:
            target = nominal + noise_rad * rng.normal(size=len(names))
        data.ctrl[:] = np.clip(kp * (target - data.qpos[7:]) - kd * data.qvel[6:], -limit, limit)
        mujoco.mj_step(model, data)
        if not np.isfinite(data.qvel).all() or np.abs(data.qvel[6:]).max() > BLOWUP_RADPS:
            return step * model.opt.timestep
    return None


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_solver_is_stable(task, preset):
    iterations, ls_iterations = PRESETS[preset]["iterations"], PRESETS[preset]["ls_iterations"]
    assert [blowup_time_s(task, iterations, ls_iterations, seed) for seed in range(3)] == [None, None, None]


def test_few_line_search_iterations_still_diverge(task):
    times = [blowup_time_s(task, 4, 4, seed) for seed in range(3)]
    assert all(t is not None for t in times), times


def test_unstable_physics_termination():
    class Data:
        def __init__(self, qpos, qvel):
            self.qpos, self.qvel = np.asarray(qpos, dtype=float), np.asarray(qvel, dtype=float)

    term = UnstablePhysicsTermination(max_joint_velocity_radps=100.0)
    qpos, qvel = np.zeros((4, 27)), np.zeros((4, 26))
    qvel[1, 10] = 1500.0  # a joint too fast
    qpos[2, 3] = np.nan  # NaN state
    qvel[3, 2] = 500.0  # fast base only: not this termination's business
    assert term(Data(qpos, qvel), np.array(1.0)).tolist() == [0, -1, -1, 0]
    with pytest.raises(ValueError):
        UnstablePhysicsTermination(max_joint_velocity_radps=0.0)
