"""Reads of a name before any line binds it: the commonest meaning error of whole programs
that the whole-program grammar lets through.

The grammar knows which names each of the parent's functions binds, but not in which order
the model writes them: in the default run of 2026-12-05 (2-core AVX512 EPYC) 4 of 12 whole
programs failed to build on exactly this, `NameError: name 'c_out' is not defined` (a loop
that dropped the line binding it, the name read from the parent's block class) and
`UnboundLocalError: ... 'width'` (read lines before its binding).

`unbound_reads` finds such reads in a program that parses, so that decoding can redraw the
line that made one (generation/lookup.py). It judges only reads inside functions of names
that are some function's local (a parameter or a binding) somewhere in the program: a name
never bound in any function may still become a module-level name further down (a block
class written after Net), which a function may read before it is defined. A read is fine
when the name is bound earlier in the reading function (or anywhere inside a loop around
the read: the loop's previous pass bound it), anywhere in an enclosing function or
comprehension, at module level, declared `global`/`nonlocal`, or a builtin.
"""

from __future__ import annotations

import ast
import builtins
import functools
from collections.abc import Iterator

_BUILTINS = frozenset(dir(builtins))
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
Position = tuple[int, int]  # (line, column) from which a binding holds
ALWAYS: Position = (0, 0)


class _Scope:
    """One function, lambda or comprehension: its bindings with the position from which
    each holds, the loops inside it, and its `global`/`nonlocal` names."""

    def __init__(self) -> None:
        self.bindings: dict[str, list[Position]] = {}
        self.declared: set[str] = set()

    def bind(self, name: str, at: Position) -> None:
        self.bindings.setdefault(name, []).append(at)

    def bound_before(self, name: str, at: Position) -> bool:
        return name in self.declared or any(p <= at for p in self.bindings.get(name, ()))


class _Binder(ast.NodeVisitor):
    """Collects every scope's bindings (the module is the scope keyed None)."""

    def __init__(self) -> None:
        self.scopes: dict[ast.AST | None, _Scope] = {None: _Scope()}
        self.owner: dict[ast.AST, ast.AST | None] = {}  # node -> its scope's node
        self.loops: dict[ast.AST, list[ast.AST]] = {}  # node -> loops around it (its scope)
        self._scope: ast.AST | None = None
        self._statement: ast.stmt | None = None
        self._loops: list[ast.AST] = []

    def visit(self, node: ast.AST) -> None:
        self.owner[node] = self._scope
        self.loops[node] = list(self._loops)
        if isinstance(node, ast.stmt):
            outer, self._statement = self._statement, node
            self._visit_statement(node)
            self._statement = outer
        elif isinstance(node, (ast.Lambda, *_COMPREHENSIONS)):
            self._visit_scope(node)
        else:
            self._visit_expression(node)

    def _visit_statement(self, node: ast.stmt) -> None:
        scope = self.scopes[self._scope]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.bind(node.name, (node.lineno, 0))
            for child in (*node.decorator_list, *_outer_parts(node)):
                self.visit(child)
            if isinstance(node, ast.ClassDef):
                for child in node.body:  # a class body's names are not its methods' scope
                    self.visit(child)
            else:
                self._visit_scope(node)
            return
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            scope.declared.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                scope.bind(name, _end(node))
        if isinstance(node, _LOOPS):
            self._loops.append(node)
            self.generic_visit(node)
            self._loops.pop()
        else:
            self.generic_visit(node)

    def _visit_scope(self, node: ast.AST) -> None:
        outer, outer_loops = self._scope, self._loops
        self._scope, self._loops = node, []
        scope = self.scopes[node] = _Scope()
        if isinstance(node, _FUNCTIONS):
            for arg in _arguments(node.args):
                scope.bind(arg, ALWAYS)
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in body:
                self.visit(child)
        else:  # a comprehension: its targets hold throughout it
            for comp in node.generators:  # type: ignore[attr-defined]
                for name in ast.walk(comp.target):
                    if isinstance(name, ast.Name):
                        scope.bind(name.id, ALWAYS)
            self.generic_visit(node)
        self._scope, self._loops = outer, outer_loops

    def _visit_expression(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            self.scopes[self._scope].bind(node.id, self._binds_from(node))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self.scopes[self._scope].bind(node.name, (node.lineno, 0))
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            self.scopes[self._scope].bind(node.target.id, _end(node))
            self.visit(node.value)
            return
        self.generic_visit(node)

    def _binds_from(self, name: ast.Name) -> Position:
        """A loop's or `with`'s target holds from where it is written; an assignment's
        target only after its whole statement (`x = x + 1` reads x first)."""
        statement = self._statement
        if isinstance(statement, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
            return (name.lineno, name.col_offset)
        return _end(statement) if statement is not None else (name.lineno, name.col_offset)


def _outer_parts(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.AST]:
    """What a definition evaluates in its enclosing scope: defaults, annotations, bases."""
    if isinstance(node, ast.ClassDef):
        return [*node.bases, *node.keywords]
    args = node.args
    parts: list[ast.AST] = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    return parts + [a.annotation for a in _all_args(args) if a.annotation is not None]


def _all_args(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


def _arguments(args: ast.arguments) -> Iterator[str]:
    return (a.arg for a in _all_args(args))


def _end(node: ast.AST) -> Position:
    return (getattr(node, "end_lineno", None) or 0, getattr(node, "end_col_offset", None) or 0)


def function_locals(tree: ast.Module) -> set[str]:
    """Every name some function or lambda of the program binds (its parameters included)."""
    return _locals(_bind(tree))


def _bind(tree: ast.Module) -> _Binder:
    binder = _Binder()
    for statement in tree.body:
        binder.visit(statement)
    return binder


def _locals(binder: _Binder) -> set[str]:
    return {
        name
        for node, scope in binder.scopes.items()
        if isinstance(node, _FUNCTIONS)
        for name in scope.bindings
    }


def unbound_reads(
    tree: ast.Module,
    first_line: int = 1,
    also_local: frozenset[str] = frozenset(),
    complete: bool = False,
) -> list[tuple[int, str]]:
    """(line, name) of every read, on line `first_line` or later, inside a function, of a
    name that is bound too late or not at all where it is read (see the module doc), in
    the order written. `also_local`: names known to be function locals besides the
    program's own (a parent's, of which the program is an edited copy). `complete`: the
    program is whole (a delta applied to its parent), so no module-level name is still to
    come and every name is judged, not only function locals."""
    binder = _bind(tree)
    module = binder.scopes[None]
    function_locals = _locals(binder) | also_local
    found = []
    for node, owner in binder.owner.items():
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.lineno >= first_line
            and owner is not None
            and (complete or node.id in function_locals)
            and node.id not in _BUILTINS
            and not _bound(binder, node, owner, module)
        ):
            found.append((node.lineno, node.id))
    return sorted(found)


def _bound(binder: _Binder, read: ast.Name, owner: ast.AST | None, module: _Scope) -> bool:
    """Whether `read` finds its name bound: in its own scope before it (or inside a loop
    around it), else anywhere in a scope around that, at module level."""
    at = (read.lineno, read.col_offset)
    where: ast.AST = read  # the node whose loops are around the read in `owner`
    while isinstance(owner, _COMPREHENSIONS):  # runs where it is written: read at `at`
        if read.id in binder.scopes[owner].bindings:
            return True
        where, owner = owner, binder.owner[owner]
    if owner is None:
        return read.id in module.bindings or read.id in module.declared
    scope = binder.scopes[owner]
    if scope.bound_before(read.id, at):
        return True
    if read.id in scope.bindings:  # a local of this scope, bound only later
        loops = binder.loops[where]
        return any(_inside(p, loop) for loop in loops for p in scope.bindings[read.id])
    outer = binder.owner.get(owner)
    while outer is not None:
        if read.id in binder.scopes[outer].bindings or read.id in binder.scopes[outer].declared:
            return True
        outer = binder.owner.get(outer)
    return read.id in module.bindings or read.id in module.declared


def _inside(at: Position, loop: ast.AST) -> bool:
    """Whether the position lies within `loop`'s lines."""
    return (loop.lineno, 0) <= at <= _end(loop)  # type: ignore[attr-defined]


def unmade_attributes(tree: ast.Module, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, 'self.X') of every read of `self.X`, on line `first_line` or later, in a
    method of a class that no method of the class (or of a base class the program defines)
    assigns, and that is neither one of the class's own names (methods, class attributes)
    nor an attribute of `torch.nn.Module`: the build's `'Net' object has no attribute
    'norm'` (3 of 30 deltas of bench/generation_bench.py redraw --mode delta, 2026-12-05).
    A class with a base the program does not define, other than nn.Module, is not judged
    (its base may make the attribute)."""
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    found = []
    for cls in classes.values():
        made = _made_attributes(cls, classes, set())
        if made is None:
            continue
        for method in cls.body:
            if (
                not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef))
                or not method.args.args
            ):
                continue
            me = method.args.args[0].arg
            for node in ast.walk(method):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Load)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == me
                    and node.lineno >= first_line
                    and node.attr not in made
                ):
                    found.append((node.lineno, f"{me}.{node.attr}"))
    return sorted(found)


def _made_attributes(
    cls: ast.ClassDef, classes: dict[str, ast.ClassDef], seen: set[str]
) -> set[str] | None:
    """The attribute names an instance of `cls` has by the program's text (None: a base
    the program does not define may add others)."""
    if cls.name in seen:
        return None
    seen.add(cls.name)
    made = set(_module_attributes())
    for base in cls.bases:
        name = ast.unparse(base)
        if name in ("nn.Module", "torch.nn.Module", "Module"):
            continue
        inherited = _made_attributes(classes[name], classes, seen) if name in classes else None
        if inherited is None:
            return None
        made |= inherited
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            made.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            made.add(node.attr)  # `self.x = ...` in any method (or any object's: lenient)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node in cls.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            made.update(t.id for t in targets if isinstance(t, ast.Name))
    return made


@functools.cache
def _module_attributes() -> frozenset[str]:
    """What every torch.nn.Module has: its methods, `training`."""
    import torch.nn

    return frozenset(dir(torch.nn.Module)) | {"training"}
