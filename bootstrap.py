#!/usr/bin/env python3
"""Set up the pinned environment (once) and run a project command in it. Standard library only.

    python3 bootstrap.py                 # create .venv from requirements/lock.txt (idempotent)
    python3 bootstrap.py walk [k=v ...]  # train the K-Bot:      python -m tasks.walk [k=v ...]
    python3 bootstrap.py test [args]     # run the test suite:   python -m pytest [args]
    python3 bootstrap.py export CKPT [OUT] [--overwrite]   # checkpoint -> .kinfer
    python3 bootstrap.py view CKPT       # watch a checkpoint in the MuJoCo viewer (needs a display)
    python3 bootstrap.py fit|deploy|sim2sim ...   # python -m tasks.fit / tasks.deploy / tasks.sim2sim
    python3 bootstrap.py bench           # bench/walk_throughput.py (JSON on stdout)
    python3 bootstrap.py run CMD ...     # any command inside the environment

The environment is `.venv` next to this file (override with KSIM_ENTROPY_VENV). The lock file pins every package
exactly and is installed with --no-deps, so a machine with Python 3.11 and pip gets the same tree every time.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements" / "lock.txt"
VENV = Path(os.environ.get("KSIM_ENTROPY_VENV", ROOT / ".venv"))
STAMP = VENV / ".ksim-entropy-lock-sha256"

COMMANDS = {
    "walk": ["-m", "tasks.walk"],
    "test": ["-m", "pytest"],
    "export": ["-m", "tasks.export"],
    "view": ["-m", "tasks.view"],
    "fit": ["-m", "tasks.fit"],
    "deploy": ["-m", "tasks.deploy"],
    "sim2sim": ["-m", "tasks.sim2sim"],
    "bench": ["bench/walk_throughput.py"],
}


def venv_python() -> Path:
    """The environment's interpreter."""
    return VENV / "bin" / "python"


def lock_digest() -> str:
    """Hash of everything that decides the environment's contents."""
    digest = hashlib.sha256()
    for path in (LOCK, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(cmd: list[str]) -> None:
    """Echo and run a command in the project root; raise on failure."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_environment() -> None:
    """Create or refresh `.venv` from the lock file unless it is already up to date."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"error: Python 3.11 is required (ksim 0.2.10 + jax 0.8.0 wheels); this is {sys.version.split()[0]}")
    digest = lock_digest()
    if STAMP.exists() and STAMP.read_text().strip() == digest and venv_python().exists():
        return
    if not venv_python().exists():
        print(f"Creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    py = str(venv_python())
    run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-r", str(LOCK)])
    run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", str(ROOT)])
    STAMP.write_text(digest + "\n")


def main(argv: list[str]) -> int:
    """Set up the environment, then run the named command in it; returns its exit code."""
    ensure_environment()
    if not argv:
        print(f"Environment ready: {venv_python()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "run":
        if not rest:
            sys.exit("error: `bootstrap.py run` needs a command")
        cmd = [str(VENV / "bin" / rest[0]) if (VENV / "bin" / rest[0]).exists() else rest[0], *rest[1:]]
    elif name in COMMANDS:
        cmd = [str(venv_python()), *COMMANDS[name], *rest]
    else:
        sys.exit(f"error: unknown command '{name}'; choose from {', '.join([*COMMANDS, 'run'])}")
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
