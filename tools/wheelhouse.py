"""An offline wheel folder for a GPU machine that already has JAX (issue 31). Standard library only.

Lab GPU machines often come with a current JAX + CUDA preinstalled and no package index. This project's GPU test
machine runs Python 3.12 with jax 0.11.2 (CUDA 13) and accepts at most 64 MiB of carried files, so the locked
jax 0.8.0 stack (jaxlib alone is 80 MB) cannot go there. What it lacks to train and export is small: ksim, xax,
MuJoCo 3.3.7 + MJX, kinfer and their pure-Python helpers (`OFFLINE_PACKAGES`, at the versions of
requirements/lock.txt). ksim and xax then run on that JAX through ksim_entropy.compat, which also stands in for
kmv's Qt viewer (PySide6 alone is ~90 MB), so no Qt is shipped.

    python3 bootstrap.py wheelhouse [--python 3.12] [--out wheelhouse]   # where the index is reachable
    python3 bootstrap.py offline [--wheelhouse wheelhouse] [COMMAND ...]  # on the GPU machine, no index

`build` downloads the wheels (binary only, for CPython `--python` on manylinux x86_64) and writes
`manifest.json` (name, version, file, bytes, sha256 of each); it refuses a folder it did not make and a total above
`LIMIT_MIB`. `install` checks the folder against its manifest and the running interpreter (every package present,
every wheel for this Python, every digest right), then installs with `pip --no-index --no-deps --target` into
a folder put first on PYTHONPATH: the machine's own packages (JAX, CUDA, NumPy, ...) are used and never changed.
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
MANIFEST = "manifest.json"
LIMIT_MIB = 64.0
# What a JAX GPU image (JAX, NumPy, SciPy, Equinox, Optax, Orbax, chex, ONNX, onnxruntime, TensorBoard, attrs,
# matplotlib, requests, ...) lacks to `python -m tasks.walk` and export, found by installing these into a
# Python 3.12 + jax 0.11.2 environment that has only such an image's packages (tests/test_wheelhouse.py).
OFFLINE_PACKAGES = (
    # simulation and training
    "ksim",
    "xax",
    "kmv",
    "mujoco",
    "mujoco-mjx",
    "mujoco-scenes",
    "trimesh",
    "glfw",
    "PyOpenGL",
    "bvhio",
    "spatial-transform",
    "pyglm",
    "mediapy",
    "dpshdl",
    "omegaconf",
    "GitPython",
    "gitdb",
    "smmap",
    "importlib_resources",
    "colorlogging",
    "cmaes",
    # export
    "kinfer",
    "jax2onnx",
    # robot metadata schema (kscale) and what it imports
    "kscale",
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing-inspection",
    "email-validator",
    "dnspython",
    "PyJWT",
    # mediapy imports IPython.display at load
    "ipython",
    "ipython_pygments_lexers",
    "traitlets",
    "jedi",
    "parso",
    "matplotlib-inline",
    "prompt_toolkit",
    "wcwidth",
    "pexpect",
    "ptyprocess",
    "stack-data",
    "asttokens",
    "executing",
    "pure_eval",
)
SOURCE_ONLY = ("ksim", "kmv")  # published as source only (pure Python): built here into py3-none-any wheels


class WheelhouseError(Exception):
    """A wheel folder that cannot be built or installed as asked; the message names the problem."""


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """{normalized name: version} of every `name==version` line in the lock file."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def wheel_name_and_tags(filename: str) -> tuple[str, str, str, str]:
    """(normalized name, version, python tag, abi tag) of a wheel file name; raises on anything else."""
    parts = filename[: -len(".whl")].split("-") if filename.endswith(".whl") else []
    if len(parts) not in (5, 6):
        raise WheelhouseError(f"{filename} is not a wheel file name (name-version[-build]-python-abi-platform.whl)")
    return normalize(parts[0]), parts[1], parts[-3], parts[-2]


def runs_on(python_tag: str, abi_tag: str, version: tuple[int, int]) -> bool:
    """Whether a wheel with these tags installs on CPython `version` (pure, exact cpXY, or an older abi3)."""
    for tag in python_tag.split("."):
        if tag in ("py3", f"py{version[0]}{version[1]}"):
            return True
        match = re.fullmatch(r"cp(\d)(\d+)", tag)
        if match and (int(match[1]), int(match[2])) == version:
            return True
        if match and abi_tag == "abi3" and (int(match[1]), int(match[2])) <= version:
            return True
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_python(python: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d)\.(\d+)", python)
    if not match:
        raise WheelhouseError(f"--python {python!r}: give a CPython version as MAJOR.MINOR, e.g. 3.12")
    return int(match[1]), int(match[2])


def build(out: Path, python: str = "3.12", packages: tuple[str, ...] = OFFLINE_PACKAGES, lock: Path = LOCK) -> dict:
    """Download `packages` at their locked versions as wheels for CPython `python` into `out`; returns the manifest."""
    version = _parse_python(python)
    pins = locked_versions(lock)
    missing = [name for name in packages if normalize(name) not in pins]
    if missing:
        raise WheelhouseError(f"{lock} pins no version for {', '.join(missing)}")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise WheelhouseError(f"{out} holds files that no `bootstrap.py wheelhouse` put there; pick a new --out")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{version[0]}{version[1]}"
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python, "--abi", f"cp{tag}"]
    command += ["--abi", "abi3", "--abi", "none", *(f"--platform={p}" for p in platforms), "--dest", str(out)]
    source_only = [name for name in packages if normalize(name) in {normalize(n) for n in SOURCE_ONLY}]
    command += [f"{name}=={pins[normalize(name)]}" for name in packages if name not in source_only]
    print("+", " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise WheelhouseError("pip download failed (see above): is the package index reachable?")
    if source_only:
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps"]
        command += ["--wheel-dir", str(out), *(f"{name}=={pins[normalize(name)]}" for name in source_only)]
        print("+", " ".join(command), flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            raise WheelhouseError(f"pip could not build wheels for {', '.join(source_only)} (see above)")
    wanted = {normalize(name): pins[normalize(name)] for name in packages}
    entries = {}
    for path in sorted(out.glob("*.whl")):
        name, wheel_version, python_tag, abi_tag = wheel_name_and_tags(path.name)
        if wanted.get(name) != wheel_version or not runs_on(python_tag, abi_tag, version):
            path.unlink()  # from an earlier build for another Python or lock: this folder is ours (manifest)
            continue
        entries[name] = {"version": wheel_version, "file": path.name, "bytes": path.stat().st_size}
        entries[name]["sha256"] = _sha256(path)
    absent = sorted(set(wanted) - set(entries))
    if absent:
        raise WheelhouseError(f"pip downloaded no wheel for {', '.join(absent)} on CPython {python}")
    total = sum(entry["bytes"] for entry in entries.values())
    manifest = {"python": python, "packages": entries, "total_bytes": total, "limit_mib": LIMIT_MIB}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    largest = sorted(entries.items(), key=lambda item: -item[1]["bytes"])[:5]
    listing = ", ".join(f"{name} {entry['bytes'] / 2**20:.1f}" for name, entry in largest)
    print(f"{len(entries)} wheels, {total / 2**20:.1f} MiB in {out} (largest, MiB: {listing})", flush=True)
    if total > LIMIT_MIB * 2**20:
        raise WheelhouseError(f"the wheels total {total / 2**20:.1f} MiB, above the {LIMIT_MIB:g} MiB limit")
    return manifest


def check(folder: Path, version: tuple[int, int] | None = None) -> dict:
    """The folder's manifest after checking it against its files and CPython `version` (default: this one)."""
    version = version or sys.version_info[:2]
    if not (folder / MANIFEST).is_file():
        raise WheelhouseError(f"{folder} is not a wheel folder from `bootstrap.py wheelhouse` (no {MANIFEST})")
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, entry in manifest["packages"].items():
        path = folder / entry["file"]
        if not path.is_file():
            raise WheelhouseError(f"{folder} lacks {name} {entry['version']} ({entry['file']}, listed in {MANIFEST})")
        _, _, python_tag, abi_tag = wheel_name_and_tags(entry["file"])
        if not runs_on(python_tag, abi_tag, version):
            raise WheelhouseError(
                f"{entry['file']} is for {python_tag}, not this Python {version[0]}.{version[1]}: rebuild with "
                f"`python3 bootstrap.py wheelhouse --python {version[0]}.{version[1]}`"
            )
        if _sha256(path) != entry["sha256"]:
            raise WheelhouseError(f"{entry['file']} does not match its sha256 in {MANIFEST}: copy the folder again")
    return manifest


def install(folder: Path, target: Path) -> Path:
    """Install the checked folder's wheels into `target` with no index; skipped when already done. Returns target."""
    manifest = check(folder)
    stamp = target / ".wheelhouse-manifest-sha256"
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    wheels = [str(folder / entry["file"]) for entry in manifest["packages"].values()]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index"]
    command += ["--no-deps", "--upgrade", "--target", str(target), *wheels]
    print(f"+ pip install --no-index --no-deps --target {target} <{len(wheels)} wheels from {folder}>", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise WheelhouseError(f"pip could not install the wheels from {folder} into {target} (see above)")
    stamp.write_text(digest + "\n")
    return target


def main(argv: list[str]) -> int:
    """`wheelhouse.py [--python 3.12] [--out DIR]`: build the folder (what `bootstrap.py wheelhouse` runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="3.12", help="CPython version of the GPU machine (MAJOR.MINOR)")
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse", help="folder to fill (git-ignored default)")
    args = parser.parse_args(argv)
    try:
        build(args.out, args.python)
    except WheelhouseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
