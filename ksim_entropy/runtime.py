"""Process-wide defaults for training: headless rendering, no TensorBoard server on 0.0.0.0, the right device.

These must run before `mujoco` is imported, because MuJoCo picks its OpenGL backend at import time. Importing the
library changes no environment variable: the entry points do (`tasks/__init__.py` calls :func:`configure_headless`
first thing); a ksim task of your own calls it too, or sets MUJOCO_GL itself, on a machine without a display.
"""

import logging
import os
import shutil
import subprocess
import sys

__all__ = ["check_training_device", "configure_headless", "nvidia_gpus", "quiet_start_up_logs"]

# Third-party records that say nothing a person training a robot needs: xax's JAX setup
# steps, MJX's "Using JAX default device" (once per model put on the device), and the ERROR xax's CPU-stats
# monitor logs when it is stopped at the normal end of a run.
_START_UP_NOISE: dict[str, tuple[str, ...]] = {  # logger name ("" = root) -> message starts
    "xax.task.mixins.compile": ("Setting JAX ", "Configuring JAX compilation cache"),
    "": ("Using JAX default device",),
    "xax.task.mixins.cpu_stats": ("Closing CPU stats monitor",),
}


def configure_headless() -> None:
    """Default `MUJOCO_GL=egl` on Linux when unset, and stop xax from serving TensorBoard on all interfaces.

    xax's TensorBoard logger always starts `tensorboard serve --bind_all` unless `DISABLE_TENSORBOARD=1`;
    event files are still written. To browse them, run `tensorboard --logdir <exp_dir> --host 127.0.0.1`.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["DISABLE_TENSORBOARD"] = "1"


def nvidia_gpus() -> list[str]:
    """Names of the NVIDIA GPUs the driver shows (`nvidia-smi -L`); empty without a driver. Standard library only."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [line.split(":", 1)[1].split("(UUID", 1)[0].strip() for line in listing.stdout.splitlines() if ":" in line]


def check_training_device(preset: str) -> str:
    """The device JAX trains on, as one line; exits with a clear error before anything compiles when it is wrong.

    `preset` is the one asked for (`gpu` needs a GPU). A visible NVIDIA GPU with JAX on the CPU (CUDA failed to
    initialise, or no CUDA plugin) is an error too, never a silent CPU run, unless `JAX_PLATFORMS=cpu` asks for it.
    """
    import jax

    backend = jax.default_backend()
    device = jax.devices()[0]
    where = f"{backend} ({getattr(device, 'device_kind', device.platform)}, jax {jax.__version__})"
    if preset == "gpu" and backend != "gpu":
        raise SystemExit(f"error: preset=gpu needs a GPU, but JAX runs on {where}; use preset=cpu or preset=stand")
    gpus = nvidia_gpus()
    if gpus and backend != "gpu" and os.environ.get("JAX_PLATFORMS", "").strip().lower() != "cpu":
        raise SystemExit(
            f"error: an NVIDIA GPU is visible ({gpus[0]}) but JAX runs on {where}: CUDA did not initialise or the "
            "CUDA plugin is missing (`python3 bootstrap.py --cuda` installs it); JAX_PLATFORMS=cpu trains on the CPU"
        )
    return f"Training on {where}"


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.starts))


def quiet_start_up_logs() -> None:
    """Filter the few third-party log lines listed in `_START_UP_NOISE` at their loggers (nothing else is touched).

    Idempotent. The entry points call it; a filter on a logger sees only the records that logger creates.
    """
    for name, starts in _START_UP_NOISE.items():
        target = logging.getLogger(name)
        target.filters = [f for f in target.filters if not isinstance(f, _DropMessages)]
        target.addFilter(_DropMessages(starts))
