"""Answer grammars for constrained decoding: a delta that cannot miscopy its parent.

`delta_grammar(parent)` writes, in Lark syntax (read by llguidance and xgrammar), the
language of delta answers the codec applies to that parent: `<delta>`, the two file
headers, one or more hunks, `</delta>`. Inside a hunk every context (` `) or removed (`-`)
line is the parent's next non-blank line, copied exactly and in order; added (`+`) lines
are free text (no line break, no `</`, no backtick, not starting with `+`, so the codec's
extraction and hunk parsing read them back as added lines); blank lines are optional
(the codec ignores them). A hunk may end only once it has changed something and its
anchor lines (context and removed, blank ones aside) occur exactly once in the parent,
judged with the codec's own `anchor_key`; the next hunk starts after it. The grammar is a
right-linear state machine over parent positions:

  next_p     between hunks, the next anchor is parent line >= p: a hunk header or the end
  pre_p_c    a hunk opened, only added/blank lines so far (c: something was added)
  seek_p_c   the hunk's first anchor is parent line p or a later one
  in_s_p_c   first anchor s, next anchor p, anchors s..p-1 not yet unique in the parent
  free_p_c   next anchor p, the anchors so far are unique: the hunk may end here if c

Starting positions whose every extension stays ambiguous are left out, so every prefix
the grammar allows can still be completed into an answer that applies.

`FULL_GRAMMAR` frames a full-mode answer: `<nn>`, then program text without `</`, then
`</nn>` (special tokens are kept out by the engine).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import partial

from llmnas_dist.delta import BASELINE_NAME, IMPROVED_NAME, anchor_key, is_blank

DELTA_HEAD = f"<delta>\n--- {BASELINE_NAME}\n+++ {IMPROVED_NAME}\n"
DELTA_END = "</delta>"
ANSWER_ENDS = (DELTA_END, "</nn>")  # generation stops at either
# Above this many non-blank parent lines the grammar is not built (generation falls back to
# an unconstrained answer with the reason): the Earley row at a hunk's start grows ~18
# items per line (constrain.LIMITS allows 20,000). vLLM's matchers keep llguidance's
# default of 2,000 items per row, which holds up to ~108 lines: its limit is lower.
MAX_PARENT_LINES = 400
VLLM_MAX_PARENT_LINES = 100

# Characters splitlines() breaks a line at: an added line must hold none of them, or the
# codec would read one added line as several.
_BREAKS = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"
# Text without `</` (it could end the <delta> block early) and without backticks (a fence
# inside the block would be read as the diff). A run of `<` must be followed by a character
# other than `/`, so the text never ends with `<` and the lexer knows where it stops.
_TEXT = rf"([^{_BREAKS}`<]|<+[^{_BREAKS}`<\/])*"
_ADDED = rf"/\+(([^{_BREAKS}`<+]|<+[^{_BREAKS}`<\/]){_TEXT})?\n/"
_HEADER = r"/@@( -[0-9]{1,5}(,[0-9]{1,5})? \+[0-9]{1,5}(,[0-9]{1,5})?)? @@\n/"
# Up to two blank lines before any line of a hunk (the codec ignores them; the bound keeps
# a sampler from looping on blank lines). Every line terminal starts with GAP, so blank
# lines cost the parser nothing: with `BLANK? BLANK?` as symbols the Earley row at a hunk's
# start grew fourfold.
_GAP = r"/(( [ \t]*|-[ \t]*|)\n){0,2}/"
FULL_GRAMMAR = 'start: "<nn>\\n" CODE\nCODE: /([^<`]|<+[^<`\\/])*<\\/nn>/\n'


class GrammarUnsupported(ValueError):
    """This parent gets no delta grammar; the message says why (the answer is then
    sampled unconstrained and the codec judges it as before)."""


def unique_lengths(keys: list[str]) -> list[int | None]:
    """Per start s: the fewest consecutive keys from s that occur exactly once in `keys`
    (None when even keys[s:] occurs elsewhere)."""
    n = len(keys)
    out: list[int | None] = []
    for s in range(n):
        found = None
        for length in range(1, n - s + 1):
            window = keys[s : s + length]
            hits = sum(1 for t in range(n - length + 1) if keys[t : t + length] == window)
            if hits == 1:
                found = length
                break
            if hits == 0:  # cannot happen (s itself matches); guards the loop's meaning
                break
        out.append(found)
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
            f"the parent has {len(anchors)} non-blank lines, above this engine's grammar "
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
    return _left_linear(steps, terms)


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
    steps.append(("start", "HEAD HEADER", "pre_0_0"))
    for p in range(m + 1):
        steps.append((f"next_{p}", f"{term(DELTA_END)}", None))
        steps.append((f"next_{p}", "HEADER", f"pre_{p}_0"))
        steps.append((f"free_{p}_1", "", f"next_{p}"))
        for c in (0, 1):
            steps.append((f"pre_{p}_{c}", "ADDED", f"pre_{p}_1"))
            steps.append((f"pre_{p}_{c}", "", f"seek_{p}_{c}"))
            steps.append((f"seek_{p}_{c}", "", f"seek_{p + 1}_{c}"))
            steps.append((f"free_{p}_{c}", "ADDED", f"free_{p}_1"))
            if p < m:
                copy(f"free_{p}_{c}", p, partial(_free, p + 1), c)
            if p in startable:
                copy(f"seek_{p}_{c}", p, after(p, p), c)
    for s in startable:
        for p in range(s + 1, s + (need[s] or 0)):
            for c in (0, 1):
                steps.append((f"in_{s}_{p}_{c}", "ADDED", f"in_{s}_{p}_1"))
                copy(f"in_{s}_{p}_{c}", p, after(s, p), c)
    return steps, terms


def _free(p: int, c: int) -> str:
    return f"free_{p}_{c}"


def _left_linear(steps: list[Step], terms: dict[str, str]) -> str:
    """Lark text of the machine, written left-recursively (`to_B: to_A terminals`): an
    Earley parser keeps a right-recursive grammar's whole derivation in every row (llguidance
    stopped at 2,000 items on a 250-line parent), a left-recursive one stays flat. Only
    states that are reachable and can still finish are written."""
    useful = _forward(steps, "start") & _backward(steps)
    rules: dict[str, list[str]] = {"start": []}
    for src, syms, dst in steps:
        if src not in useful or (dst is not None and dst not in useful):
            continue
        head = "" if src == "start" else f"to_{src}"
        rules.setdefault("start" if dst is None else f"to_{dst}", []).append(
            f"{head} {syms}".strip()
        )
    lines = [f"{name}: " + " | ".join(alts) for name, alts in rules.items()]
    lines += [f"{name}: GAP {_literal(text)}" for text, name in terms.items() if name[0] == "L"]
    lines += [f"{name}: {_literal(text)}" for text, name in terms.items() if name[0] != "L"]
    lines += [f"ADDED: GAP {_ADDED}", f"HEADER: GAP {_HEADER}", f"GAP: {_GAP}"]
    return "\n".join(lines) + "\n"


def _forward(steps: list[Step], root: str) -> set[str]:
    seen, todo = {root}, [root]
    while todo:
        state = todo.pop()
        for src, _, dst in steps:
            if src == state and dst is not None and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def _backward(steps: list[Step]) -> set[str]:
    """States from which an accepting transition can be reached."""
    live = {src for src, _, dst in steps if dst is None}
    grown = True
    while grown:
        before = len(live)
        live |= {src for src, _, dst in steps if dst in live}
        grown = len(live) > before
    return live


def grammar_size(grammar: str) -> Counter[str]:
    """Rules and terminals in a grammar text (for benches and logs)."""
    return Counter("terminal" if line[:1].isupper() else "rule" for line in grammar.splitlines())


def answer_grammar(mode: str, parent: str, backend: str) -> tuple[str | None, str | None]:
    """The grammar a proposal of `mode` is sampled under, or None and why not (a parent
    beyond the engine's limits, or one the grammar cannot copy): the answer is then
    sampled freely and the reason recorded with the candidate."""
    if mode == "full":
        return FULL_GRAMMAR, None
    limit = VLLM_MAX_PARENT_LINES if backend == "vllm" else MAX_PARENT_LINES
    try:
        return delta_grammar(parent, limit), None
    except GrammarUnsupported as exc:
        return None, f"unconstrained: {exc}"


def decoding_of(constrained: bool | None) -> str:
    """How a candidate's answer was sampled, as the CLI and reports name it."""
    if constrained is None:
        return "unrecorded"  # archived before constrained decoding was kept
    return "constrained" if constrained else "unconstrained"
