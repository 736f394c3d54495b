"""The AST static checks: the first of two barriers against a hostile program.

A program is hostile until proven otherwise. These checks are the first of two barriers
(the sandbox is the second): they reject, before anything runs, a program that imports
outside an allowlist, calls a dangerous builtin, touches dunder attributes, or reaches
files, processes, the network, native code or (un)pickling through torch's own escape
hatches. They never import or execute the program; they only import the allowlisted,
trusted modules (torch, math, ...) to resolve attribute chains such as `torch.nn.init.x`.

Rules, in short:
- imports only from `ALLOWED_IMPORTS`, absolute, no `*`;
- an attribute chain rooted at an imported module (`torch.a.b`) is resolved against the real
  module: a module it reaches must be allowlisted, an object it reaches must come from an
  allowlisted module, private (`_x`) module attributes are refused;
- module objects cannot be used as plain values (`t = torch`), so every module access is
  a chain that the resolver sees;
- names in `FORBIDDEN_NAMES` (eval, exec, open, ...) and attributes in `FORBIDDEN_ATTRS`
  (os, system, load, save, from_file, hub, ops, ...) are refused wherever they appear;
- dunder attributes are refused except `ALLOWED_DUNDER_ATTRS` (`super().__init__` works);
- getattr/hasattr take a literal name or a name that starts with a letter
  (`getattr(self, f"layer{i}")` works, `getattr(x, "_" + "_class__")` does not);
- no assignment (or setattr/delattr) to attributes of imported names, of call results
  (`type(x).f = ...`) or through dunders (`x.__class__.f = ...`): library code cannot be
  patched. A library class first bound to a local name (`M = nn.Module`) is beyond what
  this check follows (see the sandbox's residual risk);
- `str.format` only on a literal template without attribute or index fields.
"""

from __future__ import annotations

import ast
import functools
import importlib
import keyword
import types
from collections.abc import Iterable
from dataclasses import dataclass

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program.contract import check_contract
from llmnas_dist.program.policy import (
    ALLOWED_CHAIN_MODULES,
    ALLOWED_DUNDER_ATTRS,
    ALLOWED_DUNDER_DEFS,
    ALLOWED_DUNDER_NAMES,
    ALLOWED_DUNDER_STORES,
    ALLOWED_DUNDER_STRINGS,
    ALLOWED_IMPORTS,
    ALLOWED_LIBRARY_SETTINGS,
    ALLOWED_MODULE_PREFIXES,
    ALLOWED_OBJECT_MODULES,
    ALLOWED_OBJECT_PREFIXES,
    ATTR_NAME_FUNCS,
    CHAIN_ATTR_EXCEPTIONS,
    DORMANT_IMPORTS,
    DUNDER_PATTERN,
    FORBIDDEN_ATTR_REASONS,
    FORBIDDEN_ATTRS,
    FORBIDDEN_NAMES,
    FORMAT_FIELD_ACCESS,
    MODULE_ATTR_ALLOWLIST,
    NUMPY_RISKS,
    PURE_MODULES,
    REFUSED_IMPORT_REASONS,
)
from llmnas_dist.program.source import canonical_code, parse_program, reject_at, strip_docstrings
from llmnas_dist.vocab import code_hash


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


@functools.cache
def _import_trusted(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _allowed_module(name: str) -> bool:
    return name in ALLOWED_CHAIN_MODULES or name.startswith(ALLOWED_MODULE_PREFIXES)


def _importable(name: str) -> bool:
    """An allowlisted module, or a public submodule of an allowlisted torch package
    (`torch.nn.utils.spectral_norm`): what a chain may pass through may be imported."""
    if name in ALLOWED_IMPORTS:
        return True
    return _allowed_module(name) and not any(p.startswith("_") for p in name.split("."))


def refused_import(name: str) -> str:
    """The rejection message for a module off the allowlist, with the reason it stays so."""
    for candidate in (name, name.split(".", 1)[0]):
        if candidate in REFUSED_IMPORT_REASONS:
            return f"import {name}: refused, {REFUSED_IMPORT_REASONS[candidate]}"
    return f"import {name}: not on the import allowlist (torch, torch.nn, numpy, math, ...)"


def _allowed_object(obj: object, parent: object) -> bool:
    if isinstance(obj, types.ModuleType):
        return _allowed_module(obj.__name__)
    if isinstance(parent, types.ModuleType) and (
        parent.__name__ in PURE_MODULES or parent.__name__ in MODULE_ATTR_ALLOWLIST
    ):
        # a pure module's functions (functools.reduce lives in _functools); what a module's
        # short allowlist names (torch.jit.is_scripting lives in torch._jit_internal)
        return True
    if not callable(obj):  # dtypes, constants, layouts
        return True
    origin = getattr(obj, "__module__", None)
    if not isinstance(origin, str):
        return True  # builtin method descriptors of allowed classes
    return origin in ALLOWED_OBJECT_MODULES or origin.startswith(ALLOWED_OBJECT_PREFIXES)


def _check_module_risks(module: str, attr: str, path: str, node: ast.AST | None) -> None:
    """The per-module rules (`module` is the module the attribute is read from): gc's and
    torch.jit's short allowlists, numpy's named risks."""
    allowed = MODULE_ATTR_ALLOWLIST.get(module)
    if allowed is not None and attr not in allowed:
        raise reject_at(
            ErrorClass.FORBIDDEN_CALL,
            f"{path}: only {', '.join(sorted(allowed))} of {module} is allowed",
            node,
        )
    if module.split(".", 1)[0] == "numpy" and attr in NUMPY_RISKS:
        raise reject_at(
            ErrorClass.FORBIDDEN_CALL,
            f"{path}: numpy file and introspection entry points are refused",
            node,
        )


def resolve_chain(
    root: str, attrs: Iterable[str], node: ast.AST | None = None, *, vouch: bool = True
) -> object:
    """Follow `root.a.b` on the real (trusted) modules; refuse anything off the allowlist.
    `vouch=False` (a function's annotation, which the program cannot read back) still
    refuses private module attributes and named risks, not objects off the allowlist."""
    obj: object = _import_trusted(root.split(".", 1)[0])
    for part in root.split(".")[1:]:
        obj = getattr(obj, part)
    path = root
    for attr in attrs:
        path = f"{path}.{attr}"
        if attr.startswith("_") and isinstance(obj, types.ModuleType):
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL,
                f"private module attribute {path}: internals are refused (no rule vouches "
                "for them)",
                node,
            )
        if isinstance(obj, types.ModuleType):
            _check_module_risks(obj.__name__, attr, path, node)
        parent = obj
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            # Missing here means missing in the sandbox too (the same trusted modules, which
            # the program cannot patch): reading it raises AttributeError there, nothing
            # more. A line plain PyTorch never reaches must not reject the program.
            return None
        except Exception:  # noqa: BLE001 - any other failure means we cannot vouch for it
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"{path} cannot be resolved", node) from None
        if vouch and not _allowed_object(obj, parent):
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"{path} is outside the allowlist", node)
    return obj


@dataclass(frozen=True)
class _Scope:
    """What a function (or comprehension) binds: a name it binds is never the builtin."""

    bound: frozenset[str]
    declared_global: frozenset[str]


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_NESTED_SCOPES = (ast.Lambda, *_COMPREHENSIONS)


def _function_scope(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> _Scope:
    """Parameters plus every name the body binds (assignment, for, with, except, import,
    del, nested def/class), nested scopes excluded; `global`/`nonlocal` names are not
    local. A walrus inside a nested comprehension is missed: that only refuses more."""
    args = node.args
    bound = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    bound |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    declared: set[str] = set()
    outer: set[str] = set()
    stack: list[ast.AST] = list(node.body) if isinstance(node.body, list) else [node.body]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(item.name)
            continue
        if isinstance(item, _NESTED_SCOPES):
            continue
        if isinstance(item, ast.Name) and not isinstance(item.ctx, ast.Load):
            bound.add(item.id)
        elif isinstance(item, ast.ExceptHandler) and item.name:
            bound.add(item.name)
        elif isinstance(item, ast.Import | ast.ImportFrom):
            bound |= {a.asname or a.name.split(".", 1)[0] for a in item.names}
        elif isinstance(item, ast.Global):
            declared |= set(item.names)
        elif isinstance(item, ast.Nonlocal):
            outer |= set(item.names)
        stack.extend(ast.iter_child_nodes(item))
    return _Scope(frozenset(bound - declared - outer), frozenset(declared))


def _comprehension_scope(node: ast.expr) -> _Scope:
    targets = [g.target for g in getattr(node, "generators", [])]
    names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return _Scope(frozenset(names), frozenset())


# What a function annotation may hold: type names, subscripts and `|`, never a call.
_ANNOTATION_NODES = (
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.BinOp,
    ast.BitOr,
    ast.Load,
)


class _StaticChecker(ast.NodeVisitor):
    """One pass over the (docstring-free) tree; raises on the first violation."""

    def __init__(self) -> None:
        self.module_aliases: dict[str, str] = {}  # local name -> dotted module path
        self.chain_values: set[int] = set()  # id() of Name nodes used as chain roots
        self.called_names: set[int] = set()  # id() of getattr & co. Names that are called
        self.library_names: set[str] = set()  # every name an import binds
        self.scopes: list[_Scope] = []  # enclosing functions and comprehensions, innermost last
        self.in_annotation = False  # inside a function's parameter or return annotation
        self.read_names: set[str] = set()  # every name the program reads (Load)

    def visit(self, node: ast.AST) -> None:
        if self.in_annotation and not isinstance(node, _ANNOTATION_NODES):
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL,
                f"an annotation may only name types, found {type(node).__name__}",
                node,
            )
        super().visit(node)

    def check(self, tree: ast.Module) -> None:
        self.read_names = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        # imports first, so a use above its import line is still seen as a module chain
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.visit(node)
        self.visit(tree)

    # imports -----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not _importable(alias.name):
                bound = alias.asname or alias.name.split(".", 1)[0]
                if alias.name in DORMANT_IMPORTS and bound not in self.read_names:
                    continue
                raise reject_at(ErrorClass.FORBIDDEN_IMPORT, refused_import(alias.name), node)
            self.library_names.add(alias.asname or alias.name.split(".", 1)[0])
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".", 1)[0]
                self.module_aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            raise reject_at(ErrorClass.FORBIDDEN_IMPORT, f"relative import from {module}", node)
        if module == "__future__":
            return
        if not _importable(module):
            unused = all((a.asname or a.name) not in self.read_names for a in node.names)
            if module in DORMANT_IMPORTS and unused and all(a.name != "*" for a in node.names):
                return
            raise reject_at(ErrorClass.FORBIDDEN_IMPORT, refused_import(module), node)
        if [a.name for a in node.names] == ["*"]:
            self._star_import(module, node)
            return
        for alias in node.names:
            if alias.name == "*":
                raise reject_at(ErrorClass.FORBIDDEN_IMPORT, f"from {module} import *", node)
            if alias.name not in CHAIN_ATTR_EXCEPTIONS.get(module, ()):
                self._check_attr_name(alias.name, node)
            obj = resolve_chain(module, [alias.name], node)
            self.library_names.add(alias.asname or alias.name)
            if isinstance(obj, types.ModuleType):
                self.module_aliases[alias.asname or alias.name] = obj.__name__

    def _star_import(self, module: str, node: ast.ImportFrom) -> None:
        """`from collections import *` binds the module's `__all__`: allowed for a pure
        module when every one of those names passes the checks a named import passes."""
        names = getattr(_import_trusted(module), "__all__", None)
        if module not in PURE_MODULES or not isinstance(names, list | tuple):
            raise reject_at(ErrorClass.FORBIDDEN_IMPORT, f"from {module} import *", node)
        for name in names:
            self._check_attr_name(name, node)
            obj = resolve_chain(module, [name], node)
            self.library_names.add(name)
            if isinstance(obj, types.ModuleType):
                raise reject_at(ErrorClass.FORBIDDEN_IMPORT, f"from {module} import *", node)

    # names and attributes ----------------------------------------------------
    def _check_attr_name(self, name: str, node: ast.AST) -> None:
        if _is_dunder(name) and name not in ALLOWED_DUNDER_ATTRS:
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"dunder attribute {name}", node)
        if name in FORBIDDEN_ATTRS:
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL,
                f"forbidden attribute {name}: {FORBIDDEN_ATTR_REASONS[name]}",
                node,
            )

    def _is_local(self, name: str) -> bool:
        """Does `name`, read here, resolve to a function's local (never to the builtin)?"""
        for scope in reversed(self.scopes):
            if name in scope.declared_global:
                return False
            if name in scope.bound:
                return True
        return False  # module level: a global may be unbound and fall back to builtins

    def visit_Name(self, node: ast.Name) -> None:
        # The builtin is the risk, not the name: `def forward(self, input)` reads a
        # parameter; a module-level or `global` name may fall back to builtins.input.
        if (
            node.id in FORBIDDEN_NAMES
            and isinstance(node.ctx, ast.Load)
            and not self._is_local(node.id)
        ):
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"forbidden name {node.id}", node)
        if (
            _is_dunder(node.id)
            and node.id not in ALLOWED_DUNDER_NAMES
            and not (isinstance(node.ctx, ast.Store) and node.id in ALLOWED_DUNDER_STORES)
        ):
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"dunder name {node.id}", node)
        if node.id in ATTR_NAME_FUNCS and id(node) not in self.called_names:
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"{node.id} used as a value", node)
        if node.id in self.module_aliases:
            if not isinstance(node.ctx, ast.Load):
                raise reject_at(
                    ErrorClass.FORBIDDEN_CALL, f"rebinding the module name {node.id}", node
                )
            if id(node) not in self.chain_values:
                raise reject_at(
                    ErrorClass.FORBIDDEN_CALL, f"module {node.id} used as a plain value", node
                )

    def _check_assignment_target(self, target: ast.expr, node: ast.AST) -> None:
        """Refuse patching library code: `nn.Module.parameters = f`, `torch.relu = f`,
        `type(x).forward = f`, `x.__class__.forward = f`, and their setattr forms."""
        names: list[str] = []
        base = target
        while isinstance(base, ast.Attribute | ast.Subscript):
            if isinstance(base, ast.Attribute):
                names.append(base.attr)
            base = base.value
        if any(_is_dunder(name) for name in names):
            raise reject_at(ErrorClass.FORBIDDEN_CALL, "assigning through a dunder attribute", node)
        root = self.module_aliases.get(base.id) if isinstance(base, ast.Name) else None
        if (
            root
            and ".".join([root, *reversed(names)]) in ALLOWED_LIBRARY_SETTINGS
            and all(isinstance(t, ast.Attribute) for t in _chain_links(target))
        ):
            return
        if isinstance(base, ast.Name) and base.id in self.library_names:
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL,
                f"patching an attribute of library object {base.id}",
                node,
            )
        if isinstance(base, ast.Call):
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL, "assigning to an attribute of a call result", node
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_assignment_target(node, node)
        links: list[ast.Attribute] = [node]  # outermost first
        base = node.value
        while isinstance(base, ast.Attribute):
            links.append(base)
            base = base.value
        attrs = [link.attr for link in links]
        root = self.module_aliases.get(base.id) if isinstance(base, ast.Name) else None
        for i, link in enumerate(links):
            # the module path this attribute is read from, when the chain starts at a module
            parent = ".".join([root, *reversed(attrs[i + 1 :])]) if root else ""
            if link.attr not in CHAIN_ATTR_EXCEPTIONS.get(parent, ()):
                self._check_attr_name(link.attr, link)
        if isinstance(base, ast.Name) and base.id in self.module_aliases:
            self.chain_values.add(id(base))
            resolve_chain(
                self.module_aliases[base.id], reversed(attrs), node, vouch=not self.in_annotation
            )
        # the whole chain is checked; visit only what is below it
        self.visit(base)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ATTR_NAME_FUNCS:
            self.called_names.add(id(func))
            self._check_attr_call(func.id, node)
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map"):
            template = func.value
            if not (isinstance(template, ast.Constant) and isinstance(template.value, str)):
                raise reject_at(ErrorClass.FORBIDDEN_CALL, "format on a non-literal template", node)
            if FORMAT_FIELD_ACCESS.search(template.value):
                raise reject_at(
                    ErrorClass.FORBIDDEN_CALL, "format template with attribute access", node
                )
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        """`Tuple.__annotations__ = {"logits": Tensor, ...}` (torchvision's and LEMUR's
        namedtuples) declares what a class body's annotations declare: allowed for a
        program's own name with a literal dict of identifier keys, since dataclasses compile
        the keys into code (a key like "a=os.system('x')" would be injected). The values
        are checked like any class-level annotation."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "__annotations__"
            and isinstance(target.value, ast.Name)
            and target.value.id not in self.library_names
            and target.value.id not in self.module_aliases
            and isinstance(node.value, ast.Dict)
            and all(_is_identifier_key(k) for k in node.value.keys)
        ):
            self.visit(target.value)
            self.visit(node.value)
            return
        self.generic_visit(node)

    def _check_attr_call(self, fname: str, node: ast.Call) -> None:
        if len(node.args) < 2:
            return  # a TypeError at runtime, nothing reached
        target, name = node.args[0], node.args[1]
        module = self.module_aliases.get(target.id) if isinstance(target, ast.Name) else None
        if fname in ("setattr", "delattr"):
            self._check_assignment_target(ast.Attribute(value=target, attr="x"), node)
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            self._check_attr_name(name.value, node)
            if module is not None:
                self.chain_values.add(id(target))
                resolve_chain(module, [name.value], node)
            return
        if module is not None:
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL, f"{fname} on module {module} with a computed name", node
            )
        prefix = _literal_prefix(name)
        if not prefix or not prefix[0].isalpha():
            raise reject_at(
                ErrorClass.FORBIDDEN_CALL,
                f"{fname} with a computed name must start with a literal letter",
                node,
            )

    # definitions and literals ------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Decorators, defaults and annotations run in the enclosing scope, the body in
        the function's own."""
        if _is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFS:
            raise reject_at(ErrorClass.FORBIDDEN_CALL, f"defining {node.name}", node)
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        self._visit_annotations(node)
        self.scopes.append(_function_scope(node))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _visit_annotations(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A parameter or return annotation is evaluated once at definition and kept only
        in `__annotations__`, which a program cannot read (dunders, inspect,
        typing.get_type_hints and functools.singledispatch are refused). So it may name a
        type off the allowlist (`train_data: torch.utils.data.DataLoader`) but may hold no
        call. Class-level annotations stay fully checked: dataclasses.fields() returns them."""
        args = node.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        annotations = [a.annotation for a in every if a is not None and a.annotation]
        self.in_annotation = True
        try:
            for expr in [*annotations, *([node.returns] if node.returns else [])]:
                self.visit(expr)
        finally:
            self.in_annotation = False

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in [*node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        self.scopes.append(_function_scope(node))
        self.visit(node.body)
        self.scopes.pop()

    def _visit_comprehension(self, node: ast.expr) -> None:
        """The first iterable runs in the enclosing scope, the rest in the comprehension's."""
        generators: list[ast.comprehension] = getattr(node, "generators", [])
        self.visit(generators[0].iter)
        self.scopes.append(_comprehension_scope(node))
        for index, gen in enumerate(generators):
            self.visit(gen.target)
            if index:
                self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        for field in ("elt", "key", "value"):
            part = getattr(node, field, None)
            if part is not None:
                self.visit(part)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _visit_comprehension

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            for match in DUNDER_PATTERN.findall(node.value):
                if match not in ALLOWED_DUNDER_STRINGS:
                    raise reject_at(ErrorClass.FORBIDDEN_CALL, f"string naming {match}", node)


def _chain_links(target: ast.expr) -> list[ast.expr]:
    """The links of `a.b[c].d` from the outside in, down to (not including) the base."""
    links: list[ast.expr] = []
    while isinstance(target, ast.Attribute | ast.Subscript):
        links.append(target)
        target = target.value
    return links


def _is_identifier_key(key: ast.expr | None) -> bool:
    return (
        isinstance(key, ast.Constant)
        and isinstance(key.value, str)
        and key.value.isidentifier()
        and not keyword.iskeyword(key.value)
        and not _is_dunder(key.value)
    )


def _literal_prefix(node: ast.expr) -> str:
    """The constant text a computed string is guaranteed to start with ('' if none)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _literal_prefix(node.values[0])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_prefix(node.left)
    return ""


def check_static(code: str, cfg: AdmissionConfig) -> ast.Module:
    """All static checks; returns the docstring-free tree. Raises CandidateRejected."""
    tree = strip_docstrings(parse_program(code, cfg))
    try:
        _StaticChecker().check(tree)
    except RecursionError:
        raise CandidateRejected(ErrorClass.TOO_LARGE, "program nests too deeply") from None
    check_contract(tree)
    return tree


def canonicalize(code: str, cfg: AdmissionConfig) -> tuple[str, str]:
    """Static checks, then (canonical code, its sha256)."""
    canonical = canonical_code(check_static(code, cfg))
    return canonical, code_hash(canonical)
