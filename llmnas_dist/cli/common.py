"""Pieces every `llmnas` subcommand shares: the common flags and the config they produce."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llmnas_dist.config import Config, EvaluationConfig, load_config
from llmnas_dist.errors import UsageError

if TYPE_CHECKING:
    from db.contract import ArchiveReader

# Exit statuses used by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is "no" (rejected, failed evaluation, ...)
EXIT_USAGE = 2  # bad flags, bad config, bad query


def common_parser() -> argparse.ArgumentParser:
    """Flags accepted by every subcommand (argparse `parents=`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (default: the embedded llmnas_dist/configs/default.yaml)",
    )
    p.add_argument(
        "--archive",
        metavar="URL",
        help="archive database URL (overrides the config and LLMNAS_ARCHIVE_URL)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Effective config for a parsed command line; raises ConfigError on bad input."""
    return load_config(getattr(args, "config", None), getattr(args, "archive", None))


def add_input_flags(p: argparse.ArgumentParser, recipe: bool = False) -> None:
    """--input-size (and --recipe): per-command overrides of the evaluation section."""
    p.add_argument(
        "--input-size",
        type=int,
        metavar="PX",
        help="resize images to PX x PX for the program (default: evaluation.input_size for "
        "the config's dataset; another --dataset keeps its own size)",
    )
    if recipe:
        p.add_argument(
            "--recipe",
            choices=("fixed", "lemur"),
            help="train with the fixed recipe or the program's own train_setup/learn "
            "(default: evaluation.recipe)",
        )


def with_input_flags(config: Config, args: argparse.Namespace) -> Config:
    """The config with the command's --input-size/--recipe applied (validated like YAML).
    A --dataset other than the config's keeps its own image size unless --input-size says
    otherwise: the config's `evaluation.input_size` was chosen for its own dataset (the
    default shrinks mnist5k to 8 px; `--dataset cifar10` should not mean cifar10 at 8 px)."""
    update = {
        key: getattr(args, key)
        for key in ("input_size", "recipe")
        if getattr(args, key, None) is not None
    }
    dataset = getattr(args, "dataset", None)
    if dataset and dataset != config.ce.dataset and "input_size" not in update:
        update["input_size"] = None
    if not update:
        return config
    try:
        evaluation = EvaluationConfig.model_validate({**config.evaluation.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(problems.replace("_", "-")) from None
    return config.model_copy(update={"evaluation": evaluation})


@contextlib.contextmanager
def existing_archive(config: Config) -> Iterator[ArchiveReader | None]:
    """The configured archive when there is one to read (a SQLite file that exists, or a
    server), else None; commands that only read it never create one."""
    from db.url import archive_exists  # the archive's own URL parser (light: no engine)

    if not archive_exists(config.archive.url):
        yield None
        return
    from db.archive import Archive  # only when an archive exists: keeps commands light

    archive = Archive(config.archive)
    try:
        yield archive
    finally:
        archive.close()


# ---- tables ----------------------------------------------------------------------------


def format_cell(value: Any) -> str:
    """One value as a table shows it: "-" for None, floats to 4 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(getattr(value, "value", value))


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], rule: bool = True) -> str:
    """Aligned plain text: numbers right-aligned, everything else left-aligned; `rule`: a
    line of dashes under the header."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(columns), *([line(["-" * w for w in widths])] if rule else [])]
    out += [line(r) for r in cells]
    return "\n".join(out)
