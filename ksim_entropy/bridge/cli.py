"""Command line of the information bridge: gap reports, log summaries and entropy profiles from kinfer NDJSON logs.

Logs are kinfer's runtime NDJSON or kinfer-sim's `--save-logs` NDJSON (recognised by their keys; `--control-hz`
dates a kinfer-sim log that has no `time` input, default 50 Hz). Every command takes the reading options
`[--num-joints N] [--angle-unit rad|deg|auto] [--control-hz HZ]`.

    python -m ksim_entropy.bridge gap --sim SIM.ndjson --real REAL.ndjson --out DIR [--overwrite]
        [--num-joints N] [--angle-unit rad|deg|auto] [--sim-score X --real-score Y] [--replay REPLAY.ndjson]
    python -m ksim_entropy.bridge summary LOG.ndjson [--num-joints N] [--angle-unit rad|deg|auto]
    python -m ksim_entropy.bridge profile LOG.ndjson --out PROFILE.json [--groups joint_angles,joint_vels,...]
        [--overwrite] [--num-joints N] [--angle-unit rad|deg|auto]

Exit status: 0 on success, 2 on bad input (missing or malformed log, unusable data, a non-empty or unwritable
output directory or an existing profile file, bad arguments), with a one-line `error: ...` on stderr and no traceback.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ksim_entropy.bridge.logs import LogReadError, read_ndjson
from ksim_entropy.bridge.metrics import MetricInputError
from ksim_entropy.bridge.report import GapReportError, check_out_dir, gap_report, stderr_progress
from ksim_entropy.formats.profile import DEFAULT_GROUPS, EntropyProfile, EntropyProfileError
from ksim_entropy.formats.schema import CHANNEL_GROUPS, LogReport, StepLog

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
PROG = "python -m ksim_entropy.bridge"


class _InputError(Exception):
    """Bad input found by the CLI itself (e.g. a missing --out)."""


def _read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-joints", type=int, default=None, metavar="N", help="joints per record (default: the first record's)"
    )
    parser.add_argument(
        "--angle-unit",
        choices=("rad", "deg", "auto"),
        default="rad",
        help="unit of joint angles/velocities/outputs in the logs; auto converts groups that look like degrees",
    )
    parser.add_argument(
        "--control-hz",
        type=float,
        default=None,
        metavar="HZ",
        help="control rate of kinfer-sim logs without a time input: t_us = step_id / HZ (default 50)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Sim-to-real information bridge on kinfer NDJSON logs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{gap,summary,profile}")
    gap = commands.add_parser("gap", help="write a sim-vs-real gap report (HTML, JSON, PNG plots)")
    gap.add_argument("--sim", required=True, type=Path, help="simulated run, kinfer or kinfer-sim NDJSON")
    gap.add_argument("--real", required=True, type=Path, help="real-robot run, kinfer NDJSON")
    gap.add_argument("--out", required=True, type=Path, help="output directory (new or empty, unless --overwrite)")
    gap.add_argument("--overwrite", action="store_true", help="replace this report's files in a non-empty --out")
    gap.add_argument("--replay", type=Path, default=None, help="sim replay time-aligned with --real (same steps)")
    gap.add_argument("--sim-score", type=float, default=None, help="task score in sim (e.g. mean tracking reward)")
    gap.add_argument("--real-score", type=float, default=None, help="the same task score on the robot")
    gap.add_argument("--seed", type=int, default=0, help="seed of the subsampling and the classifier folds")
    gap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _read_options(gap)
    summary = commands.add_parser("summary", help="print what reading a log found (LogReport summary)")
    summary.add_argument("log", type=Path, help="kinfer NDJSON log")
    _read_options(summary)
    profile = commands.add_parser("profile", help="write a log's entropy profile (per-channel mean/std, JSON)")
    profile.add_argument("log", type=Path, help="kinfer NDJSON log (real robot or sim rollout)")
    profile.add_argument("--out", required=True, type=Path, help="profile JSON file to write (new, unless --overwrite)")
    profile.add_argument(
        "--groups",
        default=",".join(DEFAULT_GROUPS),
        help=f"comma-separated channel groups (default: %(default)s; known: {','.join(CHANNEL_GROUPS)})",
    )
    profile.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _read_options(profile)
    return parser


def _read(path: Path, args: argparse.Namespace) -> tuple[StepLog, LogReport]:
    if args.num_joints is not None and args.num_joints < 1:
        raise _InputError(f"--num-joints must be >= 1, got {args.num_joints}")
    if args.control_hz is not None and not 0 < args.control_hz < float("inf"):
        raise _InputError(f"--control-hz must be a finite rate > 0, got {args.control_hz}")
    period_s = None if args.control_hz is None else 1.0 / args.control_hz
    return read_ndjson(path, num_joints=args.num_joints, angle_unit=args.angle_unit, control_period_s=period_s)


def _summary(args: argparse.Namespace) -> int:
    _, report = _read(args.log, args)
    print(report.summary())
    return EXIT_OK


def _gap(args: argparse.Namespace) -> int:
    if (args.sim_score is None) != (args.real_score is None):
        raise _InputError("give both --sim-score and --real-score, or neither")
    check_out_dir(args.out, args.overwrite)  # before the minutes of reading long logs
    sim, sim_report = _read(args.sim, args)
    real, real_report = _read(args.real, args)
    replay, replay_report = (None, None) if args.replay is None else _read(args.replay, args)
    for log_report in (sim_report, real_report, replay_report):
        if log_report is not None:
            print(log_report.summary())
    report = gap_report(
        sim,
        real,
        args.out,
        sim_report=sim_report,
        real_report=real_report,
        replay=replay,
        replay_report=replay_report,
        sim_score=args.sim_score,
        real_score=args.real_score,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=None if args.quiet else stderr_progress,
    )
    eff = report.efficiency
    print(f"transfer efficiency: {eff.percent:.1f} % ({eff.basis.replace('_', ' ')}) -> {eff.band.replace('_', ' ')}")
    if eff.task_score_pct is not None:
        print(f"distribution overlap: {eff.overlap_pct:.1f} % (classifier accuracy {eff.c2st_accuracy:.3f})")
    print(f"report written to {report.html_path} (data: {report.json_path.name}, {len(report.plots)} plots)")
    return EXIT_OK


def _profile(args: argparse.Namespace) -> int:
    groups = [name.strip() for name in args.groups.split(",") if name.strip()]
    unknown = [name for name in groups if name not in CHANNEL_GROUPS]
    if not groups or unknown:  # before the minutes of reading a long log
        what = f"unknown groups {unknown}" if unknown else "no group named"
        raise _InputError(f"--groups: {what}; known groups: {','.join(CHANNEL_GROUPS)}")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    if args.out.resolve() == args.log.resolve():
        raise _InputError(f"--out {args.out} is the input log; choose another file")
    log, report = _read(args.log, args)
    print(report.summary())
    profile = EntropyProfile.from_log(log, groups, source=str(args.log))
    path = profile.save(args.out, overwrite=args.overwrite)
    print(profile.summary())
    print(f"profile written to {path}")
    return EXIT_OK


_COMMANDS = {"gap": _gap, "summary": _summary, "profile": _profile}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (LogReadError, GapReportError, MetricInputError, EntropyProfileError, OSError, _InputError) as err:
        # OSError: --out unusable or already there
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
