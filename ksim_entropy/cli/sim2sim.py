"""Sim-to-sim gate for an exported policy: ``python -m tasks.sim2sim MODEL.kinfer [--out DIR]``.

    python -m tasks.sim2sim policy.kinfer --out gate/ [--robot local] [--episodes 4] [--seconds 10] \
        [--command 0.3,0,0] [--min-success 0.8] [--min-efficiency 0.7] [--overwrite]

Runs the policy through kinfer's runtime in CPU MuJoCo (RK4, 1 ms, PD at 1 kHz) over the perturbation levels of
`ksim_entropy.sim2real.sim2sim` (nominal, friction, mass, latency, noise, pushes) and writes `sim2sim.json` and
`sim2sim.png` to `--out` (default: the policy's folder). `python -m tasks.export` and the end of
`python -m tasks.walk` run it on every policy they export.

Exit status: 0 when the gate passes, 1 when it fails (the reasons are printed), 2 on bad input.
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ksim_entropy.cli import comma_floats
from ksim_entropy.export import ExportError
from ksim_entropy.kbot.robot import RobotFiles, RobotLoadError, resolve_robot_files
from ksim_entropy.sim2real.sim2sim import DEFAULT_LEVELS, GateOptions, GateResult, run_gate, write_gate_report

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def gate(model: Path, files: RobotFiles, out_dir: Path, options: GateOptions, *, overwrite: bool) -> GateResult:
    """Run the gate with progress lines, write its report, print the verdict; returns the result."""
    result = run_gate(
        model, files, DEFAULT_LEVELS, options, progress=lambda name: print(f"sim2sim: {name}", flush=True)
    )
    paths = write_gate_report(result, out_dir, overwrite=overwrite)
    for level in result.levels:
        print(
            f"  {level.name:>14}: success {level.success_rate:.2f}, reward {level.mean_reward:.3f}, "
            f"tracking {level.tracking_error_mps:.3f} m/s, efficiency {level.transfer_efficiency:.2f}"
        )
    verdict = "passed" if result.passed else "FAILED (" + "; ".join(result.reasons) + ")"
    print(f"sim2sim gate {verdict}: {paths['json']}, {paths['png']}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    defaults = GateOptions()
    parser = argparse.ArgumentParser(
        prog="python -m tasks.sim2sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="the .kinfer policy")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: the policy's folder)")
    parser.add_argument("--robot", default="local", help="'local' (assets/kbot), a model folder, or kscale:<name>")
    parser.add_argument("--episodes", type=int, default=defaults.episodes)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--command", type=comma_floats, default=None, help="default: 0.3,0,0 for a walking policy")
    parser.add_argument("--min-success", type=float, default=defaults.min_success)
    parser.add_argument("--min-efficiency", type=float, default=defaults.min_efficiency)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    args = parser.parse_args(argv)
    try:
        if not args.model.is_file():
            raise FileNotFoundError(f"{args.model}: no such .kinfer file")
        options = GateOptions(
            episodes=args.episodes,
            seconds=args.seconds,
            command=args.command,
            seed=args.seed,
            min_success=args.min_success,
            min_efficiency=args.min_efficiency,
        )
        out_dir = args.model.parent if args.out is None else args.out
        result = gate(args.model, resolve_robot_files(args.robot), out_dir, options, overwrite=args.overwrite)
    except (ExportError, RobotLoadError, ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_PASSED if result.passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
