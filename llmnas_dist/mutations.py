"""Programmatic mutation operators: the warm-start (theta_0) training set.

Before cycle 1 the base model has never seen a delta against these programs; it is taught
the format on (parent, delta to child) pairs where the child is the parent changed by one
small, meaningful edit. Each operator edits source text in place (so the diff is the few
lines that changed, like a good LLM answer), at a place found through the AST, and returns
None where it does not apply. Every child is kept only if it passes admission's static
checks; `warm_start_pairs` can also demand a sandboxed build. "Remove a block" and
"narrow" are the reverse pairs (child -> parent) of "add a block" and "widen".
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.program import check_static

Operator = Callable[[str, random.Random], "str | None"]
BuildCheck = Callable[[str], bool]

_ACTIVATION = re.compile(
    r"nn\.(ReLU6|ReLU|GELU|SiLU|LeakyReLU|ELU|Mish|Hardswish)\((inplace=True)?\)|"
    r"F\.(relu6|relu|gelu|silu|elu|mish|hardswish)\("
)
_MODULE_ACTS = ("nn.ReLU()", "nn.GELU()", "nn.SiLU()", "nn.LeakyReLU(0.1)", "nn.ELU()", "nn.Mish()")
_FUNCTIONAL_ACTS = ("F.relu(", "F.gelu(", "F.silu(", "F.elu(", "F.mish(")
_KERNEL = re.compile(r"(\b(?:kernel_size=)?)([357]), padding=([123])\b")
_KERNEL_SWAP = {"3": ("5", "2"), "5": ("3", "1"), "7": ("5", "2")}
_DROPOUT_DEFAULT = re.compile(r'(get\("dropout", )([0-9.]+)(\))')


@dataclass(frozen=True)
class Mutation:
    """A child program and the operator that made it from its parent."""

    operator: str
    parent: str
    child: str


def _pick(rng: random.Random, matches: list[re.Match[str]]) -> re.Match[str] | None:
    return rng.choice(matches) if matches else None


def swap_activation(code: str, rng: random.Random) -> str | None:
    """Replace one activation (module or functional) by a different one of the same kind."""
    m = _pick(rng, list(_ACTIVATION.finditer(code)))
    if m is None:
        return None
    pool = _FUNCTIONAL_ACTS if m.group(0).startswith("F.") else _MODULE_ACTS
    choices = [a for a in pool if not a.lower().startswith(m.group(0).lower().split("(")[0] + "(")]
    return code[: m.start()] + rng.choice(choices) + code[m.end() :]


def change_kernel_size(code: str, rng: random.Random) -> str | None:
    """One convolution's kernel 3 <-> 5 (or 7 -> 5), padding kept 'same'."""
    m = _pick(rng, list(_KERNEL.finditer(code)))
    if m is None:
        return None
    kernel, padding = _KERNEL_SWAP[m.group(2)]
    return f"{code[: m.start()]}{m.group(1)}{kernel}, padding={padding}{code[m.end() :]}"


def change_dropout(code: str, rng: random.Random) -> str | None:
    """A different default dropout probability."""
    m = _pick(rng, list(_DROPOUT_DEFAULT.finditer(code)))
    if m is None:
        return None
    value = rng.choice([v for v in ("0.0", "0.1", "0.2", "0.3", "0.5") if v != m.group(2)])
    return f"{code[: m.start()]}{m.group(1)}{value}{m.group(3)}{code[m.end() :]}"


def _channel_plans(tree: ast.Module) -> list[ast.Tuple | ast.List]:
    """Literal tuples/lists of 2+ ints that are all multiples of 8 and >= 16: channel plans."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List))
        and len(node.elts) >= 2
        and all(
            isinstance(e, ast.Constant)
            and type(e.value) is int
            and e.value >= 16
            and e.value % 8 == 0
            for e in node.elts
        )
        and node.lineno == node.end_lineno
    ]


def _replace_span(code: str, node: ast.expr, text: str) -> str:
    lines = code.splitlines(keepends=True)
    line = lines[node.lineno - 1].encode()  # AST offsets are in UTF-8 bytes
    lines[node.lineno - 1] = (
        line[: node.col_offset].decode() + text + line[node.end_col_offset or 0 :].decode()
    )
    return "".join(lines)


def widen_channels(code: str, rng: random.Random) -> str | None:
    """Scale one channel plan (a literal tuple of widths) by 1.5x, rounded to multiples of 8."""
    plans = _channel_plans(ast.parse(code))
    if not plans:
        return None
    node = rng.choice(plans)
    widths = [int(round(e.value * 1.5 / 8)) * 8 for e in node.elts]  # type: ignore[attr-defined]
    body = ", ".join(str(w) for w in widths)
    return _replace_span(code, node, f"({body})" if isinstance(node, ast.Tuple) else f"[{body}]")


def _net_methods(tree: ast.Module) -> tuple[ast.FunctionDef, ast.FunctionDef] | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Net":
            found = {
                f.name: f
                for f in node.body
                if isinstance(f, ast.FunctionDef) and f.name in ("__init__", "forward")
            }
            if len(found) == 2:
                return found["__init__"], found["forward"]
    return None


def _insert_block(code: str, module: str, call: str) -> str | None:
    """Add `self.<name> = <module>` after `super().__init__()` in Net.__init__ and apply it
    at the top of Net.forward (`call` formats the input name). Needs `in_shape` by name."""
    tree = ast.parse(code)
    methods = _net_methods(tree)
    if methods is None:
        return None
    init, forward = methods
    if [a.arg for a in init.args.args[1:2]] != ["in_shape"] or len(forward.args.args) < 2:
        return None
    supers = [s for s in init.body if "super()" in ast.unparse(s)]
    body = [
        s
        for s in forward.body
        if not isinstance(s, ast.Expr) or not isinstance(s.value, ast.Constant)
    ]
    if not supers or not body:
        return None
    x = forward.args.args[1].arg
    lines = code.splitlines(keepends=True)
    at_init, at_forward = supers[0].end_lineno or supers[0].lineno, body[0].lineno - 1
    init_pad = " " * supers[0].col_offset
    fwd_pad = " " * body[0].col_offset
    lines.insert(at_forward, f"{fwd_pad}{call.format(x=x)}\n")
    lines.insert(at_init, f"{init_pad}{module}\n")
    return "".join(lines)


def add_input_norm(code: str, rng: random.Random) -> str | None:
    """Normalize the input with a BatchNorm over its channels before the network."""
    if "self.input_norm" in code:
        return None
    return _insert_block(
        code, "self.input_norm = nn.BatchNorm2d(in_shape[-3])", "{x} = self.input_norm({x})"
    )


def add_residual_stem(code: str, rng: random.Random) -> str | None:
    """Add a channel-preserving conv block in front, with a residual connection around it."""
    if "self.pre_block" in code:
        return None
    kernel = rng.choice((3, 5))
    module = (
        f"self.pre_block = nn.Sequential(nn.Conv2d(in_shape[-3], in_shape[-3], {kernel}, "
        f"padding={kernel // 2}), nn.BatchNorm2d(in_shape[-3]), nn.ReLU())"
    )
    return _insert_block(code, module, "{x} = {x} + self.pre_block({x})")


OPERATORS: dict[str, Operator] = {
    "swap_activation": swap_activation,
    "change_kernel_size": change_kernel_size,
    "change_dropout": change_dropout,
    "widen_channels": widen_channels,
    "add_input_norm": add_input_norm,
    "add_residual_block": add_residual_stem,
}
# applied in reverse (child -> parent), these are the narrowing / removing operators
REVERSIBLE = {
    "widen_channels": "narrow_channels",
    "add_input_norm": "remove_input_norm",
    "add_residual_block": "remove_residual_block",
}


def passes_static_checks(code: str, cfg: AdmissionConfig | None = None) -> bool:
    try:
        check_static(code, cfg or AdmissionConfig())
    except CandidateRejected:
        return False
    return True


def mutate(
    code: str, rng: random.Random, operators: Iterable[str] | None = None
) -> Mutation | None:
    """One child of `code` by a randomly chosen applicable operator whose result passes the
    static checks; None when no operator applies."""
    names = list(operators) if operators is not None else list(OPERATORS)
    unknown = set(names) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown mutation operators {sorted(unknown)}; known: {list(OPERATORS)}")
    rng.shuffle(names)
    for name in names:
        child = OPERATORS[name](code, rng)
        if child is not None and child != code and passes_static_checks(child):
            return Mutation(name, code, child)
    return None


def warm_start_pairs(
    seeds: Mapping[str, str],
    per_seed: int,
    rng: random.Random,
    builds: BuildCheck | None = None,
    reverse_fraction: float = 0.25,
) -> list[Mutation]:
    """Up to `per_seed` distinct mutations of each seed (tries bounded). A `reverse_fraction`
    share of reversible ones is flipped (child -> parent: narrow, remove a block). With
    `builds`, only children whose sandboxed build passes are kept."""
    out: list[Mutation] = []
    for code in seeds.values():
        seen: set[str] = set()
        for _ in range(per_seed * 4):
            if len(seen) >= per_seed:
                break
            m = mutate(code, rng)
            if m is None or m.child in seen or (builds is not None and not builds(m.child)):
                continue
            seen.add(m.child)
            if m.operator in REVERSIBLE and rng.random() < reverse_fraction:
                m = Mutation(REVERSIBLE[m.operator], m.child, m.parent)
            out.append(m)
    return out
