"""Watch a `tasks.walk` checkpoint in ksim's interactive MuJoCo viewer: `python -m tasks.view CKPT [key=value ...]`.

Needs a display (X11 or Wayland). Runs the policy on CPU MuJoCo (ksim `run_mode=view`); extra `key=value`
arguments override the checkpoint's config (e.g. `viewer_num_seconds=20`). Nothing is written to the run directory:
the viewer gets a fresh scratch `exp_dir`.
"""

import ctypes.util
import os
import sys
import tempfile
from pathlib import Path


def has_display() -> bool:
    """Whether an X11 or Wayland display is available for a window."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# Shared libraries Qt 6's xcb platform plugin loads (PySide6 6.9), and the Debian packages that provide them.
QT_XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


def missing_qt_libraries() -> list[str]:
    """Debian packages of the Qt xcb dependencies not found on this Linux machine (empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    return [package for lib, package in QT_XCB_LIBRARIES.items() if ctypes.util.find_library(lib) is None]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    ckpt, overrides = Path(args[0]), args[1:]
    if not has_display():
        sys.exit(
            "error: no display (DISPLAY/WAYLAND_DISPLAY unset); the viewer opens a window. Use a desktop "
            "session, `ssh -X`, or `xvfb-run python -m tasks.view ...` for an off-screen window"
        )
    missing = missing_qt_libraries()
    if missing:
        sys.exit(f"error: the viewer's Qt window needs system libraries: `sudo apt-get install {' '.join(missing)}`")
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "glfw"  # a window, not the headless EGL default

    from ksim_entropy.cli.walk import check_override_keys
    from ksim_entropy.kbot.walk import KBotWalkingTask
    from ksim_entropy.ppo.checkpoint import CheckpointError

    check_override_keys(overrides)
    try:
        task = KBotWalkingTask.from_checkpoint(ckpt)
        task.check_checkpoint(ckpt)
    except CheckpointError as err:
        sys.exit(f"error: {err}")
    scratch = tempfile.mkdtemp(prefix="kbot-view-")
    KBotWalkingTask.launch(
        task.config,
        use_cli=["run_mode=view", f"load_from_ckpt_path={ckpt}", f"exp_dir={scratch}", *overrides],
    )


if __name__ == "__main__":
    main()
