"""Unpackings of the contract's `in_shape` into a number of names it does not hold.

`Net.__init__(self, in_shape, out_shape, prm, device)` is given `in_shape` as (batch,
channels, height, width) (the contract; the whole-program prompt says so). The seeds unpack
its last three, `channels, height, width = in_shape[-3:]`, and the small model's whole
programs often drop the slice: replaying a default first run's 10 whole-program slots
(bench/replay_bench.py --mode full, 2026-12-07, 2-core AMX Xeon, 4 samples each) 10 of 40
answers failed to build on `ValueError: too many values to unpack (expected 3)`, each found
only once the whole program had been written and built.

`misfit_unpacks` finds, in Net's `__init__` (`contract.net_method`: on Net or a base class
the program defines), an assignment of its `in_shape` parameter (or
of a slice of it with constant bounds) to a tuple or list of targets without a starred one,
whose count differs from the values it holds. A function that binds the parameter again is
not judged (its value is no longer the contract's).
"""

from __future__ import annotations

import ast

from llmnas_dist.program.contract import net_method

IN_SHAPE_VALUES = 4  # (batch, channels, height, width)


def misfit_unpacks(tree: ast.Module, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, why) of every unpacking of Net.__init__'s `in_shape` on line `first_line` or
    later into a number of targets it does not hold (see the module doc)."""
    init = net_method(tree, "__init__")
    if init is None or len(init.args.args) < 2:
        return []
    name = init.args.args[1].arg
    statements = [n for n in ast.walk(init) if isinstance(n, ast.stmt)]
    if any(_binds(s, name) for s in statements):
        return []
    found = []
    for node in statements:
        if not (isinstance(node, ast.Assign) and node.lineno >= first_line):
            continue
        held = _values(node.value, name)
        for target in node.targets:
            if (
                held is not None
                and isinstance(target, (ast.Tuple, ast.List))
                and not any(isinstance(e, ast.Starred) for e in target.elts)
                and len(target.elts) != held
            ):
                why = (
                    f"`{ast.unparse(node.value)}` holds {held} values ({name} is (batch, "
                    f"channels, height, width)), unpacked into {len(target.elts)} names"
                )
                found.append((node.lineno, why))
    return found


def _values(value: ast.expr, name: str) -> int | None:
    """How many values `value` holds where it is `name` (IN_SHAPE_VALUES) or a slice of it
    with constant integer bounds; None for anything else."""
    if isinstance(value, ast.Name) and value.id == name:
        return IN_SHAPE_VALUES
    if not (
        isinstance(value, ast.Subscript)
        and isinstance(value.value, ast.Name)
        and value.value.id == name
        and isinstance(value.slice, ast.Slice)
    ):
        return None
    bounds: list[int | None] = []
    for bound in (value.slice.lower, value.slice.upper, value.slice.step):
        try:  # literals only (`-3` is one): nothing of the program is evaluated
            held = None if bound is None else ast.literal_eval(bound)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None
        if held is not None and type(held) is not int:
            return None
        bounds.append(held)
    if bounds[2] == 0:
        return None
    return len(range(IN_SHAPE_VALUES)[slice(*bounds)])


def _binds(statement: ast.stmt, name: str) -> bool:
    """Whether `statement` binds `name` itself (an assignment, a loop or `with` target)."""
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AugAssign, ast.AnnAssign, ast.For)):
        targets = [statement.target]
    elif isinstance(statement, ast.With):
        targets = [i.optional_vars for i in statement.items if i.optional_vars is not None]
    return any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t))
