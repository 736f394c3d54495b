"""The architecture-program contract, the AST static checks, and the canonical form.

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

The canonical form is `ast.unparse` of the tree with docstrings removed: comments, blank
lines, quoting and spacing are normalised, so two programs that differ only in formatting
share one sha256 (the archive's content address).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import re
import types
from collections.abc import Iterable

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass

# Modules a program may import (exactly these names).
ALLOWED_IMPORTS = frozenset(
    {
        "__future__",
        "torch",
        "torch.nn",
        "torch.nn.functional",
        "torch.nn.init",
        "torch.nn.utils",
        "torch.nn.utils.parametrize",
        "torch.nn.utils.parametrizations",
        "torch.nn.parameter",
        "torch.nn.modules",
        # LEMUR programs set up their own optimiser and scheduler (train_setup/learn)
        "torch.optim",
        "torch.optim.lr_scheduler",
        "math",
        "typing",
        "collections",
        "collections.abc",
        "functools",
        "dataclasses",
        "itertools",
        "operator",
        "numbers",
        "abc",
        "enum",
    }
)
# Modules an attribute chain may pass through (imports plus the submodules that pure
# layer code reaches, e.g. `nn.modules.conv.Conv2d`, `torch.linalg.norm`).
ALLOWED_MODULE_PREFIXES = (
    "torch.nn.modules",
    "torch.nn.utils",
    "torch.optim.",
)
# torch.cuda and torch.amp: LEMUR's trainers ask `torch.cuda.is_available()`, empty the
# cache and build a GradScaler; their private parts (`_x`) stay refused like all others.
ALLOWED_CHAIN_MODULES = ALLOWED_IMPORTS | {
    "torch.linalg",
    "torch.fft",
    "torch.special",
    "torch.cuda",
    "torch.amp",
}
# Where an object reached through a module chain may be defined (its `__module__`).
ALLOWED_OBJECT_MODULES = ALLOWED_CHAIN_MODULES | {
    "torch.functional",
    "torch.random",
    "torch.types",
    "torch.autograd.grad_mode",
    "torch.amp.autocast_mode",
    "torch._tensor",
    "torch._linalg_utils",
    "torch._lowrank",
    "builtins",
}
ALLOWED_OBJECT_PREFIXES = (
    "torch.nn.",
    "torch._C",
    "torch.optim.",
    "torch.amp.",
    "torch.cuda.memory",
    "collections.",
    "typing",
)

FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "exit",
        "quit",
        "help",
        "memoryview",
        "__import__",
        "__builtins__",
        "__loader__",
        "__spec__",
    }
)
FORBIDDEN_ATTRS = frozenset(
    {
        # modules that torch (or typing, dataclasses, ...) re-exports as attributes
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "ctypes",
        "socket",
        "shutil",
        "pickle",
        "marshal",
        "io",
        "pathlib",
        "signal",
        "threading",
        "multiprocessing",
        "inspect",
        "gc",
        "resource",
        "mmap",
        "tempfile",
        "distributed",
        "profiler",
        "onnx",
        "package",
        "serialization",
        "hub",
        "ops",
        "classes",
        "library",
        "jit",
        "cpp_extension",
        # processes, environment, files
        "system",
        "popen",
        "fork",
        "forkpty",
        "kill",
        "killpg",
        "environ",
        "getenv",
        "putenv",
        "unsetenv",
        "remove",
        "unlink",
        "rmdir",
        "removedirs",
        "rename",
        "chdir",
        "chmod",
        "chown",
        "mkdir",
        "makedirs",
        "listdir",
        "scandir",
        "walk",
        "symlink",
        "open",
        "read_text",
        "write_text",
        "read_bytes",
        "write_bytes",
        "execl",
        "execle",
        "execlp",
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "spawnl",
        "spawnv",
        "spawnve",
        "posix_spawn",
        "exec_module",
        # (un)pickling, file-backed tensors, native code, compilation, threads
        "load",
        "loads",
        "save",
        "dump",
        "dumps",
        "from_file",
        "fromfile",
        "tofile",
        "load_library",
        "load_inline",
        "import_ir_module",
        "import_ir_module_from_buffer",
        "compile",
        "set_num_threads",
        "set_num_interop_threads",
        "export_chrome_trace",
        # frame and code objects
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "tb_next",
        "co_code",
        # getattr in disguise, and annotation strings evaluated as code
        "attrgetter",
        "methodcaller",
        "get_type_hints",
        "ForwardRef",
        "evaluate_forward_ref",
        "singledispatch",
        "singledispatchmethod",
    }
)
ALLOWED_DUNDER_ATTRS = frozenset({"__init__", "__name__", "__class__", "__call__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__"})
# Dunder methods a program may define; others (__reduce__, __getattribute__, __del__, ...)
# change how the object behaves when the trusted side pickles, inspects or frees it.
ALLOWED_DUNDER_DEFS = frozenset(
    {
        "__init__",
        "__call__",
        "__repr__",
        "__str__",
        "__len__",
        "__getitem__",
        "__iter__",
        "__post_init__",
        "__hash__",
        "__eq__",
    }
)
ALLOWED_DUNDER_STRINGS = frozenset({"__main__"})
ATTR_NAME_FUNCS = frozenset({"getattr", "hasattr", "setattr", "delattr"})
MAX_AST_NODES = 50_000
NET_INIT_ARGS = 4  # in_shape, out_shape, prm, device

_DUNDER = re.compile(r"__\w+__")
_FORMAT_FIELD_ACCESS = re.compile(r"\{[^{}]*[.\[][^{}]*\}")


def _reject(
    error_class: ErrorClass, message: str, node: ast.AST | None = None
) -> CandidateRejected:
    line = getattr(node, "lineno", None)
    where = f"line {line}: " if line is not None else ""
    return CandidateRejected(error_class, where + message)


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def parse_program(code: str, cfg: AdmissionConfig) -> ast.Module:
    """Parse with size limits; hostile input may only ever produce a CandidateRejected."""
    size = len(code.encode("utf-8", errors="replace"))
    if size > cfg.max_source_bytes:
        raise CandidateRejected(
            ErrorClass.TOO_LARGE, f"source is {size} bytes, limit {cfg.max_source_bytes}"
        )
    try:
        tree = ast.parse(code, filename="program.py")
    except SyntaxError as exc:
        raise CandidateRejected(
            ErrorClass.SYNTAX_ERROR, f"line {exc.lineno}: {exc.msg}: {(exc.text or '').strip()}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise CandidateRejected(ErrorClass.SYNTAX_ERROR, f"unparseable source: {exc}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_AST_NODES:
        raise CandidateRejected(ErrorClass.TOO_LARGE, f"{count} AST nodes, limit {MAX_AST_NODES}")
    return tree


def strip_docstrings(tree: ast.Module) -> ast.Module:
    """Remove module, class and function docstrings in place (they are not code)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _import_trusted(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _allowed_module(name: str) -> bool:
    return name in ALLOWED_CHAIN_MODULES or name.startswith(ALLOWED_MODULE_PREFIXES)


def _allowed_object(obj: object) -> bool:
    if isinstance(obj, types.ModuleType):
        return _allowed_module(obj.__name__)
    if not callable(obj):  # dtypes, constants, layouts
        return True
    origin = getattr(obj, "__module__", None)
    if not isinstance(origin, str):
        return True  # builtin method descriptors of allowed classes
    return origin in ALLOWED_OBJECT_MODULES or origin.startswith(ALLOWED_OBJECT_PREFIXES)


def resolve_chain(root: str, attrs: Iterable[str], node: ast.AST | None = None) -> object:
    """Follow `root.a.b` on the real (trusted) modules; refuse anything off the allowlist."""
    obj: object = _import_trusted(root.split(".", 1)[0])
    for part in root.split(".")[1:]:
        obj = getattr(obj, part)
    path = root
    for attr in attrs:
        path = f"{path}.{attr}"
        if attr.startswith("_") and isinstance(obj, types.ModuleType):
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"private module attribute {path}", node)
        try:
            obj = getattr(obj, attr)
        except Exception:  # noqa: BLE001 - any failure means we cannot vouch for it
            raise _reject(
                ErrorClass.FORBIDDEN_CALL, f"{path} does not exist in this torch", node
            ) from None
        if not _allowed_object(obj):
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"{path} is outside the allowlist", node)
    return obj


class _StaticChecker(ast.NodeVisitor):
    """One pass over the (docstring-free) tree; raises on the first violation."""

    def __init__(self) -> None:
        self.module_aliases: dict[str, str] = {}  # local name -> dotted module path
        self.chain_values: set[int] = set()  # id() of Name nodes used as chain roots
        self.called_names: set[int] = set()  # id() of getattr & co. Names that are called
        self.library_names: set[str] = set()  # every name an import binds

    def check(self, tree: ast.Module) -> None:
        # imports first, so a use above its import line is still seen as a module chain
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.visit(node)
        self.visit(tree)

    # imports -----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                raise _reject(ErrorClass.FORBIDDEN_IMPORT, f"import {alias.name}", node)
            self.library_names.add(alias.asname or alias.name.split(".", 1)[0])
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".", 1)[0]
                self.module_aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module not in ALLOWED_IMPORTS:
            raise _reject(ErrorClass.FORBIDDEN_IMPORT, f"from {'.' * node.level}{module}", node)
        if module == "__future__":
            return
        for alias in node.names:
            if alias.name == "*":
                raise _reject(ErrorClass.FORBIDDEN_IMPORT, f"from {module} import *", node)
            self._check_attr_name(alias.name, node)
            obj = resolve_chain(module, [alias.name], node)
            self.library_names.add(alias.asname or alias.name)
            if isinstance(obj, types.ModuleType):
                self.module_aliases[alias.asname or alias.name] = obj.__name__

    # names and attributes ----------------------------------------------------
    def _check_attr_name(self, name: str, node: ast.AST) -> None:
        if _is_dunder(name) and name not in ALLOWED_DUNDER_ATTRS:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"dunder attribute {name}", node)
        if name in FORBIDDEN_ATTRS:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"forbidden attribute {name}", node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"forbidden name {node.id}", node)
        if _is_dunder(node.id) and node.id not in ALLOWED_DUNDER_NAMES:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"dunder name {node.id}", node)
        if node.id in ATTR_NAME_FUNCS and id(node) not in self.called_names:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"{node.id} used as a value", node)
        if node.id in self.module_aliases:
            if not isinstance(node.ctx, ast.Load):
                raise _reject(
                    ErrorClass.FORBIDDEN_CALL, f"rebinding the module name {node.id}", node
                )
            if id(node) not in self.chain_values:
                raise _reject(
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
            raise _reject(ErrorClass.FORBIDDEN_CALL, "assigning through a dunder attribute", node)
        if isinstance(base, ast.Name) and base.id in self.library_names:
            raise _reject(
                ErrorClass.FORBIDDEN_CALL,
                f"patching an attribute of library object {base.id}",
                node,
            )
        if isinstance(base, ast.Call):
            raise _reject(
                ErrorClass.FORBIDDEN_CALL, "assigning to an attribute of a call result", node
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_assignment_target(node, node)
        self._check_attr_name(node.attr, node)
        attrs = [node.attr]
        base = node.value
        while isinstance(base, ast.Attribute):
            self._check_attr_name(base.attr, base)
            attrs.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in self.module_aliases:
            self.chain_values.add(id(base))
            resolve_chain(self.module_aliases[base.id], reversed(attrs), node)
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
                raise _reject(ErrorClass.FORBIDDEN_CALL, "format on a non-literal template", node)
            if _FORMAT_FIELD_ACCESS.search(template.value):
                raise _reject(
                    ErrorClass.FORBIDDEN_CALL, "format template with attribute access", node
                )
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
            raise _reject(
                ErrorClass.FORBIDDEN_CALL, f"{fname} on module {module} with a computed name", node
            )
        prefix = _literal_prefix(name)
        if not prefix or not prefix[0].isalpha():
            raise _reject(
                ErrorClass.FORBIDDEN_CALL,
                f"{fname} with a computed name must start with a literal letter",
                node,
            )

    # definitions and literals ------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if _is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFS:
            raise _reject(ErrorClass.FORBIDDEN_CALL, f"defining {node.name}", node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            for match in _DUNDER.findall(node.value):
                if match not in ALLOWED_DUNDER_STRINGS:
                    raise _reject(ErrorClass.FORBIDDEN_CALL, f"string naming {match}", node)


def _literal_prefix(node: ast.expr) -> str:
    """The constant text a computed string is guaranteed to start with ('' if none)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _literal_prefix(node.values[0])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_prefix(node.left)
    return ""


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


def check_contract(tree: ast.Module) -> None:
    """`class Net` at top level with `__init__(self, in_shape, out_shape, prm, device)` and
    `forward(self, x)` (on Net or a base class defined in the program)."""
    classes = _class_defs(tree)
    net = classes.get("Net")
    if net is None:
        raise CandidateRejected(ErrorClass.CONTRACT_VIOLATION, "no top-level class Net")
    if not net.bases:
        raise _reject(ErrorClass.CONTRACT_VIOLATION, "class Net must subclass nn.Module", net)
    init = _method(classes, net, "__init__")
    if init is None:
        raise _reject(ErrorClass.CONTRACT_VIOLATION, "Net has no __init__", net)
    if (
        _positional_capacity(init) < 1 + NET_INIT_ARGS
        or _required_positional(init) > 1 + NET_INIT_ARGS
    ):
        raise _reject(
            ErrorClass.CONTRACT_VIOLATION,
            "Net.__init__ must take (self, in_shape, out_shape, prm, device)",
            init,
        )
    forward = _method(classes, net, "forward")
    if forward is None:
        raise _reject(ErrorClass.CONTRACT_VIOLATION, "Net has no forward method", net)
    if _positional_capacity(forward) < 2 or _required_positional(forward) > 2:
        raise _reject(ErrorClass.CONTRACT_VIOLATION, "Net.forward must take (self, x)", forward)


def check_static(code: str, cfg: AdmissionConfig) -> ast.Module:
    """All static checks; returns the docstring-free tree. Raises CandidateRejected."""
    tree = strip_docstrings(parse_program(code, cfg))
    try:
        _StaticChecker().check(tree)
    except RecursionError:
        raise CandidateRejected(ErrorClass.TOO_LARGE, "program nests too deeply") from None
    check_contract(tree)
    return tree


def canonical_code(tree: ast.Module) -> str:
    """Formatting-independent source of a docstring-free tree (still valid Python)."""
    return ast.unparse(tree) + "\n"


def code_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def canonicalize(code: str, cfg: AdmissionConfig) -> tuple[str, str]:
    """Static checks, then (canonical code, its sha256)."""
    canonical = canonical_code(check_static(code, cfg))
    return canonical, code_hash(canonical)
