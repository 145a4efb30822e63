"""Control-loop timing of `tasks.deploy` against a local KOS server (the simulated K-Bot). Prints JSON.

    python bench/deploy_jitter.py [--seconds 30] [--out FILE]

Exports the walking policy's architecture (`tasks.walk` defaults: 2 × 128 LSTM, random weights: timing does not
depend on them) to `.kinfer`, starts `python -m ksim_entropy.testing.kos_server` in its own process (real gRPC over
localhost, 1 kHz CPU MuJoCo), and runs the deployment loop for `--seconds`. Reports, in ms:

- jitter: how late each step started after its deadline (target: p99 <= 2 ms at 50 Hz);
- inference: kinfer's `step_and_take_action` (ONNX step + carry; target: <= 1 ms);
- step: the whole step (three concurrent reads, inference, command, log line), against the 20 ms period.
"""

# isort: off
import ksim_entropy  # noqa: F401  (headless defaults first)
# isort: on

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import ksim
from emit import emit_json

from ksim_entropy.cli.walk import build_config
from ksim_entropy.deploy.loop import DeployOptions, deploy
from ksim_entropy.export import export_kinfer
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.kbot.walk import KBotWalkingTask
from ksim_entropy.testing.kos_server import SimServerProcess

JITTER_P99_TARGET_MS = 2.0
INFERENCE_TARGET_MS = 1.0


def _export_walk_policy(directory: Path) -> Path:
    config = build_config(["preset=cpu", "hidden_size=128", "depth=2", f"exp_dir={directory / 'run'}"])
    task = KBotWalkingTask(config)
    model = task.get_model(ksim.InitParams(key=jax.random.PRNGKey(0), physics_model=task.get_mujoco_model()))
    return export_kinfer(task.kinfer_policy(model), directory / "walk.kinfer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        tmp = Path(tmp)
        model = _export_walk_policy(tmp)
        with SimServerProcess("--suspended") as server:
            started = time.time()
            result = deploy(
                model,
                resolve_robot_files("local"),
                tmp / "run.ndjson",
                DeployOptions(port=server.port, duration_s=args.seconds, soft_start_s=1.0, hold_s=0.1),
            )
            wall_s = time.time() - started
    report = {
        "benchmark": "deploy_jitter",
        "policy": "tasks.walk architecture (LSTM 2 x 128), random weights",
        "server": "ksim_entropy.testing.kos_server (localhost gRPC, suspended K-Bot, 1 kHz CPU MuJoCo)",
        "seconds": args.seconds,
        "wall_s": round(wall_s, 2),
        "reason": result.reason,
        "steps": result.steps,
        "overruns": result.overruns,
        "jitter_ms": result.jitter_ms,
        "inference_ms": result.inference_ms,
        "step_ms": result.step_ms,
        "targets": {"jitter_p99_ms": JITTER_P99_TARGET_MS, "inference_ms": INFERENCE_TARGET_MS},
        "meets_targets": bool(
            result.jitter_ms["p99"] <= JITTER_P99_TARGET_MS and result.inference_ms["p99"] <= INFERENCE_TARGET_MS
        ),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    emit_json(report, args.out)


if __name__ == "__main__":
    main()
