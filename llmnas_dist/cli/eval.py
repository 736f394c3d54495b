"""`llmnas eval`: train one program with the proxy recipe and print the result.

    llmnas eval PROGRAM.py [--dataset NAME] [--epochs E | --budget-s S] [--seed N]
                [--input-size PX] [--recipe fixed|lemur] [--timeout-s S] [--json]

Static checks first, then training in the sandbox with the configured recipe
(`evaluation` section) and limits. The wall-clock limit is the adaptive deadline
(llmnas_dist/evaluation/deadline.py) from the configured archive's successful evaluations at the
same dataset and budget, so a program that never returns costs a multiple of what its
budget takes, not `evaluation.timeout_s`; `--timeout-s` sets it. Exit status 0 evaluated,
1 failed (the reason is printed), 2 bad usage. The same seed gives the same accuracy on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

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


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="proxy-train one architecture program and print its score",
        description="Train PROGRAM.py with the fixed proxy recipe in the sandbox. "
        "Exit status: 0 evaluated, 1 failed, 2 bad usage.",
    )
    p.add_argument("program", metavar="PROGRAM.py", help="architecture program file")
    p.add_argument("--dataset", metavar="NAME", help="dataset (default: ce.dataset)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, metavar="E", help="training epochs")
    budget.add_argument("--budget-s", type=float, metavar="S", help="training wall-clock budget")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="training seed (default 0)")
    p.add_argument(
        "--data-root", metavar="DIR", help="torchvision data root (default: evaluation.data_root)"
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train"
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        metavar="S",
        help="wall-clock limit (default: the adaptive deadline, at most evaluation.timeout_s)",
    )
    add_input_flags(p, recipe=True)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=eval_program)


def _positive(value: float | None, flag: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a positive number, got {value}")


def eval_program(args: argparse.Namespace) -> int:
    config = with_input_flags(config_from_args(args), args)
    _positive(args.epochs, "--epochs")
    _positive(args.budget_s, "--budget-s")
    _positive(args.timeout_s, "--timeout-s")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    path = Path(args.program)
    if not path.is_file():
        raise UsageError(f"program not found: {args.program}")
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read program {args.program}: {exc}") from None
    # Heavy imports (torch, the sandbox) only once the command line is known to be good.
    import torch

    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.evaluation.evaluate import evaluate_program
    from llmnas_dist.evaluation.recipe import Recipe
    from llmnas_dist.sandbox.runner import SandboxLimits
    from llmnas_dist.vocab import budget_key

    dataset = dataset_spec(args.dataset or config.ce.dataset).name
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here")
    cfg = config.evaluation
    recipe = Recipe.from_config(
        cfg, seed=args.seed, epochs=args.epochs, budget_s=args.budget_s, device=device
    )
    budget = budget_key(recipe.epochs, recipe.budget_s)
    deadline_s = args.timeout_s or adaptive_deadline(config, dataset, budget)
    result = evaluate_program(
        code,
        dataset,
        recipe,
        SandboxLimits.from_evaluation(cfg).with_deadline(deadline_s),
        data_root=args.data_root or cfg.data_root,
        admission=config.admission,
    )
    if args.json:
        print(json.dumps({"program": str(path), **result.to_dict(), "deadline_s": deadline_s}))
    elif result.ok:
        print(f"evaluated: accuracy {result.accuracy:.4f}  loss {result.loss:.4f}")
        print(f"  dataset: {dataset}  seed {result.seed}  budget {result.budget}")
        print(f"  epochs:  {result.epochs_done:.3f} in {result.duration_s:.2f} s")
        print(f"  speed:   {result.samples_per_s:.0f} samples/s on {result.device}")
        print(f"  params:  {result.params}")
    else:
        print(f"failed: {result.error_class}")
        print(f"  message: {result.message}")
        print(f"  deadline: {deadline_s:.0f} s")
    return EXIT_OK if result.ok else EXIT_FAILED


def adaptive_deadline(config: Config, dataset: str, budget: str) -> float:
    """The deadline an evaluation at this dataset and budget gets from the archive's
    history (evaluation.timeout_s without an archive or enough history)."""
    from llmnas_dist.evaluation.deadline import Deadlines

    deadlines = Deadlines(config.evaluation)
    with existing_archive(config) as archive:
        if archive is not None:
            deadlines.observe_all(dataset, budget, archive.durations(dataset, budget))
    return deadlines.deadline(dataset, budget)
