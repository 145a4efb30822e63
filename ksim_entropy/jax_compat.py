"""Let ksim 0.2.10 and xax 0.4.4 run on current JAX (0.9-0.12): two shims, applied before either is imported.

Both were written against jax 0.8 and use two things later JAX removed (measured on jax 0.10.2):

- ``from jax.core import get_aval`` (ksim ``task/rl.py``, xax ``utils/pytree.py``): ``jax.core`` no longer exports
  it. The shim puts ``jax.core.get_aval`` back as JAX's own ``jax.typeof`` (the abstract value of an array, what
  ``get_aval`` returned), or ``jax._src.core.get_aval`` on versions that still have it there.
- ``jax.jit(..., abstracted_axes=None)`` (xax ``utils/jax.py`` passes it on every jit): the keyword is gone. The
  shim wraps ``jax.jit`` so that ``abstracted_axes=None`` is dropped; any other value raises, as it cannot be
  honoured.

`apply()` changes nothing on a JAX that still has both (the locked jax 0.8.0): it is a no-op there, and idempotent
everywhere. ``import ksim_entropy`` calls `install()`, which imports nothing: it applies the shims the moment
``ksim`` or ``xax`` is first imported (an import hook), or at once if JAX is already loaded. So ``import ksim_entropy``
must come before ``import ksim``, and the parts that never touch JAX (the bridge) still load without it.
"""

import functools
import importlib.abc
import inspect
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["applied_shims", "apply", "install"]

_APPLIED: list[str] = []
_TRIGGERS = ("ksim", "xax")


class _ApplyBeforeImport(importlib.abc.MetaPathFinder):
    """Applies the shims when `ksim` or `xax` is first imported; finds nothing itself."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname in _TRIGGERS:
            apply()
        return None


def install() -> None:
    """Apply the shims now if JAX, ksim or xax is already imported, else just before ksim or xax is."""
    if any(sys.modules.get(name) is not None for name in ("jax", *_TRIGGERS)):  # None: blocked from importing
        apply()
    elif not any(isinstance(finder, _ApplyBeforeImport) for finder in sys.meta_path):
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
    if _restore_get_aval():
        _APPLIED.append("jax.core.get_aval")
    if _accept_abstracted_axes():
        _APPLIED.append("jax.jit(abstracted_axes=None)")
    return list(_APPLIED)


def applied_shims() -> list[str]:
    """The shims `apply` has installed in this process (empty on jax 0.8)."""
    return list(_APPLIED)
