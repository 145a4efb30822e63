#!/usr/bin/env python3
"""Set up the pinned environment (once) and run a project command in it. Standard library only.

    python3 bootstrap.py                 # create .venv from requirements/lock.txt (idempotent)
    python3 bootstrap.py --cuda [COMMAND ...]  # plus CUDA 12 (requirements/lock-cuda.txt); the default when
                                         # nvidia-smi shows a GPU (--cpu leaves it out)
    python3 bootstrap.py walk [k=v ...]  # train the K-Bot:      python -m tasks.walk [k=v ...]
    python3 bootstrap.py test [args]     # run the test suite:   python -m pytest [args]
    python3 bootstrap.py export CKPT [OUT] [--overwrite]   # checkpoint -> .kinfer
    python3 bootstrap.py view CKPT       # watch a checkpoint in the MuJoCo viewer (needs a display)
    python3 bootstrap.py fit|deploy|sim2sim|windows ...   # python -m tasks.fit / .deploy / .sim2sim / .windows
    python3 bootstrap.py bench           # bench/walk_throughput.py (JSON on stdout)
    python3 bootstrap.py gpu-walk --out F  # bench/gpu_walk.py: GPU throughput, then walking trained and gated
    python3 bootstrap.py run CMD ...     # any command inside the environment
    python3 bootstrap.py kos-sim         # create .venv-kos-sim: K-Scale's kos-sim server (tests/deploy/test_kos_sim.py)
    python3 bootstrap.py current-jax [COMMAND ...]   # the same on jax 0.10.2: .venv-current-jax from
                                         # requirements/lock-current-jax.txt, e.g. `current-jax walk preset=cpu`
    python3 bootstrap.py wheelhouse [--python 3.12] [--out wheelhouse]  # wheels a JAX GPU machine lacks (< 64 MiB)
    python3 bootstrap.py offline [--wheelhouse DIR] [COMMAND ...]  # on that machine, no index: its own Python and
                                         # JAX plus the folder's wheels (.offline-site), e.g. `offline walk preset=gpu`

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
# Current JAX (issue 31): the same packages on jax 0.10.2 (ksim and xax through ksim_entropy.compat).
CURRENT_JAX_LOCK = ROOT / "requirements" / "lock-current-jax.txt"
CURRENT_JAX_VENV = Path(os.environ.get("KSIM_ENTROPY_CURRENT_JAX_VENV", ROOT / ".venv-current-jax"))
# CUDA 12 for the locked jax 0.8.0, on top of lock.txt when asked (--cuda) or when an NVIDIA GPU is visible.
CUDA_LOCK = ROOT / "requirements" / "lock-cuda.txt"
# A GPU machine with its own JAX and no index: the wheel folder's packages go here, first on PYTHONPATH (issue 31).
OFFLINE_SITE = Path(os.environ.get("KSIM_ENTROPY_OFFLINE_SITE", ROOT / ".offline-site"))
# kos-sim 0.0.14 cannot share .venv: it imports kmv.viewer (kmv 0.1.x; ksim needs 0.3.x) and crashes with numpy >= 2.3.
# Its own dependencies are unpinned; these pins are the set it was tested with (the client side matches the lock).
KOS_SIM_VENV = Path(os.environ.get("KSIM_ENTROPY_KOS_SIM_VENV", ROOT / ".venv-kos-sim"))
KOS_SIM_PINS = (
    "kos-sim==0.0.14",
    "kmv==0.1.13",
    "numpy==2.2.6",
    "mujoco==3.3.7",
    "mujoco-scenes==0.0.17",
    "kscale==0.3.18",
    "pykos==0.7.10",
)

COMMANDS = {
    "walk": ["-m", "tasks.walk"],
    "test": ["tools/run_tests.py"],  # pytest in two passes (see there)
    "export": ["-m", "tasks.export"],
    "view": ["-m", "tasks.view"],
    "fit": ["-m", "tasks.fit"],
    "deploy": ["-m", "tasks.deploy"],
    "sim2sim": ["-m", "tasks.sim2sim"],
    "windows": ["-m", "tasks.windows"],
    "bench": ["bench/walk_throughput.py"],
    "gpu-walk": ["bench/gpu_walk.py"],
}


def venv_python(venv_dir: Path = VENV) -> Path:
    """The environment's interpreter."""
    return venv_dir / "bin" / "python"


def lock_digest(*locks: Path) -> str:
    """Hash of everything that decides the environment's contents."""
    digest = hashlib.sha256()
    for path in (*(locks or (LOCK,)), ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(cmd: list[str]) -> None:
    """Echo and run a command in the project root; raise on failure."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_environment(venv_dir: Path = VENV, lock: Path = LOCK, extra: tuple[Path, ...] = ()) -> None:
    """Create or refresh `venv_dir` from `lock`, then `extra` locks, and the project (editable) unless up to date."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"error: Python 3.11 is required (ksim 0.2.10 + jax 0.8.0 wheels); this is {sys.version.split()[0]}")
    digest, stamp, py = lock_digest(lock, *extra), venv_dir / ".ksim-entropy-lock-sha256", venv_python(venv_dir)
    if stamp.exists() and stamp.read_text().strip() == digest and py.exists():
        return
    if not py.exists():
        print(f"Creating virtual environment {venv_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    for requirements in (lock, *extra):
        run([*pip, "-r", str(requirements)])
    run([*pip, "-e", str(ROOT)])
    stamp.write_text(digest + "\n")


def ensure_kos_sim_environment() -> None:
    """Create `.venv-kos-sim` with kos-sim and its pins unless it is already up to date (needs the registry once)."""
    digest = hashlib.sha256("\n".join(KOS_SIM_PINS).encode()).hexdigest()
    stamp, py = KOS_SIM_VENV / ".kos-sim-pins-sha256", KOS_SIM_VENV / "bin" / "python"
    if stamp.exists() and stamp.read_text().strip() == digest and py.exists():
        return
    if not py.exists():
        print(f"Creating virtual environment {KOS_SIM_VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(KOS_SIM_VENV)
    run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *KOS_SIM_PINS])
    stamp.write_text(digest + "\n")


def cuda_wanted(argv: list[str]) -> tuple[str | None, list[str]]:
    """('asked' | 'visible' | None, argv without --cuda/--cpu): whether to add requirements/lock-cuda.txt.

    `--cuda` asks for it (an error without an NVIDIA driver), `--cpu` refuses it, and otherwise it is added when
    `nvidia-smi` shows a GPU. Never for `current-jax` (a CPU environment).
    """
    flags = [arg for arg in argv[:2] if arg in ("--cuda", "--cpu")]
    rest = argv[len(flags) :]
    if len(set(flags)) > 1:
        sys.exit("error: --cuda and --cpu contradict each other; give one")
    if rest[:1] == ["current-jax"]:
        if flags == ["--cuda"]:
            sys.exit("error: --cuda pins CUDA 12 for the locked jax 0.8.0 (.venv); current-jax is a CPU environment")
        return None, rest
    sys.path.insert(0, str(ROOT))
    from ksim_entropy.runtime import nvidia_gpus

    gpus = [] if flags == ["--cpu"] else nvidia_gpus()
    if flags == ["--cuda"]:
        if not gpus:
            sys.exit("error: --cuda needs an NVIDIA driver, and `nvidia-smi -L` shows no GPU here")
        print(f"CUDA: {gpus[0]}; adding {CUDA_LOCK.relative_to(ROOT)}", flush=True)
        return "asked", rest
    if gpus:
        print(f"CUDA: {gpus[0]} is visible; adding {CUDA_LOCK.relative_to(ROOT)} (--cpu to leave it out)", flush=True)
        return "visible", rest
    return None, rest


def run_offline(argv: list[str]) -> int:
    """`offline [--wheelhouse DIR] [COMMAND ...]`: install the wheel folder with no index, then run COMMAND."""
    sys.path.insert(0, str(ROOT / "tools"))
    import wheelhouse

    folder = ROOT / "wheelhouse"
    if argv[:1] == ["--wheelhouse"]:
        if len(argv) < 2:
            sys.exit("error: --wheelhouse needs a folder")
        folder, argv = Path(argv[1]), argv[2:]
    try:
        site = wheelhouse.install(folder, OFFLINE_SITE)
    except wheelhouse.WheelhouseError as err:
        sys.exit(f"error: {err}")
    if not argv:
        print(f"Offline packages ready in {site}; Python {sys.version.split()[0]} at {sys.executable}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.exit(f"error: unknown command '{name}'; choose from {', '.join(COMMANDS)}")
    paths = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, *COMMANDS[name], *rest], cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    """Set up the environment, then run the named command in it; returns its exit code."""
    if argv[:1] == ["wheelhouse"]:
        sys.path.insert(0, str(ROOT / "tools"))
        import wheelhouse

        return wheelhouse.main(argv[1:])
    if argv[:1] == ["offline"]:
        return run_offline(argv[1:])
    if argv[:1] == ["kos-sim"]:
        try:
            ensure_kos_sim_environment()
        except subprocess.CalledProcessError as err:
            print(
                f"error: could not install kos-sim into {KOS_SIM_VENV} (exit status {err.returncode})", file=sys.stderr
            )
            return 1
        print(f"kos-sim environment ready: {KOS_SIM_VENV / 'bin' / 'python'}")
        return 0
    cuda, argv = cuda_wanted(argv)
    venv_dir, lock = VENV, LOCK
    if argv[:1] == ["current-jax"]:
        venv_dir, lock, argv = CURRENT_JAX_VENV, CURRENT_JAX_LOCK, argv[1:]
    ensure_environment(venv_dir, lock, (CUDA_LOCK,) if cuda else ())
    if not argv:
        print(f"Environment ready: {venv_python(venv_dir)}")
        return 0
    name, rest = argv[0], argv[1:]
    bin_dir = venv_dir / "bin"
    if name == "run":
        if not rest:
            sys.exit("error: `bootstrap.py run` needs a command")
        cmd = [str(bin_dir / rest[0]) if (bin_dir / rest[0]).exists() else rest[0], *rest[1:]]
    elif name in COMMANDS:
        cmd = [str(venv_python(venv_dir)), *COMMANDS[name], *rest]
    else:
        choices = ", ".join([*COMMANDS, "run", "kos-sim", "current-jax", "wheelhouse", "offline"])
        sys.exit(f"error: unknown command '{name}'; choose from {choices}")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
