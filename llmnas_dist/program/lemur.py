"""LEMUR's conventions (the nn-dataset of ABrain-One): what a program's `prm` holds, and
the layout its programs and statistics are exported in.

A LEMUR program declares its hyperparameters in a module-level
`supported_hyperparameters()` and reads them from `prm`; LEMUR's trainer adds `batch`,
`epoch` and `transform` (its `Train.py`). LEMUR draws each value per trial (lr log-uniform,
the rest in [0, 1]); one proxy run gives each known key the usual value below, so a program
that reads `prm['stochastic_depth_prob']` builds and trains. A key with no known value is
a clear rejection naming it, never a KeyError inside the sandbox.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program.contract import net_method
from llmnas_dist.program.source import parse_source

# The values of one proxy run, for every key LEMUR's programs are known to declare.
LEMUR_PRM: dict[str, float] = {
    "lr": 0.01,
    "momentum": 0.9,
    "dropout": 0.2,
    "dropout_aux": 0.7,  # GoogLeNet's auxiliary heads (torchvision's default)
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
UNREAD_VALUE = 0.5  # LEMUR draws every key in [0, 1]
# What LEMUR's trainer adds to every prm (besides the declared keys).
TRAINER_KEYS = ("batch", "epoch", "transform")
HYPERPARAMETER_FUNCTION = "supported_hyperparameters"


def _declaration(tree: ast.Module) -> ast.expr | None:
    """What a single-return `supported_hyperparameters()` returns, if the program has one."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == HYPERPARAMETER_FUNCTION:
            returns = [n for n in node.body if isinstance(n, ast.Return)]
            return returns[0].value if len(returns) == 1 else None
    return None


def declared_hyperparameters(tree: ast.Module) -> frozenset[str] | None:
    """The keys a literal `supported_hyperparameters()` returns (a set, list, tuple or dict
    of strings); None when the program has no such function or computes its answer."""
    value = _declaration(tree)
    items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
    if not isinstance(value, ast.Set | ast.List | ast.Tuple | ast.Dict) or items is None:
        return None
    keys = [k.value for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return frozenset(keys) if len(keys) == len(items) else None


def declared_values(tree: ast.Module) -> dict[str, float]:
    """The numbers in LEMUR's range [0, 1] a declaration as a dict gives its keys
    (`{'lr': 0.005}`): the program's own choice, which its prm carries instead of LEMUR's
    usual value."""
    value = _declaration(tree)
    if not isinstance(value, ast.Dict):
        return {}
    return {
        k.value: float(v.value)
        for k, v in zip(value.keys, value.values, strict=True)
        if isinstance(k, ast.Constant)
        and isinstance(k.value, str)
        and isinstance(v, ast.Constant)
        and isinstance(v.value, int | float)
        and not isinstance(v.value, bool)
        and 0.0 <= v.value <= 1.0  # LEMUR's range for every hyperparameter
    }


def _strings_outside_declaration(tree: ast.Module) -> set[str]:
    """String constants anywhere but in supported_hyperparameters(): how a program names
    the prm keys it reads (`prm['lr']`, `prm.get('dropout', 0.1)`)."""
    skip = {
        id(n)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == HYPERPARAMETER_FUNCTION
        for n in ast.walk(node)
    }
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip
    }


def program_prm(tree: ast.Module, batch: int, epochs: float, height: int) -> dict[str, Any]:
    """The prm a program gets: every known key at its usual value, the declared keys (a
    declared key the program never names at LEMUR's mid-range value, one declared with a
    number at that number), the trainer's keys.
    CandidateRejected (contract violation) names a declared key that the program reads
    but that has no known value."""
    declared = declared_hyperparameters(tree)
    keys = sorted(LEMUR_PRM) if declared is None else sorted(declared - set(TRAINER_KEYS))
    read = _strings_outside_declaration(tree)
    given = declared_values(tree)
    unknown = [k for k in keys if k not in LEMUR_PRM and k not in given and k in read]
    if unknown:
        raise CandidateRejected(
            ErrorClass.CONTRACT_VIOLATION,
            f"{HYPERPARAMETER_FUNCTION}() declares {', '.join(map(repr, unknown))}, which "
            f"llmnas has no value for (it supplies {', '.join(sorted(LEMUR_PRM))})",
        )
    # a declared key the program never names gets LEMUR's mid-range value: nothing reads it;
    # every known key is there too (7 of 238 LEMUR programs read an undeclared 'dropout')
    prm: dict[str, Any] = {**LEMUR_PRM, **{k: LEMUR_PRM.get(k, UNREAD_VALUE) for k in keys}}
    prm.update(declared_values(tree))
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


# ---- export: LEMUR's layout (nn/<name>.py; stat/train/<task>_<dataset>_<metric>_<nn>/<epoch>.json)

TASK = "img-classification"
METRIC = "acc"
# LEMUR's names for the datasets both know; the others keep ours.
DATASET_NAMES = {"cifar10": "cifar-10", "cifar100": "cifar-100"}
NAME_PREFIX = "llmnas"


@dataclass(frozen=True)
class TrainedProgram:
    """One successful evaluation, with what LEMUR's statistics record of a trial."""

    arch_hash: str
    code: str
    dataset: str
    seed: int
    epochs_done: float
    accuracy: float
    duration_s: float
    recipe: dict[str, Any]  # name, optimizer, lr, batch_size, input_size: how it was trained
    height: int  # the side the program saw


def lemur_name(arch_hash: str) -> str:
    return f"{NAME_PREFIX}-{arch_hash[:32]}"


def stat_record(p: TrainedProgram) -> dict[str, Any]:
    """A trial as LEMUR's `stat/train/.../<epoch>.json` lists it: prm, batch, transform,
    uid, duration (ns), accuracy; plus how llmnas trained it (LEMUR's readers ignore
    keys they do not know)."""
    batch = int(p.recipe.get("batch_size") or 64)
    epochs = max(1, math.ceil(p.epochs_done - 1e-9))
    try:
        tree = parse_source(p.code)
        prm = program_prm(tree, batch, epochs, p.height)
        declared = declared_hyperparameters(tree)
    except (CandidateRejected, SyntaxError):
        prm, declared = {"batch": batch, "epoch": epochs, "transform": f"norm_{p.height}"}, None
    if declared is not None:  # LEMUR records the declared keys, not every known one
        prm = {k: v for k, v in prm.items() if k in declared or k in TRAINER_KEYS}
    if p.recipe.get("name", "fixed") == "fixed":  # the program's own lr did not train it
        prm["lr"] = p.recipe.get("lr")
    uid = hashlib.md5(f"{p.arch_hash}:{p.dataset}:{p.seed}:{epochs}".encode()).hexdigest()
    return {
        **prm,
        "accuracy": p.accuracy,
        "duration": int(p.duration_s * 1e9),
        "uid": uid,
        "seed": p.seed,
        "epoch_max": epochs,
        "llmnas_hash": p.arch_hash,
        "llmnas_recipe": p.recipe,
    }


def write_lemur_export(out: Path, programs: Sequence[TrainedProgram]) -> tuple[int, int]:
    """Write nn/<name>.py per architecture and one stat JSON per (dataset, program,
    epoch): a list of trials, best accuracy first, as LEMUR keeps them. Returns
    (programs written, stat files written)."""
    trials: dict[Path, list[dict[str, Any]]] = {}
    codes: dict[str, str] = {}
    for p in programs:
        name = lemur_name(p.arch_hash)
        codes[name] = p.code
        record = stat_record(p)
        folder = f"{TASK}_{DATASET_NAMES.get(p.dataset, p.dataset)}_{METRIC}_{name}"
        trials.setdefault(Path("stat", "train", folder, f"{record['epoch']}.json"), []).append(
            record
        )
    (out / "nn").mkdir(parents=True, exist_ok=True)
    for name, code in codes.items():
        (out / "nn" / f"{name}.py").write_text(code, encoding="utf-8")
    for relative, records in trials.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        records.sort(key=lambda r: (-r["accuracy"], r["uid"]))
        path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return len(codes), len(trials)
