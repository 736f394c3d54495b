"""The delta codec: pull a unified diff or a full program out of LLM output, apply a diff to
its parent, write a diff between two programs, and turn rejections into retry feedback.

LLMs copy example hunk headers and mangle whitespace, so this codec trusts the hunk
*bodies*, not the headers: headers are recomputed from the bodies, and a hunk is located
by its context and removed lines (compared token by token, so spacing never matters, and
with blank lines ignored). A hunk that matches nowhere, or in more than one place, is an
error that quotes the nearest parent lines; nothing is ever skipped silently. When a hunk
matches with shifted indentation (the model dropped or added leading spaces), its added
lines are indented relative to the anchor line above them, as the parent indents it.
Opt-in fuzz (`patch(..., fuzz=N)`, AdmissionConfig.delta_fuzz) relaxes the placement as
`patch --fuzz` does: up to N context lines a hunk may match nothing, and a hunk matching
several places goes to the first inside `class Net`, then the first after the previous
hunk; each such placement comes back as a note, so it is recorded rather than silent.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from itertools import pairwise

from llmnas_dist.errors import CandidateRejected, ErrorClass, truncate
from llmnas_dist.program.source import parse_source

BASELINE_NAME = "baseline.py"
IMPROVED_NAME = "improved.py"
MAX_FEEDBACK_CHARS = 1500
QUOTE_LINES = 6

_DELTA_TAG = re.compile(r"<delta>(.*?)(?:</delta>|\Z)", re.S | re.I)
_NN_TAG = re.compile(r"<nn>(.*?)(?:</nn>|\Z)", re.S | re.I)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_HUNK_HEADER = re.compile(r"^@@.*?@@(.*)$")
_FILE_HEADER = re.compile(r"^(---|\+\+\+)( |$)")
_WORD_OR_SYMBOL = re.compile(r"\w+|[^\s\w]")
_PREAMBLE = re.compile(r"^(diff |index |new file|deleted file|similarity |rename )")


@dataclass(frozen=True)
class Hunk:
    """One hunk: ops are (kind, text) with kind ' ' (context), '-' (removed), '+' (added)."""

    ops: tuple[tuple[str, str], ...]
    number: int  # 1-based position in the delta, for messages

    @property
    def is_noop(self) -> bool:
        """Context lines only: the hunk changes nothing."""
        return all(kind == " " for kind, _ in self.ops)

    @property
    def old_len(self) -> int:
        return sum(1 for kind, _ in self.ops if kind != "+")

    @property
    def new_len(self) -> int:
        return sum(1 for kind, _ in self.ops if kind != "-")

    def header(self, old_start: int, new_start: int) -> str:
        """The `@@` line recomputed from the body (what the model's header should have been)."""
        return f"@@ -{old_start},{self.old_len} +{new_start},{self.new_len} @@"


# --- extraction ------------------------------------------------------------------


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def _looks_like_diff(text: str) -> bool:
    return any(_HUNK_HEADER.match(line) for line in text.splitlines())


def extract_delta(output: str) -> str:
    """The diff text from `<delta>` tags, a fenced diff block or a raw diff (NO_DELTA if none)."""
    tagged = _DELTA_TAG.search(output)
    if tagged:
        body = tagged.group(1)
        fenced = [b for _, b in _fenced_blocks(body) if _looks_like_diff(b)]
        body = fenced[0] if fenced else body
        if _looks_like_diff(body):
            return body
        raise CandidateRejected(ErrorClass.NO_DELTA, "the <delta> block holds no @@ hunk")
    for lang, body in _fenced_blocks(output):
        if lang in ("diff", "patch", "udiff", "") and _looks_like_diff(body):
            return body
    if _looks_like_diff(output):
        return output
    raise CandidateRejected(
        ErrorClass.NO_DELTA, "no <delta> block, fenced diff or unified diff with @@ hunks found"
    )


def extract_code(output: str) -> str:
    """The program from `<nn>` tags or a fenced python block (NO_CODE if none). Among several
    fenced blocks the first that defines `class Net` wins, else the longest."""
    tagged = _NN_TAG.search(output)
    if tagged:
        body = tagged.group(1)
        fenced = [b for lang, b in _fenced_blocks(body) if lang in ("python", "py", "")]
        body = fenced[0] if fenced else body
        if body.strip():
            return body.strip("\n") + "\n"
        raise CandidateRejected(ErrorClass.NO_CODE, "the <nn> block is empty")
    blocks = [b for lang, b in _fenced_blocks(output) if lang in ("python", "py", "python3", "")]
    if blocks:
        with_net = [b for b in blocks if "class Net" in b]
        return (with_net[0] if with_net else max(blocks, key=len)).strip("\n") + "\n"
    raise CandidateRejected(ErrorClass.NO_CODE, "no <nn> block or fenced python block found")


def drop_unfinished(output: str) -> tuple[str, str | None]:
    """A delta answer cut off by the token budget (a `<delta>` block with no `</delta>`)
    ends inside its last hunk. When finished hunks precede it, that hunk is dropped: a
    half-made edit with too little context to place would reject the finished ones too
    (12 of 15 cut-off answers in a bench were rejected as hunk_ambiguous). A lone hunk
    loses only its unfinished last line (a half-copied context line would not match, a
    half-written added line is not code). The note says what was dropped; other answers
    pass as they are, without a note."""
    low = output.lower()
    if "<delta>" not in low or "</delta>" in low:
        return output, None
    lines = output.split("\n")
    headers = [i for i, line in enumerate(lines) if line.startswith("@@")]
    why = "answer cut off by max_new_tokens (no </delta>)"
    if len(headers) >= 2:
        dropped = len([line for line in lines[headers[-1] + 1 :] if line])
        kept = "\n".join(lines[: headers[-1]]) + "\n"
        return (
            kept,
            f"{why}: its unfinished last hunk ({dropped} lines after its header) was dropped",
        )
    if output.endswith("\n"):
        return output, why
    kept, _, last = output.rpartition("\n")
    return kept + "\n", f"{why}: its unfinished last line {truncate(last, 80)!r} was dropped"


# --- parsing ---------------------------------------------------------------------


def without_hunk(diff: str, number: int) -> str | None:
    """`diff` with its hunk `number` (1-based, in the order its `@@` headers are written)
    left out; None where it has no such hunk or no other."""
    lines = diff.split("\n")
    headers = [n for n, line in enumerate(lines) if line.startswith("@@")]
    if len(headers) < 2 or not 1 <= number <= len(headers):
        return None
    start = headers[number - 1]
    end = headers[number] if number < len(headers) else len(lines)
    return "\n".join(lines[:start] + lines[end:])


def parse_hunks(diff: str, keep_noop: bool = False) -> list[Hunk]:
    """Split a diff into hunks. Header line numbers are ignored; a body line without a
    diff prefix ends the hunk, and is an error if more body lines follow it. A hunk of
    context lines only is an error, unless `keep_noop` (the caller skips it)."""
    hunks: list[Hunk] = []
    ops: list[tuple[str, str]] | None = None
    stray: tuple[int, str] | None = None  # first unprefixed line after a hunk body

    def close() -> None:
        if ops is None:
            return
        while ops and ops[-1] == (" ", ""):  # trailing blank lines are separators
            ops.pop()
        hunk = Hunk(tuple(ops), len(hunks) + 1)
        if hunk.is_noop and not keep_noop:
            raise CandidateRejected(
                ErrorClass.BAD_HUNK, f"hunk {hunk.number} changes nothing (no + or - lines)"
            )
        hunks.append(hunk)

    for lineno, line in enumerate(diff.splitlines(), 1):
        if _HUNK_HEADER.match(line):
            close()
            ops, stray = [], None
            continue
        if ops is None or _PREAMBLE.match(line):
            continue
        if _FILE_HEADER.match(line) and not ops:
            continue
        if _FILE_HEADER.match(line):  # a second file's headers: this hunk ends
            close()
            ops, stray = None, None
            continue
        if line.startswith("\\"):  # "\ No newline at end of file"
            continue
        prefix, body = (line[:1], line[1:]) if line else (" ", "")
        if prefix in " +-" and stray is None:
            ops.append((prefix, body))
        elif prefix in "+-" and stray is not None:
            raise CandidateRejected(
                ErrorClass.BAD_HUNK,
                f"hunk {len(hunks) + 1}: line {stray[0]} of the delta has no diff prefix "
                f"(' ', '+' or '-'): {stray[1][:120]!r}",
            )
        elif stray is None and prefix not in " +-":
            stray = (lineno, line)
    close()
    if not hunks:
        raise CandidateRejected(ErrorClass.BAD_HUNK, "the delta holds no hunk with a body")
    return hunks


# --- applying --------------------------------------------------------------------


def anchor_key(line: str) -> str:
    """Whitespace-free identity of a line: `padding = 1 ,` matches `padding=1,`. The one
    normalisation by which hunk lines are matched to parent lines (the delta grammar uses it
    too, so what it calls unique is what the codec finds once)."""
    return " ".join(_WORD_OR_SYMBOL.findall(line))


def is_blank(line: str) -> bool:
    """A line the codec ignores when placing a hunk (blank or whitespace only)."""
    return not line.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _quote(lines: list[str], start: int, count: int) -> str:
    stop = min(len(lines), start + count)
    return "\n".join(f"{i + 1:4d}| {lines[i]}" for i in range(max(0, start), stop))


def _anchors(hunk: Hunk) -> list[str]:
    return [text for kind, text in hunk.ops if kind != "+" and not is_blank(text)]


@dataclass(frozen=True)
class _Placement:
    """Where a hunk's anchors go: `start` indexes the parent's non-blank lines and `kept`
    says, per anchor, whether it matched (False: a context line ignored under fuzz)."""

    start: int
    kept: tuple[bool, ...]

    @property
    def dropped(self) -> int:
        return self.kept.count(False)


def _placements(
    anchors: list[str], kinds: list[str], parent_nb: list[str], fuzz: int
) -> list[_Placement]:
    """Every start where the anchors match consecutive parent lines, up to `fuzz` context
    lines ignored (removed lines must always match: deleting a guessed line is worse than
    rejecting the hunk); at least one anchor must match."""
    found = []
    for s in range(len(parent_nb)):
        p, kept, dropped = s, [], 0
        for anchor, kind in zip(anchors, kinds, strict=True):
            if p < len(parent_nb) and parent_nb[p] == anchor:
                kept.append(True)
                p += 1
            elif kind == " " and dropped < fuzz:
                kept.append(False)
                dropped += 1
            else:
                break
        else:
            if any(kept):
                found.append(_Placement(s, tuple(kept)))
    return found


def _not_found(
    hunk: Hunk, anchors: list[str], lines: list[str], nb: list[int]
) -> CandidateRejected:
    """Quote the first hunk line that matches nowhere and the parent lines nearest to it."""
    raw = _anchors(hunk)
    norm_nb = [anchor_key(lines[i]) for i in nb]
    best_s, best_len = 0, -1
    for s in range(len(nb)):  # longest run of hunk lines matching from each position
        run = 0
        while run < len(anchors) and s + run < len(nb) and norm_nb[s + run] == anchors[run]:
            run += 1
        if run > best_len:
            best_s, best_len = s, run
    if best_len > 0:
        bad = raw[min(best_len, len(raw) - 1)].strip()
        near = nb[min(best_s + best_len, len(nb) - 1)]
    else:
        bad = raw[0].strip()
        close = difflib.get_close_matches(anchors[0], norm_nb, n=1, cutoff=0.0)
        near = nb[norm_nb.index(close[0])] if close else 0
    return CandidateRejected(
        ErrorClass.HUNK_NOT_FOUND,
        f"hunk {hunk.number} does not match the parent: its line {bad[:160]!r} is not "
        f"where the hunk's context puts it. Nearest parent lines:\n"
        + _quote(lines, near - QUOTE_LINES // 2, QUOTE_LINES),
    )


def _ambiguous(hunk: Hunk, starts: list[int], lines: list[str], nb: list[int]) -> CandidateRejected:
    quoted = "\n...\n".join(_quote(lines, nb[s], 2) for s in starts[:3])
    return CandidateRejected(
        ErrorClass.HUNK_AMBIGUOUS,
        f"hunk {hunk.number} matches the parent in {len(starts)} places (lines "
        f"{', '.join(str(nb[s] + 1) for s in starts[:6])}); add context lines that make it "
        f"unique. The places:\n{quoted}",
    )


def _shift(text: str, offset: int) -> str:
    if offset > 0:
        return " " * offset + text
    if offset < 0 and text[:-offset].strip() == "":
        return text[-offset:]
    return text


def _net_lines(lines: list[str]) -> range:
    """The 0-based line span of `class Net` (the contract class, which a proposal most
    often means to change), or an empty range if the text does not parse or has none."""
    try:
        tree = parse_source("\n".join(lines))
    except (SyntaxError, ValueError):
        return range(0)
    nets = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"]
    return range(nets[0].lineno - 1, nets[0].end_lineno or nets[0].lineno) if nets else range(0)


def _choose(
    hunk: Hunk, placements: list[_Placement], after: int, lines: list[str], nb: list[int], fuzz: int
) -> tuple[_Placement, str | None]:
    """The placement with the fewest ignored context lines; under fuzz, ties go to one
    inside `class Net`, then to the first at or after the previous hunk (as `patch` does),
    and the choice is described."""
    least = min(p.dropped for p in placements)
    best = [p for p in placements if p.dropped == least]
    if len(best) > 1 and fuzz == 0:
        raise _ambiguous(hunk, [p.start for p in best], lines, nb)
    net = _net_lines(lines) if len(best) > 1 else range(0)
    chosen = min(best, key=lambda p: (nb[p.start] not in net, nb[p.start] < after, p.start))
    notes = []
    if len(best) > 1:
        notes.append(f"placed at line {nb[chosen.start] + 1} of {len(best)} matching places")
    if least:
        notes.append(f"ignored {least} context line(s) that match no parent line there")
    return chosen, f"hunk {hunk.number}: {'; '.join(notes)}" if notes else None


@dataclass(frozen=True)
class Edit:
    """A hunk placed in the parent: parent lines [first, stop) become `lines`."""

    hunk: Hunk
    first: int
    stop: int
    lines: tuple[str, ...]
    note: str | None = None


def locate_hunk(lines: list[str], hunk: Hunk, fuzz: int = 0, after: int = 0) -> Edit:
    """Place one hunk in the parent's lines and compute what replaces them; raises on no
    match, or (fuzz 0) several. `fuzz` context lines per hunk may fail to match; `after` is
    where the previous hunk ended (fuzz prefers places from there on)."""
    anchor_ops = [(kind, text) for kind, text in hunk.ops if kind != "+" and not is_blank(text)]
    if not anchor_ops:
        raise CandidateRejected(
            ErrorClass.BAD_HUNK,
            f"hunk {hunk.number} has no context or removed lines to locate it in the parent",
        )
    anchors = [anchor_key(text) for _, text in anchor_ops]
    nb = [i for i, line in enumerate(lines) if not is_blank(line)]
    placements = _placements(
        anchors, [kind for kind, _ in anchor_ops], [anchor_key(lines[i]) for i in nb], fuzz
    )
    if not placements:
        raise _not_found(hunk, anchors, lines, nb)
    placement, note = _choose(hunk, placements, after, lines, nb, fuzz)
    # parent line of each anchor (None: a context line ignored under fuzz)
    matched: list[int | None] = []
    p = placement.start
    for kept in placement.kept:
        matched.append(nb[p] if kept else None)
        p += kept
    # an added line keeps its indentation relative to the anchor above it (the first
    # matched anchor for lines above all anchors), so a hunk whose indentation the model
    # shifted or flattened still produces the parent's indentation
    offsets = [
        None if m is None else _indent(lines[m]) - _indent(text)
        for m, (_, text) in zip(matched, anchor_ops, strict=True)
    ]
    offset = next(o for o in offsets if o is not None)
    first = next(m for m in matched if m is not None)
    cursor, j = first, 0
    out: list[str] = []
    for kind, text in hunk.ops:
        if kind == "+":
            out.append(_shift(text, offset) if not is_blank(text) else "")
        elif not is_blank(text):  # an anchor: keep the parent's blank lines before it
            target, j = matched[j], j + 1
            if target is None:  # an ignored context line: nothing in the parent to keep
                continue
            out.extend(lines[cursor:target])
            offset = offsets[j - 1] or 0
            if kind == " ":
                out.append(lines[target])
            cursor = target + 1
        elif cursor < len(lines) and is_blank(lines[cursor]) and j > 0:
            # a blank context/removed line that the parent also has here
            if kind == " ":
                out.append(lines[cursor])
            cursor += 1
    return Edit(hunk, first, cursor, tuple(out), note)


def _splice(lines: list[str], edits: list[Edit]) -> list[str]:
    """The parent's lines with every edit made; edits may come in any order but must not
    share a parent line (a unified diff's hunks each rewrite their own part of the file)."""
    edits = sorted(edits, key=lambda e: e.first)
    for a, b in pairwise(edits):
        if b.first < a.stop:
            raise CandidateRejected(
                ErrorClass.BAD_HUNK,
                f"hunks {a.hunk.number} and {b.hunk.number} both change parent line "
                f"{b.first + 1}: each hunk must cover its own lines",
            )
    out, cursor = [], 0
    for e in edits:
        out += lines[cursor : e.first] + list(e.lines)
        cursor = e.stop
    return out + lines[cursor:]


@dataclass(frozen=True)
class Patched:
    """A delta applied: the child program and what fuzz did to place its hunks."""

    code: str
    notes: tuple[str, ...] = ()


def patch(parent: str, diff: str, fuzz: int = 0) -> Patched:
    """Apply every hunk of `diff` to `parent`. Each hunk is located in the parent as given
    (as `patch` and `git apply` read a unified diff), never in lines an earlier hunk added,
    so an added line cannot make a later hunk ambiguous; hunks may not overlap. With
    `fuzz` > 0, up to that many context lines per hunk may match nothing, a hunk that
    matches several places is placed as `_choose` says, and a hunk of context lines only
    (a no-op) is skipped; each is noted, never silent."""
    lines, after, notes, edits = parent.splitlines(), 0, [], []
    hunks = parse_hunks(diff, keep_noop=fuzz > 0)
    if all(hunk.is_noop for hunk in hunks):
        raise CandidateRejected(ErrorClass.BAD_HUNK, "no hunk of the delta changes anything")
    for hunk in hunks:
        if hunk.is_noop:
            notes.append(f"hunk {hunk.number}: context lines only, skipped")
            continue
        edit = locate_hunk(lines, hunk, fuzz, after)
        edits.append(edit)
        after = edit.stop
        if edit.note:
            notes.append(edit.note)
    return Patched("\n".join(_splice(lines, edits)) + "\n", tuple(notes))


def apply_delta(parent: str, diff: str, fuzz: int = 0) -> str:
    """The child program of `patch`."""
    return patch(parent, diff, fuzz).code


def apply_output(parent: str, output: str, fuzz: int = 0) -> str:
    """Extract the delta from raw LLM output and apply it to the parent."""
    return patch(parent, extract_delta(output), fuzz).code


def make_delta(parent: str, child: str, context: int = 3) -> str:
    """A unified diff parent -> child with correct headers (training data, normalisation)."""
    return "".join(
        difflib.unified_diff(
            parent.splitlines(keepends=True),
            child.splitlines(keepends=True),
            fromfile=BASELINE_NAME,
            tofile=IMPROVED_NAME,
            n=context,
        )
    )


# --- feedback ----------------------------------------------------------------------

_ADVICE = {
    ErrorClass.NO_DELTA: "Answer with a unified diff inside <delta>...</delta>: '--- baseline.py', "
    "'+++ improved.py', then @@ hunks.",
    ErrorClass.NO_CODE: "Answer with the complete program inside <nn>...</nn>.",
    ErrorClass.BAD_HUNK: "Every hunk line must start with ' ' (context), '-' (removed) or '+' "
    "(added), and each hunk must change something.",
    ErrorClass.HUNK_NOT_FOUND: "Copy the context and '-' lines exactly from the parent program "
    "shown above.",
    ErrorClass.HUNK_AMBIGUOUS: "Include more unchanged context lines so the hunk matches "
    "one place.",
    ErrorClass.SYNTAX_ERROR: "The patched program is not valid Python; check indentation and "
    "brackets.",
    ErrorClass.CONTRACT_VIOLATION: "Keep `class Net(nn.Module)` with `__init__(self, in_shape, "
    "out_shape, prm, device)` and `forward(self, x)`.",
    ErrorClass.FORBIDDEN_IMPORT: "Import only torch, torch.nn, torch.nn.functional, math, typing, "
    "collections, functools and dataclasses.",
    ErrorClass.FORBIDDEN_CALL: "Use only layer code: no eval/exec/open, no file, process or "
    "network access, no dunder attributes.",
    ErrorClass.TOO_LARGE: "Make the model smaller (fewer channels or layers).",
    ErrorClass.BUILD_FAILED: "The model failed to build or run a forward pass; check layer "
    "sizes and channel counts.",
    ErrorClass.SHAPE_MISMATCH: "forward must return a (batch, num_classes) tensor; "
    "num_classes is out_shape[0].",
    ErrorClass.NAN_OUTPUT: "The output contained NaN or inf; check normalisation and divisions.",
    ErrorClass.TIMEOUT: "The model is too slow; reduce depth, width or resolution.",
    ErrorClass.OUT_OF_MEMORY: "The model used too much memory; reduce width or resolution early.",
    ErrorClass.CRASHED: "The program crashed the process; use only standard layers.",
    ErrorClass.DUPLICATE: "This program already exists; make a real architectural change.",
    ErrorClass.NOT_NOVEL: "This is almost the same as an existing program; make a larger "
    "structural change.",
}


def feedback_for(rejection: CandidateRejected) -> str:
    """Feedback text for a retry prompt: what failed, the (bounded) message, and advice.
    Accepts anything with `error_class` and `message` (a CandidateRejected or a verdict)."""
    error_class = ErrorClass(rejection.error_class)
    head = f"Your previous answer was rejected ({error_class.value})."
    advice = _ADVICE.get(error_class, "")
    # the advice survives; only the program-controlled message is cut
    room = max(100, MAX_FEEDBACK_CHARS - len(head) - len(advice) - 2)
    return f"{head}\n{truncate(rejection.message, room)}\n{advice}".strip()
