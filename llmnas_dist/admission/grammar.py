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
             (c: the hunk changed something); at most MAX_UNPLACED_ADDED lines are added
             before they are unique
  free_p_c   next anchor p, the anchors so far are unique; if c, the hunk may end: the
             answer's end, or the next hunk's header (its lines from p on)

Starting positions whose every extension stays ambiguous are left out, so every prefix
the grammar allows can still be completed into an answer that applies.

`full_grammar(parent)` writes the language of full-mode answers, `<nn>` ... `</nn>`, as an
edited copy of the parent: its lines in order, each copied, left out or replaced, with
statements inserted between them where Python reads them (see the comment above it), so a
whole program keeps its parent's outline and cannot miscopy it either.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from functools import partial

from llmnas_dist.admission.delta import BASELINE_NAME, IMPROVED_NAME, anchor_key, is_blank
from llmnas_dist.admission.machine import Step, literal, right_linear
from llmnas_dist.admission.pyline import MAX_DEPTH, scoped_line_terminals
from llmnas_dist.admission.scopes import (
    INPUT_BLOCKS,
    TAUGHT_APPLICATIONS,
    class_bodies,
    in_net_class,
    insertion_scopes,
    module_names,
    read_attributes,
    scope_names,
)

DELTA_HEAD = f"<delta>\n--- {BASELINE_NAME}\n+++ {IMPROVED_NAME}\n"
DELTA_END = "</delta>"
ANSWER_ENDS = (DELTA_END, "</nn>")  # generation stops at either
# Above this many non-blank parent lines the grammar is not built (generation falls back to
# an unconstrained answer, with the reason). llguidance's default parser limit is 2,000
# Earley items per row; a hunk's start holds ~5 per parent line (measured: 1,251 at 250).
# vLLM builds its matchers with the defaults, so both backends keep them and this bound.
MAX_PARENT_LINES = 350

# Added lines of a hunk whose anchors are not yet unique (the line judges cannot place it):
# in a default run of 2026-12-07 (2-core AMX Xeon) 4 of 14 deltas added up to 20 lines below
# `super().__init__()` (made in 2 classes) until their 384-token budget cut them off
# (hunk_ambiguous); the 15 admitted deltas of two such runs added at most 3 there, and at 3
# all 5 such answers of those runs are refused within their first 530 bytes
MAX_UNPLACED_ADDED = 3

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
# starts with neither a space nor `+` and holds no triple quote: two adjacent strings (`""`
# `"x"`) open one, which never closes on the line (measured, 2026-12-05: `x = x +
# self.input_gate(x)"""- baseline.py"""`). Refusing an added line that is a parent line
# (refused only at its end: 4 of 24 deltas, 2026-12-05, ended it in junk such as ` @@ @@`)
# or one that starts with an attribute the parent assigns (llguidance's lexer ran out of
# expressions: 2 of 12 deltas; 44 of 60 of the seeds' longest lines written byte by
# byte) was measured to lose answers; neither rule is kept.
_LINE_TEXT = "LINE_TEXT: /" + _balanced(MAX_BRACKETS).replace("/", "\\/") + "/"
_TRIPLE_QUOTE = "('''|\"\"\")"
_ADDED = [
    f'ADDED: "+" (/( {{4}})*/ (LINE_TEXT & /[^ +].*/ & ~/.*{_TRIPLE_QUOTE}.*/))? "\\n"',
    _LINE_TEXT,
]
_HEADER = r"/@@( -[0-9]{1,5}(,[0-9]{1,5})? \+[0-9]{1,5}(,[0-9]{1,5})?)? @@\n/"
# A blank line (the codec ignores them): up to two before any line of a hunk, each at most 40
# spaces. Measured: the base model, unbounded, spent 384-token answers on a line of spaces;
# with tabs allowed (canonical programs have none) a warm-started delta of 2026-12-07 wrote
# blank lines of 8 spaces and 33 tabs, a token each, between its lines until cut off.
_BLANK = r"/([ -] {0,40}|)\n/"


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


def delta_grammar(parent: str, max_lines: int = MAX_PARENT_LINES) -> str:
    """The Lark grammar of delta answers that apply to `parent` (see the module doc);
    GrammarUnsupported where it cannot be built (above `max_lines` non-blank lines, or a
    parent line that would end the answer's block)."""
    anchors = _check_parent(parent.splitlines(), max_lines)
    steps, terms = _delta_steps(anchors, unique_lengths([anchor_key(x) for x in anchors]))
    return right_linear(steps, terms, [*_ADDED, f"HEADER: {_HEADER}"], _BLANK)


def _delta_steps(anchors: list[str], need: list[int | None]) -> tuple[list[Step], dict[str, str]]:
    """The state machine of the module doc as transitions, and its literal terminals."""
    m = len(anchors)
    terms: dict[str, str] = {}  # literal -> terminal name
    steps: list[Step] = []

    def term(literal: str) -> str:
        return terms.setdefault(literal, f"L{len(terms)}")

    terms[DELTA_HEAD] = "HEAD"  # the answer's opening: no blank lines before it

    def copy(src: str, p: int, target: Callable[[int], str], c: int) -> None:
        """Parent line p as a context line, or removed, unless it would read as `---` or
        it defines (`def`, `class`, a decorator: the outline stays the parent's, as in
        whole programs; a replayed delta and one of a default run of 2026-12-07 removed
        `def forward` with the lines around it: a contract violation, a syntax error)."""
        steps.append((src, f"{term(' ' + anchors[p] + chr(10))}", target(c)))
        removed = "-" + anchors[p]
        if not (removed.startswith("--- ") or removed == "---" or _DEFINES.match(anchors[p])):
            steps.append((src, f"{term(removed + chr(10))}", target(1)))

    def after(s: int, p: int, added: int = 0) -> Callable[[int], str]:
        """The state after anchor p of a hunk whose first anchor is s (`added` lines so far)."""
        unique = need[s] is not None and p + 1 - s >= (need[s] or 0)
        return partial(_free, p + 1) if unique else (lambda c: f"in_{s}_{p + 1}_{c}_{added}")

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
            for c, added in [(0, 0), *((1, a) for a in range(MAX_UNPLACED_ADDED + 1))]:
                if added < MAX_UNPLACED_ADDED:
                    steps.append((f"in_{s}_{p}_{c}_{added}", "ADDED", f"in_{s}_{p}_1_{added + 1}"))
                copy(f"in_{s}_{p}_{c}_{added}", p, after(s, p, added), c)
    return steps, terms


def _free(p: int, c: int) -> str:
    return f"free_{p}_{c}"


# A whole program is an edited copy of its parent (`full_grammar`), as a delta is: the
# parent's non-blank lines in order (canonical form, as prompts show parents), each copied
# exactly or, unless it opens a block (ends with `:`) or imports, left out (a block's
# opening line other than `def`/`class` may be rewritten, keeping its keyword), and between
# them inserted lines, each a Python statement (`pyline`; an expression statement only as
# a call) or a one-level block (an `if`/`for`/`while`/`with`/`try` line, never a new `def`
# or `class`, and up to MAX_INSERTED statements); at least one change, at most MAX_SITES
# places changed; an inserted line reads only names its function has (`scopes.scope_names`).
# Only the body of the top-level `class Net` changes (`scopes.in_net_class`); the rest of
# the parent (imports aside) is copied as it is.
# Nothing is inserted directly in a class body, nor at the top level but, right after the
# parent's imports, the seeds' imports the parent lacks, each at most once. An insertion
# takes an indentation Python reads where it stands: from the next parent line's level up to
# the previous one's (one deeper after a line that opens a block, none after a decorator,
# no deeper than the last insertion, never between a block and its `else`). So the
# contract's outline is the parent's: its header, its `class Net(...)`, `__init__` and
# `forward` lines are copied, never rewritten, and the program parses.
# Why: under the outline grammar (Net, `__init__` and `forward` lines required, any line
# between) every whole program of three stops' default runs was a syntax error at line
# 3-8 (`def class Net`, a `def` without its colon); a grammar of statements only moved
# those failures to 1,024-token answers. Measured with this grammar (README, 2026-12-04):
# a taught model's whole programs parse and fail where deltas fail, at build (shapes,
# names); none was admitted yet. The top-level rules: an untaught model's whole programs
# (default warm start, 12 of one default run, 2026-12-04) began with delta-like lines that
# Python reads as expressions (`- train`, `--- productive`, `Ending`): 4 failed to build
# on line 1, 4 looped there; with only imports allowed above the parent's, it looped on
# `import torch.nn.functional as F` (12 of 12 in `llmnas generate`). No new `def`: with
# `def` blocks allowed inside classes (2026-12-05, the first 4 whole programs under closed
# names), the model inserted up to 6 methods in a row (`def forward(self, x):` again and
# again, a second `__init__`) until a loop or runaway line ended the answer.
# A line may not be left out right after another (a replacement is a line left out and one
# inserted): runs of left-out lines would keep up to a whole block's states alive in every
# Earley row (~10 items a line; llguidance's default limit is 2,000 a row).
SEED_IMPORTS = (
    "import math",
    "import torch",
    "import torch.nn as nn",
    "import torch.nn.functional as F",
)
FULL_HEAD = "<nn>\n"
FULL_END = "</nn>"
_INDENT = "    "
_WORD_END = "([^A-Za-z0-9_].*)?"  # the rest of a line after a whole word (no \\b in llguidance)
_CONTINUES = re.compile(rf" *(else|elif|except|finally){_WORD_END}$")
# An import is never left out: the names it binds are what the rest of the program uses.
_IMPORT = re.compile(r" *(import|from) ")
# A line of Net that makes an attribute (`self.head = ...`) another method of Net reads
# (`scopes.read_attributes`) is copied or rewritten as another assignment to that
# attribute (REASSIGN_p), never left out. Measured (2026-12-05, Xeon, default runs B and
# C of that stop): 3 of 24 whole programs left out such a line (`self.linear = ...` written
# as the call `self.linear(out_shape[0])`, inception's `self.inc1 = ...` replaced by other
# blocks) and failed to build on the attribute `forward` reads.
_ATTRIBUTE = re.compile(r" *self\.([A-Za-z_][A-Za-z0-9_]*) ?= ?(?!=)")
_DEFINES = re.compile(r" *(def |class |async def |@)")
_NO_INSERT = -1  # after a decorator: its `def` follows at once
# Where the copy stands: unchanged yet; changed; the last parent line left out (the next
# may not be, and the first insertion may not restore it); lines inserted (the parent line
# that follows is copied, so an insertion and a leaving out cannot spell the parent's own
# line again); lines inserted in place of one left out (the next may be left out too:
# consecutive lines replaced, as a widening of a layer's channels does); the only line of a
# block left out (a line must be inserted in its place: a block is never empty); taught
# statements of input blocks atop Net.forward (APPLY), no site of their own (the block's
# line in `__init__` is): whole programs that made a block and changed another line could
# not apply it (`scopes.unapplied_blocks`), near-copies of their parent (2026-12-07).
_SAME, _CHANGED, _LEFT_OUT, _INSERTED, _REPLACED, _EMPTIED, _APPLIED = range(7)
_FORWARD = re.compile(r" *def forward\(self, ([A-Za-z_][A-Za-z0-9_]*)\):$")


# An insertion: its level, the line it may not be (the parent line just left out), the
# block opening it may not be (the next parent line's) and its scope of names.
Insertion = tuple[int, tuple[str, ...], tuple[str, ...], int]
# At most this many insertions (a line or a block) in a row, counted across a replacement's
# left-out lines: a copied line can also be read as an inserted one (or as one replacing
# the line before it), and each such reading would otherwise stay alive to the answer's
# end (llguidance's default of 2,000 Earley items a row was reached after ~60 lines).
# 3 since the eleventh stop: with 6, the small model made one block 4-6 times in a row
# (`self.input_gate = nn.Sequential(...)` again and again, its layers varied) until the
# token budget cut the program off. bench/replay_bench.py --mode full --set
# redraw_full=true on a default first run (2026-12-07, 2-core AMX Xeon, its 10
# whole-program slots, 4 samples, 40 answers an arm): at 6, 14 of 40 cut off, 9 admitted;
# at 3, none cut off, 14 admitted (20 near-copies of their parent), decoding 402 s (506 s
# for the arm before the unpack fault at 6). The operators insert one line a place
MAX_INSERTED = 3
# At most this many places of a whole program differ from its parent (runs of inserted,
# left-out or replaced lines between copied ones); the rest is copied. Measured: taught
# whole programs (warm start with whole-program pairs) copied their parent for 20 lines
# and then inserted lines, blank lines and blocks at every place to the 1,024-token limit;
# with 3 places, 3-5 of 12 whole programs of each default run of 2026-12-05 were still cut
# at 1,024 tokens.
MAX_SITES = 2
# Above this many non-blank parent lines a whole program is sampled unconstrained (with
# the reason): llguidance's grammar compiler recurses along the copy's chain of states and
# overflowed an 8 MiB stack between 175 and 200 lines (measured, segfault); the seeds
# have 28-64 lines.
MAX_FULL_LINES = 120


def _level(line: str, number: int) -> int:
    """The line's indentation in fours, or GrammarUnsupported (not canonical form)."""
    indent = len(line) - len(line.lstrip(" "))
    if indent % len(_INDENT) or line[indent : indent + 1] == "\t":
        raise GrammarUnsupported(
            f"non-blank parent line {number} is not indented in fours of spaces (not "
            "canonical form)"
        )
    return indent // len(_INDENT)


def full_grammar(parent: str, max_lines: int = MAX_FULL_LINES) -> str:
    """The language of whole-program answers to `parent` (its canonical form): `<nn>`, an
    edited copy of the parent (see above), `</nn>`; GrammarUnsupported where the parent
    is not one the grammar can copy (too long, an end tag in it, not canonical)."""
    lines = [line.rstrip() for line in _check_parent(parent.splitlines(), max_lines)]
    levels = [_level(line, i + 1) for i, line in enumerate(lines)]
    missing = [x for x in SEED_IMPORTS if x not in lines]
    try:
        by_def, modules, read = scope_names(parent), module_names(parent), read_attributes(parent)
    except SyntaxError as exc:
        msg = f"the parent is not Python: {exc.msg} (line {exc.lineno})"
        raise GrammarUnsupported(msg) from None
    numbers = [i + 1 for i, line in enumerate(parent.splitlines()) if not is_blank(line)]
    scopes, scope_at = insertion_scopes(levels, [by_def.get(n) for n in numbers], by_def[0])
    in_net = in_net_class(lines, levels)
    applies = [
        (p + 1, m[1]) for p, line in enumerate(lines) if in_net[p] and (m := _FORWARD.match(line))
    ]
    forward = applies[0][0] if applies else -1
    steps, terms, insertions = _full_steps(lines, levels, bool(missing), scope_at, read, forward)
    rules = _insertions(insertions, max(levels) + 1, scopes, modules)
    if missing:  # each at most once, in the seeds' order
        subsets = [s for k in range(len(missing)) for s in itertools.combinations(missing, k + 1)]
        texts = ["\\n".join(map(re.escape, s)) for s in subsets]
        rules.append("IMPORTS: /(" + "|".join(texts) + ")\\n/")
    named = {syms for _, syms, _ in steps}
    for p, line in enumerate(lines):
        scope = scope_at[p][levels[p]]
        if f"OPEN_NOT_{p}" in named:  # keeps its keyword: `elif` stays after an `if`
            keyword = re.escape(line.split()[0].rstrip(":"))
            but = f"{_not_text([line])} & /{keyword}{_WORD_END}/"
            rules.append(_statement(f"OPEN_NOT_{p}", levels[p], f"PY_COMPOUND_S{scope}", but))
        if f"REASSIGN_{p}" in named and (found := _ATTRIBUTE.match(line)):
            value = f'("self.{found[1]}" / ?= ?/ PY_ITEMS_{MAX_DEPTH}_S{scope})'
            rules.append(_statement(f"REASSIGN_{p}", levels[p], value, _not_text([line])))
    # blank lines: canonical form's are empty, one at a time. Measured: taught whole programs
    # wrote tabs, untaught ones 68-107 blank lines of spaces in a 1,024-token answer
    # (2026-12-04), and two blank lines after nearly every line (2026-12-05)
    # ... and only before a definition or the answer's end, as canonical form places them:
    # after a blank line the model wrote `def forward` one level too deep, where only an
    # inserted statement could stand, and looped in the name `defforward_pre_block_gate_...`
    # (4 and 3 of 12 whole programs of two default runs, 2026-12-05)
    if "APPLY" in named:
        taught = [literal(TAUGHT_APPLICATIONS[b].format(x=applies[0][1])) for b in INPUT_BLOCKS]
        rules.append(_statement("APPLY", levels[forward], " | ".join(taught)))
    spaced = {name for text, name in terms.items() if _DEFINES.match(text) or text == FULL_END}
    return right_linear(steps, terms, rules, r"/\n/", blanks=1, after_blank=spaced)


def _full_steps(
    lines: list[str],
    levels: list[int],
    lacks_imports: bool,
    scope_at: list[list[int]],
    read: set[str],
    forward: int,
) -> tuple[list[Step], dict[str, str], dict[Insertion, str]]:
    """The copy as a state machine: state (p, where, top, run, sites): before parent line
    p, `where` the copy stands (_SAME ...), an insertion may take levels floor[p]..top,
    `run` insertions in a row so far, `sites` places changed; `lacks_imports`: the parent
    lacks a seed import (IMPORTS may follow its own); `scope_at[p][level]`: the scope of
    names an insertion there reads (`scopes.insertion_scopes`); `read`: the attributes
    other methods of Net read (`scopes.read_attributes`); `forward`: Net.forward's first
    body line (APPLY). Also the literal terminals, and the insertion rules the steps name."""
    terms: dict[str, str] = {}
    insertions: dict[Insertion, str] = {}

    def term(literal: str) -> str:
        return terms.setdefault(literal, f"L{len(terms)}")

    def insertion(level: int, p: int, restores: bool) -> str:
        """Never a block opened as the next parent line opens it (a copy), nor the line
        just left out (no change)."""
        left_out = (lines[p - 1],) if restores else ()
        opening = (lines[p],) if p < n and lines[p].endswith(":") and levels[p] == level else ()
        key = (level, left_out, opening, scope_at[p][level])
        return insertions.setdefault(key, f"ins_{level}_{len(insertions)}")

    def state(p: int, where: int, top: int, run: int = 0, sites: int = 0) -> str:
        return f"c_{p}_{where}_{top + 1}_{run}_{sites}"

    n = len(lines)
    last_import = max((p for p, line in enumerate(lines) if _IMPORT.match(line)), default=-1)
    steps: list[Step] = [("start", term(FULL_HEAD), state(0, _SAME, 0))]
    # an insertion goes no shallower than the next line, and into the block before a line
    # that continues it (`else:`, `except ...:`); after the last line, down to the top level
    floor = [k + bool(_CONTINUES.match(line)) for line, k in zip(lines, levels, strict=True)]
    floor.append(0)
    in_class, in_net = class_bodies(lines, levels), in_net_class(lines, levels)
    for p, where, top, run, sites in itertools.product(
        range(n + 1),
        range(_APPLIED + 1),
        range(_NO_INSERT, max(levels) + 2),
        range(MAX_INSERTED + 1),
        range(MAX_SITES + 1),
    ):
        copying = where in (_SAME, _CHANGED)  # (states never reached are dropped later)
        src = state(p, where, top, run, sites)
        # a change that starts after a copied line opens a new site
        site = sites + 1 if copying else sites
        if site > MAX_SITES:
            site = -1
        inserted = _INSERTED if where in (_SAME, _CHANGED, _INSERTED) else _REPLACED
        if p == last_import + 1 and copying and site > 0 and lacks_imports:
            steps.append((src, "IMPORTS", state(p, _INSERTED, 0, 1, site)))
        # nothing is inserted at the top level, in a class body or outside `class Net`
        if p == forward and where in (_SAME, _CHANGED, _APPLIED) and run < len(INPUT_BLOCKS):
            steps.append((src, "APPLY", state(p, _APPLIED, levels[p], run + 1, sites)))
        inserts = run < MAX_INSERTED and site > 0 and where != _APPLIED
        for level in range(max(floor[p], 1), top + 1 if inserts else 0):
            if level in in_class[p] or not in_net[p]:
                continue
            restores = where in (_LEFT_OUT, _EMPTIED) and level == levels[p - 1]
            if where == _EMPTIED and not restores:
                continue
            rule = insertion(level, p, restores)
            steps.append((src, rule, state(p, inserted, level, run + 1, site)))
        if where == _EMPTIED:
            continue
        if p == n:
            if where != _SAME:
                steps.append((src, term(FULL_END), None))
            continue
        line = lines[p]
        opens = line.endswith(":")
        after = _NO_INSERT if line.lstrip().startswith("@") else levels[p] + opens
        kept = min(where, _CHANGED)
        steps.append((src, term(line + "\n"), state(p + 1, kept, after, 0, sites)))
        changeable = in_net[p] and levels[p] > 0  # a line of Net's body
        if site < 0 or where not in (_SAME, _CHANGED, _REPLACED) or not changeable:
            continue
        if (made := _ATTRIBUTE.match(line)) and made[1] in read:
            if run < MAX_INSERTED:
                steps.append(
                    (src, f"REASSIGN_{p}", state(p + 1, _REPLACED, levels[p], run + 1, site))
                )
        elif not opens and not _IMPORT.match(line):
            only = p > 0 and lines[p - 1].endswith(":") and floor[p + 1] < levels[p]
            left_out = _EMPTIED if only else _LEFT_OUT
            steps.append((src, "", state(p + 1, left_out, top, run, site)))
        if _rewritable(line):
            steps.append((src, f"OPEN_NOT_{p}", state(p + 1, _CHANGED, after, 0, site)))
    return steps, terms, insertions


def _rewritable(line: str) -> bool:
    """A line that opens a block and may be rewritten (as another such line over the same
    block): not a `def` or `class` line, whose names and signatures the contract and the
    rest of the program call."""
    return line.endswith(":") and not line.lstrip().startswith(("def ", "class ", "async def "))


def _not_text(lines: Iterable[str]) -> str:
    """Lexeme operands that refuse each of `lines` (their text after the indentation)."""
    return "".join(f" & ~{literal(line.lstrip(' '))}" for line in lines)


def _statement(name: str, level: int, kind: str, but: str = "") -> str:
    """A terminal of one inserted line at `level`: a Python statement of `kind` (PY_SIMPLE,
    or PY_COMPOUND: it opens an `if`/`for`/`while`/`with`/`try` block; see `pyline`, whose
    statements never start with a space), `but` further lexeme operands."""
    indent = f'"{_INDENT * level}" ' if level else ""
    return f'{name}: {indent}({kind}{but}) "\\n"'


def _insertions(
    needed: dict[Insertion, str], deepest: int, scopes: list[set[str]], modules: set[str]
) -> list[str]:
    """Rules and terminals of the insertions the steps name: a line that opens no block
    (STMT) or a block of one level (OPEN and up to MAX_INSERTED STMT lines), reading only
    the names of its scope (`modules` only through an attribute); none of them one of the
    insertion's excluded texts."""
    rules = scoped_line_terminals(scopes, modules)
    for k, s in sorted({(k + 1, s) for k, _, _, s in needed} | {(k, s) for k, _, _, s in needed}):
        if k > deepest:
            continue
        stmt = f"STMT_{k}_{s}"
        stmts = [" ".join([stmt] * i) for i in range(1, MAX_INSERTED + 1)]
        rules += [_statement(stmt, k, f"PY_SIMPLE_S{s}"), f"body_{k}_{s}: " + " | ".join(stmts)]
    for (k, left_out, opening, s), name in needed.items():
        mark = name.upper()
        rules.append(_statement(f"OPEN_{mark}", k, f"PY_COMPOUND_S{s}", _not_text(opening)))
        rules.append(_statement(f"STMT_{mark}", k, f"PY_SIMPLE_S{s}", _not_text(left_out)))
        rules.append(f"{name}: OPEN_{mark} body_{k + 1}_{s} | STMT_{mark}")
    return rules


def answer_grammar(mode: str, parent: str) -> tuple[str | None, str | None]:
    """The grammar a proposal of `mode` is sampled under, or None and why not (a parent
    beyond the engine's limits, or one the grammar cannot copy): the answer is then
    sampled freely and the reason recorded with the candidate."""
    try:
        return (full_grammar if mode == "full" else delta_grammar)(parent), None
    except GrammarUnsupported as exc:
        return None, f"unconstrained: {exc}"
