"""`llmnas`: the command-line entry point.

Each subcommand lives in its own module with a `register(subparsers, common)` function that
adds its parser and sets `func` (a handler `(args) -> exit status`). Bad input of any kind
(config, flags, queries) ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from llmnas_dist import __version__
from llmnas_dist.cli import archive as archive_cli
from llmnas_dist.cli import check as check_cli
from llmnas_dist.cli import config as config_cli
from llmnas_dist.cli import eval as eval_cli
from llmnas_dist.cli import generate as generate_cli
from llmnas_dist.cli import report as report_cli
from llmnas_dist.cli import seeds as seeds_cli
from llmnas_dist.cli.common import EXIT_USAGE, common_parser
from llmnas_dist.errors import ConfigError, UsageError

COMMAND_MODULES = (
    config_cli,
    archive_cli,
    check_cli,
    eval_cli,
    generate_cli,
    report_cli,
    seeds_cli,
)


def build_parser(extra_modules: Sequence[ModuleType] = ()) -> argparse.ArgumentParser:
    """The parser of every command; `extra_modules` are commands of packages above this one
    (the driver's `run` and `scale` live in cluster/, which llmnas_dist must not import)."""
    parser = argparse.ArgumentParser(
        prog="llmnas",
        description="LLM-driven neural architecture search as a parametric Cross-Entropy method.",
    )
    parser.add_argument("--version", action="version", version=f"llmnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_parser()
    for module in (*COMMAND_MODULES, *extra_modules):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, extra_modules: Sequence[ModuleType] = ()) -> int:
    parser = build_parser(extra_modules)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as exc:
        print(f"llmnas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `llmnas archive top | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
