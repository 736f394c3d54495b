"""An answer caught in a loop, judged while it is being written: a block of lines written
again and again (`repeated_block`), a piece of one line (`repeated_piece`), or a line longer
than any program's (`runaway_line`). generation/early_stop.py ends such an answer, and
decoding's line redraws bound a line's length by `MAX_LINE_CHARS` (generation/lookup.py).
"""

from __future__ import annotations

# Longest block of lines a loop is looked for in: the loop seen in the early-stop bench
# alternated 2 lines; a layer stack written out (conv, norm, activation, pool) is 4.
MAX_BLOCK_LINES = 8
# A loop inside one line: a whole program of the default run of 2026-12-04 (AVX512 EPYC)
# wrote `_post_block` over and over in one identifier until the 1,024-token limit, holding
# its batch open. Such a line is judged once its repeated end spans more than any line a
# program needs (the longest line of the shipped seeds is 100 characters, PEP 8's 79).
RUNAWAY_LINE_CHARS = 160
MAX_PIECE_CHARS = 32  # longest piece looked for: a few tokens, as `_post_block` is
# No program line runs longer (the seeds' longest is 306 characters in canonical form).
# Measured: a whole program (2026-12-04) wrote one line of `-`-joined numbers, no piece of
# it repeated, to the 1,024-token limit.
MAX_LINE_CHARS = 400


def repeated_block(answer: str, min_repeats: int) -> str | None:
    """'the last N lines repeat a K-line block R times' when the answer's last whole
    non-blank lines are one block of at most `MAX_BLOCK_LINES` lines written at least
    `min_repeats` times in a row (the smallest such block); None otherwise.

    Not a settled verdict like a syntax error: the model could leave the loop. The small
    model seldom did; a loop that runs to the token limit is cut mid-line and rejected.
    `min_repeats` decides how sure the call is: no shipped seed repeats any block even
    twice in a row (tests/admission/test_partial.py), and a caller adds what the prompt
    itself repeats (`longest_repeat`), so copying a parent's repeated lines is no loop."""
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be at least 2, got {min_repeats}")
    lines = _whole_lines(answer)
    for size in range(1, MAX_BLOCK_LINES + 1):
        repeats = _repeats_ending_at(lines, len(lines), size)
        if repeats >= min_repeats:
            return f"the last {repeats * size} lines repeat a {size}-line block {repeats} times"
    return None


def repeated_piece(answer: str, min_repeats: int) -> str | None:
    """'the last line ends in a K-character piece written R times' when the answer's
    unfinished last line ends in one piece of at most `MAX_PIECE_CHARS` characters written
    at least `min_repeats` times in a row, over at least `RUNAWAY_LINE_CHARS` characters
    (the smallest such piece); None otherwise. The token-level twin of `repeated_block`."""
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be at least 2, got {min_repeats}")
    line = answer[answer.rfind("\n") + 1 :]
    if len(line) < RUNAWAY_LINE_CHARS:
        return None
    for size in range(1, MAX_PIECE_CHARS + 1):
        piece, repeats = line[-size:], 1
        while line[len(line) - (repeats + 1) * size : len(line) - repeats * size] == piece:
            repeats += 1
        if repeats >= min_repeats and repeats * size >= RUNAWAY_LINE_CHARS:
            return f"the last line ends in a {size}-character piece written {repeats} times"
    return None


def longest_repeat(text: str) -> int:
    """The most times any block of at most `MAX_BLOCK_LINES` non-blank lines is written in a
    row anywhere in `text` (1: no line or block follows itself)."""
    lines = _whole_lines(text + "\n")
    return max(
        (
            _repeats_ending_at(lines, end, size)
            for end in range(1, len(lines) + 1)
            for size in range(1, min(MAX_BLOCK_LINES, end) + 1)
        ),
        default=1,
    )


def _whole_lines(text: str) -> list[str]:
    """The non-blank whole lines of `text` (a last line without its newline is left out),
    trailing spaces dropped."""
    whole = text[: text.rfind("\n") + 1]
    return [line.rstrip() for line in whole.splitlines() if line.strip()]


def _repeats_ending_at(lines: list[str], end: int, size: int) -> int:
    """How many times the block lines[end - size:end] is written in a row, ending at end
    (0 when there are fewer than `size` lines before end)."""
    if end < size:
        return 0
    block = lines[end - size : end]
    repeats = 1
    while end - (repeats + 1) * size >= 0 and (
        lines[end - (repeats + 1) * size : end - repeats * size] == block
    ):
        repeats += 1
    return repeats


def runaway_line(answer: str) -> str | None:
    """'the last line ran past N characters' when the answer's unfinished last line is
    longer than any program line ought to be (MAX_LINE_CHARS); None otherwise."""
    if len(answer) - answer.rfind("\n") - 1 > MAX_LINE_CHARS:
        return f"the last line ran past {MAX_LINE_CHARS} characters"
    return None
