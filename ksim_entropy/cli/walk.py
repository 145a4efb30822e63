"""Train the K-Bot: `python -m tasks.walk [preset=...] [key=value ...]` (installed: `ksim-walk`).

Presets: `preset=auto` (default) picks `gpu` when JAX sees a GPU, else `cpu` (a small smoke-sized run).
Any config field can be overridden as `key=value` (ksim/xax CLI). At the end the final checkpoint is exported to
`<exp_dir>/policy.kinfer`. A run never writes into an existing run directory: to resume, pass
`load_from_ckpt_path=<old run>/checkpoints/ckpt.bin` and training continues in a new directory. Every setting is
checked here, before anything compiles, and bad input exits with a one-line error.
"""

import difflib
import sys
from dataclasses import fields
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from ksim_entropy.formats.fitted import FittedRandomizationError
from ksim_entropy.kbot.robot import RobotLoadError, load_robot_model
from ksim_entropy.kbot.walk import (
    PRESET_LOCKS,
    PRESETS,
    KBotWalkingTask,
    WalkConfig,
    default_device_preset,
    preset_config,
)
from ksim_entropy.policy import BODIES
from ksim_entropy.ppo.checkpoint import CheckpointError
from ksim_entropy.ppo.data_parallel import DataParallelError, initialize_distributed, resolve_devices
from ksim_entropy.ppo.mixins import ADVANTAGE_NORMALIZATIONS
from ksim_entropy.runtime import check_training_device
from ksim_entropy.sim2real.sim2sim import GateOptions


def _split_preset(args: list[str]) -> tuple[str, list[str]]:
    preset = "auto"
    rest = []
    for arg in args:
        if arg.startswith("preset="):
            preset = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if preset == "auto":
        preset = default_device_preset()
    if preset not in PRESETS:
        raise SystemExit(f"error: unknown preset '{preset}'; choose from auto, {', '.join(PRESETS)}")
    return preset, rest


def check_override_keys(args: list[str]) -> None:
    """Exit with a one-line error (and the closest names) on a `key=value` whose key is not a WalkConfig field."""
    known = {f.name for f in fields(WalkConfig)}
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].split(".", 1)[0]
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise SystemExit(
                f"error: unknown config key '{key}' in '{arg}'.{hint} (`python -m tasks.walk -h` lists all)"
            )


def _new_run_dir(root: Path) -> Path:
    run_id = 0
    while (root / f"run_{run_id:03d}").exists():
        run_id += 1
    return root / f"run_{run_id:03d}"


def _check_preset_locks(preset: str, config: WalkConfig, args: list[str]) -> None:
    """An override that contradicts what the preset is for exits with a one-line error."""
    for key, fixed in PRESET_LOCKS.get(preset, {}).items():
        given = [a for a in args if a.split("=", 1)[0] == key]
        if not given:
            continue
        value = getattr(config, key)
        if fixed is None or value != fixed:
            why = f"it fixes {key}={fixed}" if fixed is not None else "it gives no velocity commands"
            raise SystemExit(
                f"error: '{given[-1]}' contradicts preset={preset} ({why}); drop it or use preset=cpu|gpu to walk"
            )


def _check_policy_settings(config: WalkConfig) -> None:
    """Settings that would otherwise fail only after the first compile."""
    if config.advantage_normalization not in ADVANTAGE_NORMALIZATIONS:
        raise SystemExit(
            f"error: advantage_normalization={config.advantage_normalization!r}; choose from "
            f"{', '.join(ADVANTAGE_NORMALIZATIONS)}"
        )
    if config.max_train_seconds is not None and not config.max_train_seconds > 0:
        raise SystemExit(f"error: max_train_seconds must be > 0 s, got {config.max_train_seconds}")
    low, high = config.min_std * config.var_scale, config.max_std
    if config.init_std is not None and not low < config.init_std < high:
        raise SystemExit(
            f"error: init_std={config.init_std} rad is outside what the policy's std can take, ({low:g}, {high:g}) "
            "rad = (min_std·var_scale, max_std)"
        )
    if config.policy_body not in BODIES:
        raise SystemExit(f"error: policy_body={config.policy_body!r}; choose from {', '.join(sorted(BODIES))}")
    if config.assist_stiffness_nm_per_rad > 0.0:
        if not (config.sim2real and config.randomization_mode == "curriculum"):
            raise SystemExit(
                "error: the upright assist fades with the randomization curriculum: it needs sim2real=true and "
                f"randomization_mode=curriculum (got sim2real={config.sim2real}, "
                f"randomization_mode={config.randomization_mode!r})"
            )
        if config.assist_damping_nms_per_rad < 0.0 or not config.assist_fade_out_level > 0.0:
            raise SystemExit(
                "error: assist_damping_nms_per_rad must be >= 0 and assist_fade_out_level > 0, got "
                f"{config.assist_damping_nms_per_rad} and {config.assist_fade_out_level}"
            )
    elif config.assist_stiffness_nm_per_rad < 0.0:
        raise SystemExit(f"error: assist_stiffness_nm_per_rad must be >= 0, got {config.assist_stiffness_nm_per_rad}")
    if not 0.0 < config.head_init_scale <= 1.0:
        raise SystemExit(f"error: head_init_scale must be in (0, 1], got {config.head_init_scale}")
    try:
        KBotWalkingTask(config).get_entropy_temperature()
    except (ValueError, TypeError) as err:
        raise SystemExit(f"error: entropy temperature: {err}") from err


def build_config(args: list[str]) -> WalkConfig:
    """Merge preset defaults and `key=value` overrides into a config; exit with a clear message on bad input."""
    preset, rest = _split_preset(args)
    print(check_training_device(preset), flush=True)
    check_override_keys(rest)
    base = preset_config(preset, preset=preset)
    try:
        config = KBotWalkingTask.get_config(base, use_cli=rest if rest else False)
    except OmegaConfBaseException as err:
        raise SystemExit(f"error: bad config override: {err}") from err
    _check_preset_locks(preset, config, rest)
    _check_policy_settings(config)
    if config.exp_dir is None:
        config.exp_dir = str(_new_run_dir(Path("runs") / "walk").resolve())
    exp_dir = Path(config.exp_dir).expanduser()
    if exp_dir.exists() and any(exp_dir.iterdir()):
        raise SystemExit(
            f"error: exp_dir {exp_dir} already holds a run and would be overwritten. Pick a new exp_dir; to resume, "
            f"pass load_from_ckpt_path={exp_dir}/checkpoints/ckpt.bin with a new (or no) exp_dir."
        )
    if config.randomization:  # checked here: errors inside ksim's training loop are logged, not raised
        task = KBotWalkingTask(config)
        try:
            task.fitted_ranges(load_robot_model(task.robot_files, scene=None))
        except (FittedRandomizationError, ValueError) as err:
            raise SystemExit(f"error: randomization={config.randomization}: {err}") from err
    if config.entropy_match_controller != "band" and config.entropy_target_path is None:
        raise SystemExit(
            f"error: entropy_match_controller={config.entropy_match_controller} needs a target: "
            "entropy_target_path=fitted.json"
        )
    if config.entropy_target_path is not None:
        task = KBotWalkingTask(config)
        try:
            task.get_curriculum(task.get_mujoco_model())
        except ValueError as err:
            raise SystemExit(f"error: entropy_target_path={config.entropy_target_path}: {err}") from err
    if config.finetune_kl != 0.0:
        try:
            KBotWalkingTask(config).get_source_kl()
        except ValueError as err:
            raise SystemExit(f"error: finetune_kl={config.finetune_kl}: {err}") from err
    if config.dann_windows:
        try:
            KBotWalkingTask(config).get_domain_adversarial()
        except ValueError as err:  # WindowError, and bad DANN settings
            raise SystemExit(f"error: dann_windows={config.dann_windows}: {err}") from err
    if config.c2st_report and not config.c2st_windows:
        raise SystemExit(f"error: c2st_report={config.c2st_report} needs c2st_windows=real_windows.npz (C2ST guidance)")
    if config.c2st_windows:
        try:
            task = KBotWalkingTask(config)
            guidance = task.get_discriminator_guidance()
            guidance.mask(task.get_domain_randomization(task.get_mujoco_model()).names)
        except ValueError as err:  # WindowError, bad rule settings, unknown parameters
            raise SystemExit(f"error: c2st_windows={config.c2st_windows}: {err}") from err
    try:
        resolve_devices(config.devices, config.num_envs, config.batch_size)
    except DataParallelError as err:
        raise SystemExit(f"error: {err}") from err
    if config.sim2sim_gate:
        try:
            GateOptions(episodes=config.sim2sim_episodes, seconds=config.sim2sim_seconds)
        except ValueError as err:
            raise SystemExit(f"error: sim2sim gate: {err}") from err
    return config


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `python -m tasks.walk [preset=...] [key=value ...]`."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        KBotWalkingTask.get_config(preset_config("cpu"), use_cli=["--help"])
    try:
        initialize_distributed()  # several hosts: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
    except DataParallelError as err:
        raise SystemExit(f"error: {err}") from err
    config = build_config(args)
    try:
        KBotWalkingTask.launch(config, use_cli=[])
    except (CheckpointError, RobotLoadError) as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
