"""Run a `.kinfer` policy on a K-Bot over KOS: ``python -m tasks.deploy MODEL.kinfer --host HOST --port PORT``.

    python -m tasks.deploy policy.kinfer --host 10.33.10.1 --port 50051 --log run.ndjson \
        [--robot local] [--duration 30] [--command 0.3,0,0] [--soft-start 2] [--hold 0.5] [--final damp] [--overwrite]
        [--gyro-unit auto|deg|rad] [--imu-freeze 0.1] [--read-timeout 0.75] [--max-slow-reads 2]

Reads actuator states and the IMU over pykos at the robot's control rate (50 Hz), steps the model through kinfer's
runtime, sends position targets clamped to the joint limits, after a soft start from the measured pose. Writes the
kinfer NDJSON log (`--log`, read by `python -m ksim_entropy.bridge`) and `<log>.deploy.json` (why it stopped,
timing). The watchdog holds the pose and then damps (or turns torque off) on disconnect, a frozen sensor, repeated
overruns, an actuator fault or Ctrl-C. Without a robot, try it on the simulated one:

    python -m ksim_entropy.testing.kos_server --port 50051 --suspended &
    python -m tasks.deploy policy.kinfer --port 50051 --log run.ndjson --duration 10

Excitation for fitting the randomization (robot on a stand; then `python -m tasks.fit --real excite.ndjson ...`):

    python -m tasks.deploy --excite --log excite.ndjson --duration 300 [--excite-seed 0 --excite-amplitude 0.25]

Exit status: 0 when the run completed or Ctrl-C ended it, 1 when the watchdog stopped it, 2 on bad input or a
robot that is not ready (nothing moved; one `error: ...` line).
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ksim_entropy.cli import comma_floats
from ksim_entropy.deploy.loop import DeployOptions, Excitation, deploy
from ksim_entropy.deploy.robot_map import DeployError
from ksim_entropy.kbot.robot import RobotLoadError, resolve_robot_files

EXIT_OK, EXIT_STOPPED, EXIT_BAD_INPUT = 0, 1, 2


def _print_line(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    defaults = DeployOptions()
    parser = argparse.ArgumentParser(
        prog="python -m tasks.deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, nargs="?", help="the .kinfer policy (or --excite)")
    parser.add_argument("--excite", action="store_true", help="run the excitation script instead of a policy")
    parser.add_argument("--excite-seed", type=int, default=Excitation().seed)
    parser.add_argument("--excite-amplitude", type=float, default=Excitation().amplitude_rad, help="rad (std)")
    parser.add_argument("--host", default=defaults.host, help="KOS host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="KOS port (default: %(default)s)")
    parser.add_argument(
        "--robot", default="local", help="robot metadata: 'local' (assets/kbot), a folder, kscale:<name>"
    )
    parser.add_argument("--log", type=Path, required=True, help="the NDJSON log to write")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--command", type=comma_floats, default=(), help="the policy's command vector, e.g. 0.3,0,0")
    parser.add_argument("--soft-start", type=float, default=defaults.soft_start_s, help="ramp-in time (s)")
    parser.add_argument("--hold", type=float, default=defaults.hold_s, help="safe stop: hold time (s) before --final")
    parser.add_argument("--final", choices=("damp", "torque_off"), default=defaults.final, help="after the hold")
    parser.add_argument("--max-overruns", type=int, default=defaults.max_overruns, help="overruns in a row to stop")
    parser.add_argument(
        "--read-timeout", type=float, default=defaults.read_timeout, help="periods a sensor read may take"
    )
    parser.add_argument(
        "--max-slow-reads", type=int, default=defaults.max_slow_reads, help="reads in a row over it that stop"
    )
    parser.add_argument(
        "--command-timeout", type=float, default=defaults.command_timeout, help="periods a command may take"
    )
    parser.add_argument(
        "--stall-timeout", type=float, default=defaults.stall_timeout, help="periods without progress to stop"
    )
    parser.add_argument(
        "--imu-freeze", type=float, default=defaults.imu_freeze_s, help="s an unchanged IMU reading may last"
    )
    parser.add_argument(
        "--gyro-unit",
        choices=("auto", "deg", "rad"),
        default=defaults.gyro_unit,
        help="unit KOS sends the gyro in, per s (proto: deg; kos-sim 0.0.14: rad); checked against the quaternion",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.model is None) == (not args.excite):
        parser.error("give either a .kinfer MODEL or --excite")
    source = Excitation(seed=args.excite_seed, amplitude_rad=args.excite_amplitude) if args.excite else args.model
    try:
        options = DeployOptions(
            host=args.host,
            port=args.port,
            duration_s=args.duration,
            command=args.command,
            soft_start_s=args.soft_start,
            hold_s=args.hold,
            final=args.final,
            max_overruns=args.max_overruns,
            read_timeout=args.read_timeout,
            max_slow_reads=args.max_slow_reads,
            command_timeout=args.command_timeout,
            stall_timeout=args.stall_timeout,
            imu_freeze_s=args.imu_freeze,
            gyro_unit=args.gyro_unit,
        )
        files = resolve_robot_files(args.robot)
        what = "the excitation script" if args.excite else args.model
        print(f"deploying {what} to KOS at {args.host}:{args.port}; Ctrl-C stops safely", flush=True)
        result = deploy(source, files, args.log, options, overwrite=args.overwrite, progress=_print_line)
    except (DeployError, RobotLoadError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    jitter = result.jitter_ms.get("p99", float("nan"))
    print(f"stopped: {result.reason} after {result.steps} steps; jitter p99 {jitter:.3f} ms; log {args.log}")
    if result.gyro_check:
        print(f"  gyroscope: {result.gyro_check}")
    for action in result.stop_actions:
        print(f"  {action}")
    return EXIT_OK if result.reason in ("completed", "user interrupt (Ctrl-C)") else EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
