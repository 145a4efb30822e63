"""The refit half of the loop over a real KOS server: excite a hidden robot through `tasks.deploy`, fit, compare.

    python bench/kos_fit_loop.py [--hidden-seed 0] [--seconds 300] [--out FILE]

1. `python -m ksim_entropy.testing.kos_server --suspended --hidden-seed S` (own process): the stand-in K-Bot with
   hidden physics (`HiddenRobot.random(S)`), action and observation latency, encoder offsets, IMU biases and noise,
   stepped in real time at 1 kHz behind KOS's gRPC services.
2. The deployment loop's excitation mode (`Excitation`, as `python -m tasks.deploy --excite`) for `--seconds` of
   wall time, logging kinfer NDJSON like on the robot: KOS units, real gRPC round trips, the loop's own delays.
3. `fit_randomization` on that log (default `FitOptions`, the weighed mass given ±1 %), as `python -m tasks.fit`.

Reported against the hidden truth: the multiplicative scales, joint damping, IMU biases and zero offsets (as in
`bench/fit_recovery.py`), and the fitted loop latency against the server's action plus observation latency plus
the loop's own read-to-command time (its median step time is an upper bound).
"""

# isort: off
import ksim_entropy  # noqa: F401  (first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from emit import emit_json

from ksim_entropy.bridge.logs import read_ndjson
from ksim_entropy.deploy.loop import DeployOptions, Excitation, deploy
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.fit import FitOptions, fit_randomization
from ksim_entropy.sim2real.sim import KBotSimulator
from ksim_entropy.testing.kos_server import SimServerProcess
from ksim_entropy.testing.reality import HiddenRobot

MULTIPLICATIVE = ("frictionloss_scale", "armature_scale", "kp_scale", "kd_scale")
BIASES = tuple(f"{kind}/{axis}" for kind in ("gyro_bias", "accel_bias") for axis in "xyz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (never overwrites)")
    args = parser.parse_args()
    files = resolve_robot_files("local")
    joint_names = KBotSimulator(files).joint_names
    hidden = HiddenRobot.random(args.hidden_seed, len(joint_names))
    with tempfile.TemporaryDirectory(prefix="kos-fit-") as tmp:
        tmp = Path(tmp)
        seeds = ("--hidden-seed", str(args.hidden_seed), "--seed", str(args.hidden_seed + 100))
        with SimServerProcess("--suspended", *seeds) as server:
            options = DeployOptions(port=server.port, duration_s=args.seconds, soft_start_s=1.0, hold_s=0.2)
            excitation = Excitation(seed=args.hidden_seed + 7)
            deployed = deploy(excitation, files, tmp / "excite.ndjson", options)
        print(f"excitation: {deployed.reason}, {deployed.steps} steps", file=sys.stderr, flush=True)
        log, _ = read_ndjson(tmp / "excite.ndjson", joint_names=joint_names)
    started = time.perf_counter()
    fit_options = FitOptions(seed=args.hidden_seed, mass_scale=hidden.mass_scale, mass_scale_std=0.01)
    result = fit_randomization([log], files, options=fit_options)
    fit_s = time.perf_counter() - started
    fitted = result.fitted
    truth = hidden.values(fitted.joint_names)
    offsets = fitted.per_joint("zero_offset")
    identified = [p for p in offsets if p.identifiable]
    report = {
        "benchmark": "kos_fit_loop",
        "hidden_seed": args.hidden_seed,
        "log_seconds": args.seconds,
        "deploy": {
            "reason": deployed.reason,
            "steps": deployed.steps,
            "overruns": deployed.overruns,
            "jitter_ms": deployed.jitter_ms,
            "step_ms": deployed.step_ms,
        },
        "fit_s": round(fit_s, 1),
        "final_loss": fitted.final_loss,
        "multiplicative": {
            name: {
                "truth": truth[name],
                "fit": fitted[name].mean,
                "relative_error": fitted[name].mean / truth[name] - 1,
            }
            for name in MULTIPLICATIVE
        },
        "joint_damping": {"truth": truth["joint_damping"], "fit": fitted["joint_damping"].mean},
        "loop_latency_s": {
            "fit": fitted["loop_latency_s"].mean,
            "server_action_latency": hidden.action_latency_s,
            "server_obs_latency": hidden.obs_latency_s,
            "loop_step_p50_s": deployed.step_ms.get("p50", float("nan")) / 1e3,
        },
        "imu_bias_relative_error": {name: abs(fitted[name].mean - truth[name]) / abs(truth[name]) for name in BIASES},
        "zero_offsets": {
            "identifiable": len(identified),
            "of": len(offsets),
            "identifiable_holding_truth": sum(p.low <= truth[p.name] <= p.high for p in identified),
            "max_abs_error_identifiable_rad": max((abs(p.mean - truth[p.name]) for p in identified), default=None),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    emit_json(report, args.out)


if __name__ == "__main__":
    main()
