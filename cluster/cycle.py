"""What every step of a CE cycle shares: its keyed random streams, its settings, its slots,
and the state the driver keeps in memory instead of re-reading the archive.

- `keyed_rng` / `keyed_seed`: random streams named by their key, so a resumed run draws
  what the uninterrupted one would have; `deal_parents` deals a mode's parents from them.
- `Settings` (stored with the cycle, so a resume reuses them) and `Slot` (one proposal
  position: parent, mode, prompt).
- `Evaluations`: the run's evaluations, read from the archive once and then kept up to date
  with every result the driver records (the archive stays the source of truth: a resumed
  driver starts by reading it).
- `SpanLog`: busy spans to the archive, filed under the running cycle; where each actor runs.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray

from cluster.pool import PoolResult
from db.contract import ArchiveStore
from llmnas_dist.evaluation.evaluate import EvalRecord
from llmnas_dist.spans import Span, SpanKind, Where
from llmnas_dist.vocab import Mode, budget_key
from workers.evaluator import EvalTask

T = TypeVar("T")

SEED_CYCLE = 0  # the seed programs, evaluated before the first CE cycle


def keyed_rng(seed: int, *key: object) -> random.Random:
    """A random stream named by its key: the same (seed, key) draws the same numbers in
    any process, in any order."""
    return random.Random(":".join(str(k) for k in (seed, *key)))


def keyed_seed(seed: int, *key: object) -> int:
    return zlib.crc32(":".join(str(k) for k in (seed, *key)).encode()) & 0x7FFFFFFF


def deal_parents(elites: Sequence[T], n: int, alpha: float, rng: random.Random) -> list[T]:
    """Parents for `n` slots of one mode from `elites` (best first), in the order `rng`
    deals them.

    alpha 0: a shuffled deck dealt round, so every elite proposes once before any twice.
    alpha > 0: the power law of parent selection (elite of rank r weighted r^-alpha), as
    quotas: each elite proposes round(n * its share) times, the remainders going to the
    largest fractions (the better rank on ties), so a cycle's few slots follow the weights
    without the spread of independent draws.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not elites:
        return []
    if alpha == 0:
        deck = rng.sample(list(elites), len(elites))
        return [deck[j % len(deck)] for j in range(n)]
    weights = [(rank + 1) ** -alpha for rank in range(len(elites))]
    shares = [n * w / sum(weights) for w in weights]
    quotas = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(elites)), key=lambda r: (quotas[r] - shares[r], r))
    for r in by_remainder[: n - sum(quotas)]:
        quotas[r] += 1
    dealt = [e for e, q in zip(elites, quotas, strict=True) for _ in range(q)]
    rng.shuffle(dealt)
    return dealt


@dataclass(frozen=True)
class Settings:
    """What one cycle evaluates with (stored with the cycle, so a resume reuses it)."""

    seeds: int
    epochs: float | None
    budget_s: float | None
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> str:
        return budget_key(self.epochs, self.budget_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "epochs": self.epochs,
            "budget_s": self.budget_s,
            "budget": self.budget,
            "gate": self.gate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        return cls(d["seeds"], d.get("epochs"), d.get("budget_s"), d.get("gate") or {})


@dataclass(frozen=True)
class Slot:
    """One proposal position of a cycle: its parent, mode and prompt."""

    t: int
    index: int
    mode: Mode
    prompt: str
    parent_hash: str | None = None
    parent_code: str | None = None


EvalKey = tuple[str, str, str, int]  # (architecture, dataset, budget, seed)


class Evaluations:
    """The run's evaluations, (architecture, dataset, budget, seed) -> score (None: failed),
    as the archive holds them: read once, on first use (a resumed run's rows), then kept up
    to date by `add` for each result the driver records. Which seeds of a candidate are in,
    the studies' samples and the gate's rows come from here, not from a scan of the archive.

    With a `recipe` fingerprint (evaluation.reuse), `reusable` answers tasks that an
    earlier run already trained under that recipe from the archive instead of the pool.
    """

    def __init__(self, archive: ArchiveStore, run_id: str, recipe: str | None = None) -> None:
        self.archive = archive
        self.run_id = run_id
        self.recipe = recipe
        self._rows: dict[EvalKey, float | None] | None = None  # in first-recorded order
        self._by_arch: dict[str, dict[tuple[str, str, int], float | None]] = {}

    def _all(self) -> dict[EvalKey, float | None]:
        if self._rows is None:
            self._rows = {}
            for e in self.archive.evaluations(self.run_id):
                self._put((e.arch_hash, e.dataset, e.budget, e.seed), e.score)
        return self._rows

    def _put(self, key: EvalKey, score: float | None) -> None:
        assert self._rows is not None
        self._rows[key] = score
        self._by_arch.setdefault(key[0], {})[key[1:]] = score

    def add(
        self, arch_hash: str, dataset: str, budget: str, seed: int, score: float | None
    ) -> None:
        """One recorded result, kept as `Archive.record_evaluation` keeps it: the first row
        of a key stays, except that a success replaces a failure."""
        rows = self._all()
        key = (arch_hash, dataset, budget, seed)
        if key not in rows or (rows[key] is None and score is not None):
            self._put(key, score)

    def reusable(self, tasks: Iterable[EvalTask]) -> tuple[list[PoolResult], list[EvalTask]]:
        """(results copied from earlier runs' archived evaluations, the tasks left to train).
        Only epoch budgets are taken: a time budget's result depends on the machine."""
        reused: list[PoolResult] = []
        fresh: list[EvalTask] = []
        for task in tasks:
            row = None
            if self.recipe and task.arch_hash and task.epochs is not None:
                row = self.archive.reusable_evaluation(
                    self.run_id,
                    task.arch_hash,
                    task.dataset,
                    budget_key(task.epochs),
                    task.seed,
                    self.recipe,
                )
            if row is None:
                fresh.append(task)
                continue
            copy = EvalRecord(
                ok=True,
                dataset=task.dataset,
                seed=task.seed,
                epochs=task.epochs,
                budget_s=None,
                accuracy=row.score,
                loss=row.loss,
                epochs_done=row.epochs_done,
                key=task.key,
                recipe=self.recipe,
                reused_from=row.id,
            )
            reused.append(PoolResult(task, copy, attempts=0))
        return reused, fresh

    def rows(self, budget: str, dataset: str | None = None) -> list[tuple[str, int, float | None]]:
        """(architecture, seed, score) at a budget (on one dataset, or any), in the order
        they were first recorded."""
        return [
            (arch, seed, score)
            for (arch, ds, b, seed), score in self._all().items()
            if b == budget and (dataset is None or ds == dataset)
        ]

    def scores(self, arch_hash: str, dataset: str, budget: str) -> dict[int, float | None]:
        """Seed -> score of one architecture at a dataset and budget."""
        self._all()
        return {
            seed: score
            for (ds, b, seed), score in self._by_arch.get(arch_hash, {}).items()
            if ds == dataset and b == budget
        }


class SpanLog:
    """Every busy span goes to the archive under the running cycle (`cycle`, set by the
    driver as each cycle starts); actors are asked where they run once."""

    def __init__(self, archive: ArchiveStore, run_id: str) -> None:
        self.archive = archive
        self.run_id = run_id
        self.cycle = SEED_CYCLE
        self._places: dict[Any, Where] = {}  # actor handle -> where it runs

    def record(self, span: Span) -> None:
        self.archive.record_spans(self.run_id, [span.at(self.cycle)])

    def place(self, actor: Any) -> Where:
        """Where an actor runs (asked once; call it while the actor is idle)."""
        if actor not in self._places:
            self._places[actor] = ray.get(actor.where.remote())
        return self._places[actor]

    def actor_span(
        self, kind: SpanKind, actor: Any, started: float, key: str | None = None
    ) -> None:
        """The span of a call the driver waited for on `actor` (fine-tune, warm start)."""
        where = self.place(actor)
        self.record(
            Span(
                kind.value, where.actor, started, time.time(), where.node_id, where.gpu_id, key=key
            )
        )
