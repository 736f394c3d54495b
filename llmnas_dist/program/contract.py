"""The architecture-program contract: a top-level `class Net(nn.Module)` with
`__init__(self, in_shape, out_shape, prm, device)` and `forward(self, x)`, found on Net or a
base class defined in the same program.
"""

from __future__ import annotations

import ast

from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program.source import reject_at

NET_INIT_ARGS = 4  # in_shape, out_shape, prm, device


def _class_defs(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _method(
    classes: dict[str, ast.ClassDef], cls: ast.ClassDef, name: str
) -> ast.FunctionDef | None:
    """Find a method on a class or on its bases defined in the same program."""
    seen: set[str] = set()
    stack = [cls]
    while stack:
        current = stack.pop(0)
        if current.name in seen:
            continue
        seen.add(current.name)
        for item in current.body:
            if isinstance(item, ast.FunctionDef) and item.name == name:
                return item
        stack.extend(
            classes[b.id] for b in current.bases if isinstance(b, ast.Name) and b.id in classes
        )
    return None


def _positional_capacity(fn: ast.FunctionDef) -> float:
    if fn.args.vararg is not None:
        return float("inf")
    return len(fn.args.posonlyargs) + len(fn.args.args)


def _required_positional(fn: ast.FunctionDef) -> int:
    return len(fn.args.posonlyargs) + len(fn.args.args) - len(fn.args.defaults)


def net_method(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    """Net's method `name` (defined on Net or a base class in the program), if any."""
    classes = _class_defs(tree)
    net = classes.get("Net")
    return _method(classes, net, name) if net is not None else None


def check_contract(tree: ast.Module) -> None:
    """`class Net` at top level with `__init__(self, in_shape, out_shape, prm, device)` and
    `forward(self, x)` (on Net or a base class defined in the program)."""
    classes = _class_defs(tree)
    net = classes.get("Net")
    if net is None:
        raise CandidateRejected(ErrorClass.CONTRACT_VIOLATION, "no top-level class Net")
    if not net.bases:
        raise reject_at(ErrorClass.CONTRACT_VIOLATION, "class Net must subclass nn.Module", net)
    init = _method(classes, net, "__init__")
    if init is None:
        raise reject_at(ErrorClass.CONTRACT_VIOLATION, "Net has no __init__", net)
    if (
        _positional_capacity(init) < 1 + NET_INIT_ARGS
        or _required_positional(init) > 1 + NET_INIT_ARGS
    ):
        raise reject_at(
            ErrorClass.CONTRACT_VIOLATION,
            "Net.__init__ must take (self, in_shape, out_shape, prm, device)",
            init,
        )
    forward = _method(classes, net, "forward")
    if forward is None:
        raise reject_at(ErrorClass.CONTRACT_VIOLATION, "Net has no forward method", net)
    if _positional_capacity(forward) < 2 or _required_positional(forward) > 2:
        raise reject_at(ErrorClass.CONTRACT_VIOLATION, "Net.forward must take (self, x)", forward)
