"""Adaptive evaluation deadlines: a straggler costs a multiple of what its budget takes.

`evaluation.timeout_s` (600 s by default) is the ceiling, sized for the slowest honest
program; a one-epoch digits proxy takes seconds, so a program whose forward never returns
held an evaluator for ten minutes. Each evaluation's deadline is instead
`deadline_factor` times the median wall time of successful evaluations at the same
dataset and budget (the running ones, and the archive's from earlier runs), at least
`deadline_floor_s` and at most `timeout_s`; with fewer than `deadline_min_samples` known
durations it is the ceiling. The deadline is recorded with the result; a program that
passes it gets error class `timeout` and is never scored.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable

from llmnas_dist.config import EvaluationConfig

WINDOW = 200  # the most recent durations per budget kept for the median


class Deadlines:
    """Running durations per (dataset, budget) and the deadline they imply."""

    def __init__(self, cfg: EvaluationConfig) -> None:
        self.cfg = cfg
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def observe(self, dataset: str, budget: str, seconds: float | None) -> None:
        """One successful evaluation's wall time."""
        if seconds is not None and seconds > 0:
            self._seen.setdefault((dataset, budget), deque(maxlen=WINDOW)).append(seconds)

    def observe_all(self, dataset: str, budget: str, seconds: Iterable[float | None]) -> None:
        for s in seconds:
            self.observe(dataset, budget, s)

    def median(self, dataset: str, budget: str) -> float | None:
        seen = self._seen.get((dataset, budget))
        if not seen or len(seen) < self.cfg.deadline_min_samples:
            return None
        return statistics.median(seen)

    def deadline(self, dataset: str, budget: str) -> float:
        """Seconds the next evaluation at this budget may take."""
        median = self.median(dataset, budget)
        ceiling = self.cfg.timeout_s
        if median is None or self.cfg.deadline_factor is None:
            return ceiling
        return min(ceiling, max(self.cfg.deadline_floor_s, self.cfg.deadline_factor * median))
