"""Checkpoint inspection: corrupt files, foreign checkpoints and incompatible networks are named, not crashed on."""

import io
import json
import tarfile

import pytest
import yaml

from ksim_entropy.ppo.checkpoint import CheckpointError, check_compatible, inspect_checkpoint


def write_checkpoint(path, config, state=None, members=("model_0",)):
    with tarfile.open(path, "w:gz") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for member in members:
            add(member, b"\x00" * 8)
        add("state", json.dumps(state or {"num_steps": 7}).encode())
        add("config", yaml.safe_dump(config).encode())
    return path


GOOD = {"task_id": "ksim_entropy.walk.v1", "hidden_size": 64, "depth": 1, "robot_source": "local"}
KEYS = ("hidden_size", "depth", "robot_source")


def test_reads_config_and_state(tmp_path):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "c.bin", GOOD))
    assert info.config["hidden_size"] == 64
    assert info.num_steps == 7
    check_compatible(info, task_id=GOOD["task_id"], current_config=GOOD, architecture_keys=KEYS)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(tmp_path / "nope.bin")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        inspect_checkpoint(tmp_path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x1f\x8b this is not gzip at all")
    with pytest.raises(CheckpointError, match="Corrupt or truncated"):
        inspect_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = write_checkpoint(tmp_path / "c.bin", GOOD, members=("model_0", "optimizer_0", "opt_state_0"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="Corrupt or truncated|missing"):
        inspect_checkpoint(path)


def test_not_a_ksim_checkpoint(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(CheckpointError, match="not a ksim checkpoint"):
        inspect_checkpoint(path)


def test_other_task(tmp_path):
    foreign = {k: v for k, v in GOOD.items() if k != "task_id"}
    info = inspect_checkpoint(write_checkpoint(tmp_path / "c.bin", foreign))
    with pytest.raises(CheckpointError, match="not a ksim-entropy task"):
        check_compatible(info, task_id=GOOD["task_id"], current_config=GOOD, architecture_keys=KEYS)
    info = inspect_checkpoint(write_checkpoint(tmp_path / "d.bin", {**GOOD, "task_id": "someone.else"}))
    with pytest.raises(CheckpointError, match="someone.else"):
        check_compatible(info, task_id=GOOD["task_id"], current_config=GOOD, architecture_keys=KEYS)


def test_incompatible_architecture(tmp_path):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "c.bin", GOOD))
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 64 vs current 128"):
        check_compatible(
            info, task_id=GOOD["task_id"], current_config={**GOOD, "hidden_size": 128}, architecture_keys=KEYS
        )
