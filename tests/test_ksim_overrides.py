"""The private ksim methods this package overrides (the mixins) or calls (the rollout), issue 34: each is listed with
the parameters it was written for, and the installed ksim still has exactly those. Oracle: `inspect.signature` of
ksim's own classes."""

import inspect

import pytest
from ksim.task.ppo import PPOTask
from ksim.task.rl import RLTask

import ksim_entropy.ppo.mixins as task_module
from ksim_entropy.ppo.mixins import KSIM_PRIVATE_OVERRIDES
from ksim_entropy.sim2real.rollout_logs import KSIM_PRIVATE_CALLS

KSIM_CLASSES = {"RLTask": RLTask, "PPOTask": PPOTask}


@pytest.mark.parametrize("qualified", sorted(KSIM_PRIVATE_OVERRIDES))
def test_ksim_still_has_each_overridden_method_with_the_same_parameters(qualified):
    owner, method = qualified.split(".")
    ours = KSIM_PRIVATE_OVERRIDES[qualified]
    theirs = tuple(inspect.signature(getattr(KSIM_CLASSES[owner], method)).parameters)
    assert theirs == ours, f"ksim's {qualified} now takes {theirs}; ksim_entropy.ppo.mixins was written for {ours}"


def _private_overrides() -> dict[str, list[str]]:
    """Method -> the ksim_entropy.ppo.mixins classes defining it, for every private method ksim's tasks also define."""
    found: dict[str, list[str]] = {}
    for name, cls in vars(task_module).items():
        if not isinstance(cls, type) or cls.__module__ != task_module.__name__:
            continue
        for method, value in vars(cls).items():
            private = method.startswith("_") and not method.startswith("__")
            if private and inspect.isfunction(value) and hasattr(PPOTask, method):
                found.setdefault(method, []).append(name)
    return found


def test_every_private_override_is_listed_and_takes_ksims_parameters():
    listed = {qualified.split(".")[1]: params for qualified, params in KSIM_PRIVATE_OVERRIDES.items()}
    found = _private_overrides()
    assert set(found) == set(listed)
    for method, classes in found.items():
        for name in classes:
            params = tuple(inspect.signature(vars(getattr(task_module, name))[method]).parameters)
            assert params in (listed[method], ("self", "kwargs")), f"{name}.{method} takes {params}"


@pytest.mark.parametrize("qualified", sorted(KSIM_PRIVATE_CALLS))
def test_ksim_still_has_each_private_method_the_rollout_calls(qualified):
    owner, method = qualified.split(".")
    theirs = tuple(inspect.signature(getattr(KSIM_CLASSES[owner], method)).parameters)
    ours = KSIM_PRIVATE_CALLS[qualified]
    assert theirs == ours, f"ksim's {qualified} now takes {theirs}; sim2real.rollout_logs calls it with {ours}"


def test_the_rollout_calls_no_other_private_ksim_method():
    import ast

    import ksim_entropy.sim2real.rollout_logs as rollout_module

    tree = ast.parse(inspect.getsource(rollout_module))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("_")
        and not node.func.attr.startswith("__")
    }
    assert called == {qualified.split(".")[1] for qualified in KSIM_PRIVATE_CALLS}
