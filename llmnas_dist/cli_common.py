"""Pieces every `llmnas` subcommand shares: the common flags and the config they produce."""

from __future__ import annotations

import argparse

from llmnas_dist.config import Config, load_config

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
