"""`llmnas run` and `llmnas scale`: start, resume and scale a CE run.

    llmnas run [--config FILE] [--archive URL] [--resume RUN | --run-id NAME] [--evaluators N]
               [--verbose]
    llmnas scale RUN N [--archive URL]

With no --config, `run` (like every command) uses the embedded default
(llmnas_dist/configs/default.yaml): offline on a CPU, local Ray, SQLite archive in ./runs.
`--resume RUN` continues a run from the archive with the config it was started with.
`--run-id NAME` starts NAME, or resumes it when it exists, so a resubmitted
`ray job submit` continues instead of starting over.
Exit status: 0 completed, 1 the run failed (it can be resumed), 2 bad usage.
"""

from __future__ import annotations

import argparse

from llmnas_dist.cli.common import EXIT_FAILED, EXIT_OK, config_from_args
from llmnas_dist.errors import UsageError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run (or resume) a CE search: generate, admit, evaluate, select, fine-tune",
        description="Run the CE loop on Ray. Without --config: the embedded offline default. "
        "Exit status: 0 completed, 1 failed (resumable), 2 bad usage.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--resume", metavar="RUN", help="continue this run from the archive")
    which.add_argument(
        "--run-id", metavar="NAME", help="start a run with this id, or resume it if it exists"
    )
    p.add_argument(
        "--evaluators", type=int, metavar="N", help="evaluator actors (default: one per GPU)"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also print library, Ray and alembic logs (always in <run_dir>/<run>/driver.log)",
    )
    p.set_defaults(func=run_command)

    s = sub.add_parser(
        "scale",
        parents=[common],
        help="change the evaluator count of a running run (applied between cycles)",
        description="Ask the driver of RUN for N evaluators; it resizes at its next cycle.",
    )
    s.add_argument("run", metavar="RUN", help="run id")
    s.add_argument("count", type=int, metavar="N", help="evaluator actors wanted")
    s.set_defaults(func=scale_command)


def run_command(args: argparse.Namespace) -> int:
    from cluster.console import configure_console
    from cluster.entry import run_search  # Ray and torch load only for this command

    if args.evaluators is not None and args.evaluators < 1:
        raise UsageError(f"--evaluators must be at least 1, got {args.evaluators}")
    configure_console(args.verbose)
    cfg = config_from_args(args)
    ok = run_search(cfg, resume=args.resume, run_id=args.run_id, evaluators=args.evaluators)
    return EXIT_OK if ok else EXIT_FAILED


def scale_command(args: argparse.Namespace) -> int:
    from db.archive import Archive
    from db.errors import ArchiveError

    if args.count < 1:
        raise UsageError(f"N must be at least 1, got {args.count}")
    cfg = config_from_args(args)
    try:
        with Archive(cfg.archive) as archive:
            archive.set_evaluators_target(args.run, args.count)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
    print(f"run {args.run}: {args.count} evaluators requested; applied at the next cycle")
    return EXIT_OK
