"""Verdicts on an answer still being written: a whole program whose text so far already
holds a syntax error that nothing the model writes next can mend.

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
so the text written after the prefix cannot change it.
"""

from __future__ import annotations

import re

ALLOW_INCOMPLETE_INPUT = 0x4000  # CPython's PyCF_ALLOW_INCOMPLETE_INPUT (codeop.py)
ONLY_AST = 0x400  # ast.PyCF_ONLY_AST: parse, never compile
INCOMPLETE = "incomplete input"
LINES_PAST_ERROR = 2  # whole lines the parser must have read after the error
_OPEN_NN = re.compile(r"<nn>", re.I)
_FENCE = re.compile(r"\A[ \t]*```[a-zA-Z0-9]*[ \t]*\n")


def settled_syntax_error(answer: str) -> str | None:
    """'line N: message' when the program of a whole-program answer still being written
    (after its `<nn>`, before `</nn>`) already has a syntax error the rest cannot mend; None
    otherwise (no `<nn>` yet, a delta, an ended answer, valid or merely unfinished code)."""
    opened = _OPEN_NN.search(answer)
    if opened is None or "</" in answer[opened.end() :] or "```" in _body(answer, opened.end()):
        return None  # no program yet, or its end was written: admission judges it whole
    body = _body(answer, opened.end())
    lines = body[: body.rfind("\n") + 1]  # whole lines only
    try:
        compile(lines, "<answer>", "exec", flags=ONLY_AST | ALLOW_INCOMPLETE_INPUT)
    except SyntaxError as exc:
        past = lines.count("\n") - (exc.lineno or 0)
        if exc.msg != INCOMPLETE and exc.lineno and past >= LINES_PAST_ERROR:
            return f"line {exc.lineno}: {exc.msg}"
    except ValueError:  # a null byte: admission says so when the answer ends
        return None
    return None


def _body(answer: str, start: int) -> str:
    """The program text after `<nn>`: leading blank lines and an opening fence dropped, as
    admission's `extract_code` drops them (so line numbers agree)."""
    body = answer[start:].lstrip("\n")
    return _FENCE.sub("", body, count=1)
