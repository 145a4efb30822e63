"""Fit the randomization to real robot logs: ``python -m tasks.fit --real LOG.ndjson [LOG ...] --out fitted.json``.

    python -m tasks.fit --real excite1.ndjson excite2.ndjson --robot local --suspended --out fitted.json \
        [--mass-scale 1.02 --mass-scale-std 0.01] [--generations 30 --windows 32 --horizon 10] [--overwrite]

The logs are kinfer NDJSON of the robot on a stand (`--suspended`), e.g. from the excitation mode of the deploy
loop. Writes `fitted.json` (`ksim_entropy.formats.fitted`), `<stem>_convergence.png`, `<stem>_replay.png` and
`<stem>_summary.json` beside it; train against it with ``python -m tasks.walk randomization=fitted.json``. While
the fit runs, each finished stage is kept in `<stem>.partial.json`, which stays if the fit fails or is interrupted.

Exit status: 0 on success, 2 on bad input or a failed fit (one `error: ...` line, no traceback), 130 on Ctrl-C.
"""

# isort: off
import ksim_entropy  # noqa: F401  (must come first: its JAX shims apply before ksim loads)
# isort: on

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ksim_entropy.bridge.logs import LogReadError, read_ndjson
from ksim_entropy.formats.fitted import FittedRandomizationError
from ksim_entropy.kbot.robot import RobotLoadError, load_robot_model, resolve_robot_files
from ksim_entropy.sim2real.fit import FitError, FitOptions, fit_randomization
from ksim_entropy.sim2real.fit_report import report_paths, write_fit_report

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def _parser() -> argparse.ArgumentParser:
    defaults = FitOptions()
    parser = argparse.ArgumentParser(
        prog="python -m tasks.fit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real", type=Path, nargs="+", required=True, metavar="LOG", help="kinfer NDJSON logs")
    parser.add_argument("--out", type=Path, required=True, help="the fitted.json to write")
    parser.add_argument("--robot", default="local", help="'local' (assets/kbot), a model folder, or kscale:<name>")
    parser.add_argument("--suspended", action="store_true", help="the logs are of the robot on a stand (required)")
    parser.add_argument("--angle-unit", choices=("rad", "deg", "auto"), default="rad", help="unit of the logs' angles")
    parser.add_argument("--mass-scale", type=float, default=defaults.mass_scale, help="weighed mass / model mass")
    parser.add_argument("--mass-scale-std", type=float, default=None, help="one-sigma error of --mass-scale")
    for name in ("generations", "population", "windows", "horizon", "refine_iterations", "seed"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, name), help=f"default {getattr(defaults, name)}")
    parser.add_argument("--devices", default="1", help="split the candidates' replays across devices: 1, auto or N")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def _check_outputs(out: Path, overwrite: bool) -> None:
    if out.suffix != ".json":
        raise FitError(f"--out {out}: give a .json file path")
    taken = [str(p) for p in (out, *report_paths(out).values()) if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist; pass --overwrite to replace them")


def run(args: argparse.Namespace) -> int:
    """Read the logs, fit, write fitted.json and its report; returns the exit status."""
    _check_outputs(args.out, args.overwrite)
    if not args.suspended:
        raise FitError(
            "pass --suspended: only logs of the robot on a stand are fitted (standing logs do not identify the foot "
            "friction: docs/fit.md)"
        )
    files = resolve_robot_files(args.robot)
    model = load_robot_model(files)
    joints = tuple(model.joint(i).name for i in range(1, model.njnt))
    logs = [read_ndjson(path, joint_names=joints, angle_unit=args.angle_unit)[0] for path in args.real]
    options = FitOptions(
        **{name: getattr(args, name) for name in ("generations", "population", "windows", "horizon", "seed")},
        refine_iterations=args.refine_iterations,
        mass_scale=args.mass_scale,
        mass_scale_std=args.mass_scale_std,
        progress=not args.quiet,
        devices=args.devices,
    )
    partial = args.out.with_suffix(".partial.json")
    try:
        result = fit_randomization(logs, files, suspended=True, options=options, partial_path=partial)
    except (FitError, KeyboardInterrupt) as err:
        if partial.exists():
            print(f"the fit's last finished stage is saved in {partial}", file=sys.stderr)
        raise err from None
    result.fitted.save(args.out, overwrite=args.overwrite)
    partial.unlink(missing_ok=True)
    paths = write_fit_report(result, args.out, overwrite=args.overwrite)
    print(result.fitted.summary())
    for warning in result.fitted.coverage.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"wrote {args.out}, " + ", ".join(str(p) for p in paths.values()) + f" in {result.seconds:.0f} s")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FitError, LogReadError, RobotLoadError, FittedRandomizationError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
