"""Pieces every `llmnas` subcommand shares: the common flags and the config they produce."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmnas_dist.config import Config, EvaluationConfig, load_config
from llmnas_dist.errors import UsageError

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
        help="resize images to PX x PX for the program (default: evaluation.input_size)",
    )
    if recipe:
        p.add_argument(
            "--recipe",
            choices=("fixed", "lemur"),
            help="train with the fixed recipe or the program's own train_setup/learn "
            "(default: evaluation.recipe)",
        )


def with_input_flags(config: Config, args: argparse.Namespace) -> Config:
    """The config with the command's --input-size/--recipe applied (validated like YAML)."""
    update = {
        key: getattr(args, key)
        for key in ("input_size", "recipe")
        if getattr(args, key, None) is not None
    }
    if not update:
        return config
    try:
        evaluation = EvaluationConfig.model_validate({**config.evaluation.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(problems.replace("_", "-")) from None
    return config.model_copy(update={"evaluation": evaluation})


@contextlib.contextmanager
def existing_archive(config: Config) -> Iterator[Any]:
    """The configured archive when there is one to read (a SQLite file that exists, or a
    server), else None; commands that only read it never create one."""
    url = config.archive.url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:" or not Path(path).is_file():
            yield None
            return
    from db.archive import Archive  # only when an archive exists: keeps commands light

    archive = Archive(config.archive)
    try:
        yield archive
    finally:
        archive.close()
