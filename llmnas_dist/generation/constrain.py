"""Grammar-constrained sampling over llguidance (one maintained engine for both backends).

vLLM uses llguidance itself (structured outputs, backend "guidance"); the transformers
backend uses `GrammarLogitsProcessor` below: one `LLMatcher` per batch row (None: that row
samples freely), so one batched `generate` call serves prompts of different parents and
unconstrained full-mode prompts side by side. A grammar the engine refuses, or a row whose
matcher fails mid-answer, is never an exception for the batch: that row goes on without a
mask and its result says why (`Constraint.note`). llguidance keeps the tokenizer's special
tokens out of every lexeme (FACTS.md: xgrammar let `<|im_start|>` into free text).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import llguidance
import torch

# llguidance's default parser limits, as vLLM uses them (grammar.MAX_PARENT_LINES keeps
# delta grammars inside them), with short error texts.
LIMITS = llguidance.LLParserLimits(verbose_errors=False)


@dataclass
class Constraint:
    """What happened to one row's grammar: `active` while masks apply; `note` says why a
    grammar that was asked for did not (or no longer did) constrain the row."""

    matcher: llguidance.LLMatcher | None
    note: str | None = None
    constrained: bool = False  # a grammar masked this row from its first token

    def copy(self) -> Constraint:
        """The same grammar for another row, at its start (compiled once, copied cheaply)."""
        matcher = None if self.matcher is None else self.matcher.deep_copy()
        return Constraint(matcher, self.note, self.constrained)


def hf_tokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """llguidance's view of a transformers tokenizer (special tokens marked as such)."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)


class _Bytes:
    """A byte-level vocabulary: token i < 256 is byte i, the last token is end-of-sequence.
    For checking text against a grammar without a model (tests, the codec's tools)."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


def byte_tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


def compile_grammar(tokenizer: llguidance.LLTokenizer, lark: str) -> Constraint:
    """A matcher for `lark`, or no matcher and the engine's reason (never raises)."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=LIMITS)
    except (ValueError, RuntimeError, TypeError) as exc:
        return Constraint(None, f"grammar refused by the engine: {exc}")
    if matcher.is_error():
        return Constraint(None, f"grammar refused by the engine: {matcher.get_error()[:300]}")
    return Constraint(matcher, constrained=True)


def accepts(lark: str, text: str) -> bool:
    """Whether the grammar accepts exactly `text` (a whole answer), byte by byte."""
    constraint = compile_grammar(byte_tokenizer(), lark)
    if constraint.matcher is None:
        raise ValueError(constraint.note)
    matcher = constraint.matcher
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


def allowed_tokens(matcher: llguidance.LLMatcher, vocab_size: int) -> torch.Tensor:
    """The token ids the matcher allows next, as a bool mask of `vocab_size`."""
    import llguidance.torch

    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
    llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
    return _unpack(bitmask, vocab_size)[0]


def _unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    bits = torch.arange(32, dtype=torch.int32)
    return ((bitmask.unsqueeze(-1) >> bits) & 1).bool().flatten(1)[:, :vocab_size]


def random_walk(
    matcher: llguidance.LLMatcher,
    tokenizer: llguidance.LLTokenizer,
    rng: random.Random,
    max_tokens: int = 4000,
) -> tuple[list[int], bool]:
    """Sample tokens the matcher allows until it stops (a property-test driver): mostly
    uniform, with a pull towards line ends and the answer's end so that walks finish, and,
    where a line may not end yet, towards closing a bracket or string (a line of canonical
    code closes them before its end). Returns the tokens (end-of-sequence excluded) and
    whether the matcher accepted."""
    vocab = tokenizer.vocab_size
    texts = [tokenizer.decode_bytes([i]) for i in range(vocab)]
    newline = {i for i, text in enumerate(texts) if b"\n" in text}
    closing = {i for i, text in enumerate(texts) if any(c in text for c in b")]}'\"")}
    out: list[int] = []
    while len(out) < max_tokens and not matcher.is_stopped():
        allowed = allowed_tokens(matcher, vocab).nonzero().flatten().tolist()
        if not allowed:
            break
        eos = [t for t in allowed if t in tokenizer.eos_tokens]
        ends: list[int] = []
        if rng.random() < 0.3:
            ends = [t for t in allowed if t in newline] or [t for t in allowed if t in closing]
        pick = rng.choice(eos if eos and rng.random() < 0.5 else ends or allowed)
        if pick in tokenizer.eos_tokens:
            break
        if not matcher.consume_token(pick):
            raise RuntimeError(f"the matcher refused a token it allowed: {matcher.get_error()}")
        out.append(pick)
    return out, matcher.is_accepting()


class GrammarLogitsProcessor:
    """A transformers logits processor: row i samples under constraints[i] (or freely).

    transformers calls it once per step with the ids so far; from the second call on, the
    last id of each row is the token sampled for it, which its matcher consumes first. A
    row whose matcher ends (after `</delta>`) may only end the sequence; a row whose
    matcher fails is released with a note rather than failing the batch."""

    def __init__(self, constraints: list[Constraint], vocab_size: int, eos_id: int) -> None:
        self.constraints = constraints
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self._steps = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.torch

        if self._steps:
            self._consume(input_ids[:, -1].tolist())
        self._steps += 1
        rows = [i for i, c in enumerate(self.constraints) if c.matcher is not None]
        if not rows:
            return scores
        bitmask = llguidance.torch.allocate_token_bitmask(len(self.constraints), self.vocab_size)
        for i in rows:
            matcher = self.constraints[i].matcher
            if matcher is None:  # (rows holds the constrained ones)
                continue
            if not matcher.is_stopped():
                llguidance.torch.fill_next_token_bitmask(matcher, bitmask, i)
            if matcher.is_error():  # the engine gave up (measured: its lexer's limit)
                self._release(i, matcher.get_error())
                bitmask[i] = -1  # every token: the row goes on unconstrained, with a note
            elif matcher.is_stopped():
                bitmask[i] = 0
        allowed = _unpack(bitmask, self.vocab_size)
        for i in rows:
            if not allowed[i].any():  # stopped (or dead): only the end of the sequence
                allowed[i, self.eos_id] = True
        width = min(scores.shape[1], self.vocab_size)
        mask = torch.ones_like(scores, dtype=torch.bool)
        mask[rows, :width] = ~allowed[rows, :width]
        return scores.masked_fill(mask & _rows(scores, rows), float("-inf"))

    def _consume(self, last: list[int]) -> None:
        for i, token in enumerate(last):
            c = self.constraints[i]
            if c.matcher is None or c.matcher.is_stopped():
                continue
            if not c.matcher.consume_token(token):
                self._release(i, c.matcher.get_error())

    def _release(self, row: int, error: str) -> None:
        """The row's grammar failed mid-answer: the rest is sampled freely, and its note
        says so (admission judges the answer as any other)."""
        self.constraints[row].note = f"grammar failed mid-answer, rest unconstrained: {error}"
        self.constraints[row].matcher = None


def _rows(scores: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """A bool mask selecting whole rows of `scores`."""
    sel = torch.zeros(scores.shape[0], 1, dtype=torch.bool, device=scores.device)
    sel[rows] = True
    return sel
