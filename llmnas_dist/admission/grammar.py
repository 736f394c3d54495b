"""Answer grammars for constrained decoding: a delta that cannot miscopy its parent.

`delta_grammar(parent)` writes, in Lark syntax (read by llguidance and xgrammar), the
language of delta answers the codec applies to that parent: `<delta>`, the two file
headers, one or more hunks, `</delta>`. Inside a hunk every context (` `) or removed (`-`)
line is the parent's next non-blank line, copied exactly and in order; added (`+`) lines
are one statement each in canonical form (indented in fours, brackets and strings closed
on the line, no comment, no backslash; no line break, no `</`, no backtick, not starting
with `+`, so the codec's extraction and hunk parsing read them back as added lines); blank
lines are optional
(the codec ignores them). A hunk may end only once it has changed something and its
anchor lines (context and removed, blank ones aside) occur exactly once in the parent,
judged with the codec's own `anchor_key`; the next hunk starts after it. The grammar is a
right-linear state machine over parent positions:

  seek_p     a hunk opened: its first line is parent line p or a later one, as context or
             removed (a hunk starts with a parent line: difflib's hunks do, and an added
             line before it would double the states)
  in_s_p_c   first anchor s, next anchor p, anchors s..p-1 not yet unique in the parent
             (c: the hunk changed something)
  free_p_c   next anchor p, the anchors so far are unique; if c, the hunk may end: the
             answer's end, or the next hunk's header (its lines from p on)

Starting positions whose every extension stays ambiguous are left out, so every prefix
the grammar allows can still be completed into an answer that applies.

`full_grammar(parent)` frames a full-mode answer, `<nn>` ... `</nn>`, around a program
that keeps the contract's outline: an allowlisted import header, a top-level
`class Net(nn.Module)` with the contract's `__init__` signature and, where the parent's Net
has one, a `forward`, no later top-level import (special tokens are kept out by the
engine). The header, Net, `__init__` and `forward` lines may also be the parent's own.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from functools import partial

from llmnas_dist.admission.delta import BASELINE_NAME, IMPROVED_NAME, anchor_key, is_blank
from llmnas_dist.program.source import parse_source

DELTA_HEAD = f"<delta>\n--- {BASELINE_NAME}\n+++ {IMPROVED_NAME}\n"
DELTA_END = "</delta>"
ANSWER_ENDS = (DELTA_END, "</nn>")  # generation stops at either
# Above this many non-blank parent lines the grammar is not built (generation falls back to
# an unconstrained answer, with the reason). llguidance's default parser limit is 2,000
# Earley items per row; a hunk's start holds ~5 per parent line (measured: 1,251 at 250).
# vLLM builds its matchers with the defaults, so both backends keep them and this bound.
MAX_PARENT_LINES = 350

# Characters splitlines() breaks a line at: an added line must hold none of them, or the
# codec would read one added line as several.
_BREAKS = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"
# Text without `</` (it could end the <delta> block early) and without backticks (a fence
# inside the block would be read as the diff). A run of `<` must be followed by a character
# other than `/`, so the text never ends with `<` and the lexer knows where it stops.
_TEXT = rf"([^{_BREAKS}`<]|<+[^{_BREAKS}`<\/])*"
# Code in canonical form (`ast.unparse`, as prompts show parents) is one statement per
# line: an added line's brackets and strings close on it. One character of such a line
# outside strings and brackets: no line break, backtick, `</` (as above), backslash (a
# continued line) or `#` (canonical form has no comments).
_PLAIN = rf"""[^{_BREAKS}`<()\[\]{{}}'"\\#]|<+[^{_BREAKS}`</()\[\]{{}}'"\\#]"""
_STRING = rf"""'([^{_BREAKS}'\\`<]|\\[^{_BREAKS}`<])*'|"([^{_BREAKS}"\\`<]|\\[^{_BREAKS}`<])*\""""
MAX_BRACKETS = 8  # bracket depth within a line (the seeds reach 6)


def _balanced(depth: int) -> str:
    """A regex of line text whose brackets close, nested at most `depth` deep (any closing
    kind closes any opening one: linear in `depth`, where matching kinds would triple the
    regex per level)."""
    inner = f"({_PLAIN}|{_STRING})*"
    for _ in range(depth):
        inner = rf"({_PLAIN}|{_STRING}|[(\[{{]{inner}[)\]}}])*"
    return inner


# An added line: `+`, then nothing, or indentation in fours and a statement's text that
# starts with neither a space nor `+`.
_STATEMENT_TEXT = "LINE_TEXT: /" + _balanced(MAX_BRACKETS).replace("/", "\\/") + "/"
_ADDED = [
    'ADDED: "+" (/( {4})*/ (LINE_TEXT & /[^ +].*/))? "\\n"',
    _STATEMENT_TEXT,
]
_HEADER = r"/@@( -[0-9]{1,5}(,[0-9]{1,5})? \+[0-9]{1,5}(,[0-9]{1,5})?)? @@\n/"
# A blank line (the codec ignores them); up to two may precede any line of a hunk, and each
# holds at most 40 spaces or tabs: bounds that keep a sampler from looping on blank lines.
# Measured: the base model, unbounded, spent whole 384-token answers on one line of spaces.
_BLANK = r"/( [ \t]{0,40}|-[ \t]{0,40}|)\n/"


class GrammarUnsupported(ValueError):
    """This parent gets no delta grammar; the message says why (the answer is then
    sampled unconstrained and the codec judges it as before)."""


def unique_lengths(keys: list[str]) -> list[int | None]:
    """Per start s: the fewest consecutive keys from s that occur exactly once in `keys`
    (None when even keys[s:] occurs elsewhere). The other places that still match are
    narrowed one key at a time."""
    n = len(keys)
    at: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        at.setdefault(key, []).append(i)
    out: list[int | None] = []
    for s in range(n):
        others = [t for t in at[keys[s]] if t != s]
        length = 1
        while others and s + length < n:
            others = [t for t in others if t + length < n and keys[t + length] == keys[s + length]]
            length += 1
        out.append(None if others else length)
    return out


def _literal(text: str) -> str:
    """A Lark string literal for exactly `text`."""
    return json.dumps(text, ensure_ascii=False)


def _check_parent(lines: list[str], max_lines: int) -> list[str]:
    """The parent's non-blank lines, or GrammarUnsupported naming what stands in the way."""
    anchors = [line for line in lines if not is_blank(line)]
    if not anchors:
        raise GrammarUnsupported("the parent has no non-blank line to anchor a hunk")
    if len(anchors) > max_lines:
        raise GrammarUnsupported(
            f"the parent has {len(anchors)} non-blank lines, above the grammar's "
            f"limit of {max_lines}"
        )
    for number, line in enumerate(lines, 1):
        if any(tag in line.lower() for tag in ANSWER_ENDS) or "```" in line:
            raise GrammarUnsupported(
                f"parent line {number} holds an answer's end tag or a code fence, which "
                "would end the answer's block when copied"
            )
    return anchors


# A transition (source state, terminals, target state); target None accepts the answer.
Step = tuple[str, str, "str | None"]


def delta_grammar(parent: str, max_lines: int = MAX_PARENT_LINES) -> str:
    """The Lark grammar of delta answers that apply to `parent` (see the module doc);
    GrammarUnsupported where it cannot be built (above `max_lines` non-blank lines, or a
    parent line that would end the answer's block)."""
    anchors = _check_parent(parent.splitlines(), max_lines)
    steps, terms = _delta_steps(anchors, unique_lengths([anchor_key(x) for x in anchors]))
    return _right_linear(steps, terms)


def _delta_steps(anchors: list[str], need: list[int | None]) -> tuple[list[Step], dict[str, str]]:
    """The state machine of the module doc as transitions, and its literal terminals."""
    m = len(anchors)
    terms: dict[str, str] = {}  # literal -> terminal name
    steps: list[Step] = []

    def term(literal: str) -> str:
        return terms.setdefault(literal, f"L{len(terms)}")

    terms[DELTA_HEAD] = "HEAD"  # the answer's opening: no blank lines before it

    def copy(src: str, p: int, target: Callable[[int], str], c: int) -> None:
        """Parent line p as a context line, or (unless it would read as `---`) removed."""
        steps.append((src, f"{term(' ' + anchors[p] + chr(10))}", target(c)))
        removed = "-" + anchors[p]
        if not (removed.startswith("--- ") or removed == "---"):
            steps.append((src, f"{term(removed + chr(10))}", target(1)))

    def after(s: int, p: int) -> Callable[[int], str]:
        """The state after anchor p of a hunk whose first anchor is s."""
        unique = need[s] is not None and p + 1 - s >= (need[s] or 0)
        return partial(_free, p + 1) if unique else (lambda c: f"in_{s}_{p + 1}_{c}")

    startable = [s for s in range(m) if need[s] is not None]
    steps.append(("start", "HEAD HEADER", "seek_0"))
    for p in range(m + 1):
        # a changed, unique hunk may end: the answer, or the next hunk from line p on
        steps.append((f"free_{p}_1", term(DELTA_END), None))
        steps.append((f"free_{p}_1", "HEADER", f"seek_{p}"))
        steps.append((f"seek_{p}", "", f"seek_{p + 1}"))
        if p in startable:
            copy(f"seek_{p}", p, after(p, p), 0)
        for c in (0, 1):
            steps.append((f"free_{p}_{c}", "ADDED", f"free_{p}_1"))
            if p < m:
                copy(f"free_{p}_{c}", p, partial(_free, p + 1), c)
    for s in startable:
        for p in range(s + 1, s + (need[s] or 0)):
            for c in (0, 1):
                steps.append((f"in_{s}_{p}_{c}", "ADDED", f"in_{s}_{p}_1"))
                copy(f"in_{s}_{p}_{c}", p, after(s, p), c)
    return steps, terms


def _free(p: int, c: int) -> str:
    return f"free_{p}_{c}"


def _right_linear(steps: list[Step], terms: dict[str, str]) -> str:
    """Lark text of the machine, one rule per state. Right-linear, so an Earley row holds
    only the current state's alternatives (written left-recursively, every rule is predicted
    at the answer's first byte: ~18 items per parent line, over llguidance's default of
    2,000 per row at ~110 lines; right-linear, a hunk's start holds ~3 per line). Blank
    lines (`gap`, at most two) may precede any line; they are a rule of their own because
    inside each line's terminal they made llguidance's lexer run out of expressions at
    ~250 parent lines. Only states that are reachable and can still finish are written."""
    useful = _forward(steps, "start") & _backward(steps)
    lines_of: dict[str, list[str]] = {}  # alternatives that start with a line
    moves: dict[str, list[str]] = {}  # epsilon alternatives (to another state)
    for src, syms, dst in steps:
        if src in useful and (dst is None or dst in useful):
            target = lines_of if syms else moves
            target.setdefault(src, []).append(f"{syms} {dst or ''}".strip())
    rules = []
    for name in dict.fromkeys([*lines_of, *moves]):
        alts = list(moves.get(name, []))
        if name in lines_of and name == "start":
            alts = lines_of[name] + alts
        elif name in lines_of:
            alts = [f"gap {name}_line", f"{name}_line", *alts]
            rules.append(f"{name}_line: " + " | ".join(lines_of[name]))
        rules.append(f"{name}: " + " | ".join(alts))
    rules.append("gap: BLANK | BLANK BLANK")
    rules += [f"{name}: {_literal(text)}" for text, name in terms.items()]
    rules += [*_ADDED, f"HEADER: {_HEADER}", f"BLANK: {_BLANK}"]
    return "\n".join(rules) + "\n"


def _reachable(edges: dict[str, list[str]], starts: set[str]) -> set[str]:
    """Every state reachable from `starts` along `edges` (starts included)."""
    seen, todo = set(starts), list(starts)
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _forward(steps: list[Step], root: str) -> set[str]:
    """States reachable from `root`."""
    targets: dict[str, list[str]] = {}
    for src, _, dst in steps:
        if dst is not None:
            targets.setdefault(src, []).append(dst)
    return _reachable(targets, {root})


def _backward(steps: list[Step]) -> set[str]:
    """States from which an accepting transition can be reached."""
    sources: dict[str, list[str]] = {}
    for src, _, dst in steps:
        if dst is not None:
            sources.setdefault(dst, []).append(src)
    return _reachable(sources, {src for src, _, dst in steps if dst is None})


# A whole program keeps the contract's outline by construction (`full_grammar`), in the
# canonical form prompts show: an import header of allowlisted lines (the seeds' and its
# parent's own), a blank line, then lines of which no top-level one is an import, among
# them `class Net(nn.Module):` and, after it, its `__init__` with the contract's signature
# (or the parent's own lines for both, e.g. LEMUR's annotated signature) and, where the
# parent's Net defines one, its `forward` (in the parent's order); `</nn>` starts a
# line. Measured (README, 2026-12-04, AVX512 EPYC): of 24 whole programs under a bare <nn>
# frame, 11 broke this outline (6 imported `torch.utils.nn.functional`, 5 had no top-level
# Net); of 24 under this grammar none imported outside the header and one, cut off by the
# token limit, had no Net. Taught whole programs (AVX2 EPYC, 2026-12-04) ended without a
# forward in 2 of 4. A line's text holds no backtick and no `</` (as the delta grammar's
# added lines).
# Not every line is required to be a statement Python can read where it stands (blocks,
# keywords, closed brackets): that grammar was built and measured (README) and moved the
# untaught model's whole programs from syntax errors at line 3-5, stopped within 129
# tokens, to valid statements written on to the 1,024-token limit (5 of 8), none admitted
# either way, at 190-241 s a batch of 4 against 24-30 s: it cost the default run minutes.
SEED_IMPORTS = (
    "import math",
    "import torch",
    "import torch.nn as nn",
    "import torch.nn.functional as F",
)
NET_LINE = "class Net(nn.Module):"
INIT_LINE = "    def __init__(self, in_shape, out_shape, prm, device):"
FORWARD_LINE = "    def forward(self, x):"
_LINE_TEXT = r"([^\n`<]|<+[^\n`</])*"
_IMPORT_WORDS = ("import ", "from ")


def _not_starting_with(words: tuple[str, ...]) -> str:
    """A regex of one non-blank line's text (no newline) that does not start with any of
    `words` (words with distinct first characters): a regex engine without lookahead needs
    the complement spelled out, prefix by prefix."""
    firsts = "".join(w[0] for w in words)
    options = [rf"[^\s`<{firsts}]{_LINE_TEXT}"]
    for word in words:
        for k in range(1, len(word)):
            prefix = re.escape(word[:k])
            options.append(rf"{prefix}([^\n`<{re.escape(word[k])}]{_LINE_TEXT})?")
    return "(" + "|".join(options) + ")"


def _parent_lines(parent: str, starts: tuple[str, ...]) -> list[str]:
    """The parent's lines that start with one of `starts`, trailing spaces dropped, that a
    grammar line may copy (no backtick, no `<`)."""
    return [
        line.rstrip()
        for line in parent.splitlines()
        if line.startswith(starts) and "`" not in line and "<" not in line
    ]


def _one_line_of(lines: list[str]) -> str:
    """A regex of exactly one of `lines`, then its line break."""
    return "(" + "|".join(re.escape(line) for line in dict.fromkeys(lines)) + r")\n"


def full_grammar(parent: str) -> str:
    """The language of whole-program answers to `parent`: `<nn>`, the header (lines from
    the seeds' imports and the parent's own), a blank line, body lines without a top-level
    import that hold the Net line and then its `__init__` line (the contract's or the
    parent's own) and, where the parent's Net defines one, a `forward` line, `</nn>`."""
    header = _one_line_of([*SEED_IMPORTS, *_parent_lines(parent, _IMPORT_WORDS)])
    net = _one_line_of([NET_LINE, *_parent_lines(parent, ("class Net(",))])
    init = _one_line_of([INIT_LINE, *_parent_lines(parent, ("    def __init__(self, in_shape",))])
    body = rf"(([ \t]{_LINE_TEXT}|{_not_starting_with(_IMPORT_WORDS)})?\n)"
    methods = [init]
    if (order := _net_method_order(parent)) is not None:
        # in the parent's order; a parent whose Net inherits forward from a class of its
        # own leaves its children that freedom
        forward = _one_line_of([FORWARD_LINE, *_parent_lines(parent, ("    def forward(self",))])
        methods = [init, forward] if order == "init_first" else [forward, init]
    program = f"({header})+\\n{body}*{net}{body}*" + "".join(f"{m}{body}*" for m in methods)
    return 'start: "<nn>\\n" PROGRAM\nPROGRAM: /' + program.replace("/", "\\/") + "<\\/nn>/\n"


def _net_method_order(parent: str) -> str | None:
    """ "init_first" or "forward_first" as the parent's top-level Net defines them; None
    where its Net defines no forward (or the parent does not parse)."""
    try:
        tree = parse_source(parent)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Net":
            names = [f.name for f in node.body if isinstance(f, ast.FunctionDef)]
            if "forward" not in names:
                return None
            init_at = names.index("__init__") if "__init__" in names else len(names)
            return "init_first" if init_at < names.index("forward") else "forward_first"
    return None


def answer_grammar(mode: str, parent: str) -> tuple[str | None, str | None]:
    """The grammar a proposal of `mode` is sampled under, or None and why not (a parent
    beyond the engine's limits, or one the grammar cannot copy): the answer is then
    sampled freely and the reason recorded with the candidate."""
    if mode == "full":
        return full_grammar(parent), None
    try:
        return delta_grammar(parent), None
    except GrammarUnsupported as exc:
        return None, f"unconstrained: {exc}"


def decoding_of(constrained: bool | None) -> str:
    """How a candidate's answer was sampled, as the CLI and reports name it."""
    if constrained is None:
        return "unrecorded"  # archived before constrained decoding was kept
    return "constrained" if constrained else "unconstrained"
