"""ksim_entropy.compat: a no-op on the locked jax 0.8.0; on a JAX without what ksim and xax use, it puts that back.

A newer JAX is imitated by removing `jax.core.get_aval` and replacing `jax.jit` with one that has no
`abstracted_axes` parameter (what jax 0.10 did); the oracle for the restored `get_aval` is JAX's own, saved first.
The real thing, training and exporting on jax 0.10.2, is tests/test_current_jax.py.
"""

import jax
import jax.numpy as jnp
import pytest

import ksim_entropy  # noqa: F401  (applies the shims on import)
from ksim_entropy import compat


def test_nothing_is_changed_on_the_locked_jax():
    assert jax.__version__ == "0.8.0"
    assert compat.applied_shims() == []
    assert not getattr(jax.jit, "_ksim_entropy_shim", False)
    assert compat.apply() == []


@pytest.fixture
def newer_jax(monkeypatch):
    """jax.core without get_aval and a jax.jit without abstracted_axes, as in jax 0.10; restored afterwards."""
    original_get_aval = jax.core.get_aval
    calls = []

    def jit_without_abstracted_axes(fun, *, static_argnums=None, donate_argnums=None):
        calls.append({"static_argnums": static_argnums, "donate_argnums": donate_argnums})
        return fun

    monkeypatch.delattr(jax.core, "get_aval")
    monkeypatch.setattr(jax, "jit", jit_without_abstracted_axes)
    monkeypatch.setattr(compat, "_APPLIED", [])
    return original_get_aval, calls


def test_shims_restore_get_aval_and_accept_abstracted_axes_none(newer_jax):
    original_get_aval, calls = newer_jax
    assert compat.apply() == ["jax.core.get_aval", "jax.jit(abstracted_axes=None)"]
    for x in (jnp.ones((3, 2)), jnp.int32(4), jnp.zeros((), jnp.bfloat16)):
        assert jax.core.get_aval(x) == original_get_aval(x)

    def f(a, n):
        return a * n

    assert jax.jit(f, static_argnums=1, abstracted_axes=None) is f  # passed through, the keyword dropped
    assert calls == [{"static_argnums": 1, "donate_argnums": None}]
    with pytest.raises(TypeError, match=r"has no jax.jit\(abstracted_axes=...\); got abstracted_axes=\('n',\)"):
        jax.jit(f, abstracted_axes=("n",))
    wrapper = jax.jit
    assert compat.apply() == ["jax.core.get_aval", "jax.jit(abstracted_axes=None)"]  # idempotent
    assert jax.jit is wrapper


HEADLESS = """
import importlib.abc, json, sys

class NoQt(importlib.abc.MetaPathFinder):  # a machine without PySide6
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoQt())
import ksim_entropy
from ksim_entropy import compat
import ksim
from kmv.app.viewer import DefaultMujocoViewer, QtViewer
from kmv.worker.entrypoint import run_worker
try:
    run_worker()
    message = None
except RuntimeError as error:
    message = str(error)
print(json.dumps({"qt_loaded": any(m.split(".")[0] == "PySide6" for m in sys.modules),
                  "shims": compat.applied_shims(), "message": message}))
"""


def test_ksim_imports_without_pyside6_and_the_viewer_says_what_it_needs():
    """`import ksim` on a machine without Qt: kmv's viewer worker is a stand-in; everything else is the real ksim."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HEADLESS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["qt_loaded"] is False
    assert report["shims"] == ["kmv viewer without PySide6"]  # the locked jax 0.8.0 needs no JAX shim
    assert report["message"].startswith("kmv's interactive viewer needs PySide6, which is not installed here")


def test_the_real_viewer_worker_loads_where_pyside6_is_installed():
    from kmv.worker import entrypoint

    assert entrypoint.QApplication.__module__.startswith("PySide6")
    assert "kmv viewer without PySide6" not in compat.applied_shims()


def test_import_is_quiet_at_the_source():
    """`import ksim` prints nothing and warns nothing from MJX's optional Warp backend or xax's omegaconf use."""
    import subprocess
    import sys

    code = "import ksim_entropy, ksim; print('imported')"
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "imported\n"
    assert "register_new_resolver" not in done.stderr and "Failed to import" not in done.stderr


def test_quiet_loader_drops_only_the_known_lines(tmp_path, capsys):
    import importlib.machinery
    import importlib.util

    source = tmp_path / "noisy.py"
    source.write_text("print('Failed to import warp: no warp')\nprint('kept line')\nVALUE = 3\n")
    loader = compat._QuietLoader(
        importlib.machinery.SourceFileLoader("noisy", str(source)), ("Failed to import warp:",)
    )
    spec = importlib.util.spec_from_loader("noisy", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    assert module.VALUE == 3
    assert capsys.readouterr().out == "kept line\n"


def test_importing_the_library_changes_no_environment_variable_and_the_entry_points_set_theirs():
    """`import ksim_entropy` changes nothing; with ksim and the mixins loaded, the only new variables are those ksim,
    xax and JAX set on their own import (checked against a process that imports just them); importing the entry
    points' package (`ksim_entropy.cli`, which `python -m tasks.walk` and the console scripts load) sets the two
    defaults."""
    import json
    import os
    import subprocess
    import sys

    def changed(code: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISABLE_TENSORBOARD")}
        script = f"import json, os; before = dict(os.environ); {code}; " + (
            "print(json.dumps({k: os.environ.get(k) for k in set(os.environ) | set(before) "
            "if os.environ.get(k) != before.get(k)}))"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert changed("import ksim_entropy") == {}
    assert changed("import ksim_entropy, ksim, ksim_entropy.ppo.mixins") == changed("import ksim, xax, jax")
    defaults = changed("import ksim_entropy.cli")
    assert defaults == {"MUJOCO_GL": "egl", "DISABLE_TENSORBOARD": "1"}
