"""The command lines (`ksim-walk`, `ksim-fit`, ... or `python -m tasks.walk` in a checkout) and what they share.

Importing any of them first sets the process defaults for training (`runtime.configure_headless`: MuJoCo's
headless EGL backend unless MUJOCO_GL is set, and no TensorBoard server on all interfaces), before MuJoCo loads,
and filters a few third-party start-up log lines (`runtime.quiet_start_up_logs`).
"""

import argparse

from ksim_entropy.runtime import configure_headless, quiet_start_up_logs

configure_headless()
quiet_start_up_logs()


def comma_floats(text: str) -> tuple[float, ...]:
    """Argparse type: '0.3,0,0' -> (0.3, 0.0, 0.0)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
