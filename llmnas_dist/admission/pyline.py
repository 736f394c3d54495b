"""One line of Python as a regular language: Lark terminals for llguidance.

A whole program's inserted lines (`grammar.full_grammar`) are sampled under these
terminals, so that an inserted line is a statement Python can read, not just text whose
brackets close: `PY_SIMPLE` is a simple statement (an expression, an assignment to
names, attributes or subscripts, no annotation (admission refuses most), `return`,
`pass`, `raise`, `assert`, `del`; no import; an expression statement only as a call),
`PY_OPEN` a line that opens a block (`PY_COMPOUND`: `if`, `for`, `while`, `with`, `try`;
or `PY_DEFINE`: `def`, `class`; not `else`/`elif`/`except`/`finally`, which continue a block
the insertion does not know). Names are not keywords, operands and
operators alternate, brackets nest up to MAX_DEPTH (terminals cannot recurse, so each depth
is a terminal of its own that names the one below; llguidance shares them, so the grammar
grows linearly in depth). Spacing is canonical form's (`ast.unparse`, as prompts show
parents) with optional single spaces around operators and after commas. Strings close on
the line and hold no backtick and no `<` (as the delta grammar's added lines: `</nn>` would
end the answer); no comment, no backslash continuation.

Measured (2026-12-04, AVX512 EPYC, warm-started SmolLM2-135M, `llmnas generate --mode
full`): with any text allowed on an inserted line, whole programs held lines such as
`<- carriage quote`, `esteday: <pre><code>` and `Non-blocking pre-post aggregation
pipeline with CUDA-7.5.` (8 of 8 rejected as syntax errors).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Collection

MAX_DEPTH = 6  # bracket nesting within a line (the seeds reach 4)

KEYWORDS = keyword.kwlist  # hard keywords: never a name

_WORD = "[A-Za-z_][A-Za-z0-9_]*"
# a readable name, or a name and one attribute read as a whole (`self.head`, where `self`
# itself is not readable: `scopes.self_attributes`)
_READABLE = rf"{_WORD}(\.{_WORD})?"
# a name the line makes up (what it binds, an attribute, a keyword argument, a parameter)
# has at most 32 characters (the seeds' longest is 25): in a default run of 2026-12-05 (Xeon)
# 2 of 12 whole programs looped inside such a name until the loop detector stopped them
# (`super(MaskNetV2P5K1111...`, a keyword-argument name `in_shape_block_1d_post_block_...`)
_FREE_WORD = "[A-Za-z_][A-Za-z0-9_]{0,31}"
# at most two prefix operators before an operand (`not -x`): a third run looped in
# `super(Net, super().__init__() ---- ---- ...`
_PREFIX = r"/(([\-+~]|not |await ) ?){0,2}/"
# a string: optional prefix, one kind of quote, closed on the line
_STR = r"""[rRbBfFuU]{0,2}('([^\n\r'\\`<]|\\[^\n\r`<])*'|"([^\n\r"\\`<]|\\[^\n\r`<])*")"""
_NUMBER = r"([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9]+)([eE][+\-]?[0-9]+)?[jJ]?"
_SYMBOL_OPS = r"\*\*|\/\/|<<|>>|<=|>=|==|!=|[\-+*\/%@&|^<>]"
_WORD_OPS = "and|or|in|not in|is|is not|if|else"
_AUGMENTED = r"(\*\*|\/\/|<<|>>|[\-+*\/%@&|^])="


def _terminal(name: str, body: str) -> str:
    return f"{name}: {body}"


def _primary_parts(d: int, modules: bool) -> tuple[str, str]:
    """A primary expression's atom and its trailers (attribute, call, subscript) as
    alternations, with brackets nested at most d deep (d >= 0). A name read is a PY_READ, a
    module (PY_MODULE) is read only through an attribute. A literal number or constant is a
    primary of its own (`_LITERAL`): no trailer follows it (measured, 2026-12-05: a whole
    program called a number, `1.5(x)`, and looped on it)."""
    below = d - 1
    # adjacent strings need a space: two quotes and a string written together open a
    # triple quote (measured, 2026-12-05: a whole program ended in an unterminated one)
    atoms = ["PY_READ", r'PY_STR (" " PY_STR)*'] + (['PY_MODULE "." PY_NAME'] if modules else [])
    trailers = ['"." PY_NAME']
    if d > 0:
        atoms += [
            f'"(" PY_ITEMS_{below}? ")"',
            f'"[" PY_ITEMS_{below}? "]"',
            f'"{{" (PY_DICT_{below} | PY_ITEMS_{below}) "}}"',
        ]
        trailers += [f'"(" PY_ARGS_{below} ")"', f'"[" PY_SUBS_{below} "]"']
    return f"({' | '.join(atoms)})", f"({' | '.join(trailers)})"


_LITERAL = "PY_NUMBER | /True|False|None|\\.\\.\\./"


def _depth(d: int, modules: bool) -> list[str]:
    """The terminals of an expression with brackets nested at most d deep (d >= 0)."""
    atom, trailer = _primary_parts(d, modules)
    primary = f"{atom} {trailer}* | {_LITERAL}"
    expr = f"PY_LAMBDA? PY_OPERAND_{d} (PY_BINOP PY_OPERAND_{d})*"
    item = f'"*"? PY_EXPR_{d}'
    comp = f'(" for " PY_TARGETS_{d} " in " PY_EXPR_{d} (" if " PY_EXPR_{d})*)+'
    arg = f'{item} | PY_NAME / ?= ?/ PY_EXPR_{d} | "**" PY_EXPR_{d}'
    pair = f'PY_EXPR_{d} / ?: ?/ PY_EXPR_{d} | "**" PY_EXPR_{d}'
    sub = f"PY_EXPR_{d} | PY_EXPR_{d}? / ?: ?/ PY_EXPR_{d}? (/ ?: ?/ PY_EXPR_{d}?)?"
    return [
        _terminal(f"PY_PRIMARY_{d}", primary),
        _terminal(f"PY_OPERAND_{d}", f"PY_PREFIX PY_PRIMARY_{d}"),
        _terminal(f"PY_EXPR_{d}", expr),
        # what may be assigned to or looped over: a name and its trailers (measured,
        # 2026-12-05: taught whole programs assigned to literals and tuples with `+=`, which
        # Python refuses). A trailing call is let through (Python refuses it at compile
        # time, admission's syntax check names it): ending the target in an attribute or
        # subscript made llguidance's lexer run out of expressions on se_resnet's grammar
        # A target's first name is read where trailers follow (`self.x = ...` reads `self`):
        # with PY_NAME there, a runaway chain `a = collections.adp2d(...)(...)...` stayed a
        # possible target (measured, 2026-12-05, whole programs under closed names)
        _terminal(f"PY_TARGET_{d}", f"PY_BIND | PY_READ {trailer}+"),
        _terminal(f"PY_TARGETS_{d}", f'"*"? PY_TARGET_{d} (/, ?/ "*"? PY_TARGET_{d})* ","?'),
        _terminal(f"PY_ITEMS_{d}", f'{item} ({comp} | (/, ?/ {item})* ","?)'),
        _terminal(f"PY_ARGS_{d}", f'(({arg}) ({comp} | (/, ?/ ({arg}))* ","?))?'),
        _terminal(f"PY_DICT_{d}", f'(({pair}) ({comp} | (/, ?/ ({pair}))* ","?))?'),
        _terminal(f"PY_SUBS_{d}", f'({sub}) (/, ?/ ({sub}))* ","?'),
    ]


def python_line_terminals(
    readable: Collection[str] | None = None, modules: Collection[str] = ()
) -> list[str]:
    """Lark terminal definitions of PY_SIMPLE and PY_OPEN (and their parts, PY_*). A name
    an expression reads (PY_READ) is one of `readable` (None: any name), where `a.b` reads
    that attribute of `a` as a whole (`a` alone only where it is readable too); names assigned,
    attributes, keywords and parameters are any name. A name of `modules` is read only
    through an attribute (`F.relu`) and never assigned: admission refuses a module as a
    plain value (measured, 2026-12-05: 3 of 12 taught whole programs of a default run passed
    `F` or `nn` itself as an argument)."""
    top = MAX_DEPTH
    keyword = "|".join(KEYWORDS)
    params = "(PY_PARAM (/, ?/ PY_PARAM)*)?"
    if readable is not None and not readable:
        raise ValueError("readable names: at least one")
    bad = [
        n
        for n in [*(readable or ()), *modules]
        if not re.fullmatch(_READABLE, n) or n.split(".")[0] in KEYWORDS
    ]
    if bad:
        raise ValueError(f"readable names must be identifiers, not keywords: {bad[:3]}")
    plain = None if readable is None else sorted(set(readable) - set(modules))
    if plain is not None and not plain:
        raise ValueError("readable names: at least one that is not a module")
    reads = "PY_NAME" if plain is None else "/(" + "|".join(map(re.escape, plain)) + ")/"
    unbound = f" & ~/({'|'.join(sorted(modules))})/" if modules else ""
    rules = [
        _terminal("PY_NAME", f"/{_FREE_WORD}/ & ~/({keyword})/"),
        _terminal("PY_BIND", f"PY_NAME{unbound}"),
        _terminal("PY_READ", reads),
        _terminal("PY_NUMBER", f"/{_NUMBER}/"),
        _terminal("PY_STR", f"/{_STR}/"),
        _terminal("PY_PREFIX", _PREFIX),
        _terminal("PY_BINOP", rf"/ ?({_SYMBOL_OPS}) ?| ({_WORD_OPS}) /"),
        _terminal("PY_LAMBDA", f"/lambda( {_WORD}(, ?{_WORD})*)?: /"),
    ]
    if modules:
        rules.append(_terminal("PY_MODULE", "/(" + "|".join(sorted(modules)) + ")/"))
    for d in range(top + 1):
        rules += _depth(d, bool(modules))
    exprs = f"PY_ITEMS_{top}"
    atom, trailer = _primary_parts(top, bool(modules))
    rules += [
        _terminal(
            "PY_PARAM",
            f'/\\*{{0,2}}/ PY_NAME (/: ?/ PY_EXPR_{top})? (/ ?= ?/ PY_EXPR_{top})? | "*"',
        ),
        # an expression statement is a call: any other expression does nothing (measured:
        # `- train`, `post-processing`, `Ending` were lines of every junk whole program)
        _terminal("PY_CALL", f'{atom} {trailer}* "(" PY_ARGS_{top - 1} ")"'),
        _terminal(
            "PY_SIMPLE",
            " | ".join(
                [
                    f"(PY_TARGETS_{top} / ?= ?/)+ {exprs}",
                    "PY_CALL",
                    f"PY_TARGET_{top} / ?{_AUGMENTED} ?/ {exprs}",
                    f'"return" (" " {exprs})?',
                    f'"raise" (" " PY_EXPR_{top} (" from " PY_EXPR_{top})?)?',
                    f'"assert " PY_EXPR_{top} (/, ?/ PY_EXPR_{top})?',
                    f'"del " {exprs}',
                    '"pass" | "break" | "continue"',
                ]
            ),
        ),
        _terminal(
            "PY_DEFINE",
            f'("def " PY_NAME "(" {params} ")" (" -> " PY_EXPR_{top})?'
            f' | "class " PY_NAME ("(" PY_ARGS_{top - 1} ")")?) ":"',
        ),
        _terminal(
            "PY_COMPOUND",
            "("
            + " | ".join(
                [
                    f'"if " PY_EXPR_{top}',
                    f'"while " PY_EXPR_{top}',
                    f'"for " PY_TARGETS_{top} " in " {exprs}',
                    f'"with " PY_EXPR_{top} (" as " PY_TARGETS_{top})? '
                    f'(/, ?/ PY_EXPR_{top} (" as " PY_TARGETS_{top})?)*',
                    '"try"',
                ]
            )
            + ') ":"',
        ),
        _terminal("PY_OPEN", "PY_COMPOUND | PY_DEFINE"),
    ]
    return rules


# the terminals that read no name: one copy serves every scope
_SHARED = (
    "PY_NAME", "PY_BIND", "PY_NUMBER", "PY_STR", "PY_PREFIX", "PY_BINOP", "PY_LAMBDA", "PY_MODULE",
)  # fmt: skip


def scoped_line_terminals(scopes: list[set[str]], modules: Collection[str]) -> list[str]:
    """`python_line_terminals` once per scope of readable names: scope i's PY_SIMPLE,
    PY_OPEN and their parts are named with the suffix `_S{i}` (PY_SIMPLE_S0, ...), the
    terminals that read no name are shared. A readable name that spells one of these
    terminals is left out (it would be renamed with them)."""
    rules: list[str] = []
    for i, readable in enumerate(scopes):
        terminals = python_line_terminals(readable, modules)
        defined = {rule.split(":", 1)[0] for rule in terminals}
        if defined & readable:
            terminals = python_line_terminals(readable - defined, modules)
        scoped = defined - set(_SHARED)
        pattern = re.compile(r"\b(" + "|".join(sorted(scoped, key=len, reverse=True)) + r")\b")
        for rule in terminals:
            name = rule.split(":", 1)[0]
            if name in scoped:
                rules.append(pattern.sub(rf"\1_S{i}", rule))
            elif i == 0:
                rules.append(rule)
    return rules
