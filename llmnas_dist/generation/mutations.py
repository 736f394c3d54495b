"""Programmatic mutation operators: the warm-start (theta_0) training set.

Before cycle 1 the base model has never seen a delta against these programs; it is taught
the format on (parent, delta to child) pairs where the child is the parent changed by a
few meaningful edits. Each operator edits source text in place (so the diff is the few
lines that changed, like a good LLM answer), at a place found through the AST, and returns
None where it does not apply. "Remove a block" and "narrow" are the reverse pairs
(child -> parent) of "add a block" and "widen".

A child must also pass admission, and admission rejects a near-copy of its parent: with
7-token shingles one changed token moves the Jaccard to about 0.97, far above tau = 0.90.
So `novel_mutation` stacks operators (block insertions first count most) until the child's
exact Jaccard to its parent is below `max_jaccard`, a margin under tau that the MinHash
estimate will not cross; the model learns edits that are large enough to be admitted.
`warm_start_pairs` can also demand a sandboxed build.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from llmnas_dist.admission.novelty import exact_jaccard, shingles
from llmnas_dist.admission.scopes import TAUGHT_APPLICATIONS
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.program.source import parse_source
from llmnas_dist.program.static import canonicalize, check_static

Operator = Callable[[str, random.Random], "str | None"]
BuildCheck = Callable[[str], bool]

_ACTIVATION = re.compile(
    r"nn\.(ReLU6|ReLU|GELU|SiLU|LeakyReLU|ELU|Mish|Hardswish)\((inplace=True|0\.[0-9]+)?\)|"
    r"F\.(relu6|relu|gelu|silu|elu|mish|hardswish)\("
)
_MODULE_ACTS = ("nn.ReLU()", "nn.GELU()", "nn.SiLU()", "nn.LeakyReLU(0.1)", "nn.ELU()", "nn.Mish()")
_BLOCK_ACTS = ("nn.ReLU()", "nn.GELU()", "nn.SiLU()")  # in blocks the operators add
# The residual blocks' convolutions pad 'same', never by a number: the model copies a block
# and varies its kernel, and with a numeric padding it wrote kernel 3 with padding 2 or
# kernel 5 with padding 1, whose output no longer adds to the input: 5 of the 6 delta build
# failures of the default first run of 2026-12-03 (mnist5k at 8 px)
_SAME = "padding='same'"
_FUNCTIONAL_ACTS = ("F.relu(", "F.gelu(", "F.silu(", "F.elu(", "F.mish(")
_KERNEL = re.compile(r"(\b(?:kernel_size=)?)([357]), padding=([123])\b")
_KERNEL_SWAP = {"3": ("5", "2"), "5": ("3", "1"), "7": ("5", "2")}
_DROPOUT_DEFAULT = re.compile(r"""(get\(["']dropout["'], )([0-9.]+)(\))""")
_FIRST_LINEAR = re.compile(r"nn\.Linear\(([^(),\n]+?),")
_INPUT_BLOCKS = ("self.pre_block", "self.input_gate", "self.input_norm")
_HEAD_LINEAR = re.compile(r"nn\.Linear\(([^()\n]+?), out_shape\[0\]\)")
# exact Jaccard a warm-start child must stay under: tau 0.90 minus a margin for the
# MinHash estimate (128 permutations: standard error about 0.03 near 0.86)
DEFAULT_MAX_JACCARD = 0.86


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


# a downsampling step: a side-aware stride (`2 if side >= 4 else 1`), a literal stride of 2,
# a 2x pooling module, or a functional 2x pooling of x
_DOWNSAMPLE = re.compile(
    r"\b2 if [^\n]+? else 1\b|\bstride=2\b|nn\.(?:Max|Avg)Pool2d\(2\)"
    r"|F\.(?:max|avg)_pool2d\(x, 2[^()\n]*\)"
)


def keep_resolution(code: str, rng: random.Random) -> str | None:
    """One downsampling step made resolution-keeping (stride 1, the pooling dropped)."""
    m = _pick(rng, list(_DOWNSAMPLE.finditer(code)))
    if m is None:
        return None
    found = m.group(0)
    if found.startswith("2 if"):
        kept = "1"
    elif found.startswith("stride"):
        kept = "stride=1"
    elif found.startswith("F."):
        kept = "x"
    else:
        kept = "nn.Identity()"
    return code[: m.start()] + kept + code[m.end() :]


# what `swap_all_activations` puts in every activation's place (module, function)
_ALL_SWAPS = (("nn.GELU()", "F.gelu("), ("nn.SiLU()", "F.silu("), ("nn.LeakyReLU(0.1)", "F.elu("))


def swap_all_activations(code: str, rng: random.Random) -> str | None:
    """Every activation of the program swapped for one other kind (modules for modules,
    functions for functions): a change of the whole network, unlike `swap_activation`."""
    found = list(_ACTIVATION.finditer(code))
    if not found:
        return None
    module, function = rng.choice(_ALL_SWAPS)
    out, end = [], 0
    for m in found:
        new = function if m.group(0).startswith("F.") else module
        out += [code[end : m.start()], new]
        end = m.end()
    child = "".join(out) + code[end:]
    return None if child == code else child


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
    plans = _channel_plans(parse_source(code))
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
    tree = parse_source(code)
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
        code, "self.input_norm = nn.BatchNorm2d(in_shape[-3])", TAUGHT_APPLICATIONS["input_norm"]
    )


def add_residual_stem(code: str, rng: random.Random) -> str | None:
    """Add a conv block in front (input channels -> a few more -> back), with a residual
    connection around it."""
    if "self.pre_block" in code:
        return None
    kernel, hidden = rng.choice((3, 5)), rng.choice((8, 16, 32))
    act = rng.choice(_BLOCK_ACTS)
    module = (
        f"self.pre_block = nn.Sequential(nn.Conv2d(in_shape[-3], {hidden}, {kernel}, "
        f"{_SAME}), nn.BatchNorm2d({hidden}), {act}, "
        f"nn.Conv2d({hidden}, in_shape[-3], 1))"
    )
    return _insert_block(code, module, TAUGHT_APPLICATIONS["pre_block"])


def add_input_gate(code: str, rng: random.Random) -> str | None:
    """Gate the input channels with a squeeze-and-excitation style attention."""
    if "self.input_gate" in code:
        return None
    hidden = rng.choice((4, 8, 16))
    module = (
        f"self.input_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), "
        f"nn.Conv2d(in_shape[-3], {hidden}, 1), nn.ReLU(), nn.Conv2d({hidden}, in_shape[-3], 1), "
        f"nn.Sigmoid())"
    )
    return _insert_block(code, module, TAUGHT_APPLICATIONS["input_gate"])


def mlp_head(code: str, rng: random.Random) -> str | None:
    """Replace the final linear classifier by a two-layer MLP with dropout."""
    if "self.mlp_head" in code:
        return None
    found = list(_HEAD_LINEAR.finditer(code))
    if len(found) != 1:
        return None
    m = found[0]
    if "nn.Linear(" in code[code.rfind("\n", 0, m.start()) : m.start()]:
        return None  # the head is an MLP already (a second generation would nest one)
    width = rng.choice((128, 256, 512))
    act = rng.choice(_BLOCK_ACTS)
    drop = rng.choice(("0.1", "0.2", "0.3"))
    head = (
        f"nn.Sequential(nn.Linear({m.group(1)}, {width}), {act}, nn.Dropout({drop}), "
        f"nn.Linear({width}, out_shape[0]))"
    )
    return code[: m.start()] + head + code[m.end() :]


def _head_statement(init: ast.FunctionDef) -> ast.stmt | None:
    """The statement of Net.__init__ that builds the classifier (uses out_shape[0])."""
    heads = [s for s in init.body if "out_shape[0]" in ast.unparse(s)]
    return heads[-1] if heads else None


def add_post_block(code: str, rng: random.Random) -> str | None:
    """Add a residual conv block on the feature map, right before the classifier; its width
    is the classifier's input width (the sandboxed build drops children where it is not)."""
    if "self.post_block" in code:
        return None
    tree = parse_source(code)
    methods = _net_methods(tree)
    if methods is None:
        return None
    init, forward = methods
    head = _head_statement(init)
    found = _FIRST_LINEAR.search(ast.unparse(head)) if head is not None else None
    if head is None or found is None or len(forward.args.args) < 2:
        return None
    x = forward.args.args[1].arg
    # the statement that computes the feature map: the first assignment to x that is not
    # one of the input blocks the other operators put at the top of forward
    features = [
        s
        for s in forward.body[:-1]
        if isinstance(s, ast.Assign)
        and ast.unparse(s.targets[0]) == x
        and not any(name in ast.unparse(s) for name in _INPUT_BLOCKS)
    ]
    if not features:
        return None
    first = features[0]
    width, kernel = found.group(1), rng.choice((1, 3))
    act = rng.choice(_BLOCK_ACTS)
    module = (
        f"self.post_block = nn.Sequential(nn.Conv2d({width}, {width}, {kernel}, "
        f"{_SAME}), nn.BatchNorm2d({width}), {act}, "
        f"nn.Conv2d({width}, {width}, 1), nn.BatchNorm2d({width}))"
    )
    lines = code.splitlines(keepends=True)
    lines.insert(
        first.end_lineno or first.lineno,
        f"{' ' * first.col_offset}{TAUGHT_APPLICATIONS['post_block'].format(x=x)}\n",
    )
    lines.insert(head.lineno - 1, f"{' ' * head.col_offset}{module}\n")
    return "".join(lines)


OPERATORS: dict[str, Operator] = {
    "swap_activation": swap_activation,
    "change_kernel_size": change_kernel_size,
    "change_dropout": change_dropout,
    "widen_channels": widen_channels,
    "add_input_norm": add_input_norm,
    "add_residual_block": add_residual_stem,
    "add_input_gate": add_input_gate,
    "mlp_head": mlp_head,
    "add_post_block": add_post_block,
    "keep_resolution": keep_resolution,
    "swap_all_activations": swap_all_activations,
}
# the operators that add a whole block: one of them alone often makes a child novel
BLOCK_OPERATORS = ("add_residual_block", "add_input_gate", "mlp_head", "add_post_block")
# applied in reverse (child -> parent), these are the narrowing / removing operators
REVERSIBLE = {
    "widen_channels": "narrow_channels",
    "add_input_norm": "remove_input_norm",
    "add_residual_block": "remove_residual_block",
    "add_input_gate": "remove_input_gate",
    "mlp_head": "linear_head",
    "add_post_block": "remove_post_block",
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


def parent_jaccard(parent: str, child: str, cfg: AdmissionConfig | None = None) -> float:
    """Exact Jaccard of the two programs' shingle sets, on their canonical forms (what
    admission's MinHash estimates)."""
    cfg = cfg or AdmissionConfig()
    a = shingles(canonicalize(parent, cfg)[0], cfg.shingle_size)
    b = shingles(canonicalize(child, cfg)[0], cfg.shingle_size)
    return exact_jaccard(a, b)


def novel_mutation(
    code: str,
    rng: random.Random,
    max_jaccard: float = DEFAULT_MAX_JACCARD,
    max_ops: int = 3,
    cfg: AdmissionConfig | None = None,
    block_first: float = 0.75,
    operators: Iterable[str] | None = None,
) -> Mutation | None:
    """A child of `code` made by stacking up to `max_ops` different operators until its
    exact Jaccard to `code` is below `max_jaccard`; None when that is not reached. The
    operator field names the stack, in order ('mlp_head+swap_activation'). With
    probability `block_first` the first is a block operator, which alone is often enough:
    fewer hunks make a delta the small model can learn to write. `operators` limits the
    choice (all by default)."""
    if not 0.0 < max_jaccard <= 1.0:
        raise ValueError(f"max_jaccard must be in (0, 1], got {max_jaccard}")
    allowed = tuple(operators) if operators is not None else tuple(OPERATORS)
    blocks = tuple(n for n in BLOCK_OPERATORS if n in allowed) or allowed
    current, names = code, []
    first_pool = blocks if rng.random() < block_first else allowed
    for i in range(max_ops):
        pool = first_pool if i == 0 else allowed
        step = mutate(current, rng, [n for n in pool if n not in names])
        if step is None and i == 0:  # no block operator applies: any other may
            step = mutate(current, rng, [n for n in allowed if n not in names])
        if step is None:
            return None
        current = step.child
        names.append(step.operator)
        if parent_jaccard(code, current, cfg) < max_jaccard:
            return Mutation("+".join(names), code, current)
    return None


def reverse(m: Mutation) -> Mutation:
    """The pair child -> parent, named by the reverse operators (a swap stays a swap)."""
    steps = [REVERSIBLE.get(step, step) for step in reversed(m.operator.split("+"))]
    return Mutation("+".join(steps), m.child, m.parent)


def warm_start_pairs(
    seeds: Mapping[str, str],
    per_seed: int,
    rng: random.Random,
    builds: BuildCheck | None = None,
    reverse_fraction: float = 0.25,
    max_jaccard: float = DEFAULT_MAX_JACCARD,
    cfg: AdmissionConfig | None = None,
    operators: Iterable[str] | None = None,
    second_fraction: float = 0.0,
) -> list[Mutation]:
    """Up to `per_seed` distinct novel mutations of each seed (tries bounded), made of
    `operators` (all by default). A `reverse_fraction` share is flipped (child -> parent:
    narrow, remove a block). With `builds`, only children whose sandboxed build passes
    are kept. A `second_fraction` share mutates one of the seed's children made before
    (a second generation: the parent already holds a block, and the operators add another
    one, never the same: what a CE cycle asks of a child of a child)."""
    if not 0.0 <= second_fraction <= 1.0:
        raise ValueError(f"second_fraction must be in [0, 1], got {second_fraction}")
    out: list[Mutation] = []
    for code in seeds.values():
        seen: set[str] = set()
        firsts: list[str] = []  # this seed's children, parents of the second generation
        for _ in range(per_seed * 4):
            if len(seen) >= per_seed:
                break
            second = bool(second_fraction and firsts and rng.random() < second_fraction)
            parent = rng.choice(firsts) if second else code
            m = novel_mutation(parent, rng, max_jaccard, cfg=cfg, operators=operators)
            if m is None or m.child in seen or (builds is not None and not builds(m.child)):
                continue
            seen.add(m.child)
            if not second:
                firsts.append(m.child)
            out.append(reverse(m) if rng.random() < reverse_fraction else m)
    return out
