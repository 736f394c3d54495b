"""LEMUR's conventions (the nn-dataset of ABrain-One): what a program's `prm` holds.

A LEMUR program declares its hyperparameters in a module-level
`supported_hyperparameters()` and reads them from `prm`; LEMUR's trainer adds `batch`,
`epoch` and `transform` (its `Train.py`). LEMUR draws each value per trial (lr log-uniform,
the rest in [0, 1]); one proxy run gives each known key the usual value below, so a program
that reads `prm['stochastic_depth_prob']` builds and trains. A key with no known value is
a clear rejection naming it, never a KeyError inside the sandbox.
"""

from __future__ import annotations

import ast
from typing import Any

from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program import net_method

# The values of one proxy run, for every key LEMUR's programs are known to declare.
LEMUR_PRM: dict[str, float] = {
    "lr": 0.01,
    "momentum": 0.9,
    "dropout": 0.2,
    "attention_dropout": 0.1,
    "stochastic_depth_prob": 0.1,
    "norm_eps": 1e-5,
    "norm_std": 0.02,
    "norm_momentum": 0.1,
    "weight_decay": 1e-4,
    "label_smoothing": 0.1,
    "pretrained": 0.0,  # no downloaded weights: the sandbox has no network
    "score_thresh": 0.05,
}
# What LEMUR's trainer adds to every prm (besides the declared keys).
TRAINER_KEYS = ("batch", "epoch", "transform")
HYPERPARAMETER_FUNCTION = "supported_hyperparameters"


def declared_hyperparameters(tree: ast.Module) -> frozenset[str] | None:
    """The keys a literal `supported_hyperparameters()` returns (a set, list, tuple or dict
    of strings); None when the program has no such function or computes its answer."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == HYPERPARAMETER_FUNCTION:
            returns = [n for n in node.body if isinstance(n, ast.Return)]
            if len(returns) != 1 or returns[0].value is None:
                return None
            value = returns[0].value
            items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
            if not isinstance(value, ast.Set | ast.List | ast.Tuple | ast.Dict) or items is None:
                return None
            keys = [
                k.value for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
            return frozenset(keys) if len(keys) == len(items) else None
    return None


def program_prm(tree: ast.Module, batch: int, epochs: float, height: int) -> dict[str, Any]:
    """The prm a program gets: its declared keys at their usual values (every known key when
    it declares none literally) plus the trainer's keys. CandidateRejected (contract
    violation) names a declared key with no known value."""
    declared = declared_hyperparameters(tree)
    keys = sorted(LEMUR_PRM) if declared is None else sorted(declared - set(TRAINER_KEYS))
    unknown = [k for k in keys if k not in LEMUR_PRM]
    if unknown:
        raise CandidateRejected(
            ErrorClass.CONTRACT_VIOLATION,
            f"{HYPERPARAMETER_FUNCTION}() declares {', '.join(map(repr, unknown))}, which "
            f"llmnas has no value for (it supplies {', '.join(sorted(LEMUR_PRM))})",
        )
    prm: dict[str, Any] = {k: LEMUR_PRM[k] for k in keys}
    prm.update(batch=batch, epoch=max(1, round(epochs)), transform=f"norm_{height}")
    return prm


def check_own_trainer(tree: ast.Module) -> None:
    """LEMUR's recipe calls `Net.train_setup(prm)` and `Net.learn(train_data)`."""
    missing = [name for name in ("train_setup", "learn") if net_method(tree, name) is None]
    if missing:
        raise CandidateRejected(
            ErrorClass.CONTRACT_VIOLATION,
            f"evaluation.recipe is lemur but Net has no {' and no '.join(missing)}",
        )
