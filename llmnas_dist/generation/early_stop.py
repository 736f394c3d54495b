"""Ending a row of a batched `generate` call once its answer is already rejected.

A whole-program answer whose text already holds a syntax error nothing later can mend
(`admission.partial.settled_syntax_error`) is stopped there: admission rejects it at the
same line either way, and a batch decodes until its longest row ends (see partial.py for
what that cost in a default run). Its grammar, if it had one, is released, so the padding
that follows is not fed to the matcher, and the answer's record says why it ended early.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria

from llmnas_dist.admission.partial import settled_syntax_error
from llmnas_dist.generation.constrain import Constraint

# decoding steps between checks: a check decodes each open row and, when it has new whole
# lines, parses them (about 9 ms for a 3,000-character answer on a loaded 2-core CPU)
CHECK_EVERY = 16


class SyntaxErrorStop(StoppingCriteria):
    """Per row: True from the step its answer (the tokens after `prompt_width`) holds a
    settled syntax error. `constraints` are the rows' grammars (empty: none)."""

    def __init__(self, tokenizer: Any, prompt_width: int, constraints: list[Constraint]) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.constraints = constraints
        self.stopped: dict[int, str] = {}  # row -> the verdict it was stopped for
        self._lines: dict[int, int] = {}  # row -> whole lines at its last verdict
        self._steps = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        self._steps += 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self._steps % CHECK_EVERY:
            return done
        for i, row in enumerate(input_ids[:, self.prompt_width :].tolist()):
            if i in self.stopped:
                continue
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            if self._lines.get(i) == (lines := text.count("\n")):
                continue  # only whole lines are judged: nothing new
            self._lines[i] = lines
            verdict = settled_syntax_error(text)
            if verdict is not None:
                self.stopped[i] = verdict
                done[i] = True
                if i < len(self.constraints):  # padding follows: not for the grammar
                    self.constraints[i].matcher = None
        return done

    def note(self, row: int) -> str | None:
        """Why the row ended early, for its answer's record (None: it did not)."""
        verdict = self.stopped.get(row)
        return None if verdict is None else f"decoding stopped at a syntax error ({verdict})"
