"""The GPU path on a machine without one (issue 31): the CUDA lock resolves, and every wrong device is a clear error.

Oracles: pip's own resolver against the package index (requirements/lock-cuda.txt must be exactly the closure of
`jax[cuda12]==0.8.0` under lock.txt), and JAX itself (this machine's backend is the CPU). A visible GPU is imitated
by an `nvidia-smi` on PATH that prints what the real one prints on an H100.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from ksim_entropy.runtime import check_training_device, nvidia_gpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from wheelhouse import locked_versions, normalize  # noqa: E402

import bootstrap  # noqa: E402

H100 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-2c6b1a57-7f3e-4f55-9d1e-0c1d2e3f4a5b)"


@pytest.fixture
def visible_gpu(tmp_path, monkeypatch):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\necho '{H100}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:/usr/bin:/bin")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)


def test_no_gpu_here():
    assert jax.default_backend() == "cpu"
    assert check_training_device("cpu").startswith(f"Training on cpu (cpu, jax {jax.__version__})")


def test_preset_gpu_without_a_gpu_is_an_error():
    with pytest.raises(SystemExit, match=r"^error: preset=gpu needs a GPU, but JAX runs on cpu \(cpu, jax "):
        check_training_device("gpu")


def test_preset_gpu_is_refused_before_anything_compiles():
    from ksim_entropy.cli.walk import build_config

    with pytest.raises(SystemExit, match=r"preset=gpu needs a GPU"):
        build_config(["preset=gpu", "num_envs=8"])


def test_a_visible_gpu_with_jax_on_the_cpu_is_an_error_unless_the_cpu_is_asked_for(visible_gpu, monkeypatch):
    assert nvidia_gpus() == ["NVIDIA H100 80GB HBM3"]
    with pytest.raises(SystemExit) as raised:
        check_training_device("cpu")
    assert str(raised.value).startswith(
        "error: an NVIDIA GPU is visible (NVIDIA H100 80GB HBM3) but JAX runs on cpu (cpu, jax "
    )
    assert "`python3 bootstrap.py --cuda` installs it" in str(raised.value)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert check_training_device("cpu").startswith("Training on cpu")


def test_bootstrap_adds_the_cuda_lock_when_a_gpu_is_visible_or_asked_for(visible_gpu, capsys):
    assert bootstrap.cuda_wanted(["walk", "preset=gpu"]) == ("visible", ["walk", "preset=gpu"])
    assert bootstrap.cuda_wanted(["--cuda", "walk"]) == ("asked", ["walk"])
    assert bootstrap.cuda_wanted(["--cpu", "test"]) == (None, ["test"])
    assert "NVIDIA H100 80GB HBM3 is visible; adding requirements/lock-cuda.txt" in capsys.readouterr().out


def test_bootstrap_cuda_without_a_driver_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bootstrap.py"), "--cuda", "walk"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "KSIM_ENTROPY_VENV": str(tmp_path / "venv")},
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        1,
        "error: --cuda needs an NVIDIA driver, and `nvidia-smi -L` shows no GPU here\n",
    )
    assert not (tmp_path / "venv").exists()


def test_cuda_and_cpu_together_are_refused():
    with pytest.raises(SystemExit, match=r"--cuda and --cpu contradict each other"):
        bootstrap.cuda_wanted(["--cuda", "--cpu"])


@pytest.mark.slow
def test_the_cuda_lock_is_the_closure_of_jax_cuda12_under_the_main_lock(tmp_path):
    report = tmp_path / "report.json"
    resolve = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    resolve += ["--disable-pip-version-check", "--report", str(report), "-c", str(ROOT / "requirements" / "lock.txt")]
    done = subprocess.run([*resolve, "jax[cuda12]==0.8.0"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = {
        normalize(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    main = locked_versions(ROOT / "requirements" / "lock.txt")
    cuda = locked_versions(ROOT / "requirements" / "lock-cuda.txt")
    assert {name: version for name, version in resolved.items() if name not in main} == cuda
    assert all(main[name] == version for name, version in resolved.items() if name in main)


def test_current_jax_never_gets_the_cuda_lock(visible_gpu):
    assert bootstrap.cuda_wanted(["current-jax", "walk"]) == (None, ["current-jax", "walk"])
    with pytest.raises(SystemExit, match=r"current-jax is a CPU environment"):
        bootstrap.cuda_wanted(["--cuda", "current-jax"])
