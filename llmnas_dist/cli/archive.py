"""`llmnas archive ...`: read-only queries over the archive, as tables or JSON.

Every query opens the archive read-only: a missing SQLite file, an empty or out-of-date
database, an unreachable server, an unknown run or hash and a bad query all end with one
line on stderr and exit status 2 (UsageError). Tables are aligned plain text; `--json`
prints one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from db.archive import EXPORT_TABLES, Archive
from db.contract import ArchiveReader
from db.errors import ArchiveError
from llmnas_dist.analysis.timeline import CycleUse, cycle_use, shares_text
from llmnas_dist.cli.common import EXIT_OK, config_from_args, format_cell, format_table
from llmnas_dist.errors import UsageError
from llmnas_dist.program.lemur import TrainedProgram, write_lemur_export
from llmnas_dist.vocab import SHORT_HASH, decoding_of

EXPORT_FORMATS = ("csv", "jsonl", "parquet", "lemur")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "archive", help="query the archive (read-only)", description=__doc__.splitlines()[0]
    )
    actions = p.add_subparsers(dest="archive_command", metavar="QUERY", required=True)
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def add(
        name: str, handler: Callable[[ArchiveReader, argparse.Namespace], Any], text: str
    ) -> argparse.ArgumentParser:
        q = actions.add_parser(name, parents=[common, out], help=text, description=text)
        q.set_defaults(func=lambda args: _run_query(handler, args))
        return q

    add("runs", list_runs, "list the runs with their progress")
    top = add("top", show_top, "the best architectures of a run (mean score over seeds)")
    top.add_argument("--run", required=True, help="run id")
    top.add_argument("--k", type=_positive_int, default=10, help="how many (default 10)")
    top.add_argument("--dataset", help="dataset (default: the run's)")
    show = add("show", show_architecture, "one architecture: metadata, evaluations, code")
    show.add_argument("hash_prefix", metavar="HASH_PREFIX", help="hash or unique prefix")
    lineage = add("lineage", show_lineage, "the chain of parents of an architecture")
    lineage.add_argument("hash_prefix", metavar="HASH", help="hash or unique prefix")
    fails = add("failures", show_failures, "why a run's candidates were rejected or failed")
    fails.add_argument("--run", required=True, help="run id")
    export = add(
        "export",
        export_run,
        "write a run's rows as CSV, JSON lines or Parquet, or its trained programs in "
        "LEMUR's layout (--format lemur --out DIR)",
    )
    export.add_argument("--run", required=True, help="run id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv", help="default csv")
    export.add_argument(
        "--table", choices=EXPORT_TABLES, default="evaluations", help="default evaluations"
    )
    export.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    sql = add("sql", run_sql, "run one read-only SELECT/WITH query")
    sql.add_argument("query", metavar="QUERY", help='for example "SELECT * FROM v_leaderboard"')
    sql.add_argument("--max-rows", type=_positive_int, default=1000, help="row cap (default 1000)")


def _run_query(
    handler: Callable[[ArchiveReader, argparse.Namespace], Any], args: argparse.Namespace
) -> int:
    cfg = config_from_args(args)
    try:
        # the CLI answers now or says why: it does not wait for a server to come up
        with Archive(cfg.archive, read_only=True, connect_retries=0) as archive:
            handler(archive, args)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


# ---- output ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return getattr(value, "value", value)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, default=_jsonable, indent=2)
    sys.stdout.write("\n")


def _print_records(
    args: argparse.Namespace, records: list[dict[str, Any]], columns: list[str]
) -> None:
    if args.json:
        _print_json([{k: _jsonable(r[k]) for k in columns} for r in records])
    elif not records:
        print("(no rows)")
    else:
        print(format_table(columns, [[r[c] for c in columns] for r in records]))


def _short(h: str | None) -> str | None:
    return h[:SHORT_HASH] if h else h


# ---- queries ---------------------------------------------------------------------------


def last_cycle_use(archive: ArchiveReader, run_id: str) -> CycleUse | None:
    """The last completed cycle's utilisation (None before the first one completes, or
    for a run recorded before spans existed): a cycle still running would show a share of
    a phase that has not ended."""
    last = archive.last_completed_cycle(run_id)
    if last is None:
        return None
    pool = next((c.n_evaluators for c in archive.cycles(run_id) if c.t == last), None)
    return cycle_use(last, archive.spans(run_id, cycle=last), pool or 0)


def _busy_json(use: CycleUse | None) -> dict[str, Any] | None:
    if use is None:
        return None
    shares = {k: round(v, 4) for k, v in use.group_share.items()}
    return {"cycle": use.cycle, "group_share": shares, "text": shares_text(use)}


def list_runs(archive: ArchiveReader, args: argparse.Namespace) -> None:
    rows = archive.run_summaries()
    uses = [last_cycle_use(archive, r["id"]) for r in rows]
    if args.json:
        rows = [{**r, "busy": _busy_json(u)} for r, u in zip(rows, uses, strict=True)]
    else:
        rows = [
            {**r, "busy": shares_text(u) if u else None} for r, u in zip(rows, uses, strict=True)
        ]
    columns = [
        "id", "status", "created_at", "dataset", "budget", "seed",
        "cycles_done", "candidates", "evaluated", "best_score", "busy",
    ]  # fmt: skip
    _print_records(args, rows, columns)


def show_top(archive: ArchiveReader, args: argparse.Namespace) -> None:
    rows = [r._asdict() for r in archive.top(args.run, args.k, args.dataset)]
    if not args.json:
        rows = [{**r, "hash": _short(r["hash"])} for r in rows]
    _print_records(args, rows, ["rank", "hash", "score", "n_seeds", "params", "first_cycle"])


def show_architecture(archive: ArchiveReader, args: argparse.Namespace) -> None:
    arch = archive.find_architecture(args.hash_prefix)
    evals = archive.sql(
        "SELECT run_id, dataset, budget, seed, score, error_class, duration_s, reused_from "
        "FROM evaluations "
        f"WHERE arch_hash = '{arch.hash}' ORDER BY run_id, dataset, budget, seed",
        max_rows=10_000,
    )  # the hash is validated hex, so inlining it is safe
    meta = {
        "hash": arch.hash,
        "param_count": arch.param_count,
        "first_run": arch.first_run,
        "created_at": arch.created_at,
        "num_perm": arch.num_perm,
        "shingle_size": arch.shingle_size,
    }
    evaluations = [dict(zip(evals.columns, r, strict=True)) for r in evals.rows]
    if args.json:
        _print_json({**meta, "evaluations": evaluations, "code": arch.code})
        return
    width = max(len(k) for k in meta)
    for key, value in meta.items():
        print(f"{key.ljust(width)}  {format_cell(value)}")
    print()
    print(format_table(evals.columns, evals.rows) if evals.rows else "(no evaluations)")
    print()
    print(arch.code.rstrip("\n"))


def show_lineage(archive: ArchiveReader, args: argparse.Namespace) -> None:
    arch = archive.find_architecture(args.hash_prefix)
    rows = [{"depth": i, **s._asdict()} for i, s in enumerate(archive.lineage(arch.hash))]
    if not args.json:
        rows = [
            {**r, "hash": _short(r["hash"]), "parent_hash": _short(r["parent_hash"])} for r in rows
        ]
    _print_records(args, rows, ["depth", "hash", "parent_hash", "run_id", "cycle", "mode"])


def show_failures(archive: ArchiveReader, args: argparse.Namespace) -> None:
    rows = [
        {"error_class": ec, "decoding": decoding_of(c), "count": n}
        for ec, c, n in archive.failures(args.run)
    ]
    _print_records(args, rows, ["error_class", "decoding", "count"])


def _write_text_rows(fmt: str, rows: list[dict[str, Any]], stream: TextIO) -> None:
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, default=str))
            stream.write("\n")
        return
    if not rows:
        return
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else _jsonable(v)) for k, v in row.items()})


def export_run(archive: ArchiveReader, args: argparse.Namespace) -> None:
    if args.format == "lemur":
        export_lemur(archive, args)
        return
    if args.format == "parquet" and not args.out:
        raise UsageError("--format parquet needs --out FILE (it is a binary format)")
    if args.json and not args.out:
        raise UsageError("--json with export prints a summary, so it needs --out FILE")
    rows = archive.export_rows(args.run, args.table)
    if args.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), args.out)
    elif args.out:
        with Path(args.out).open("w", encoding="utf-8", newline="") as stream:
            _write_text_rows(args.format, rows, stream)
    else:
        _write_text_rows(args.format, rows, sys.stdout)
    if args.json:
        _print_json({"run": args.run, "table": args.table, "format": args.format,
                     "rows": len(rows), "out": args.out})  # fmt: skip
    elif args.out:
        print(f"wrote {len(rows)} {args.table} rows of run {args.run} to {args.out}")


def trained_programs(archive: ArchiveReader, run_id: str) -> list[TrainedProgram]:
    """Every successful evaluation of a run with its program and how it was trained."""
    from llmnas_dist.evaluation.datasets import dataset_spec  # imports torch: only for this export

    run = archive.get_run(run_id)
    evaluation = dict(run.config.get("evaluation") or {})
    recipe = {
        "name": evaluation.get("recipe", "fixed"),
        "batch_size": evaluation.get("batch_size"),
        "input_size": evaluation.get("input_size"),
    }
    if recipe["name"] == "fixed":  # the recipe's optimiser trained it, not the program's own
        recipe.update({k: evaluation.get(k) for k in ("optimizer", "lr", "weight_decay")})
    codes: dict[str, str] = {}
    programs = []
    for e in archive.evaluations(run_id):
        if e.score is None or e.accuracy is None:
            continue
        if e.arch_hash not in codes:
            codes[e.arch_hash] = archive.get_architecture(e.arch_hash).code
        height = recipe["input_size"] or dataset_spec(e.dataset).height
        programs.append(
            TrainedProgram(
                e.arch_hash, codes[e.arch_hash], e.dataset, e.seed, e.epochs_done or 1.0,
                e.accuracy, e.duration_s or 0.0, recipe, int(height),
            )
        )  # fmt: skip
    return programs


def export_lemur(archive: ArchiveReader, args: argparse.Namespace) -> None:
    if not args.out:
        raise UsageError("--format lemur needs --out DIR (it writes a folder)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    n_programs, n_stats = write_lemur_export(out, trained_programs(archive, args.run))
    if args.json:
        _print_json({"run": args.run, "format": "lemur", "programs": n_programs,
                     "stat_files": n_stats, "out": str(out)})  # fmt: skip
    else:
        print(f"wrote {n_programs} programs and {n_stats} statistics files of run {args.run} "
              f"to {out} (LEMUR's nn/ and stat/train/ layout)")  # fmt: skip


def run_sql(archive: ArchiveReader, args: argparse.Namespace) -> None:
    result = archive.sql(args.query, max_rows=args.max_rows)
    if args.json:
        _print_json({
            "columns": result.columns,
            "rows": [[_jsonable(v) for v in row] for row in result.rows],
            "truncated": result.truncated,
        })  # fmt: skip
    else:
        print(format_table(result.columns, result.rows) if result.rows else "(no rows)")
    if result.truncated:
        print(f"llmnas: only the first {args.max_rows} rows shown (--max-rows)", file=sys.stderr)
