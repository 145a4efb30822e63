"""bench/sim2real_blocks.py swaps exactly the block it names for plain ksim's, and leaves the rest of ours."""

import importlib.util
from pathlib import Path

import ksim
import pytest

from ksim_entropy.actuation import DelayedActuators, NativePDActuators
from ksim_entropy.events import ForcePushEvent, WindEvent
from ksim_entropy.kbot.walk import KBotWalkingTask
from ksim_entropy.observation import DelayedObservation
from ksim_entropy.randomization import DomainRandomization
from tests.walk_parts import walk_task

_SPEC = importlib.util.spec_from_file_location(
    "sim2real_blocks", Path(__file__).resolve().parents[1] / "bench" / "sim2real_blocks.py"
)
blocks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(blocks)


def _task(task_class: type[KBotWalkingTask], exp_dir: Path) -> KBotWalkingTask:
    return walk_task(exp_dir, task_class=task_class, sim2real=True)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    task = _task(KBotWalkingTask, tmp_path_factory.mktemp("full"))
    mj_model = task.set_mujoco_model_opts(task.get_mujoco_model())
    return task, mj_model, task.get_mujoco_model_metadata(mj_model)


def _classes(randomization: DomainRandomization) -> list[str]:
    return [type(p).__name__ for p in randomization.parameters]


def test_observations_block_gives_ksims_noisy_sensors(full, tmp_path):
    task, mj_model, _ = full
    ours = task.get_observations(mj_model)
    swapped = _task(blocks.without_block("observations"), tmp_path).get_observations(mj_model)
    assert sum(isinstance(o, DelayedObservation) for o in ours.values()) == 4
    assert not any(isinstance(o, DelayedObservation) for o in swapped.values())
    assert isinstance(swapped["joint_position"].noise, ksim.AdditiveUniformNoise)
    assert set(swapped) == {k for k in ours if not k.startswith("noisy_")}  # ksim adds noisy_* itself


def test_action_delay_block_keeps_the_native_pd_servos(full, tmp_path):
    task, mj_model, metadata = full
    assert isinstance(task.get_actuators(mj_model, metadata), DelayedActuators)
    swapped = _task(blocks.without_block("action_delay"), tmp_path).get_actuators(mj_model, metadata)
    assert isinstance(swapped, NativePDActuators)


def test_events_block_gives_ksims_velocity_push(full, tmp_path):
    task, mj_model, _ = full
    assert {type(e) for e in task.get_events(mj_model).values()} == {ForcePushEvent, WindEvent}
    swapped = _task(blocks.without_block("events"), tmp_path).get_events(mj_model)
    assert {type(e) for e in swapped.values()} == {ksim.LinearPushEvent}


def test_physics_block_gives_ksims_randomizers_and_a_constant_curriculum(full, tmp_path):
    task, mj_model, _ = full
    assert [type(r) for r in task.get_physics_randomizers(mj_model).values()] == [DomainRandomization]
    swapped = _task(blocks.without_block("physics"), tmp_path)
    randomizers = swapped.get_physics_randomizers(mj_model)
    assert {type(r) for r in randomizers.values()} == {
        ksim.StaticFrictionRandomizer,
        ksim.ArmatureRandomizer,
        ksim.FloorFrictionRandomizer,
        ksim.AllBodiesMassMultiplicationRandomizer,
    }
    assert isinstance(swapped.get_curriculum(mj_model), ksim.ConstantCurriculum)
    assert swapped.config.sim2real  # the plain twin is a copy: the task's own config is untouched


def test_physics_groups_partition_our_randomization(full, tmp_path):
    task, mj_model, _ = full
    ours = _classes(task.get_domain_randomization(mj_model))
    grouped = [c for classes in blocks.PHYSICS_GROUPS.values() for c in classes]
    assert sorted(grouped) == sorted(ours)  # every parameter in exactly one group: a rename cannot go unnoticed
    for group, classes in blocks.PHYSICS_GROUPS.items():
        swapped = _task(blocks.without_block(f"physics_{group}"), tmp_path / group)
        assert _classes(swapped.get_domain_randomization(mj_model)) == [c for c in ours if c not in classes]
