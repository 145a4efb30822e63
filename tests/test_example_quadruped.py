"""The plugin promise (issue 34): examples/quadruped.py, a ksim task that is not the K-Bot, adopts the mixins,
trains a few updates, checkpoints and resumes with the randomization widths and the temperature restored.

Oracles: MuJoCo itself for the robot (it compiles, stands on its feet at the nominal pose), the checkpoint's own
aux data for what was saved, and the resumed run's update count.
"""

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import mujoco
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import quadruped  # noqa: E402


def test_the_quadruped_stands_on_its_feet_in_mujoco():
    model = mujoco.MjModel.from_xml_string(quadruped.robot_xml())
    data = mujoco.MjData(model)
    names = [model.joint(j).name for j in range(1, model.njnt)]
    pose = [quadruped.NOMINAL_POSE_RAD[name.split("_")[1]] for name in names]
    data.qpos[7:] = pose
    data.ctrl[:] = pose
    for _ in range(400):  # 2 s
        mujoco.mj_step(model, data)
    assert model.nu == 8 and model.nq == 15
    assert 0.15 < data.qpos[2] < 0.3  # torso height (m): on its legs, not fallen through or flipped
    up = data.xmat[1].reshape(3, 3)[:, 2]
    assert up[2] > 0.95  # torso upright
    contacts = {model.geom(c.geom2).name for c in data.contact[: data.ncon]} | {
        model.geom(c.geom1).name for c in data.contact[: data.ncon]
    }
    assert {"fl_foot", "fr_foot", "hl_foot", "hr_foot"} <= contacts


def _train(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["max_steps=3", "num_envs=8", "batch_size=4", "hidden_size=16", f"exp_dir={run_dir}", *extra]
    return subprocess.run(
        [sys.executable, "examples/quadruped.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=1500
    )


@pytest.mark.slow
def test_trains_checkpoints_and_resumes(tmp_path):
    first = _train(tmp_path / "first")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    ckpt = tmp_path / "first" / "checkpoints" / "ckpt.bin"
    with tarfile.open(ckpt, "r:gz") as tar:
        assert "aux_data" in tar.getnames()  # the randomization widths and the temperature ride with the weights
    assert (tmp_path / "first" / "checkpoints" / "ckpt.3.bin").exists()  # ksim names checkpoints by update
    assert re.search(r"\| α \d\.\d\de-0\d \| H nat/dim -?\d", first.stdout)  # the progress line: α and entropy
    assert re.search(r"\| DR width [\d.]+ \| α ", first.stdout)  # the mean randomization width, before α

    resumed = _train(tmp_path / "second", f"load_from_ckpt_path={ckpt}", "max_steps=5")
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert (tmp_path / "second" / "checkpoints" / "ckpt.5.bin").exists()
    assert "restored entropy temperature α=" in log
    assert "has no randomization state" not in log


def test_a_hook_that_turns_half_the_randomization_off_is_refused_before_compiling():
    import ksim

    model = mujoco.MjModel.from_xml_string(quadruped.robot_xml())
    config = quadruped.QuadrupedTask.get_config(quadruped.DEFAULTS, use_cli=False)
    quadruped.QuadrupedTask(config).check_randomization_hooks(model)  # the example itself passes

    class NoRandomizer(quadruped.QuadrupedTask):
        def get_physics_randomizers(self, physics_model):
            return {}

    class OwnCurriculum(quadruped.QuadrupedTask):
        def get_curriculum(self, physics_model):
            return ksim.ConstantCurriculum(level=1.0)

    class OptedOut(OwnCurriculum, NoRandomizer):  # both replaced: the mixin is off, knowingly
        pass

    with pytest.raises(TypeError, match=r"NoRandomizer.get_physics_randomizers drops DomainRandomizationMixin's"):
        NoRandomizer(config).check_randomization_hooks(model)
    with pytest.raises(TypeError, match=r"OwnCurriculum.get_curriculum returns a ConstantCurriculum, not the Ran"):
        OwnCurriculum(config).check_randomization_hooks(model)
    OptedOut(config).check_randomization_hooks(model)
