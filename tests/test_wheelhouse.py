"""tools/wheelhouse.py: the offline wheel folder for a GPU machine that has its own JAX and no index (issue 31).

Oracles: `packaging`'s own wheel-name parser and CPython tag lists (what pip installs), the real package index
(the folder for CPython 3.12 is built and must stay under 64 MiB), and, where a Python 3.12 with a current JAX is
at hand (`KSIM_ENTROPY_OFFLINE_PYTHON`), a real offline install that trains and exports. Bad folders are made of
small fake wheels: each gets a one-line error naming the problem.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import wheelhouse  # noqa: E402

WHEELS = [
    "mujoco-3.3.7-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "mujoco-3.3.7-cp311-cp311-manylinux_2_27_x86_64.whl",
    "pydantic_core-2.50.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "cryptography-50.0.2-cp39-abi3-manylinux_2_28_x86_64.whl",
    "cryptography-50.0.2-cp313-abi3-manylinux_2_28_x86_64.whl",
    "xax-0.4.4-py3-none-any.whl",
    "six-1.17.0-py2.py3-none-any.whl",
    "foo-1.0-1-cp312-cp312-linux_x86_64.whl",
    "legacy-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
]


@pytest.mark.parametrize("filename", WHEELS)
@pytest.mark.parametrize("version", [(3, 11), (3, 12), (3, 13)])
def test_wheel_tags_match_what_pip_accepts(filename, version):
    name, wheel_version, _, tags = parse_wheel_filename(filename)
    accepted = {(t.interpreter, t.abi) for t in [*cpython_tags(version), *compatible_tags(version)]}
    expected = any((tag.interpreter, tag.abi) in accepted for tag in tags)
    ours_name, ours_version, python_tag, abi_tag = wheelhouse.wheel_name_and_tags(filename)
    assert (ours_name, ours_version) == (str(name), str(wheel_version))
    assert wheelhouse.runs_on(python_tag, abi_tag, version) == expected


def test_every_offline_package_is_pinned_by_the_lock():
    pins = wheelhouse.locked_versions()
    assert {wheelhouse.normalize(name) for name in wheelhouse.OFFLINE_PACKAGES} <= set(pins)
    assert pins["mujoco"] == "3.3.7" and pins["ksim"] == "0.2.10"
    assert not {"jax", "jaxlib", "pyside6", "pyside6-essentials", "numpy"} & {
        wheelhouse.normalize(name) for name in wheelhouse.OFFLINE_PACKAGES
    }  # the machine's own JAX and NumPy are used; Qt is never shipped


def _folder(tmp_path: Path, files: dict[str, bytes], listed: dict[str, str] | None = None) -> Path:
    """A wheel folder of fake wheels with a manifest listing `listed` (name -> file; default: all of `files`)."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    for filename, content in files.items():
        (folder / filename).write_bytes(content)
    packages = {}
    for name, filename in (listed or {f.split("-")[0]: f for f in files}).items():
        content = files.get(filename, b"")
        packages[name] = {
            "version": filename.split("-")[1],
            "file": filename,
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    manifest = {"python": "3.12", "packages": packages, "total_bytes": 0, "limit_mib": 64.0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_check_accepts_a_complete_folder_for_this_python(tmp_path):
    folder = _folder(tmp_path, {"xax-0.4.4-py3-none-any.whl": b"a", "kinfer-0.6.1-cp312-cp312-linux_x86_64.whl": b"b"})
    assert set(wheelhouse.check(folder, (3, 12))["packages"]) == {"xax", "kinfer"}


def test_check_refuses_a_folder_without_manifest(tmp_path):
    with pytest.raises(wheelhouse.WheelhouseError, match=r"is not a wheel folder from `bootstrap.py wheelhouse`"):
        wheelhouse.check(tmp_path, (3, 12))


def test_check_names_a_missing_package(tmp_path):
    listed = {"xax": "xax-0.4.4-py3-none-any.whl", "kinfer": "kinfer-0.6.1-cp312-cp312-linux_x86_64.whl"}
    folder = _folder(tmp_path, {"xax-0.4.4-py3-none-any.whl": b"a"}, listed)
    with pytest.raises(wheelhouse.WheelhouseError, match=r"lacks kinfer 0.6.1 \(kinfer-0.6.1-cp312"):
        wheelhouse.check(folder, (3, 12))


def test_check_names_a_wheel_for_another_python(tmp_path):
    folder = _folder(tmp_path, {"mujoco-3.3.7-cp311-cp311-manylinux_2_27_x86_64.whl": b"m"})
    with pytest.raises(
        wheelhouse.WheelhouseError, match=r"is for cp311, not this Python 3.12: rebuild with .*--python 3.12"
    ):
        wheelhouse.check(folder, (3, 12))


def test_check_names_a_damaged_wheel(tmp_path):
    folder = _folder(tmp_path, {"xax-0.4.4-py3-none-any.whl": b"a"})
    (folder / "xax-0.4.4-py3-none-any.whl").write_bytes(b"changed")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"does not match its sha256"):
        wheelhouse.check(folder, (3, 12))


def test_build_refuses_a_folder_it_did_not_make_and_a_bad_python(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"holds files that no `bootstrap.py wheelhouse` put there"):
        wheelhouse.build(tmp_path, "3.12")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(wheelhouse.WheelhouseError, match=r"--python '3': give a CPython version as MAJOR.MINOR"):
        wheelhouse.build(tmp_path / "new", "3")


def test_bootstrap_offline_names_a_missing_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bootstrap.py"), "offline", "--wheelhouse", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=dict(os.environ, KSIM_ENTROPY_OFFLINE_SITE=str(tmp_path / "site")),
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"error: {tmp_path / 'none'} is not a wheel folder from `bootstrap.py wheelhouse` (no manifest.json)"
    )
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_the_wheel_folder_for_python_3_12_builds_from_the_index_under_64_mib(tmp_path):
    manifest = wheelhouse.build(tmp_path / "wheelhouse", "3.12")
    names = set(manifest["packages"])
    assert names == {wheelhouse.normalize(name) for name in wheelhouse.OFFLINE_PACKAGES}
    sizes = [(tmp_path / "wheelhouse" / entry["file"]).stat().st_size for entry in manifest["packages"].values()]
    assert manifest["total_bytes"] == sum(sizes) < 64 * 2**20
    assert wheelhouse.check(tmp_path / "wheelhouse", (3, 12)) == manifest
    assert manifest["packages"]["mujoco"]["file"].startswith("mujoco-3.3.7-cp312-cp312-")


OFFLINE_PYTHON = os.environ.get("KSIM_ENTROPY_OFFLINE_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(
    not OFFLINE_PYTHON,
    reason="no KSIM_ENTROPY_OFFLINE_PYTHON (a Python 3.12 with a current JAX and a GPU image's packages, no ksim)",
)
def test_offline_install_trains_and_exports_on_that_python(tmp_path):
    folder = tmp_path / "wheelhouse"
    wheelhouse.build(folder, "3.12")
    env = dict(os.environ, KSIM_ENTROPY_OFFLINE_SITE=str(tmp_path / "site"))
    run_dir = tmp_path / "run"
    args = ["preset=cpu", "num_envs=2", "batch_size=2", "max_steps=3", "hidden_size=16", "render_length_seconds=0.1"]
    args += ["sim2sim_gate=false", f"exp_dir={run_dir}"]
    done = subprocess.run(
        [OFFLINE_PYTHON, str(ROOT / "bootstrap.py"), "offline", "--wheelhouse", str(folder), "walk", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (run_dir / "policy.kinfer").stat().st_size > 10_000
