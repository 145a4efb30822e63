"""Let ksim 0.2.10 and xax 0.4.4 run where users train: current JAX (0.9-0.12) and machines without Qt.

Three shims, applied before ksim or xax is imported. ksim and xax were written against jax 0.8 and use two things
later JAX removed (measured on jax 0.10.2 and 0.11.2), and ksim needs Qt just to import:

- ``from jax.core import get_aval`` (ksim ``task/rl.py``, xax ``utils/pytree.py``): ``jax.core`` no longer exports
  it. The shim puts ``jax.core.get_aval`` back as JAX's own ``jax.typeof`` (the abstract value of an array, what
  ``get_aval`` returned), or ``jax._src.core.get_aval`` on versions that still have it there.
- ``jax.jit(..., abstracted_axes=None)`` (xax ``utils/jax.py`` passes it on every jit): the keyword is gone. The
  shim wraps ``jax.jit`` so that ``abstracted_axes=None`` is dropped; any other value raises, as it cannot be
  honoured.
- ``import ksim`` imports kmv's viewer, whose worker module imports PySide6 (Qt, ~90 MB of wheels) at load. On a
  machine without PySide6 (a headless GPU box, the offline wheel folder) that module is replaced by one whose
  ``run_worker`` says the interactive viewer needs PySide6; training, which never opens the viewer, runs.

The same hook silences import-time noise at its source, nothing else: the two lines MuJoCo-MJX prints when the
optional NVIDIA Warp backend (unused here) is missing, and xax's omegaconf ``register_new_resolver()`` deprecation
warnings (a `warnings` filter for that message from xax only).

`apply()` changes nothing on a JAX that still has both JAX pieces (the locked jax 0.8.0): it is a no-op there, and
idempotent everywhere. ``import ksim_entropy`` calls `install()`, which imports nothing: it applies the shims the moment
``ksim`` or ``xax`` is first imported (an import hook), or at once if JAX is already loaded. So ``import ksim_entropy``
must come before ``import ksim``, and the parts that never touch JAX (the bridge) still load without it.
"""

import contextlib
import functools
import importlib.abc
import importlib.util
import inspect
import io
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

__all__ = ["applied_shims", "apply", "install"]

_APPLIED: list[str] = []
_TRIGGERS = ("ksim", "xax")
_QT_VIEWER_WORKER = "kmv.worker.entrypoint"  # the one module on ksim's import path that needs PySide6


class _HeadlessViewerWorker(importlib.abc.Loader):
    """Loads a stand-in for kmv's viewer worker whose `run_worker` explains that the viewer needs PySide6."""

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        def run_worker(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(
                "kmv's interactive viewer needs PySide6, which is not installed here (a headless machine); "
                "training and export do not need it: `pip install PySide6` to view"
            )

        module.__doc__ = "ksim_entropy.compat's headless stand-in for kmv.worker.entrypoint (PySide6 missing)."
        module.run_worker = run_worker  # type: ignore[attr-defined]
        _APPLIED.append("kmv viewer without PySide6")


# Modules that print at import what no user of this package needs to read: module -> the lines' beginnings.
_IMPORT_PRINTS = {"mujoco.mjx.warp": ("Failed to import warp:", "Failed to import mujoco_warp:")}


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader with stdout caught, then prints every caught line but the known noise."""

    def __init__(self, loader: importlib.abc.Loader, noise: tuple[str, ...]) -> None:
        self._loader, self._noise = loader, noise

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        caught = io.StringIO()
        try:
            with contextlib.redirect_stdout(caught):
                self._loader.exec_module(module)
        finally:
            for line in caught.getvalue().splitlines(keepends=True):
                if not line.startswith(self._noise):
                    sys.stdout.write(line)


def _quiet_spec(fullname: str, path: Sequence[str] | None) -> ModuleSpec | None:
    spec = PathFinder.find_spec(fullname, path)
    if spec is not None and spec.loader is not None:
        spec.loader = _QuietLoader(spec.loader, _IMPORT_PRINTS[fullname])
    return spec


def _qt_missing() -> bool:
    try:
        return importlib.util.find_spec("PySide6") is None
    except (ImportError, ValueError):  # blocked from importing, or a module without a spec
        return True


class _ApplyBeforeImport(importlib.abc.MetaPathFinder):
    """Applies the shims when `ksim` or `xax` is first imported; swaps in a headless kmv worker when Qt is missing."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname in _TRIGGERS:
            apply()
        elif fullname == _QT_VIEWER_WORKER and _qt_missing():
            return ModuleSpec(fullname, _HeadlessViewerWorker())
        elif fullname in _IMPORT_PRINTS:
            return _quiet_spec(fullname, path)
        return None


def install() -> None:
    """Apply the JAX shims now if JAX, ksim or xax is already imported, else just before ksim or xax is.

    The import hook stays either way: it also serves kmv's viewer worker on a machine without PySide6 and quiets
    the noisy imports (`_IMPORT_PRINTS`).
    """
    if any(sys.modules.get(name) is not None for name in ("jax", *_TRIGGERS)):  # None: blocked from importing
        apply()
    if not any(isinstance(finder, _ApplyBeforeImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ApplyBeforeImport())


def _jit_takes_abstracted_axes(jit: Callable[..., Any]) -> bool:
    try:
        return "abstracted_axes" in inspect.signature(jit).parameters
    except (TypeError, ValueError):  # no signature: assume the old API
        return True


def _restore_get_aval() -> bool:
    import jax

    if hasattr(jax.core, "get_aval"):
        return False
    typeof = getattr(jax, "typeof", None)
    if typeof is None:
        from jax._src import core as _core

        typeof = _core.get_aval
    jax.core.get_aval = typeof
    return True


def _accept_abstracted_axes() -> bool:
    import jax

    original = jax.jit
    if getattr(original, "_ksim_entropy_shim", False) or _jit_takes_abstracted_axes(original):
        return False

    @functools.wraps(original)
    def jit(*args: Any, abstracted_axes: Any = None, **kwargs: Any) -> Any:
        if abstracted_axes is not None:
            version = sys.modules["jax"].__version__
            raise TypeError(
                f"jax {version} has no jax.jit(abstracted_axes=...); got abstracted_axes={abstracted_axes!r}"
            )
        return original(*args, **kwargs)

    jit._ksim_entropy_shim = True  # type: ignore[attr-defined]
    jax.jit = jit
    return True


def apply() -> list[str]:
    """Install the shims this JAX needs (none on jax 0.8); returns the names of all installed so far."""
    warnings.filterwarnings(
        "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning, module=r"xax\."
    )
    if _restore_get_aval():
        _APPLIED.append("jax.core.get_aval")
    if _accept_abstracted_axes():
        _APPLIED.append("jax.jit(abstracted_axes=None)")
    return list(_APPLIED)


def applied_shims() -> list[str]:
    """The shims installed in this process (empty on jax 0.8 with PySide6 present)."""
    return list(_APPLIED)
