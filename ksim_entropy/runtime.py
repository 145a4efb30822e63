"""Process-wide defaults for training: headless rendering and no TensorBoard server on 0.0.0.0.

These must run before `mujoco` is imported, because MuJoCo picks its OpenGL backend at import time.
`ksim_entropy/__init__.py` calls :func:`configure_headless` first thing.
"""

import os
import sys

__all__ = ["configure_headless"]


def configure_headless() -> None:
    """Default `MUJOCO_GL=egl` on Linux when unset, and stop xax from serving TensorBoard on all interfaces.

    xax's TensorBoard logger always starts `tensorboard serve --bind_all` unless `DISABLE_TENSORBOARD=1`;
    event files are still written. To browse them, run `tensorboard --logdir <exp_dir> --host 127.0.0.1`.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["DISABLE_TENSORBOARD"] = "1"
