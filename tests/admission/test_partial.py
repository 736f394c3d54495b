"""Verdicts on an answer still being written: a syntax error nothing later can mend stops
it (unfinished code, deltas and ended answers never do); so does a block of lines written
again and again at its end (a loop)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest

from llmnas_dist.admission.build import build_check
from llmnas_dist.admission.delta import extract_code
from llmnas_dist.admission.finished import NEAR_PARENT, AnswerTarget, edit_lines, line_key
from llmnas_dist.admission.loops import (
    MAX_LINE_CHARS,
    RUNAWAY_LINE_CHARS,
    longest_repeat,
    repeated_block,
    repeated_piece,
    runaway_line,
)
from llmnas_dist.admission.novelty import NoveltyIndex, minhash
from llmnas_dist.admission.partial import LineJudge, settled_syntax_error
from llmnas_dist.admission.scopes import taught_statement
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.generation.lookup import tell_siblings
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

BROKEN = (
    "<nn>\n"
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.skip = nn.IoU loss.(self.conv4(F))\n"
    "        self.bn = nn.BatchNorm2d(8)\n"
    "        self.relu = nn.ReLU()\n"
)


def prefixes(text: str) -> list[str]:
    return [text[:i] for i in range(1, len(text) + 1)]


def line_prefixes(text: str) -> list[str]:
    """Only whole lines are judged, so a prefix ending at each newline covers them all."""
    return [text[: i + 1] for i, ch in enumerate(text) if ch == "\n"]


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_prefix_of_a_valid_program_is_stopped(name: str) -> None:
    """Every prefix of every seed, framed as a full answer (bare and fenced)."""
    code = load_seeds()[name]
    for framed in (f"<nn>\n{code}", f"<nn>\n```python\n{code}"):
        assert [p for p in line_prefixes(framed) if settled_syntax_error(p)] == []


@pytest.mark.parametrize(
    "unfinished",
    [
        "x = nn.Sequential(\n    nn.ReLU(),\n    nn.ReLU(),\n    nn.ReLU(),\n",  # open bracket
        'x = """a docstring\nstill open\nand open\nand open\n',  # open string
        "try:\n    a = 1\n    b = 2\n    c = 3\n",  # no except yet
        "@decorator\n",
        "class A:\n    def f(self):\n",
        "x = 1\\\n",  # a continuation line
        "y = x if f(x)\n",  # the error is on the last line: the rest may still mend it
    ],
)
def test_unfinished_code_is_never_an_error(unfinished: str) -> None:
    for p in prefixes(f"<nn>\n{unfinished}"):
        assert settled_syntax_error(p) is None, p


def test_a_settled_error_is_reported_at_admission_s_line_once_two_lines_follow() -> None:
    lines = BROKEN.splitlines(keepends=True)
    assert settled_syntax_error("".join(lines[:6])) is None  # the bad line is the last
    assert settled_syntax_error("".join(lines[:7])) is None  # one line after it
    verdict = settled_syntax_error(BROKEN)
    assert verdict is not None and verdict.startswith("line 5: invalid syntax")
    # admission rejects the cut answer as a syntax error at the same line
    with pytest.raises(CandidateRejected) as rejected:
        build_check(extract_code(BROKEN), (1, 8, 8), 10, AdmissionConfig())
    assert rejected.value.error_class is ErrorClass.SYNTAX_ERROR
    assert "line 5" in rejected.value.message


def test_fenced_answers_count_lines_as_admission_does() -> None:
    fenced = BROKEN.replace("<nn>\n", "<nn>\n\n```python\n")
    verdict = settled_syntax_error(fenced)
    assert verdict is not None and verdict.startswith("line 5:")


@pytest.mark.parametrize(
    "answer",
    [
        BROKEN.replace("<nn>\n", ""),  # no <nn>: a delta, or no program yet
        BROKEN + "</nn>",  # ended: admission judges the whole answer
        BROKEN.replace("<nn>\n", "<nn>\n```python\n") + "```\n",  # the fence closed
        "<delta>\n--- baseline.py\n+++ improved.py\n@@ -1,3 +1,3 @@\n x = (\n-y\n+y = \n",
        "<nn>\nx = 1\x00\ny = 2\nz = 3\n",  # a null byte: admission's to say
    ],
)
def test_only_an_open_program_is_judged(answer: str) -> None:
    assert settled_syntax_error(answer) is None


RUNAWAY_BRACKET = (
    "<nn>\n"
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1),\n"
    "        self.head = nn.Linear(8, 10)\n"
    "        self.relu = nn.ReLU()\n"
    "        self.drop = nn.Dropout(0.1)\n"
)


def test_an_error_inside_a_bracket_that_never_closes_is_found() -> None:
    """The bracket opened on line 5 hides line 6 (a statement inside a call) from the plain
    parse; closing it at the end finds it, once two lines follow."""
    lines = RUNAWAY_BRACKET.splitlines(keepends=True)
    assert settled_syntax_error("".join(lines[:8])) is None  # one line after line 6
    verdict = settled_syntax_error(RUNAWAY_BRACKET)
    assert verdict is not None and verdict.startswith("line 6:")


@pytest.mark.parametrize(
    "open_call",
    [
        "x = nn.Sequential(\n    nn.Conv2d(1, 8, 3, padding='same'),\n    nn.ReLU(),\n",
        "x = dict(\n    a=1,\n    b=[1, 2,\n       3],\n    c={'(': ')'},\n",  # brackets in strings
        "x = f(\n    y,\n    '''a string with ( and [\n    still open\n",
        "x = [\n    i * 2\n    for i in range(4)\n    if i\n",
        "x = (\n    1\n    + 2\n    # a comment (with a bracket\n",
    ],
)
def test_an_open_bracket_around_valid_code_is_never_an_error(open_call: str) -> None:
    for p in prefixes(f"<nn>\n{open_call}"):
        assert settled_syntax_error(p) is None, p


LOOP = (
    "<nn>\nimport torch.nn as nn\n"
    + "    self.gate = nn.Conv2d(8, 8, 1)\n    self.post = nn.ReLU()\n" * 7
)


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_seed_repeats_a_block_twice_in_a_row(name: str) -> None:
    """What stop_on_repeats' default (6) is measured against: no line prefix of a seed,
    as written or in the canonical form prompts show, ends in a block written twice."""
    code = load_seeds()[name]
    for text in (code, canonicalize(code, AdmissionConfig())[0]):
        assert [p for p in line_prefixes(f"<nn>\n{text}") if repeated_block(p, 2)] == []


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_seed_line_runs_away(name: str) -> None:
    """What the in-line loop check is measured against: no prefix of a seed, as written or
    canonical, ends in a piece written even twice over the runaway length."""
    code = load_seeds()[name]
    for text in (code, canonicalize(code, AdmissionConfig())[0]):
        assert [p for p in prefixes(f"<nn>\n{text}") if repeated_piece(p, 2)] == []


def test_a_loop_inside_a_line_is_found_once_it_spans_the_runaway_length() -> None:
    grown = "<nn>\nclass Net(nn.Module):\n    x = self" + "_post_block" * 15
    assert repeated_piece(grown, 6) == "the last line ends in a 11-character piece written 15 times"
    assert repeated_piece(grown, 16) is None  # fewer repeats than asked
    assert repeated_piece(grown[: -len("_post_block")], 6) is None  # 154 characters: short
    assert repeated_piece("# " + "-" * RUNAWAY_LINE_CHARS, 6) == (
        f"the last line ends in a 1-character piece written {RUNAWAY_LINE_CHARS} times"
    )


def test_a_long_line_that_does_not_repeat_or_has_ended_is_no_loop() -> None:
    listed = "x = torch.cat([" + ", ".join(f"f{i}" for i in range(60))
    assert len(listed) > RUNAWAY_LINE_CHARS and repeated_piece(listed, 2) is None
    assert repeated_piece("y = " + "a" * 200 + "\n    z = 1", 2) is None  # a new line began
    with pytest.raises(ValueError, match="at least 2"):
        repeated_piece(listed, 1)


def test_a_loop_is_found_at_its_repeat_limit_and_named_by_its_smallest_block() -> None:
    assert repeated_block(LOOP, 7) == "the last 14 lines repeat a 2-line block 7 times"
    assert repeated_block(LOOP, 8) is None
    four = "<nn>\n" + "x = self.block(x)\n" * 4
    assert repeated_block(four, 4) == "the last 4 lines repeat a 1-line block 4 times"
    assert repeated_block(four, 5) is None


def test_blank_lines_and_an_unfinished_last_line_do_not_hide_a_loop() -> None:
    spaced = LOOP.replace("nn.ReLU()\n", "nn.ReLU()\n\n   \n") + "    self.ga"
    assert repeated_block(spaced, 6) == "the last 14 lines repeat a 2-line block 7 times"


def test_a_loop_the_answer_has_left_is_not_a_loop() -> None:
    assert repeated_block(LOOP + "    def forward(self, x):\n", 2) is None
    assert repeated_block("x = 1\ny = 1\nx = 1\n", 2) is None  # no consecutive repeat


def test_the_repeat_limit_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        repeated_block(LOOP, 1)


def test_longest_repeat_counts_any_block_anywhere() -> None:
    assert longest_repeat("") == 1
    assert longest_repeat("x = 1\ny = 2\n") == 1
    assert longest_repeat("a\nb\na\nb\na\nb\nc\n") == 3  # a 2-line block, mid-text
    assert longest_repeat("a\n\na\n  \na") == 3  # blank lines skipped, last line counted
    assert longest_repeat(LOOP) == 7


def test_a_line_longer_than_any_program_s_is_a_runaway():
    numbers = "        x = " + "-".join(str(i) for i in range(200))  # no piece repeats
    assert repeated_piece(f"<nn>\n{numbers}", 2) is None
    assert runaway_line(f"<nn>\n{numbers}") == "the last line ran past 400 characters"
    assert runaway_line(f"<nn>\n{numbers}\n") is None  # a finished line is judged as code
    assert runaway_line(f"<nn>\n{numbers[:MAX_LINE_CHARS]}") is None


def judge_lines(answer: str) -> list[tuple[int, object]]:
    """The judge's verdict after each whole line of `answer`, as decoding asks for it."""
    judge, verdicts = LineJudge(), []
    lines = answer.split("\n")
    for n in range(1, len(lines)):
        verdicts.append((n, judge.fault("\n".join(lines[:n]) + "\n")))
    return verdicts


HEAD = (
    "<nn>\n"
    "import torch.nn as nn\n"
    "class Block(nn.Module):\n"
    "    def __init__(self, c_in, c_out):\n"
    "        super().__init__()\n"
    "class Net(nn.Module):\n"
    "    def __init__(self, in_shape):\n"
)


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_line_of_a_seed_is_a_fault(name: str) -> None:
    code = canonicalize(load_seeds()[name], AdmissionConfig())[0]
    assert [v for v in judge_lines("<nn>\n" + code + "\n") if v[1]] == []


@pytest.mark.parametrize(
    "line, kind",
    [
        ("        x = nn.Conv2d(1, padding=1, 3)", "syntax"),  # keyword, then positional
        ("        x = 1 if in_shape", "syntax"),  # a conditional without its else
        ("        self.block = Block(3, c_out)", "name"),  # Block's parameter, not Net's
    ],
)
def test_a_faulty_line_is_judged_when_it_ends_at_its_own_line(line: str, kind: str) -> None:
    verdicts = judge_lines(HEAD + line + "\n        self.head = 1\n")
    faults = [(n, f) for n, f in verdicts if f is not None]
    assert faults and faults[0][0] == 8  # the answer's 8th line, judged as soon as it ends
    assert faults[0][1].line == 8 and faults[0][1].kind == kind


def test_a_line_inside_an_open_bracket_is_judged_when_the_bracket_closes() -> None:
    verdicts = judge_lines(HEAD + "        x = nn.Sequential(\n            nn.ReLU(), c_out)\n")
    assert verdicts[7][1] is None  # line 8 opens the bracket: not yet judged
    assert verdicts[8][1] is not None and verdicts[8][1].line == 9


def test_a_kept_fault_is_not_reported_again_and_later_faults_are() -> None:
    judge = LineJudge()
    first = HEAD + "        a = c_out\n"
    fault = judge.fault(first)
    assert fault is not None and fault.line == 8
    judge.keep(fault)
    assert judge.fault(first + "        b = 1\n") is None
    later = judge.fault(first + "        b = 1\n        c = c_out\n")
    assert later is not None and later.line == 10


def test_a_rewound_answer_is_judged_again_from_its_faulty_line() -> None:
    judge = LineJudge()
    assert judge.fault(HEAD + "        a = c_out\n").line == 8
    judge.rewound(8)
    assert judge.fault(HEAD + "        a = in_shape\n") is None
    assert judge.fault(HEAD + "        a = in_shape\n        b = c_out\n").line == 9


def test_deltas_and_ended_answers_are_not_judged() -> None:
    judge = LineJudge()
    assert judge.fault("<delta>\n+        a = c_out\n") is None
    assert judge.fault(HEAD + "        a = c_out\n</nn>\n") is None


def test_a_call_that_does_not_fit_its_callee_is_a_fault() -> None:
    """Judged against torch.nn's own signature (the model's made-up keyword)."""
    import torch.nn  # noqa: F401  (the judge reads modules already imported)

    answer = HEAD + "        self.c = nn.Conv2d(3, 8, 3, sideset_dim=1)\n        self.d = 1\n"
    faults = [f for _, f in judge_lines(answer) if f is not None]
    assert faults[0].line == 8 and faults[0].kind == "call"
    assert "sideset_dim" in faults[0].why


def test_an_error_only_the_compiler_finds_is_a_syntax_fault() -> None:
    answer = HEAD + "        self.c = nn.Conv2d(3, 8, 3, padding=1, padding=2)\n        d = 1\n"
    faults = [f for _, f in judge_lines(answer) if f is not None]
    assert faults[0].line == 8 and faults[0].kind == "syntax" and "repeated" in faults[0].why


PARENT_NET = (
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self, in_shape, out_shape, prm, device):\n"
    "        super().__init__()\n"
    "        width = 16\n"
    "        self.conv = nn.Conv2d(in_shape[-3], width, 3)\n"
    "        self.head = nn.Linear(width, out_shape[0])\n"
    "\n"
    "    def forward(self, x):\n"
    "        return self.head(self.conv(x).mean((2, 3)))\n"
)
DELTA_HEAD = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n"


@pytest.mark.parametrize(
    "added, kind",
    [
        ("+        self.extra = nn.Conv2d(width, width)", "call"),  # kernel_size missing
        ("+        self.extra = nn.BatchNorm2d(depth)", "name"),  # no line binds depth
        ("+        self.extra = nn.BatchNorm2d(width)", "name"),  # bound on a later line
        ("+        self.extra = nn.BatchNorm2d(in_shape[-3])", None),
        ("+        self.extra = nn.BatchNorm2d(x)", "name"),  # forward's parameter
    ],
)
def test_a_delta_s_added_line_is_judged_by_the_faults_it_adds(added: str, kind: str | None):
    judge = LineJudge(PARENT_NET)
    answer = DELTA_HEAD + "         super().__init__()\n" + added + "\n"
    fault = judge.fault(answer)
    assert (fault.kind if fault else None) == kind
    if fault is not None:
        assert fault.line == answer.count("\n")


@pytest.mark.parametrize(
    "applied, kind",
    [
        ("x = x * self.pre_block(x)", "applied"),  # the input gate's statement
        ("x = x + self.input_norm(x)", "applied"),  # the residual block's
        ("x = x + self.pre_block(x)", None),  # as the warm start made it
        # no line makes the input gate: no taught statement would fix it, the read is drawn
        # again (replayed, a default run's delta of 2026-12-07 had `x = x * self.input_norm(x)`,
        # never made, written as `x = self.input_norm(x)`, an 'attribute' fault next)
        ("x = x + self.input_gate(x)", "attribute"),
    ],
)
def test_a_taught_block_applied_other_than_as_taught_is_a_fault(applied: str, kind: str | None):
    made = "+        self.pre_block = nn.Conv2d(in_shape[-3], in_shape[-3], 1)\n"
    made += "+        self.input_norm = nn.BatchNorm2d(in_shape[-3])\n"
    answer = DELTA_HEAD + "         super().__init__()\n" + made
    answer += "@@ @@\n     def forward(self, x):\n+        " + applied + "\n"
    fault = LineJudge(PARENT_NET).fault(answer)
    assert (fault.kind if fault else None) == kind
    if fault is not None:
        assert fault.line == answer.count("\n")
        assert (applied if kind == "applied" else "self.input_gate") in fault.why


@pytest.mark.parametrize(
    "after, doubled",
    [
        ("         return self.head(self.conv(x).mean((2, 3)))\n", True),  # copied again
        ("+        return self.head(self.conv(x).mean((2, 3)))\n", False),  # added twice
        ("-        return self.head(self.conv(x).mean((2, 3)))\n", False),  # replaced
    ],
)
def test_a_delta_s_added_line_that_the_next_context_line_repeats_is_doubled(
    after: str, doubled: bool
) -> None:
    """The parent's next statement written as an added line, then copied as context: the
    statement would run twice (the stem applied to its own output did not build)."""
    answer = DELTA_HEAD + "     def forward(self, x):\n"
    answer += "+        return self.head(self.conv(x).mean((2, 3)))\n" + after
    fault = LineJudge(PARENT_NET).fault(answer)
    assert (fault is not None and fault.kind == "doubled") == doubled
    if doubled:
        assert fault is not None and fault.line == answer.count("\n") - 1


def test_a_misapplied_block_is_charged_to_its_statement_not_the_line_that_followed() -> None:
    """The fault shows once the hunk applies, a line or more after the statement: it goes
    to the statement's line (redrawn there, `x*self.pre_block(x)` as the model wrote it)."""
    answer = DELTA_HEAD + "         super().__init__()\n"
    answer += "+        self.pre_block = nn.Conv2d(in_shape[-3], in_shape[-3], 1)\n"
    answer += "@@ @@\n     def forward(self, x):\n+        x = x*self.pre_block(x)\n"
    statement = answer.count("\n")
    answer += "+        y = x\n"
    fault = LineJudge(PARENT_NET).fault(answer)
    assert fault is not None and fault.kind == "applied" and fault.line == statement


def _whole(init_extra: str, forward_body: str) -> str:
    """A whole-program answer: PARENT_NET with lines after super().__init__() and forward's
    body as given (written so far: no end tag)."""
    head = PARENT_NET.split("    def forward")[0].replace(
        "super().__init__()\n", "super().__init__()\n" + init_extra
    )
    return "<nn>\n" + head + "    def forward(self, x):\n" + forward_body


GATE = "        self.input_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Sigmoid())\n"
NORM = "        self.input_norm = nn.BatchNorm2d(in_shape[-3])\n"
COPIED = "        return self.head(self.conv(x).mean((2, 3)))\n"


@pytest.mark.parametrize(
    "made, body, statement",
    [
        (NORM, COPIED, "x = self.input_norm(x)"),  # forward goes on as the parent's
        (NORM + GATE, "        x = x * self.input_gate(x)\n" + COPIED, "x = self.input_norm(x)"),
        (NORM + GATE, '        """doc"""\n' + COPIED, "x = x * self.input_gate(x)"),
        (NORM, "        x = self.input_norm(x)\n" + COPIED, None),  # applied first
        ("        self.post_block = nn.Identity()\n", COPIED, None),  # not an input block
        ("", COPIED, None),
    ],
)
def test_a_whole_program_s_forward_must_apply_the_input_blocks_it_made_first(
    made: str, body: str, statement: str | None
) -> None:
    """The fault, where there is one, is on the copied statement (the answer's last line)."""
    answer = _whole(made, body)
    fault = LineJudge(PARENT_NET).fault(answer)
    assert (fault.kind if fault else None) == ("unapplied" if statement else None)
    if fault is not None:
        assert fault.line == answer.count("\n")
        assert taught_statement(fault.why) == statement


def test_an_input_block_the_parent_made_need_not_be_applied_first() -> None:
    """The parent's own blocks are the parent's: a copy of it that applies the block later in
    forward (as the parent does) goes on."""
    parent = _whole(NORM, "        y = x\n        x = self.input_norm(y)\n" + COPIED)[5:]
    answer = _whole(NORM, "        y = x\n")
    assert LineJudge(parent).fault(answer) is None
    assert LineJudge(PARENT_NET).fault(answer) is not None


def test_a_delta_s_block_made_before_its_forward_hunk_is_not_unapplied() -> None:
    """A delta makes the block in one hunk and applies it in a later one: the hunk that
    makes it is not a fault (the decoder's end-tag check judges what never calls it)."""
    answer = DELTA_HEAD + "         super().__init__()\n+" + NORM
    answer += "         width = 16\n"
    assert LineJudge(PARENT_NET).fault(answer) is None


def test_a_taught_block_made_again_is_a_fault_on_its_second_line() -> None:
    """`self.input_norm` made a BatchNorm, then (the model repeating its block lines) the
    input gate's module: the first is never called. A fault on the second, in a whole
    program and in a delta; made once, or replaced (`-` then `+`), it is not."""
    gate = GATE.replace("input_gate", "input_norm")
    whole_answer = _whole(NORM + gate, "")
    fault = LineJudge(PARENT_NET).fault(whole_answer.rsplit("    def forward", 1)[0])
    assert fault is not None and fault.kind == "remade" and "self.input_norm" in fault.why
    assert fault.line == 7  # <nn>, the import, class, def, super(), the first NORM
    assert LineJudge(PARENT_NET).fault(_whole(NORM, "").rsplit("    def forward", 1)[0]) is None
    head = DELTA_HEAD + "         super().__init__()\n+" + NORM
    fault = LineJudge(PARENT_NET).fault(head + "+" + gate)
    assert fault is not None and fault.kind == "remade" and fault.line == head.count("\n") + 1
    made = PARENT_NET.replace("super().__init__()\n", "super().__init__()\n" + NORM)
    replaced = DELTA_HEAD + "         super().__init__()\n-" + NORM + "+" + gate
    assert LineJudge(made).fault(replaced) is None


_NET_LINES = PARENT_NET.split("\n")


@pytest.mark.parametrize(
    "written, reverted",
    [
        # changed: back to the line it was changed from
        ("        self.conv = nn.Conv2d(in_shape, width, 3)", _NET_LINES[5]),
        # inserted (alike to no parent line): left out, the parent's next line instead
        ("        self.gate = nn.Sigmoid()", _NET_LINES[5]),
        ("        self.conv = nn.Conv2d(in_shape[-3], width, 3)", None),  # a copy
    ],
)
def test_a_whole_program_s_changed_line_reverts_to_its_parent_s_line(written, reverted):
    answer = "<nn>\n" + "\n".join(_NET_LINES[:5]) + "\n" + written + "\n"
    assert LineJudge(PARENT_NET).parent_line(answer, answer.count("\n")) == reverted


def test_a_changed_line_after_an_insertion_reverts_to_the_line_it_was_changed_from() -> None:
    """The run of changed lines (an insertion, then a changed line) stands for parent lines
    from where the copy left off: the changed one goes back to the most alike of them."""
    inserted = "        self.gate = nn.Sigmoid()\n"
    changed = "        self.head = nn.Linear(width * 2, out_shape[0])\n"
    answer = "<nn>\n" + "\n".join(_NET_LINES[:5]) + "\n" + inserted + _NET_LINES[5] + "\n"
    answer += changed
    assert LineJudge(PARENT_NET).parent_line(answer, answer.count("\n")) == _NET_LINES[6]
    assert LineJudge(PARENT_NET).parent_line(answer, answer.count("\n") - 2) == _NET_LINES[5]


def test_only_a_whole_program_with_a_parent_has_lines_to_revert_to() -> None:
    delta = DELTA_HEAD + "         super().__init__()\n+        self.gate = nn.Sigmoid()\n"
    assert LineJudge(PARENT_NET).parent_line(delta, delta.count("\n")) is None
    whole = "<nn>\n" + "\n".join(_NET_LINES[:5]) + "\n        self.gate = 1\n"
    assert LineJudge().parent_line(whole, whole.count("\n")) is None
    assert LineJudge(PARENT_NET).parent_line(whole, 99) is None  # no such line


def test_a_delta_s_context_lines_and_finished_answers_are_not_judged() -> None:
    judge = LineJudge(PARENT_NET)
    assert judge.fault(DELTA_HEAD + "         super().__init__()\n") is None
    done = DELTA_HEAD + "         super().__init__()\n+        a = nn.Conv2d(1)\n</delta>\n"
    assert judge.fault(done) is None
    assert LineJudge().fault(DELTA_HEAD + "+        a = nn.Conv2d(1)\n") is None  # no parent


def test_a_whole_program_reading_its_parent_s_local_before_binding_it_is_a_fault() -> None:
    """The parent's Net binds `width`: read before the line that binds it (plain_cnn's
    `dropout` in the redraw bench), it would raise UnboundLocalError."""
    answer = "<nn>\n" + PARENT_NET.replace("        width = 16\n", "        a = width\n")
    answer = answer[: answer.index("        self.conv")]
    assert LineJudge().fault(answer) is None
    fault = LineJudge(PARENT_NET).fault(answer)
    assert fault is not None and fault.kind == "name" and "width" in fault.why


def test_a_delta_s_fault_found_once_its_hunk_applies_is_charged_to_its_added_line() -> None:
    """`y = 1` stands twice in the parent: the hunk applies only at its next context line."""
    parent = (
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        y = 1\n"
        "        self.head = nn.Linear(2, 2)\n"
        "\n"
        "    def forward(self, x):\n"
        "        y = 1\n"
        "        return self.head(x)\n"
    )
    judge = LineJudge(parent)
    answer = DELTA_HEAD + "         y = 1\n+        self.z = nn.Conv2d(1, 1)\n"
    assert judge.fault(answer) is None  # the hunk does not apply yet: nothing to judge
    fault = judge.fault(answer + "         self.head = nn.Linear(2, 2)\n")
    assert fault is not None and fault.kind == "call"
    assert fault.line == answer.count("\n")  # the added line, not the context line


def test_a_line_replaced_in_a_delta_is_no_fault_while_its_replacement_is_pending() -> None:
    judge = LineJudge(PARENT_NET)
    answer = DELTA_HEAD + "         super().__init__()\n         width = 16\n"
    answer += "         self.conv = nn.Conv2d(in_shape[-3], width, 3)\n"
    answer += "-        self.head = nn.Linear(width, out_shape[0])\n"
    assert judge.fault(answer) is None  # forward reads self.head: its new line may follow
    replaced = answer + "+        self.head = nn.Linear(width, 2 * out_shape[0])\n"
    assert judge.fault(replaced) is None
    removed = answer + "     \n     def forward(self, x):\n"  # context: the removal stands
    fault = LineJudge(PARENT_NET).fault(removed)
    assert fault is not None and fault.kind == "attribute"
    assert fault.line == answer.count("\n")  # charged to the removed line


def test_hostile_nesting_never_escapes_the_judge_as_anything_but_a_recursion_error() -> None:
    """A line nested past the parser's limits is left to admission (decoding catches the
    RecursionError of the walk; the parse itself reports a syntax error or nothing)."""
    deep = HEAD + "        a = " + "(" * 300 + "1" + ")" * 300 + "\n"
    with contextlib.suppress(RecursionError):
        LineJudge(PARENT_NET).fault(deep)


# ---- a finished answer built before it is returned (LineJudge.end_fault) -----------------

TARGET = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
PRE_HUNK = (
    "@@ @@\n"
    "         self.conv = nn.Conv2d(in_shape[-3], width, 3)\n"
    "+        self.pre = nn.Conv2d(in_shape[-3], in_shape[-3], 1)\n"
    "@@ @@\n"
    "     def forward(self, x):\n"
    "-        return self.head(self.conv(x).mean((2, 3)))\n"
)
DEEP_CALL = "        return self.head(self.pre(self.conv(x)).mean((2, 3)))\n"  # 16 channels in
FIRST_CALL = "        return self.head(self.conv(self.pre(x)).mean((2, 3)))\n"  # 1 channel in


def pre_delta(call: str) -> str:
    return "<delta>\n--- baseline.py\n+++ improved.py\n" + PRE_HUNK + "+" + call[1:] + "</delta>"


def test_a_finished_delta_that_does_not_build_is_charged_to_the_hunk_that_wrote_the_line():
    """The taught input block of the default runs (built for in_shape[-3] channels) called
    where the channels differ: the fault lands on the header of the hunk with that call."""
    answer = pre_delta(DEEP_CALL)
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and fault.kind == "build"
    assert "channels" in fault.why and "build_failed" in fault.why
    assert answer.split("\n")[fault.line - 1] == "@@ @@"
    assert fault.line == 7  # the second hunk's header, not the first's
    placed = pre_delta(FIRST_CALL)
    assert LineJudge(PARENT_NET, TARGET).end_fault(placed) is None  # builds


def test_a_delta_s_build_fault_on_a_parent_line_goes_to_the_hunk_that_made_its_attribute():
    """The parent's `forward` line raises for a layer a delta remade in its first hunk: the
    first hunk is drawn again, not the last (which only added a harmless line)."""
    answer = (
        "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n"
        "-        self.conv = nn.Conv2d(in_shape[-3], width, 3)\n"
        "+        self.conv = nn.Conv2d(in_shape[-3] + 2, width, 3)\n"
        "         self.head = nn.Linear(width, out_shape[0])\n"
        "@@ @@\n"
        "     def forward(self, x):\n"
        "+        x = x + 0\n"
        "</delta>"
    )
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and fault.kind == "build" and "channels" in fault.why
    assert fault.line == 4  # the first hunk's header


def test_only_a_finished_answer_with_a_target_and_a_parent_that_builds_is_built() -> None:
    answer = pre_delta(DEEP_CALL)
    assert LineJudge(PARENT_NET).end_fault(answer) is None  # no target
    unfinished = answer.removesuffix("</delta>")
    assert LineJudge(PARENT_NET, TARGET).end_fault(unfinished) is None
    broken_parent = PARENT_NET.replace("nn.Linear(width,", "nn.Linear(width + 1,")
    assert build_fails(broken_parent)
    assert LineJudge(broken_parent, TARGET).end_fault(answer) is None  # not the delta's fault
    assert LineJudge(PARENT_NET, TARGET).end_fault("<delta>\n@@ @@\n+nothing\n</delta>") is None


def test_a_finished_whole_program_that_does_not_build_is_charged_to_the_line_that_raised():
    program = PARENT_NET.replace(
        "        self.head = nn.Linear(width, out_shape[0])\n",
        "        self.head = nn.Linear(width, out_shape[0])\n"
        "        self.pre = nn.Conv2d(in_shape[-3], in_shape[-3], 1)\n",
    ).replace("        return self.head(self.conv(x).mean((2, 3)))\n", DEEP_CALL)
    answer = "<nn>\n\n" + program + "</nn>"
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and fault.kind == "build"
    assert answer.split("\n")[fault.line - 1] == DEEP_CALL.rstrip("\n")
    good = answer.replace(DEEP_CALL, FIRST_CALL)
    assert LineJudge(PARENT_NET, TARGET).end_fault(good) is None


def test_a_whole_program_s_build_fault_is_charged_to_its_own_line_above_the_raise() -> None:
    """A layer made on the wrong channels in `__init__` raises where `forward` calls it, a
    line copied from the parent: the answer goes back to the changed line above it."""
    made = "        self.conv = nn.Conv2d(in_shape[-3] + 2, width, 3)\n"
    program = PARENT_NET.replace("        self.conv = nn.Conv2d(in_shape[-3], width, 3)\n", made)
    answer = "<nn>\n" + program + "</nn>"
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and fault.kind == "build" and "channels" in fault.why
    assert answer.split("\n")[fault.line - 1] == made.rstrip("\n")


def test_a_whole_program_whose_build_names_no_line_goes_back_to_its_last_own_line() -> None:
    """A wrong output shape is raised by no program line: the last changed line made it."""
    changed = "        self.head = nn.Linear(width, out_shape[0] + 1)"
    program = PARENT_NET.replace("        self.head = nn.Linear(width, out_shape[0])", changed)
    assert build_fails(program)
    answer = "<nn>\n" + program + "</nn>"
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and "shape" in fault.why
    assert answer.split("\n")[fault.line - 1] == changed


def test_a_finished_whole_program_that_does_not_parse_goes_back_to_the_parser_s_line() -> None:
    """A positional argument after a keyword one: the grammar lets it through, the parser
    names its line."""
    wrong = "        self.conv = nn.Conv2d(in_shape[-3], out_channels=width, 3)"
    program = PARENT_NET.replace("        self.conv = nn.Conv2d(in_shape[-3], width, 3)", wrong)
    answer = "<nn>\n\n" + program + "</nn>"
    fault = LineJudge(PARENT_NET, TARGET).end_fault(answer)
    assert fault is not None and fault.kind == "build" and "syntax_error" in fault.why
    assert answer.split("\n")[fault.line - 1] == wrong


def build_fails(code: str) -> bool:
    try:
        build_check(code, TARGET.in_shape, TARGET.num_classes, TARGET.cfg)
    except CandidateRejected:
        return True
    return False


def test_a_finished_near_copy_of_its_parent_is_charged_to_its_end_tag_s_line() -> None:
    """Admission would reject it as not novel (its parent is archived): the answer goes on
    from its end tag's line; a delta that changes enough is not a near-copy."""
    parent = canonicalize(load_seeds()["plain_cnn"], AdmissionConfig())[0]
    copy = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         for i in range(stages):\n"
    copy += "-            c_out = 32 * 2 ** i\n+            c_out = 48 * 2 ** i\n</delta>"
    fault = LineJudge(parent, TARGET).end_fault(copy)
    assert fault is not None and fault.kind == "novelty" and "near its parent" in fault.why
    assert fault.line == copy.count("\n") + 1 and copy.split("\n")[-1] == "</delta>"
    assert LineJudge(PARENT_NET, TARGET).end_fault(pre_delta(FIRST_CALL)) is None
    whole = "<nn>\n" + parent.replace("32 * 2 ** i", "48 * 2 ** i") + "</nn>"
    fault = LineJudge(parent, TARGET).end_fault(whole)
    assert fault is not None and fault.kind == "novelty"
    assert LineJudge(parent).end_fault(whole) is None  # no target: admission judges it


def test_a_finished_near_copy_of_a_sibling_is_found_through_the_parent_s_neighbourhood():
    """The deltas the redraw bench rejected as not novel were near an earlier answer to the
    same parent, not near the parent: the target carries the archive near the parent."""
    cfg = AdmissionConfig()
    parent = canonicalize(load_seeds()["plain_cnn"], cfg)[0]
    pool = "        self.pool = nn.AdaptiveAvgPool2d(1)\n"
    block = "        self.pre_block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1))\n"
    sibling = parent.replace(pool, pool + block)
    sibling = sibling.replace("self.features(x)", "self.features(self.pre_block(x))")
    answer = "<nn>\n" + sibling.replace("32 * 2 ** i", "48 * 2 ** i") + "</nn>"
    assert LineJudge(parent, TARGET).end_fault(answer) is None  # far enough from the parent
    index = NoveltyIndex.from_config(cfg)
    for code in (parent, sibling):
        canonical, code_hash = canonicalize(code, cfg)
        index.add(code_hash, minhash(canonical, cfg.num_perm, cfg.shingle_size))
    near = index.neighbourhood(canonicalize(parent, cfg)[1], NEAR_PARENT)
    assert len(near) == 2 * 4 * cfg.num_perm  # the parent and its child
    fault = LineJudge(parent, replace(TARGET, neighbours=near)).end_fault(answer)
    assert fault is not None and fault.kind == "novelty"


WIDER = "+            c_out = 48 * 2 ** i\n"


def test_a_near_copy_that_repeats_an_edit_made_near_the_parent_goes_back_to_that_line():
    """In later cycles the model proposes again the block a child of this parent already
    added (default runs of 2026-12-05: 12 of 40 deltas not novel, most near such a child):
    the near-copy goes back to its first added line that a program near the parent holds,
    and that line is then a 'repeat' fault wherever it is written; another line is not."""
    cfg = AdmissionConfig()
    parent = canonicalize(load_seeds()["plain_cnn"], cfg)[0]
    child = parent.replace("c_out = 32 * 2 ** i", "c_out = 48 * 2 ** i")
    head = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         for i in range(stages):\n"
    head += "-            c_out = 32 * 2 ** i\n"
    answer = head + WIDER + "</delta>"
    target = replace(TARGET, tried=edit_lines(parent, [child]))
    judge = LineJudge(parent, target)
    fault = judge.end_fault(answer)
    assert fault is not None and fault.kind == "novelty"
    assert fault.line == head.count("\n") + 1  # the added line, not the end tag's
    judge.rewound(fault.line)
    repeat = judge.fault(head + WIDER)
    assert repeat is not None and (repeat.kind, repeat.line) == ("repeat", fault.line)
    assert judge.fault(head + "+            c_out = 40 * 2 ** i\n") is None
    # nothing near the parent holds the line: the end tag's line, as before
    plain = LineJudge(parent, TARGET).end_fault(answer)
    assert plain is not None and plain.line == answer.count("\n") + 1
    assert LineJudge(parent, target).fault(head + WIDER) is None  # not a near-copy yet


def pre_block(width: int) -> str:
    return (
        "        self.pre_block = nn.Sequential(nn.Conv2d(in_shape[-3], "
        f"{width}, 3, padding=1), nn.ReLU(), nn.Conv2d({width}, in_shape[-3], 1))\n"
    )


def test_a_near_copy_that_makes_a_sibling_s_block_again_goes_back_to_it_whatever_its_width():
    """The same block with another hidden width is the edit a sibling made (a default run of
    2026-12-06: 4 of 7 later-cycle near-copies): the near-copy goes back to the line that
    makes it, and then any line making that attribute is a 'repeat' fault."""
    cfg = AdmissionConfig()
    parent = canonicalize(load_seeds()["plain_cnn"], cfg)[0]
    call = "        x = self.pool(self.features(x))\n"
    sibling = parent.replace(
        "        self.device = device\n", pre_block(16) + "        self.device = device\n"
    )
    sibling = sibling.replace(call, "        x = x + self.pre_block(x)\n" + call)
    assert build_fails(sibling) is False
    head = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         super().__init__()\n"
    answer = head + "+" + pre_block(32) + "@@ @@\n     def forward(self, x):\n"
    answer += "+        x = x + self.pre_block(x)\n</delta>"
    index = NoveltyIndex.from_config(cfg)
    for code in (parent, sibling):
        canonical, code_hash = canonicalize(code, cfg)
        index.add(code_hash, minhash(canonical, cfg.num_perm, cfg.shingle_size))
    near = index.neighbourhood(canonicalize(parent, cfg)[1], NEAR_PARENT)
    target = replace(TARGET, neighbours=near, tried=edit_lines(parent, [sibling]))
    judge = LineJudge(parent, target)
    fault = judge.end_fault(answer)
    assert fault is not None and fault.kind == "novelty"
    assert fault.line == head.count("\n") + 1  # the line making self.pre_block
    judge.rewound(fault.line)
    again = judge.fault(head + "+" + pre_block(8))
    assert again is not None and (again.kind, again.line) == ("repeat", fault.line)
    other = "+        self.post_norm = nn.BatchNorm2d(in_shape[-3])\n"
    assert judge.fault(head + other) is None
    # the same verdict before the line ends, once its `=` is written (`repeat_fault`)
    assert judge.watches_repeats and not LineJudge(parent, target).watches_repeats
    early = judge.repeat_fault(head + "+        self.pre_block = n")
    assert early is not None and (early.kind, early.line) == ("repeat", fault.line)
    for unsure in ("self.pre_block =", "self.pre_block ==", "self.pre_block_2 = n", "x = n"):
        assert judge.repeat_fault(head + "+        " + unsure) is None
    assert judge.repeat_fault(head + "         self.pre_block = n") is None  # a context line
    judge.keep(early)
    assert judge.repeat_fault(head + "+        self.pre_block = n") is None  # kept


def test_a_later_answer_of_the_same_call_meets_its_finished_sibling_as_if_archived():
    """Answers of one call are all decoded before any is admitted: two children of one
    parent made the same block, and admission rejected the second as not novel (a default
    run of 2026-12-06 with parents by rank). Once the first is finished, the later answers
    to its parent go back to the line that makes its block; answers to another parent, and
    earlier ones, are left as they were."""
    cfg = AdmissionConfig()
    parent = canonicalize(load_seeds()["plain_cnn"], cfg)[0]
    head = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         super().__init__()\n"
    tail = "@@ @@\n     def forward(self, x):\n+        x = x + self.pre_block(x)\n</delta>"
    first, second = (head + "+" + pre_block(w) + tail for w in (16, 32))
    assert LineJudge(parent, TARGET).end_fault(second) is None  # novel without its sibling
    other = canonicalize(load_seeds()["vgg_small"], cfg)[0]
    targets: list[AnswerTarget | None] = [TARGET, TARGET, TARGET, None, TARGET]
    parents: list[str | None] = [parent, parent, other, parent, parent]
    tell_siblings(targets, parents, 1, first)
    assert targets[:4] == [TARGET, TARGET, TARGET, None]
    told = targets[4]
    assert told is not None and "self.pre_block = ..." in told.tried
    judge = LineJudge(parent, told)
    fault = judge.end_fault(second)
    assert fault is not None and (fault.kind, fault.line) == ("novelty", head.count("\n") + 1)
    judge.rewound(fault.line)
    again = judge.fault(head + "+" + pre_block(8))
    assert again is not None and again.kind == "repeat"
    # an answer that makes no program (cut off, does not apply) tells nothing
    for unfinished in (first.removesuffix("</delta>"), "<delta>\n@@ @@\n-no such line\n</delta>"):
        kept: list[AnswerTarget | None] = [TARGET, TARGET]
        tell_siblings(kept, [parent, parent], 0, unfinished)
        assert kept == [TARGET, TARGET]


def test_edit_lines_are_the_lines_near_programs_add_whatever_their_formatting():
    parent = "class Net:\n    def forward(self, x):\n        return self.head(x)\n"
    child = parent.replace("return self.head(x)", "x = self.norm( x )\n        return self.head(x)")
    other = parent.replace("def forward(self, x):", "def  forward(self,  x, y):")
    tried = edit_lines(parent, [child, other])
    assert tried == {"x = self.norm(x)", "def forward(self, x, y):"}
    assert line_key("x=self.norm(x)  # a comment") in tried
    # a line that makes an attribute of self is keyed by the attribute, not what it holds
    made = parent.replace(
        "def forward", "def __init__(self):\n        self.head = H(3)\n    def forward"
    )
    gate = made.replace("self.head = H(3)", "self.head = H(3)\n        self.gate = G(16)")
    assert line_key("self.gate=G( 4 )") == line_key("self.gate = G(16)") == "self.gate = ..."
    assert line_key("self.gate.weight = w") == "self.gate.weight = w"
    assert edit_lines(made, [gate]) == {"self.gate = ..."}
    assert edit_lines(made, [made.replace("H(3)", "H(5)")]) == set()  # the parent makes it
    assert edit_lines(parent, [parent]) == frozenset()


def test_a_target_near_a_parent_holds_what_is_near_it_and_the_lines_they_add():
    cfg = AdmissionConfig()
    parent = canonicalize(load_seeds()["plain_cnn"], cfg)[0]
    child = parent.replace("c_out = 32 * 2 ** i", "c_out = 48 * 2 ** i")
    far = canonicalize(load_seeds()["vit_tiny"], cfg)[0]
    index, codes = NoveltyIndex.from_config(cfg), {}
    for code in (parent, child, far):
        canonical, code_hash = canonicalize(code, cfg)
        index.add(code_hash, minhash(canonical, cfg.num_perm, cfg.shingle_size))
        codes[code_hash] = canonical
    parent_hash = canonicalize(parent, cfg)[1]
    target = TARGET.near(index, parent_hash, parent, codes.__getitem__)
    assert len(target.neighbours) == 2 * 4 * cfg.num_perm  # the parent and its child
    assert target.tried == {"c_out = 48 * 2 ** i"}  # not vit_tiny's lines: it is far
    alone = TARGET.near(index, "not archived", parent, codes.__getitem__)
    assert (alone.neighbours, alone.tried) == (b"", frozenset())
