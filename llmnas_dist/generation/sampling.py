"""How one batch of answers is sampled: temperature, top-p, top-k, token budget, seed,
the end tags an answer stops at, early stops, prompt-lookup drafts and line redraws. Both
backends (`engine`) and the drafted decoder (`lookup`) read it."""

from __future__ import annotations

from dataclasses import dataclass

from llmnas_dist.config import GenerationConfig

STOP_STRINGS = ("</delta>", "</nn>")  # the end tags of the two answer formats


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one batch. temperature 0 means greedy; top_k 0 disables top-k;
    an answer ends at the first of the `stop` strings (kept in the text)."""

    temperature: float = 0.35
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 1024
    seed: int = 0
    stop: tuple[str, ...] = STOP_STRINGS
    # end a whole-program answer at a syntax error nothing later can mend, and any answer
    # whose last lines repeat one block this many times (0: never); transformers backend,
    # generation/early_stop.py
    stop_on_syntax_error: bool = False
    stop_on_repeats: int = 0
    # > 0: each answer alone, verifying up to this many prompt-lookup drafts per forward
    # pass (transformers backend, generation/lookup.py); 0: the batch decodes together
    draft_tokens: int = 0
    # > 0: each answer alone (as with drafts), redrawing at most this many lines with a fault
    # (generation/lookup.py, admission.partial.LineJudge); 0: never
    redraw_limit: int = 0
    # > 0: an answer decoded alone that copies a parent (a whole program) may run to the
    # parent's length plus this many tokens, where that exceeds max_new_tokens
    parent_headroom: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling settings: {self}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if isinstance(self.stop, str) or not all(isinstance(t, str) and t for t in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        if self.redraw_limit < 0:
            raise ValueError(f"redraw_limit must be 0 (off) or positive, got {self.redraw_limit}")
        if self.parent_headroom < 0:
            raise ValueError(
                f"parent_headroom must be 0 (off) or positive, got {self.parent_headroom}"
            )
        if self.draft_tokens < 0:
            raise ValueError(f"draft_tokens must be 0 (off) or positive, got {self.draft_tokens}")
        if self.stop_on_repeats == 1 or self.stop_on_repeats < 0:
            raise ValueError(
                f"stop_on_repeats must be 0 (off) or at least 2, got {self.stop_on_repeats}"
            )

    @classmethod
    def from_config(
        cls, cfg: GenerationConfig, seed: int = 0, mode: str = "delta", retry: bool = False
    ) -> Sampling:
        """The config's sampling for answers of `mode` (a full program gets its own budget);
        a retry samples at the retry temperature."""
        budget = cfg.max_new_tokens_full if mode == "full" else cfg.max_new_tokens
        full = mode == "full"
        lines = (cfg.redraw_full if full else cfg.redraw_deltas) and cfg.redraw_limit > 0
        # deltas decode alone only to redraw lines or builds, then with drafts as whole
        # programs do
        alone = full or lines or cfg.built(mode)
        temperature = cfg.retry_temperature if retry else cfg.temperature
        return cls(
            temperature,
            cfg.top_p,
            cfg.top_k,
            budget,
            seed,
            stop_on_syntax_error=cfg.stop_on_syntax_error,
            stop_on_repeats=cfg.stop_on_repeats,
            draft_tokens=cfg.draft_tokens if alone else 0,
            redraw_limit=cfg.redraw_limit if lines else 0,
            parent_headroom=cfg.full_headroom_tokens if full else 0,
        )

    def budget(self, parent_tokens: int | None, room: int | None) -> int:
        """The token budget of one answer decoded alone: max_new_tokens, raised to its
        parent's length plus `parent_headroom` (when set and the answer has a parent), but
        not past `room` (what max_model_len leaves after its prompt; None: no bound)."""
        most = self.max_new_tokens
        if self.parent_headroom and parent_tokens is not None:
            most = max(most, parent_tokens + self.parent_headroom)
            if room is not None:
                most = max(self.max_new_tokens, min(most, room))
        return most
