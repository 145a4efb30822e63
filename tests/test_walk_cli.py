"""`python -m tasks.walk` argument handling: presets, overrides and bad input, all before anything compiles."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ksim_entropy.cli.walk import build_config
from ksim_entropy.kbot.walk import COMMON_DEFAULTS, PRESETS, WalkConfig, preset_config

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_preset_and_overrides(tmp_path):
    config = build_config(["preset=cpu", "num_envs=8", "batch_size=4", f"exp_dir={tmp_path / 'run'}"])
    assert isinstance(config, WalkConfig)
    assert config.preset == "cpu"
    assert (config.num_envs, config.batch_size) == (8, 4)
    assert config.hidden_size == PRESETS["cpu"]["hidden_size"]
    assert config.ctrl_dt == COMMON_DEFAULTS["ctrl_dt"] and config.dt == COMMON_DEFAULTS["dt"]
    assert config.task_id == "ksim_entropy.walk.v1"


def test_gpu_preset_is_the_full_recipe():
    config = preset_config("gpu")  # build_config refuses preset=gpu on this CPU (tests/test_cuda.py)
    assert config["num_envs"] == 4096 and config["batch_size"] == 512


def test_stand_preset_stands_still_with_disturbances_on(tmp_path):
    config = build_config(["preset=stand", "command_zero_prob=1.0", f"exp_dir={tmp_path / 'run'}"])
    assert config.preset == "stand" and config.command_zero_prob == 1.0
    assert config.sim2real and config.disturbance_curriculum and config.push_max_force_n > 0
    assert config.randomization_mode == "curriculum" and config.randomization_max_width == 1.0
    assert config.max_train_seconds == 3600.0


def test_auto_preset_is_cpu_without_accelerator(tmp_path):
    import jax

    expected = "gpu" if jax.default_backend() == "gpu" else "cpu"
    assert build_config([f"exp_dir={tmp_path / 'run'}"]).preset == expected


def test_default_run_directory_is_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "walk" / "run_000").mkdir(parents=True)
    config = build_config(["preset=cpu"])
    assert Path(config.exp_dir).name == "run_001"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["num_envz=8"], "unknown config key 'num_envz'.*num_envs"),
        (["preset=tpu"], "unknown preset 'tpu'"),
        (["num_envs=lots"], "bad config override"),
        (["randomization=/nonexistent/fitted.json"], "randomization=/nonexistent/fitted.json: .*fitted.json"),
        (["entropy_match_controller=smooth"], "entropy_match_controller=smooth needs a target"),
        (["entropy_target_path=/nonexistent/p.json"], "entropy_target_path=/nonexistent/p.json: .*p.json"),
        (["entropy_match_controller=pid", "entropy_target_path=x.json"], "'band' or 'smooth'"),
        (["target_entropy=2.0"], "entropy temperature: target entropy 2.000 nats/dim is out of reach"),
        (["target_entropy=-5.0"], "out of reach: the policy's action distribution spans"),
        (["temperature_mode=sac"], "entropy temperature: temperature mode must be one of"),
        (["temperature_pi_gains=[1.0,0.0]"], "pi_gains"),
        (["temperature_tolerance=-0.1"], "tolerance must be a finite number of nats/dim >= 0"),
        (["alpha_bounds=[0.1,0.01]"], "alpha bounds inverted or empty"),
        (["alpha_bounds=[-0.01,0.1]", "temperature_mode=damped"], "signed temperature.*needs temperature mode 'pi'"),
        (["init_std=2.0"], r"init_std=2.0 rad is outside .*\(0.005, 1\)"),
        (["head_init_scale=0"], "head_init_scale must be in"),
        (["policy_body=gru"], "policy_body='gru'; choose from lstm, mlp"),
        (["advantage_normalization=batch"], "advantage_normalization='batch'; choose from trajectory, minibatch"),
        (["max_train_seconds=-5"], "max_train_seconds must be > 0"),
        (["devices=3"], r"devices=3, but JAX sees 1 \(cpu\); on CPU, XLA_FLAGS="),
        (["devices=some"], "devices must be 'auto' or a count >= 1, got 'some'"),
        (["assist_stiffness_nm_per_rad=500"], "upright assist fades with the randomization curriculum: it needs"),
        (["preset=stand", "assist_stiffness_nm_per_rad=-1"], "assist_stiffness_nm_per_rad must be >= 0"),
        (["preset=stand", "assist_stiffness_nm_per_rad=500", "assist_fade_out_level=0"], "assist_fade_out_level > 0"),
        (["preset=stand", "command_zero_prob=0.5"], r"'command_zero_prob=0.5' contradicts preset=stand \(it fixes"),
        (["preset=stand", "xvel_range=[0.0,1.0]"], "contradicts preset=stand .it gives no velocity commands"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(args, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        build_config([*args, f"exp_dir={tmp_path / 'run'}"])


def test_existing_run_directory_is_never_reused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit, match="already holds a run"):
        build_config(["preset=cpu", f"exp_dir={run}"])
    assert (run / "notes.txt").read_text() == "precious"


def test_command_line_reports_unknown_key():
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.walk", "learning_rat=1e-3"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "unknown config key 'learning_rat'" in proc.stderr
    assert "learning_rate" in proc.stderr


def test_view_without_display_is_explained(tmp_path, monkeypatch):
    from ksim_entropy.cli import view

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match="no display"):
        view.main([str(tmp_path / "ckpt.bin")])


def test_training_entry_point_selects_headless_egl_before_mujoco_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "DISABLE_TENSORBOARD")}
    code = "import tasks.walk, os, mujoco; print(mujoco.GLContext.__module__, os.environ['DISABLE_TENSORBOARD'])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["mujoco.egl", "1"]


def test_help_lists_every_field_with_the_cpu_preset_defaults():
    # `-h` once ended in a traceback: a default the ksim config does not have reached xax's parser unfiltered.
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.walk", "-h"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and not line[0].isspace())
    assert fields["max_steps"] == str(PRESETS["cpu"]["max_steps"]) and "learning_rate" in fields
    assert "Traceback" not in proc.stderr


def test_the_wheel_ships_no_top_level_tasks_package_and_names_the_console_scripts():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["ksim_entropy"]
    scripts = project["project"]["scripts"]
    for name in ("walk", "fit", "deploy", "export", "sim2sim", "view"):
        module, _, function = scripts[f"ksim-{name}"].partition(":")
        assert module == f"ksim_entropy.cli.{name}" and function == "main"
        assert (ROOT / "tasks" / f"{name}.py").read_text().count(f"from {module} import main") == 1
