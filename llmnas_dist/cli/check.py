"""`llmnas check`: run the whole admission on one program, or on a parent plus a delta.

    llmnas check PROGRAM.py [--dataset NAME] [--json]
    llmnas check --parent PARENT.py --delta DELTA.txt [--dataset NAME] [--json]

Exit status 0 admitted, 1 rejected, 2 bad usage. Novelty is checked against the archive
when one exists: a PostgreSQL URL, or a SQLite file that is already there (checking never
creates an archive); otherwise against nothing, and the verdict says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmnas_dist.admission.novelty import NEIGHBOUR_THRESHOLD, NoveltyIndex
from llmnas_dist.admission.pipeline import Admission, Verdict
from llmnas_dist.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_input_flags,
    config_from_args,
    existing_archive,
    with_input_flags,
)
from llmnas_dist.config import Config
from llmnas_dist.errors import UsageError
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec

SIGNATURE_BATCH = 1000


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="admit one architecture program (static checks, sandboxed build, novelty)",
        description="Run the admission pipeline on PROGRAM.py, or on --parent plus --delta. "
        "Exit status: 0 admitted, 1 rejected, 2 bad usage.",
    )
    p.add_argument("program", nargs="?", metavar="PROGRAM.py", help="program file (or LLM answer)")
    p.add_argument("--parent", metavar="PARENT.py", help="parent program the delta applies to")
    p.add_argument("--delta", metavar="DELTA.txt", help="unified diff (or LLM answer holding one)")
    p.add_argument(
        "--dataset", metavar="NAME", help="dataset shape to build for (default: ce.dataset)"
    )
    add_input_flags(p)
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.set_defaults(func=check_program)


def _read(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


def archive_index(config: Config) -> tuple[NoveltyIndex, str | None]:
    """The novelty index rebuilt from the configured archive, and where it came from
    (None when there is no archive to compare with)."""
    index = NoveltyIndex.from_config(config.admission)
    with existing_archive(config) as archive:
        if archive is None:
            return index, None
        index.rebuild(archive.iter_signatures(SIGNATURE_BATCH))
    url = config.archive.url
    return index, url


def check_program(args: argparse.Namespace) -> int:
    config = with_input_flags(config_from_args(args), args)
    if bool(args.parent) != bool(args.delta):
        raise UsageError("--parent and --delta go together")
    if bool(args.program) == bool(args.parent):
        raise UsageError("give either PROGRAM.py or --parent PARENT.py --delta DELTA.txt")
    spec = dataset_spec(args.dataset or config.ce.dataset).at_size(config.evaluation.input_size)
    text = _read(args.program or args.delta, "program" if args.program else "delta")
    parent = _read(args.parent, "parent") if args.parent else None
    index, source = archive_index(config)
    admission = Admission(config.admission, spec, index)
    if parent is not None:
        verdict = admission.admit(text, "delta", parent)
    elif "<nn>" in text or "```" in text:  # an LLM answer rather than a plain file
        verdict = admission.admit(text, "full")
    else:
        verdict = admission.admit_program(text)
    _print_verdict(verdict, spec, source, len(index), args.json)
    return EXIT_OK if verdict.admitted else EXIT_FAILED


def _print_verdict(
    v: Verdict, spec: DatasetSpec, source: str | None, size: int, as_json: bool
) -> None:
    archive = f"{source} ({size} programs)" if source else None
    if as_json:
        shape = {"dataset": spec.name, "in_shape": list(spec.in_shape)}
        print(json.dumps({**v.to_dict(), **shape, "archive": archive}))
        return
    print(
        "admitted" if v.admitted else f"rejected: {v.error_class.value if v.error_class else '?'}"
    )
    if v.message:
        print(f"  message: {v.message}")
    print(f"  dataset: {spec.name} ({'x'.join(map(str, spec.in_shape))})")
    print(f"  params:  {v.param_count if v.param_count is not None else '-'}")
    print(f"  hash:    {v.code_hash or '-'}")
    if archive is None:
        print("  novelty: no archive configured (nothing to compare with)")
    elif v.nearest_hash is None:
        print(f"  nearest: none above {NEIGHBOUR_THRESHOLD} in {archive}")
    else:
        print(f"  nearest: {v.nearest_hash[:16]} (Jaccard {v.nearest_jaccard:.3f}) in {archive}")
