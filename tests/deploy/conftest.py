"""Fixtures the deploy tests share: the shipped K-Bot's files, its joint names, and a tiny exported policy."""

import pytest

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator
from tests.deploy.parts import write_tiny_policy


@pytest.fixture(scope="module")
def files():
    return resolve_robot_files("local")


@pytest.fixture(scope="module")
def joint_names(files):
    return KBotSimulator(files).joint_names


@pytest.fixture(scope="module")
def model(tmp_path_factory, joint_names):
    return write_tiny_policy(tmp_path_factory.mktemp("model") / "tiny.kinfer", joint_names)
