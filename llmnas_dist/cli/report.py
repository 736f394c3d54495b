"""`llmnas report`: the convergence report of a run, or several runs side by side.

    llmnas report RUN [--out DIR]
    llmnas report --compare RUN1 RUN2 ... [--out DIR]

Writes a self-contained HTML page (works offline) and a JSON file with the same numbers
into DIR (default: <cluster.run_dir>/reports): RUN.html and RUN.json, or compare.html and
compare.json. The archive is opened read-only; an unknown run, a missing archive or bad
flags end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from db.archive import Archive
from db.errors import ArchiveError
from llmnas_dist.analysis.report import write_compare_report, write_run_report
from llmnas_dist.cli.common import EXIT_OK, config_from_args
from llmnas_dist.errors import UsageError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="HTML + JSON convergence report of a run (or --compare several)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run id")
    p.add_argument(
        "--compare", nargs="+", metavar="RUN", help="put these runs side by side instead"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run_dir>/reports)")
    p.set_defaults(func=report)


def report(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.compare is None):
        raise UsageError("give one RUN, or --compare RUN1 RUN2 ... (not both)")
    if args.compare is not None and len(set(args.compare)) < 2:
        raise UsageError("--compare needs at least two different runs")
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.cluster.run_dir) / "reports"
    try:
        # the CLI answers now or says why: it does not wait for a server to come up
        with Archive(cfg.archive, read_only=True, connect_retries=0) as archive:
            if args.compare is not None:
                page, data = write_compare_report(archive, list(dict.fromkeys(args.compare)), out)
            else:
                page, data = write_run_report(archive, args.run, out)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    print(f"wrote {page}")
    print(f"wrote {data}")
    return EXIT_OK
