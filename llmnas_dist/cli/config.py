"""`llmnas config show|check`: print the effective config, validate a file."""

from __future__ import annotations

import argparse

from llmnas_dist.cli.common import EXIT_OK, config_from_args
from llmnas_dist.config import dump_config, load_config


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", help="show or validate configuration")
    actions = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", parents=[common], help="print the effective config (defaults, file, environment)"
    )
    show.set_defaults(func=show_config)
    check = actions.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("file", metavar="FILE", help="YAML config file to validate")
    check.set_defaults(func=check_config)


def show_config(args: argparse.Namespace) -> int:
    print(dump_config(config_from_args(args)), end="")
    return EXIT_OK


def check_config(args: argparse.Namespace) -> int:
    load_config(args.file, args.archive)
    print(f"{args.file}: ok")
    return EXIT_OK
