"""Reading xax/ksim checkpoints defensively, before any weights are deserialised.

A corrupt file, another task's checkpoint or an incompatible network gives a `CheckpointError` naming the problem.

A checkpoint is a gzip tar with `model_<i>`, `optimizer_<i>`, `opt_state_<i>`, `state` (JSON) and `config` (YAML).
Tasks of this project write `task_id` into their config; `architecture_keys` are the config fields that decide
parameter shapes.
"""

import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["CheckpointError", "CheckpointInfo", "check_compatible", "inspect_checkpoint", "read_member_arrays"]

_REQUIRED_MEMBERS = ("model_0", "state", "config")


class CheckpointError(ValueError):
    """A checkpoint cannot be used for what was asked."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself."""

    path: Path
    config: dict[str, Any]
    state: dict[str, Any]
    members: tuple[str, ...]

    @property
    def num_steps(self) -> int:
        """PPO updates done when it was saved."""
        return int(self.state.get("num_steps", 0))


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Open a checkpoint and read its config and state; raise `CheckpointError` if it is not a usable checkpoint."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint path is not a file: {path}")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tuple(tar.getnames())
            missing = [m for m in _REQUIRED_MEMBERS if m not in members]
            if missing:
                raise CheckpointError(f"{path} is not a ksim checkpoint: missing {missing} (has {list(members)})")
            config_file, state_file = tar.extractfile("config"), tar.extractfile("state")
            if config_file is None or state_file is None:
                raise CheckpointError(f"{path}: config or state entry is not a regular file")
            config = yaml.safe_load(config_file.read().decode())
            state = json.loads(state_file.read().decode())
    except CheckpointError:
        raise
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Corrupt or truncated checkpoint {path}: {err}") from err
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"Corrupt checkpoint {path}: config/state are not mappings")
    return CheckpointInfo(path=path, config=config, state=state, members=members)


def read_member_arrays(path: str | Path, member: str) -> list[np.ndarray] | None:
    """The arrays of one checkpoint member (`model_0`, `opt_state_0`, `aux_data`); None if the checkpoint lacks it.

    xax writes a member's leaves as consecutive `.npy` records (equinox's format), in tree order.
    """
    with tarfile.open(path, "r:gz") as tar:
        if member not in tar.getnames():
            return None
        entry = tar.extractfile(member)
        raw = entry.read() if entry is not None else b""
    stream, arrays = io.BytesIO(raw), []
    while stream.tell() < len(raw):
        arrays.append(np.load(stream, allow_pickle=False))
    return arrays


def check_compatible(
    info: CheckpointInfo,
    *,
    task_id: str,
    current_config: Mapping[str, Any],
    architecture_keys: Sequence[str],
) -> None:
    """Raise `CheckpointError` unless the checkpoint was written by `task_id` with the same architecture fields."""
    found = info.config.get("task_id")
    if found != task_id:
        raise CheckpointError(
            f"{info.path} was written by task '{found or 'unknown (not a ksim-entropy task)'}', not '{task_id}'"
        )
    diffs = [
        f"{key}: checkpoint {info.config.get(key)!r} vs current {current_config.get(key)!r}"
        for key in architecture_keys
        if info.config.get(key) != current_config.get(key)
    ]
    if diffs:
        raise CheckpointError(f"{info.path} has an incompatible network: " + "; ".join(diffs))
