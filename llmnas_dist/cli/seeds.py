"""`llmnas seeds check`: admit a folder of programs as a seed population, before a run.

    llmnas seeds check DIR_OR_GLOB [--dataset NAME] [--input-size PX] [--jobs N] [--json]

Every program gets the admission a cycle-0 seed gets (static checks, sandboxed build at the
dataset's shape, parameter budget; novelty only against the other programs of the folder:
an exact duplicate is named). Programs are admitted in parallel (each build is its own
sandbox process), with a progress line on stderr. Exit status 0 when at least one program
is admitted, 1 when none is, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from llmnas_dist.admission.novelty import NoveltyIndex
from llmnas_dist.admission.pipeline import Admission, Verdict
from llmnas_dist.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_input_flags,
    config_from_args,
    format_table,
    with_input_flags,
)
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import ErrorClass, UsageError
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.seeds import load_seeds

PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class SeedVerdict:
    """One program of the folder: its name and the admission's verdict."""

    name: str
    verdict: Verdict

    def row(self) -> dict[str, object]:
        v = self.verdict
        return {
            "name": self.name,
            "admitted": v.admitted,
            "reason": None if v.admitted else (v.error_class.value if v.error_class else "?"),
            "message": v.message,
            "params": v.param_count,
            "code_hash": v.code_hash,
        }


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "seeds",
        help="check a folder of programs as a seed population (ce.seeds)",
        description="Seed populations: `llmnas seeds check DIR` admits every program of a "
        "folder (or glob) and prints a table.",
    )
    seeds_sub = p.add_subparsers(dest="seeds_command", metavar="SUBCOMMAND", required=True)
    check = seeds_sub.add_parser(
        "check",
        parents=[common],
        help="admit every program of a folder and print admitted / rejected with reason",
        description="Admit every *.py of DIR (or the files a glob matches) as a cycle-0 seed. "
        "Exit status: 0 some admitted, 1 none admitted, 2 bad usage.",
    )
    check.add_argument("source", metavar="DIR_OR_GLOB", help="folder of *.py programs, or a glob")
    check.add_argument("--dataset", metavar="NAME", help="dataset shape (default: ce.dataset)")
    add_input_flags(check)
    check.add_argument(
        "--jobs", type=int, metavar="N", help="programs admitted at once (default: CPU count)"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object per program")
    check.set_defaults(func=check_seeds)


def admit_seed(name: str, code: str, cfg: AdmissionConfig, spec: DatasetSpec) -> SeedVerdict:
    """A seed's admission: validity only (a fresh novelty index, as in cycle 0)."""
    admission = Admission(cfg, spec, NoveltyIndex.from_config(cfg))
    return SeedVerdict(name, admission.admit_program(code))


def admit_all(
    seeds: dict[str, str], cfg: AdmissionConfig, spec: DatasetSpec, jobs: int
) -> list[SeedVerdict]:
    """Admit every program, `jobs` at a time, printing progress to stderr."""
    results: list[SeedVerdict] = []
    started = last = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(admit_seed, n, c, cfg, spec) for n, c in seeds.items()]
        for future in futures:
            results.append(future.result())
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or len(results) == len(futures):
                last = now
                admitted = sum(r.verdict.admitted for r in results)
                print(
                    f"\rchecked {len(results)}/{len(futures)}  admitted {admitted}  "
                    f"{now - started:.0f} s",
                    end="\n" if len(results) == len(futures) else "",
                    file=sys.stderr,
                    flush=True,
                )
    return mark_duplicates(results)


def mark_duplicates(results: list[SeedVerdict]) -> list[SeedVerdict]:
    """An admitted program whose canonical form an earlier one has is a duplicate of it."""
    first: dict[str, str] = {}
    out = []
    for r in results:
        v = r.verdict
        if v.admitted and v.code_hash in first:
            message = f"identical to {first[v.code_hash]} once formatting is normalised"
            dup = replace(v, admitted=False, error_class=ErrorClass.DUPLICATE, message=message)
            out.append(SeedVerdict(r.name, dup))
            continue
        if v.admitted and v.code_hash:
            first[v.code_hash] = r.name
        out.append(r)
    return out


def check_seeds(args: argparse.Namespace) -> int:
    config = with_input_flags(config_from_args(args), args)
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    spec = dataset_spec(args.dataset or config.ce.dataset).at_size(config.evaluation.input_size)
    seeds = load_seeds(args.source)
    results = admit_all(seeds, config.admission, spec, jobs)
    admitted = sum(r.verdict.admitted for r in results)
    if args.json:
        for r in results:
            print(json.dumps(r.row()))
    else:
        rows = [
            [
                r.name,
                "admitted" if r.verdict.admitted else r.row()["reason"],
                r.verdict.param_count,
                "" if r.verdict.admitted else r.verdict.message[:100],
            ]
            for r in results
        ]
        print(format_table(["program", "verdict", "params", "why"], rows))
        shape = "x".join(map(str, spec.in_shape))
        print(f"\n{admitted} of {len(results)} admitted at {spec.name} {shape}")
    return EXIT_OK if admitted else EXIT_FAILED
