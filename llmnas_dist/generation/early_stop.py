"""Ending a row of a batched `generate` call once its answer is already lost.

A batch decodes until its longest row ends, so a row that will be rejected anyway holds
every other row's slot to the token limit. Two verdicts end a row early:
- a whole-program answer whose text already holds a syntax error nothing later can mend
  (`admission.partial.settled_syntax_error`): admission rejects it at the same line;
- an answer caught in a loop (`admission.loops.repeated_block`, at
  `generation.stop_on_repeats`): the small model repeats a block of valid lines until the
  token limit cuts it mid-line (seen as the longest row of a whole-program batch in the
  early-stop bench: 26 lines alternating two identical assignments), or a piece of one
  line (`repeated_piece`: an identifier grown by `_post_block` to the token limit), or
  a line longer than any program's (`runaway_line`: numbers joined by `-`).
A row's repeat limit is `stop_on_repeats` plus what its prompt itself repeats beyond once
(`longest_repeat`), so an answer that copies a parent's repeated lines is not a loop.
The stopped answer is judged as it stands, as one cut by the token limit would be. Its
grammar, if it had one, is released, so the padding that follows is not fed to the
matcher, and the answer's record says why it ended early.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria

from llmnas_dist.admission.loops import (
    RUNAWAY_LINE_CHARS,
    longest_repeat,
    repeated_block,
    repeated_piece,
    runaway_line,
)
from llmnas_dist.admission.partial import settled_syntax_error
from llmnas_dist.generation.constrain import Constraint

# decoding steps between checks: a check decodes each open row and, when it has new whole
# lines, parses them (about 9 ms for a 3,000-character answer on a loaded 2-core CPU)
CHECK_EVERY = 16


class EarlyStop(StoppingCriteria):
    """Per row: True from the step its answer (the tokens after `prompt_width`) holds a
    settled syntax error (with `syntax_error`) or ends in a block repeated `repeats` times
    more than its prompt repeats one (0: never). `constraints` are the rows' grammars
    (empty: none)."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_width: int,
        constraints: list[Constraint],
        syntax_error: bool = True,
        repeats: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.constraints = constraints
        self.syntax_error = syntax_error
        self.repeats = repeats
        self.stopped: dict[int, str] = {}  # row -> why it was stopped
        self._lines: dict[int, int] = {}  # row -> whole lines at its last verdict
        self._limits: dict[int, int] = {}  # row -> its repeat limit (from its prompt)
        self._steps = 0

    @property
    def active(self) -> bool:
        """Whether any verdict is switched on (else generate needs no criterion)."""
        return self.syntax_error or self.repeats > 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        self._steps += 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self._steps % CHECK_EVERY:
            return done
        for i, row in enumerate(input_ids[:, self.prompt_width :].tolist()):
            if i in self.stopped:
                continue
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            tail = len(text) - text.rfind("\n") - 1
            if self._lines.get(i) == (lines := text.count("\n")) and tail < RUNAWAY_LINE_CHARS:
                continue  # whole lines are judged, and a line only once it runs away
            self._lines[i] = lines
            if self.repeats and i not in self._limits:
                prompt = self.tokenizer.decode(
                    input_ids[i, : self.prompt_width].tolist(), skip_special_tokens=True
                )
                self._limits[i] = self.repeats + longest_repeat(prompt) - 1
            reason = self._verdict(text, self._limits.get(i, 0))
            if reason is not None:
                self.stopped[i] = reason
                done[i] = True
                if i < len(self.constraints):  # padding follows: not for the grammar
                    self.constraints[i].matcher = None
        return done

    def _verdict(self, text: str, repeat_limit: int) -> str | None:
        if self.syntax_error and (error := settled_syntax_error(text)) is not None:
            return f"at a syntax error ({error})"
        if repeat_limit and (
            loop := repeated_block(text, repeat_limit) or repeated_piece(text, repeat_limit)
        ):
            return f"in a loop ({loop})"
        if repeat_limit and (runaway := runaway_line(text)):
            return f"at a runaway line ({runaway})"
        return None

    def note(self, row: int) -> str | None:
        """Why the row ended early, for its answer's record (None: it did not)."""
        reason = self.stopped.get(row)
        return None if reason is None else f"decoding stopped {reason}"
