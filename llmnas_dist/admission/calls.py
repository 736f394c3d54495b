"""Calls whose arguments cannot bind to the callee's parameters, found without running
anything: an unknown keyword, too many positional arguments, a required one missing.

The whole-program grammar lets the model write any keyword in a call (made-up names are
bounded in length, not in meaning): a whole program of bench/generation_bench.py redraw
(2026-12-05, 2-core AVX512 EPYC) failed to build on `Conv2d.__init__() got an unexpected
keyword argument 'sidesetdim_1p_16g_16u16re'`, and a delta of the default run on
`Conv2d.__init__() missing 1 required positional argument: 'kernel_size'`.

A callee is judged when it is known where the call is written: a class or function the
program defines at module level before the call (its `def`'s parameters; a class by its
own `__init__`), or a callable of torch, torch.nn or torch.nn.functional named through the
program's imports of them. torch's objects are looked up in those three modules (imported
here, by their fixed names) by attribute dictionary only (no other import, no module
`__getattr__`): the program's text chooses only which entry of those dictionaries is read.
A call with `*args` or `**kwargs`, or a callee whose signature Python cannot give, is not
judged.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from typing import Any

JUDGED_MODULES = ("torch", "torch.nn", "torch.nn.functional")
_P = inspect.Parameter


def misfit_calls(tree: ast.Module, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, why) of every call on line `first_line` or later whose arguments do not bind
    to its callee's parameters (see the module doc), in the order written."""
    aliases = _module_aliases(tree)
    defined: dict[str, ast.FunctionDef | ast.ClassDef] = {}
    found = []
    for statement in tree.body:
        for node in ast.walk(statement):
            if not (isinstance(node, ast.Call) and node.lineno >= first_line):
                continue
            signature = _signature(node.func, aliases, defined)
            if signature is None or _unpacks(node):
                continue
            try:
                signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
            except TypeError as exc:
                found.append((node.lineno, f"{ast.unparse(node.func)}(): {exc}"))
        if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            defined[statement.name] = statement  # callable by what follows it
    return sorted(found)


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to a judged module: `import torch.nn as nn` -> nn:
    torch.nn; `import torch` -> torch; `from torch import nn` -> nn: torch.nn."""
    aliases = {}
    for statement in tree.body:
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname and alias.name in JUDGED_MODULES:
                    aliases[alias.asname] = alias.name
                elif not alias.asname and alias.name == "torch":
                    aliases["torch"] = "torch"
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            for alias in statement.names:
                full = f"{statement.module}.{alias.name}"
                if full in JUDGED_MODULES:
                    aliases[alias.asname or alias.name] = full
    return aliases


def _signature(
    func: ast.expr, aliases: dict[str, str], defined: dict[str, ast.FunctionDef | ast.ClassDef]
) -> inspect.Signature | None:
    if isinstance(func, ast.Name) and func.id in defined:
        return _own_signature(defined[func.id])
    path = []
    while isinstance(func, ast.Attribute):
        path.append(func.attr)
        func = func.value
    if not (isinstance(func, ast.Name) and func.id in aliases and path):
        return None
    target: Any = importlib.import_module(aliases[func.id])  # one of JUDGED_MODULES
    for attr in reversed(path):
        namespace = getattr(target, "__dict__", None)
        if not isinstance(namespace, dict) or attr not in namespace:
            return None
        target = namespace[attr]
    if not callable(target):
        return None
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature
        return None


def _own_signature(node: ast.FunctionDef | ast.ClassDef) -> inspect.Signature | None:
    """A program's own function's parameters, or its class's `__init__` without `self`
    (None: a class without its own `__init__`)."""
    if isinstance(node, ast.ClassDef):
        init = next(
            (s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"),
            None,
        )
        if init is None:
            return None
        params = _parameters(init.args)[1:]
    else:
        params = _parameters(node.args)
    try:
        return inspect.Signature(params)
    except ValueError:
        return None


def _parameters(args: ast.arguments) -> list[inspect.Parameter]:
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params = [
        _P(
            a.arg,
            _P.POSITIONAL_ONLY if i < len(args.posonlyargs) else _P.POSITIONAL_OR_KEYWORD,
            default=None if i >= first_default else _P.empty,
        )
        for i, a in enumerate(positional)
    ]
    if args.vararg:
        params.append(_P(args.vararg.arg, _P.VAR_POSITIONAL))
    params += [
        _P(a.arg, _P.KEYWORD_ONLY, default=_P.empty if d is None else None)
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    if args.kwarg:
        params.append(_P(args.kwarg.arg, _P.VAR_KEYWORD))
    return params


def _unpacks(call: ast.Call) -> bool:
    """Whether the call passes `*args` or `**kwargs` (its arguments are not all known)."""
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    )
