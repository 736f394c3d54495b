"""Which names a line inserted into a whole program may read, and where it stands.

A whole program is an edited copy of its parent (`grammar.full_grammar`); a line inserted
into it reads only names the program has where the line stands (`scope_names`: per
function, its own, the enclosing functions' and the module's), reads a module only through
an attribute (`module_names`), reads in Net's methods besides `__init__` only the
attributes of `self` that Net has or is taught (`self_attributes`), stands in the body of
`class Net` (`in_net_class`) and never directly in a class body (`class_bodies`).
`insertion_scopes` places each insertion point of the parent's outline in its function's
scope.
"""

from __future__ import annotations

import ast
import keyword
import re
import string

from llmnas_dist.program.contract import net_method
from llmnas_dist.program.source import parse_source

_NET = re.compile(r"class Net\b")

# What an inserted line may read besides the parent's own names (`scope_names`): the
# builtins network code calls. Why names are closed at all: in the default runs of
# 2026-12-05 the untaught model's whole programs invented what they used (helpers such as
# `pre_block(...)`, `ICEF`, a made-up attribute) and, where top-level `def` blocks were
# allowed, looped inside the invented `def` line (6 of 12 whole programs of run D): no
# insertion at the top level now, and a name is read only where the program has it.
READABLE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "getattr", "hasattr",
    "int", "isinstance", "len", "list", "max", "min", "range", "reversed", "round",
    "setattr", "sorted", "sum", "super", "tuple", "zip",
)  # fmt: skip


SEED_MODULES = ("nn", "F", "torch", "math")  # what the seeds' imports bind
# the blocks the mutation operators add to Net (`generation.mutations`), which the warm
# start teaches whole programs to make and read, and the one statement of forward that
# applies each ({x}: forward's input name); a test holds the two together
TAUGHT_APPLICATIONS = {
    "input_norm": "{x} = self.input_norm({x})",
    "pre_block": "{x} = {x} + self.pre_block({x})",
    "input_gate": "{x} = {x} * self.input_gate({x})",
    "post_block": "{x} = {x} + self.post_block({x})",
}
TAUGHT_ATTRIBUTES = tuple(TAUGHT_APPLICATIONS)
# the taught blocks applied first in forward, to its input (the others: after the features)
INPUT_BLOCKS = ("input_norm", "pre_block", "input_gate")


def _applied_to(value: ast.expr, block: str) -> str:
    """What `self.<block>(...)` is called on in `value`: its first argument as written."""
    for call in ast.walk(value):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == block
            and call.args
        ):
            return ast.unparse(call.args[0])
    return "x"


def misapplied_blocks(
    tree: ast.Module, first: int = 1, made_only: bool = False
) -> list[tuple[int, str]]:
    """(line, why) of each assignment on line `first` or later that applies a taught block
    (`self.pre_block(...)`, TAUGHT_APPLICATIONS) other than as taught; with `made_only`, only
    of blocks some line of the program assigns to `self` (the statement of a block never made
    is no fix: 'attribute' faults draw it again). Why: the small model mixes the three input
    blocks' statements up, and a mixed-up one trains badly: in a default run of 2026-12-07
    (2-core AVX512-BF16 EPYC) the 4 of 10 evaluated children that wrote `x = x *
    self.pre_block(x)`, `x = x * self.input_norm(x)` or `x = x + self.input_norm(x)` scored
    0.650-0.799, 0.07-0.22 below their parents."""
    made = _self_attributes_in(tree, ast.Store) if made_only else set(TAUGHT_APPLICATIONS)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or node.lineno < first or len(node.targets) != 1:
            continue
        applied = {
            call.func.attr
            for call in ast.walk(node.value)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "self"
            and call.func.attr in TAUGHT_APPLICATIONS
        }
        if len(applied) != 1 or not isinstance(node.targets[0], ast.Name):
            continue
        block = applied.pop()
        if block not in made:
            continue
        taught = TAUGHT_APPLICATIONS[block].format(x=_applied_to(node.value, block))
        written = ast.unparse(node)
        if written != taught:
            found.append(
                (node.lineno, f"self.{block} is applied as `{written}`{_MADE_FOR}{taught}`")
            )
    return found


_MADE_FOR = ", made for `"  # in `misapplied_blocks`' verdicts, before the taught statement


def _made_blocks(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, block) of each statement of Net.__init__'s body that assigns a taught block
    to `self` (`self.pre_block = ...`), in order."""
    init = net_method(tree, "__init__")
    return [
        (stmt.lineno, target.attr)
        for stmt in (init.body if init is not None else [])
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
        and target.attr in TAUGHT_APPLICATIONS
    ]


def made_input_blocks(tree: ast.Module) -> frozenset[str]:
    """The taught input blocks (INPUT_BLOCKS) that Net.__init__ assigns to `self`."""
    return frozenset(block for _, block in _made_blocks(tree) if block in INPUT_BLOCKS)


def remade_blocks(tree: ast.Module, first: int = 1) -> list[tuple[int, str]]:
    """(line, why) of each statement of Net.__init__ on line `first` or later that makes a
    taught block a statement before it made: the block made first is never called, and the
    second is often another block's module (the small model repeats its block lines). In a
    default run of 2026-12-07 (2-core AMX Xeon) a whole program made `self.input_norm` a
    BatchNorm, then the input gate's sigmoid, applied it, and scored 0.109 (chance)."""
    seen: set[str] = set()
    found = []
    for line, block in _made_blocks(tree):
        if block in seen and line >= first:
            found.append((line, f"self.{block} is made again (the first would never be called)"))
        seen.add(block)
    return found


def unapplied_blocks(
    tree: ast.Module, first: int = 1, known: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """(line, why) of Net.forward's first statement on line `first` or later that does not
    read a taught input block Net.__init__ makes (not one of `known`: the parent's own) and
    no statement of forward before it has read: such a block is applied at the top of
    forward, as taught. Why: whole programs make the block and go on copying their parent's
    forward; in a default run of 2026-12-07 (2-core AMX Xeon) 7 of its 10 whole programs
    were rejected as near-copies of their parent, 5 of them having made `self.input_norm`,
    `self.pre_block` or `self.input_gate` in `__init__` and applied none."""
    forward = net_method(tree, "forward")
    made = sorted(made_input_blocks(tree) - known)
    if forward is None or len(forward.args.args) < 2 or not made:
        return []
    x = forward.args.args[1].arg
    for stmt in forward.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        read = _self_attributes_in(stmt)
        if read & set(made):
            made = [block for block in made if block not in read]
            if not made:
                return []
            continue
        if stmt.lineno < first:
            return []
        taught = TAUGHT_APPLICATIONS[made[0]].format(x=x)
        return [(stmt.lineno, f"self.{made[0]} is made but not applied{_MADE_FOR}{taught}`")]
    return []


def taught_statement(why: str) -> str | None:
    """The statement a `misapplied_blocks` verdict says its block is made for."""
    return why[why.index(_MADE_FOR) + len(_MADE_FOR) : -1] if _MADE_FOR in why else None


def scope_names(program: str) -> dict[int, set[str]]:
    """Per function of `program`, by the line number of its `def` (0: the module level):
    the names a line inserted in its body may read. Its own (parameters, what it binds or
    reads, in nested blocks too), those of the functions around it, the module level's, the
    seeds' import names (a whole program may add those imports), READABLE_BUILTINS and
    one-letter names (loop and comprehension variables); never a class body's (a method
    does not see them). Measured
    (2026-12-05, default runs): 4 of 12 untaught and 2 of 12 taught whole programs read a
    name of another method (`device`, `out_shape`, `c_in` of `Net.__init__` in a block's
    methods) and failed to build. SyntaxError where `program` is not Python."""
    tree = parse_source(program)
    top = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    module = _extras() | {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for node in top:
        module |= {node.name} if isinstance(node, ast.ClassDef) else _names(node)
    scopes = {0: module}

    def visit(node: ast.AST, outer: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                scopes[child.lineno] = outer | _names(child)
                visit(child, scopes[child.lineno])
            else:
                visit(child, outer)

    visit(tree, module)
    for net, methods in _net_methods(tree):
        attributes = {f"self.{a}" for a in self_attributes(net)}
        for inner in (f for method in methods for f in ast.walk(method)):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                scopes[inner.lineno] = scopes[inner.lineno] - {"self"} | attributes
    return scopes


def _net_methods(tree: ast.Module) -> list[tuple[ast.ClassDef, list[ast.stmt]]]:
    """Each top-level `class Net` of `tree` with its methods besides `__init__`."""
    defs = ast.FunctionDef | ast.AsyncFunctionDef
    return [
        (net, [f for f in net.body if isinstance(f, defs) and f.name != "__init__"])
        for net in tree.body
        if isinstance(net, ast.ClassDef) and net.name == "Net"
    ]


def read_attributes(program: str) -> set[str]:
    """The attributes of `self` that a method of the top-level `Net`, besides `__init__`,
    reads in `program`. SyntaxError where `program` is not Python."""
    methods = [m for _, found in _net_methods(parse_source(program)) for m in found]
    return set().union(*map(_self_attributes_in, methods))


def _self_attributes_in(node: ast.AST, ctx: type[ast.expr_context] = ast.expr_context) -> set[str]:
    """The attributes of `self` that `node` reads or assigns (`ctx`: only those it assigns,
    ast.Store, or reads, ast.Load), anywhere inside it."""
    return {
        n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "self"
        and isinstance(n.ctx, ctx)
    }


def self_attributes(net: ast.ClassDef) -> set[str]:
    """The attributes of `self` that a method of `Net`, besides `__init__`, may read in a
    whole program: those its methods assign or read in the parent, its methods, nn.Module's
    `training` and TAUGHT_ATTRIBUTES. Why: in a default run of 2026-12-05 (Xeon, 12 whole
    programs) 5 failed to build on an attribute that no line made, 3 of them after copying
    a block class's `forward` into `Net.forward` (`self.drop`, `self.conv1`), 2 a name of
    their own (`self.pre_block`, `self.down`). A new layer `__init__` makes under another
    name is then not read elsewhere: it goes into an attribute the parent has."""
    names = {"training", *TAUGHT_ATTRIBUTES}
    for node in ast.walk(net):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    return {n for n in names if not n.startswith("__")}


def _extras() -> set[str]:
    return set(READABLE_BUILTINS) | set(string.ascii_letters) | set(SEED_MODULES)


def _names(tree: ast.AST) -> set[str]:
    """Every identifier `tree` binds or reads (names, parameters, definitions, imports)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    # a dunder read as a bare name is refused by admission (`__init__` is a method's name)
    return {
        n for n in names if n.isidentifier() and not keyword.iskeyword(n) and not n.startswith("__")
    }


def module_names(program: str) -> set[str]:
    """The names of `program` that are modules: bound by `import` (never by `from`, whose
    names may be classes or functions) or by the seeds' imports a whole program may add,
    and bound by nothing else. SyntaxError where `program` is not Python."""
    imported, other = set(SEED_MODULES), set()
    for node in ast.walk(parse_source(program)):
        if isinstance(node, ast.Import):
            imported |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            other |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            other.add(node.id)
        elif isinstance(node, ast.arg):
            other.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            other.add(node.name)
    return imported - other


def class_bodies(lines: list[str], levels: list[int]) -> list[set[int]]:
    """Per position p (before parent line p, and after the last): the levels at which an
    insertion there would stand directly in a class body. Walking back from p, each line
    shallower than all after it is a block that encloses p (its body one level deeper).
    Measured (2026-12-05): with new methods refused, class-body lines were what the model
    wrote there (`gate = nn.Sequential(...)` as a class attribute, README run B)."""
    out = []
    for p in range(len(lines) + 1):
        bodies, lowest = set(), len(lines) + 1
        for q in range(p - 1, -1, -1):
            if levels[q] < lowest:
                lowest = levels[q]
                if lines[q].lstrip().startswith("class "):
                    bodies.add(lowest + 1)
        out.append(bodies)
    return out


def in_net_class(lines: list[str], levels: list[int]) -> list[bool]:
    """Per position p (before parent line p, and after the last): whether it stands in the
    body of the top-level `class Net` (the nearest top-level line before p is Net's). A
    parent without one: every position. Why whole programs change only `Net`: in a default
    run of 2026-12-05 (README, run C) 5 of 12 whole programs inserted a classifier or an
    input block into the first block class, reading `Net.__init__`'s `out_shape` or
    `in_shape` where the scope holds neither, and looped in the name; 2 of 12 did the same
    in run A (a NameError at build)."""
    net = [i for i, line in enumerate(lines) if levels[i] == 0 and _NET.match(line)]
    if not net:
        return [True] * (len(lines) + 1)
    out, inside = [], False
    for p in range(len(lines) + 1):
        if p > 0 and levels[p - 1] == 0:
            inside = p - 1 in net
        out.append(inside)
    return out


def insertion_scopes(
    levels: list[int], defs: list[set[str] | None], module: set[str]
) -> tuple[list[set[str]], list[list[int]]]:
    """The distinct scopes of names (`scope_names`) and, per position p (before
    parent line p, and after the last) and level, the scope's index: that of the nearest
    `def` enclosing an insertion there (`defs[q]`: the names of the function whose `def`
    is line q, None for other lines), else the module's. Walking back from p, each line
    shallower than all after it (and than the insertion) encloses it."""
    index: dict[frozenset[str], int] = {}
    table = []
    for p in range(len(levels) + 1):
        row = []
        for level in range(max(levels) + 2):
            names, lowest = module, level
            for q in range(p - 1, -1, -1):
                if levels[q] < lowest:
                    lowest = levels[q]
                    if (found := defs[q]) is not None:
                        names = found
                        break
            row.append(index.setdefault(frozenset(names), len(index)))
        table.append(row)
    return [set(names) for names in index], table
