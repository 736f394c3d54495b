"""Verdicts on an answer still being written: a whole program whose text so far already
holds a syntax error that nothing the model writes next can mend, and the line faults that
decoding draws again (`LineJudge`); an answer caught in a loop is `admission.loops`'.

Decoding such an answer to its token limit buys nothing: admission rejects it as
`syntax_error` at the same line. In the default run of 2026-12-03 (2-core AMD) two of the
four whole programs of cycle 1 broke at lines 22 and 29 and were decoded on to the
1,024-token limit, while the batch's other answers ended at 653 and 728 tokens: a batch
decodes until its longest row ends, so those two rows alone held the batch for about 300
more steps.

The verdict is Python's own parser in the interactive interpreter's mode
(`PyCF_ALLOW_INCOMPLETE_INPUT`, as `codeop` uses it): a prefix that only ends too early
(an open bracket, string or block) is "incomplete input", never an error. Only whole lines
are judged, and only an error with two more whole lines after it: the parser read past it,
so the text written after the prefix cannot change it. An open bracket hides the errors
inside it, and it was the commonest runaway (5 of the 6 answers of bench/generation_bench.py
early-stop that ran to the token limit ended with "'(' was never closed"): such a prefix is
parsed again with its brackets closed at its end.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from dataclasses import dataclass

from llmnas_dist.admission.build import SAME_FUNCTION, BuildReport
from llmnas_dist.admission.calls import misfit_calls
from llmnas_dist.admission.delta import apply_output, extract_code
from llmnas_dist.admission.finished import AnswerTarget, BuildFault, line_key
from llmnas_dist.admission.reach import unreachable_statements
from llmnas_dist.admission.scopes import (
    made_input_blocks,
    misapplied_blocks,
    remade_blocks,
    unapplied_blocks,
)
from llmnas_dist.admission.unbound import function_locals, unbound_reads, unmade_attributes
from llmnas_dist.admission.unpacks import misfit_unpacks
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.program.source import parse_source

ALLOW_INCOMPLETE_INPUT = 0x4000  # CPython's PyCF_ALLOW_INCOMPLETE_INPUT (codeop.py)
ONLY_AST = 0x400  # ast.PyCF_ONLY_AST: parse, never compile
INCOMPLETE = "incomplete input"
NEVER_CLOSED = "was never closed"  # names the open bracket, not where parsing failed
LINES_PAST_ERROR = 2  # whole lines the parser must have read after the error
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_OPEN_NN = re.compile(r"<nn>", re.I)
_OPEN_DELTA = re.compile(r"<delta>", re.I)
_FENCE = re.compile(r"\A[ \t]*```[a-zA-Z0-9]*[ \t]*\n")
_END_TAG = re.compile(r"</(delta|nn)>\s*\Z", re.I)
# a delta's added line that has begun to make an attribute of `self` (`self.X = ` and the
# character after the `=`, which rules out `==`): its `line_key` is already the attribute
_MAKES_ATTRIBUTE = re.compile(r"\+\s*self\.(\w+)\s*=[^=]")
END_KINDS = ("novelty", "build")  # the faults of a finished answer (`LineJudge.end_fault`)
# a changed line at least this alike to a parent line (`_alike`) was changed from it; less
# alike, it was inserted. `channels, height, width = in_shape` against the parent's
# `... = in_shape[-3:]` is 0.93; a block's line against the line it was inserted before, under 0.4
ALIKE_LINES = 0.6


def settled_syntax_error(answer: str) -> str | None:
    """'line N: message' when the program of a whole-program answer still being written
    (after its `<nn>`, before `</nn>`) already has a syntax error the rest cannot mend; None
    otherwise (no `<nn>` yet, a delta, an ended answer, valid or merely unfinished code)."""
    opened = _OPEN_NN.search(answer)
    if opened is None or "</" in answer[opened.end() :]:
        return None  # no program yet, or its end was written: admission judges it whole
    body = _body(answer, opened.end())
    if "```" in body:
        return None  # a closing fence: the program's end was written
    lines = body[: body.rfind("\n") + 1]  # whole lines only
    error = _parse_error(lines)
    if error is not None and (error.msg == INCOMPLETE or NEVER_CLOSED in error.msg):
        # an open bracket hides the errors inside it ("incomplete input"), or is named
        # instead of where the parser failed: close it where the text ends, parse again
        closers = _closers(lines)
        error = _parse_error(lines + closers + "\n") if closers else None
    if error is None or error.msg == INCOMPLETE or NEVER_CLOSED in error.msg:
        return None
    if not error.lineno or lines.count("\n") - error.lineno < LINES_PAST_ERROR:
        return None  # the lines after it may still mend it
    return f"line {error.lineno}: {error.msg}"


@dataclass(frozen=True)
class LineFault:
    """A fault on one line of an answer being written: `line` counts the answer's lines from
    1, `kind` is 'syntax', 'name' or 'attribute' (`admission.unbound`), 'call'
    (`admission.calls`), 'applied' (a taught block applied other than as taught,
    `admission.scopes.misapplied_blocks`), 'unapplied' (a whole program's forward goes on
    without applying a taught input block its `__init__` made,
    `admission.scopes.unapplied_blocks`), 'remade' (a taught block made again,
    `admission.scopes.remade_blocks`), 'unpack' (`in_shape` unpacked into a number of
    names it does not hold, `admission.unpacks`), 'unreachable' (a statement after one that
    leaves its body, `admission.reach`), 'doubled' (a delta's added line that the
    context line after it copies from the parent: the statement runs twice), 'build' (the
    finished program did not build), 'novelty' (it is a near-copy of an archived program
    near its parent) or 'repeat' (a delta's added line that a near-copy wrote before, an
    edit already made near the parent), `why` says what."""

    line: int
    kind: str
    why: str


class LineJudge:
    """Judges a whole-program answer each time a line of it ends, so that decoding can draw
    that line again (generation/lookup.py): a syntax error on a line written since the last
    verdict (Python's parser in the interactive mode, as `settled_syntax_error`: a line
    inside an open bracket or a block header waits for the line that completes it), or, on
    such a line, a read of a name not bound there yet or of an attribute no line makes
    (`admission.unbound`), or a call whose arguments do not fit its callee
    (`admission.calls`), judged once the text so far parses as a whole. `keep` accepts a
    fault (no more redraws for it).

    Given the `parent` the answer edits, a name the parent's functions bind counts as a
    function local (a whole program that reads its parent's `dropout` before the line that
    binds it), and a delta is judged too, at each line's end, by the faults of the program
    it makes that the program it made before did not have (`program_faults`), charged to
    its latest changed line (a block header waits for its body's first line, a removed
    line for what replaces it).

    Given a `target`, a finished answer (its end tag written) is compared with its parent
    and built in the sandbox as admission will compare and build it (`end_fault`)."""

    def __init__(self, parent: str | None = None, target: AnswerTarget | None = None) -> None:
        self._target = target
        # the parent's build, made on first need, once (None after it: the sandbox failed)
        self._parent_report: BuildReport | BuildFault | None = None
        self._parent_tried = False
        self._parsed = 0  # answer lines of the last text that parsed whole
        self._kept = 0  # answer line of the last fault kept
        self._parent = parent
        self._parent_locals: frozenset[str] = frozenset()
        self._parent_blocks: frozenset[str] = frozenset()  # its taught input blocks
        # a delta's answer lines at which it applied -> the faults of the program it made
        self._made: dict[int, frozenset[tuple[str, str]]] = {}
        self._repeats: set[str] = set()  # added lines (`line_key`) a near-copy wrote
        if parent is not None:
            try:
                tree = parse_source(parent)
                self._parent_locals = frozenset(function_locals(tree))
                self._parent_blocks = made_input_blocks(tree)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self._parent = None  # not Python: nothing to judge a delta against

    def fault(self, answer: str) -> LineFault | None:
        if self._parent is not None and _OPEN_DELTA.search(answer):
            return self._delta_fault(answer, self._parent)
        opened = _OPEN_NN.search(answer)
        if opened is None or "</" in answer[opened.end() :]:
            return None
        body = _body(answer, opened.end())
        if "```" in body:
            return None
        offset = answer.count("\n", 0, len(answer) - len(body))  # answer lines before it
        lines = body[: body.rfind("\n") + 1]
        error = _parse_error(lines)
        if error is not None and error.msg != INCOMPLETE and NEVER_CLOSED not in error.msg:
            line = (error.lineno or 1) + offset
            return LineFault(line, "syntax", error.msg) if line > self._kept else None
        if error is not None:
            return None  # a bracket or a block still open: its lines are judged when it closes
        try:
            tree = parse_source(lines)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None  # a block header without its body yet
        first, self._parsed = self._parsed - offset + 1, lines.count("\n") + offset
        compiled = _compile_error(tree)  # the compiler's own (a keyword given twice)
        if compiled is not None and (compiled.lineno or 0) >= first:
            return LineFault((compiled.lineno or 0) + offset, "syntax", compiled.msg)
        unapplied = unapplied_blocks(tree, first, self._parent_blocks)
        faults = [
            LineFault(line + offset, kind, why)
            for line, kind, why in [
                *_meaning_faults(tree, first, self._parent_locals),
                *((line, "unapplied", why) for line, why in unapplied),
            ]
            if line + offset > self._kept
        ]
        return min(faults, key=lambda f: f.line) if faults else None

    def _delta_fault(self, answer: str, parent: str) -> LineFault | None:
        """A delta's fault: the faults of the program it makes now that the program it made
        at its last line that applied did not have, charged to its latest added or removed
        line (a hunk applies only once its anchor lines are unique, often a few context
        lines after what it changed). A removed line is judged with what follows it: a
        line replaced (`-` then `+`) is missing only in between."""
        if "</delta>" in answer.lower():
            return None
        lines = answer[: answer.rfind("\n") + 1].split("\n")[:-1]
        if not lines:
            return None
        if (
            lines[-1].startswith("+")
            and len(lines) > self._kept
            and line_key(lines[-1][1:]) in self._repeats
        ):
            return LineFault(len(lines), "repeat", "an edit already made near the parent")
        if _doubled(lines) and len(lines) - 1 > self._kept:
            why = f"`{lines[-1][1:].strip()}` is added, then copied from the parent after it"
            return LineFault(len(lines) - 1, "doubled", why)
        if _changes(lines[-1]) and lines[-1].rstrip().endswith(":"):
            return None  # a block header: judged with its body's first line
        if lines[-1].startswith("-") and _changes(lines[-1]):
            return None  # a removed line: what replaces it may follow
        faults = _delta_faults(parent, "\n".join(lines) + "\n", self._parent_locals)
        if faults is None:
            return None
        before = [n for n in self._made if n < len(lines)]
        base = self._made[max(before)] if before else self._base_faults()
        self._made[len(lines)] = faults
        changed = [n + 1 for n, line in enumerate(lines) if _changes(line)]
        new = sorted(faults - base)
        if not new or not changed or changed[-1] <= self._kept:
            return None
        kind, why = new[0]
        return LineFault(_statement_line(lines, changed, kind, why), kind, why)

    @property
    def watches_repeats(self) -> bool:
        """Whether `repeat_fault` can find anything: a near-copy named the edits it repeated."""
        return bool(self._repeats)

    def repeat_fault(self, answer: str) -> LineFault | None:
        """A 'repeat' on the line being written, before it ends: a delta's added line that
        has begun to make an attribute of `self` that a near-copy made before (`self.X = `:
        its `line_key` is `self.X = ...` whatever follows). The same verdict the line's end
        would give, some 40 tokens sooner: a block's line (`self.pre_block =
        nn.Sequential(...)`) is about 45 tokens, and a delta that repeats a near program's
        block writes it again and again (a repeat run of 2026-12-06, 2-core EPYC: 8 or 9
        'repeat' redraws in each of 3 of its 5 cycle-1 deltas). Measured (`llmnas generate
        --n 4 --mode delta`, that run's two hardest parents, seeds 0 and 1, against its
        archive): 16 answers decoded in 290 s against 410 s judged at the line's end (0.71x),
        48 repeats against 56, 4 admitted against 3."""
        start = answer.rfind("\n") + 1
        line = answer.count("\n", 0, start) + 1
        made = _MAKES_ATTRIBUTE.match(answer, start)
        if (
            made is None
            or line <= self._kept
            or line_key(f"self.{made[1]} = 0") not in self._repeats
        ):
            return None
        return LineFault(line, "repeat", "an edit already made near the parent")

    def end_fault(self, answer: str) -> LineFault | None:
        """When `answer` has just been finished (it ends in its end tag): a 'build' fault
        where its program does not build for the target while its parent does
        (`_build_fault_line`), else a 'novelty' fault on its end tag's line where it is a
        near-copy of an archived program near its parent (`AnswerTarget.copy_of`). None
        otherwise, also for an answer admission will reject before its build (it does not
        apply, no code)."""
        if self._target is None:
            return None
        code = finished_program(answer, self._parent, self._target.cfg.delta_fuzz)
        if code is None:
            return None
        delta = self._parent is not None and _OPEN_DELTA.search(answer) is not None
        built = self._target.build(code)
        if isinstance(built, BuildFault):
            if self._parent_built():
                return self._build_fault_line(answer, code, delta, built)
            return None
        # drawn again from its end tag's line, a near-copy can go on (another hunk, more
        # lines); judged once it builds (admission rejects what does not build first).
        # Measured (bench/generation_bench.py redraw --mode delta, 2026-12-05, 2-core EPYC):
        # 5 of 30 deltas were rejected as not novel, 4 of them near a sibling (an earlier
        # answer to the same parent), Jaccard 0.906-0.945; in the default run of that day 3
        # of 12 (Jaccard 0.984, 0.984, 1.0 to a cycle-1 child)
        if near := self._target.copy_of(code, self._parent):
            return LineFault(self._repeated_edit(answer, delta), "novelty", near)
        # a child that computes its parent's function (a module made and never called) goes
        # on from its end tag too: a delta can still write the hunk that calls it
        if self._same_function(built):
            return LineFault(len(answer.split("\n")), "novelty", SAME_FUNCTION)
        return None

    def _repeated_edit(self, answer: str, delta: bool) -> int:
        """Where a near-copy goes back to: the first added line of a delta that another
        program near the parent holds (`AnswerTarget.tried`: the model proposes again the
        block a child of this parent already added), and that line, and every such line,
        may not be written again (a 'repeat' fault); else its end tag's line, from where it
        goes on (another hunk, more lines). Tried for whole programs and not kept
        (2026-12-07, 2-core AMX Xeon, bench/replay_bench.py --mode full on a default run's
        10 whole-program slots, 28 answers an arm): going back to the line after the last
        change, that line written at its indentation but not copied again: 9 admitted, 14
        near-copies, against 10 and 12 from the end tag's line (Jaccard barely moved)."""
        tried = self._target.tried if self._target is not None and delta else frozenset()
        lines = answer.split("\n")
        repeated = [
            (n, key)
            for n, line in enumerate(lines, 1)
            if line.startswith("+")
            and not line.startswith("+++")
            and (key := line_key(line[1:])) in tried
        ]
        self._repeats.update(key for _, key in repeated)
        return repeated[0][0] if repeated else len(lines)

    def _build_fault_line(
        self, answer: str, code: str, delta: bool, fault: BuildFault
    ) -> LineFault | None:
        """The 'build' fault of `end_fault`: on the header of the delta hunk that wrote the
        line that raised (else of the last hunk), on a whole program's line that raised
        (None where its build names no line)."""
        if delta:
            line = _written_hunk(answer, code, fault.line)
        elif (opened := _OPEN_NN.search(answer)) is not None and (
            blamed := _blamed_line(code, self._parent, fault.line)
        ):
            body = _body(answer, opened.end())
            line = blamed + answer.count("\n", 0, len(answer) - len(body))
        else:
            return None
        return LineFault(line, "build", fault.why) if line else None

    def parent_line(self, answer: str, line: int) -> str | None:
        """What a whole-program answer's line `line` reverts to: the parent's line it was
        changed from (of the parent lines its run of changed lines stands for, the most
        alike), or, for an inserted line, the parent's next line (the insertion is left
        out). None for a delta, an answer without a parent, a line that copies the parent,
        or one past the parent's end. The whole-program grammar makes each answer an edited
        copy of its parent, so the parent's line is one it takes there."""
        opened = _OPEN_NN.search(answer)
        if self._parent is None or opened is None or _OPEN_DELTA.search(answer):
            return None
        body = _body(answer, opened.end())
        lines = body.split("\n")
        n = line - answer.count("\n", 0, len(answer) - len(body)) - 1  # its index in body
        if not 0 <= n < len(lines):
            return None
        parent = self._parent.split("\n")
        aligned = difflib.SequenceMatcher(None, lines[: n + 1], parent, autojunk=False)
        tag, i1, _, j1, j2 = next(op for op in aligned.get_opcodes() if op[1] <= n < op[2])
        options = parent[j1 : max(j2, j1 + 1)][: n - i1 + 1]
        if tag == "equal" or not options:
            return None
        alike = max(options, key=lambda text: _alike(text, lines[n]))
        return alike if _alike(alike, lines[n]) >= ALIKE_LINES else options[0]

    def _parent_built(self) -> bool:
        """Whether the parent builds for the target (a child of a parent that does not
        cannot be blamed on its delta); True when there is no parent."""
        if self._parent is None or self._target is None:
            return True
        if not self._parent_tried:
            self._parent_report = self._target.build(self._parent)
            self._parent_tried = True
        return not isinstance(self._parent_report, BuildFault)

    def _same_function(self, built: BuildReport | None) -> bool:
        """Whether a child that built as `built` computes what its parent computes (the
        builds' fingerprints of the forward, as admission compares them)."""
        if built is None or built.function is None or not self._parent_built():
            return False
        parent = self._parent_report
        return isinstance(parent, BuildReport) and parent.function == built.function

    def _base_faults(self) -> frozenset[tuple[str, str]]:
        return program_faults(self._parent or "", self._parent_locals)

    def rewound(self, line: int) -> None:
        """The answer now ends before answer line `line`."""
        self._parsed = min(self._parsed, line - 1)
        self._kept = min(self._kept, line - 1)
        self._made = {n: f for n, f in self._made.items() if n < line}

    def keep(self, fault: LineFault) -> None:
        self._kept = max(self._kept, fault.line)


def _alike(a: str, b: str) -> float:
    """How alike two lines are (difflib's ratio of their stripped texts, 0 to 1)."""
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def finished_program(answer: str, parent: str | None, fuzz: int) -> str | None:
    """The program a finished answer makes (it ends in its end tag): a delta applied to
    `parent` (with admission's `fuzz`), else the whole program it holds; None where it is
    not finished or makes none (admission will say why)."""
    if not _END_TAG.search(answer):
        return None
    try:
        if parent is not None and _OPEN_DELTA.search(answer):
            return apply_output(parent, answer, fuzz)
        return extract_code(answer)
    except (CandidateRejected, ValueError):
        return None


def program_faults(
    code: str, also_local: frozenset[str] = frozenset()
) -> frozenset[tuple[str, str]]:
    """(kind, why) of every fault of a complete program, without line numbers (they move as
    a delta inserts lines): a syntax error, a name read before it is bound (or never), an
    attribute read that no line makes, a misfit call, a misapplied block, a misfit unpack,
    a statement that never runs."""
    try:
        tree = parse_source(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return frozenset({("syntax", getattr(exc, "msg", str(exc)))})
    compiled = _compile_error(tree)
    faults = {("syntax", compiled.msg)} if compiled is not None else set()
    faults |= {(kind, why) for _, kind, why in _meaning_faults(tree, 1, also_local, True)}
    return frozenset(faults)


def _meaning_faults(
    tree: ast.Module, first: int, also_local: frozenset[str], complete: bool = False
) -> list[tuple[int, str, str]]:
    """(line, kind, why) of the faults of a parsed program on line `first` or later that
    its parse cannot show: names read before they are bound, attributes no line makes,
    calls that do not fit their callee (`complete`: as `unbound_reads`), taught blocks
    applied other than as taught (`misapplied_blocks`) or made again (`remade_blocks`),
    `in_shape` unpacked into a number of names it does not hold (`misfit_unpacks`),
    statements that never run (`unreachable_statements`)."""
    return [
        *(
            (line, "name", f"{name!r} is read before it is bound")
            for line, name in unbound_reads(tree, first, also_local, complete)
        ),
        *((line, "call", why) for line, why in misfit_calls(tree, first)),
        *(
            (line, "attribute", f"{name} is read but no line makes it")
            for line, name in unmade_attributes(tree, first)
        ),
        *((line, "applied", why) for line, why in misapplied_blocks(tree, first, made_only=True)),
        *((line, "remade", why) for line, why in remade_blocks(tree, first)),
        *((line, "unpack", why) for line, why in misfit_unpacks(tree, first)),
        *((line, "unreachable", why) for line, why in unreachable_statements(tree, first)),
    ]


def _statement_line(lines: list[str], changed: list[int], kind: str, why: str) -> int:
    """The answer line a delta's new fault is charged to: its latest changed line, or for a
    misapplied block the added line that applies it (the fault shows once its hunk applies,
    often a line or more after it: redrawn there, the statement itself stayed)."""
    if kind == "applied":
        for n in reversed(changed):
            try:
                written = ast.unparse(parse_source(lines[n - 1][1:].strip()))
            except (SyntaxError, ValueError):
                continue
            if lines[n - 1].startswith("+") and f"as `{written}`" in why:
                return n
    return changed[-1]


def _doubled(lines: list[str]) -> bool:
    """Whether a delta's last line is a context line that its added line before repeats: the
    model wrote the parent's next statement as an added line, then copied it. In two default
    runs of 2026-12-07 (2-core AVX2 EPYC) 3 of 28 deltas added `x = self.blocks(self.stem(x))`
    or `x = self.layers(self.stem(x))` so; the stem ran twice and none built."""
    return (
        len(lines) >= 2
        and lines[-1][:1] == " "
        and lines[-2][:1] == "+"
        and bool(lines[-1].strip())
        and lines[-1][1:].rstrip() == lines[-2][1:].rstrip()
    )


def _changes(line: str) -> bool:
    """Whether a delta's line adds or removes one (not a file header)."""
    return line[:1] in ("+", "-") and not line.startswith(("+++", "---"))


def _delta_faults(
    parent: str, delta_lines: str, also_local: frozenset[str]
) -> frozenset[tuple[str, str]] | None:
    """The faults of the program the delta written so far makes (None: it does not apply
    yet, as a hunk of context lines alone)."""
    try:
        child = apply_output(parent, delta_lines + "</delta>")
    except (CandidateRejected, ValueError):
        return None
    return program_faults(child, also_local)


def _written_hunk(answer: str, child: str, line: int | None) -> int | None:
    """The answer line of the header of the delta hunk that added program line `line` of
    `child` (the last added line with its text), else of the delta's last hunk."""
    lines = answer.split("\n")
    code = child.split("\n")
    written = len(lines)
    if line is not None and 0 < line <= len(code):
        text = code[line - 1].strip()
        added = [n + 1 for n, a in enumerate(lines) if _changes(a) and a[:1] == "+"]
        matches = [n for n in added if lines[n - 1][1:].strip() == text]
        matches = matches or [n for n in added if _makes_read(lines[n - 1][1:], text)]
        written = matches[-1] if matches else written
    return hunk_start(answer, written)


_MADE = re.compile(r"\s*self\.(\w+)\s*=[^=]")


def _makes_read(line: str, reader: str) -> bool:
    """Whether `line` makes an attribute (`self.X = ...`) that line `reader` reads: in the
    default run of 2026-12-05 a delta's `self.pool = <a conv for 1 channel>` raised where
    the parent's `forward` calls `self.pool`, not in the hunk that made it."""
    made = _MADE.match(line)
    return made is not None and f"self.{made.group(1)}" in re.findall(r"self\.\w+", reader)


def _blamed_line(code: str, parent: str | None, line: int | None) -> int | None:
    """The line of whole program `code` to draw again where its build fails at program line
    `line` (None: the build names none, as a wrong output shape): where it does not parse,
    the parser's line; else `line` where it is one of its own (no line of `parent` has its
    text), else its own line that makes an attribute `line` reads, else its last own line
    at or before `line` (before the program's end where no line is named); `line` itself
    where none is. A layer made on the wrong channels in `__init__` raises where `forward`
    calls it, often a line copied from the parent: the change to draw again lies above."""
    try:
        parse_source(code)
    except SyntaxError as exc:
        return exc.lineno
    except (ValueError, RecursionError, MemoryError):
        return None
    known = {text.strip() for text in (parent or "").split("\n")}
    lines = code.split("\n")
    end = line if line is not None and 0 < line <= len(lines) else len(lines)
    own = [n + 1 for n, text in enumerate(lines) if text.strip() not in known]
    if end in own:
        return end
    makers = [n for n in own if _makes_read(lines[n - 1], lines[end - 1])]
    above = [n for n in own if n <= end]
    return (makers or above)[-1] if makers or above else line


def hunk_start(answer: str, line: int) -> int | None:
    """The answer line of the header of the delta hunk that holds `line` (None: a whole
    program, or no header before it). Drawn again from there, a hunk can move: an attribute
    that `forward` reads needs a line in `__init__`, which lies before the hunk."""
    headers = [n + 1 for n, text in enumerate(answer.split("\n")[:line]) if text.startswith("@@")]
    return headers[-1] if headers else None


def _compile_error(tree: ast.Module) -> SyntaxError | None:
    """The error compiling a parsed program raises (the parser lets `f(a=1, a=2)` through;
    admission's build rejected a whole program for it, 2026-12-05); never runs it."""
    try:
        compile(tree, "<answer>", "exec")
    except SyntaxError as exc:
        return exc
    except (ValueError, TypeError):  # an AST the compiler refuses for other reasons
        return None
    return None


def _parse_error(source: str) -> SyntaxError | None:
    """The parser's error for `source`, in the interactive interpreter's mode."""
    try:
        compile(source, "<answer>", "exec", flags=ONLY_AST | ALLOW_INCOMPLETE_INPUT)
    except SyntaxError as exc:
        return exc
    except ValueError:  # a null byte: admission says so when the answer ends
        return None
    return None


def _closers(lines: str) -> str:
    """The brackets still open at the end of `lines`, closed innermost first ('' when none,
    or when a string is what is open)."""
    stack: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(lines).readline):
            if token.type == tokenize.OP and token.string in _PAIRS:
                stack.append(_PAIRS[token.string])
            elif token.type == tokenize.OP and token.string in _PAIRS.values() and stack:
                stack.pop()
    except tokenize.TokenError as exc:
        if "string" in str(exc):  # EOF in a multi-line string: no bracket to close
            return ""
    except SyntaxError:  # the tokenizer's own errors: the parser reports them
        return ""
    return "".join(reversed(stack))


def _body(answer: str, start: int) -> str:
    """The program text after `<nn>`: leading blank lines and an opening fence dropped, as
    admission's `extract_code` drops them (so line numbers agree)."""
    body = answer[start:].lstrip("\n")
    return _FENCE.sub("", body, count=1)
