"""What a user watches: a live progress line per cycle; at the end the table and what
was found.

On a terminal the line is redrawn in place; in a log (a Ray job, CI) a line is printed at
most every `LOG_EVERY_S` seconds, so logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import psutil

from llmnas_dist.cli.common import format_table
from llmnas_dist.generation.finetune import TrainStep
from llmnas_dist.vocab import SHORT_HASH, CandidateStatus, was_admitted

if TYPE_CHECKING:
    from db.contract import ArchiveReader

LOG_EVERY_S = 10.0


@dataclass(kw_only=True)
class LiveLine:
    """One line that a terminal rewrites in place; elsewhere (a log, `ray job logs`) it is
    printed at most every `LOG_EVERY_S` seconds."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    _last: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def line(self) -> str:
        raise NotImplementedError

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.out.isatty():
            self.out.write("\r\033[K" + self.line() + ("\n" if final else ""))
            self.out.flush()
        elif final or now - self._last >= LOG_EVERY_S:
            print(self.line(), file=self.out, flush=True)
            self._last = now


@dataclass
class Progress(LiveLine):
    """Counters of the running cycle, shown as one line."""

    t: int
    planned: int
    generated: int = 0
    admitted: int = 0
    evaluating: int = 0
    done: int = 0
    reused: int = 0  # evaluations taken from earlier runs (evaluation.reuse)
    best: float | None = None

    def line(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        reused = f", {self.reused} evaluations reused" if self.reused else ""
        return (
            f"cycle {self.t}: generated {self.generated}/{self.planned} | admitted "
            f"{self.admitted} | evaluating {self.evaluating} | done {self.done}{reused} | "
            f"best {best} | {self.elapsed:.0f} s"
        )

    def score(self, value: float | None) -> None:
        if value is not None and (self.best is None or value > self.best):
            self.best = value


@dataclass
class StudyProgress(LiveLine):
    """A cycle's study evaluations (noise seeds, the longer reference budget): done of
    planned, how many were taken from earlier runs, and an ETA at the pace so far."""

    t: int
    planned: int
    done: int = 0
    reused: int = 0

    def line(self) -> str:
        left, trained = self.planned - self.done, self.done - self.reused  # copies are instant
        eta = "-" if not trained or not left else duration(self.elapsed / trained * left)
        reused = f", {self.reused} reused" if self.reused else ""
        return (
            f"cycle {self.t}: proxy studies: done {self.done}/{self.planned}{reused} | "
            f"ETA {eta} | {self.elapsed:.0f} s"
        )


def duration(seconds: float) -> str:
    """'45 s', '12 min', '1.5 h': an ETA a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class TrainingProgress(LiveLine):
    """A LoRA training the driver waits for (the warm start, a cycle's fine-tune): its
    step, loss and ETA as the fine-tuner last reported them."""

    label: str
    step: TrainStep | None = None

    def line(self) -> str:
        if self.step is None:
            return f"{self.label}: preparing | {self.elapsed:.0f} s"  # cache lookup or examples
        s = self.step
        return (
            f"{self.label}: step {s.step}/{s.total} | loss {s.loss:.3f} | "
            f"ETA {duration(s.eta_s)} | {self.elapsed:.0f} s"
        )


@dataclass(frozen=True)
class Mark:
    """A moment of a run: monotonic seconds, and the CPU seconds this node's cores have
    spent busy (every process) so far."""

    at: float
    busy: float


def busy_cpu_seconds() -> float:
    """CPU seconds this node has been busy since boot, all cores and processes (user, nice,
    system, interrupts; not idle, iowait or steal)."""
    t = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(t, name, 0.0) for name in fields))


def now_mark() -> Mark:
    return Mark(time.monotonic(), busy_cpu_seconds())


@dataclass(frozen=True)
class Phase:
    """One phase of a run: its wall seconds, and the share of the node's cores that were
    busy meanwhile (0..1; every process on the node, so on a cluster the driver's node)."""

    name: str
    seconds: float
    cpu: float


@dataclass
class PhaseClock:
    """Wall time and CPU use of each phase of a run, in order: where a run's time goes,
    and whether its cores were busy meanwhile. Printed at the end of a run and written to
    `<run_dir>/<run>/phases.json` (one object per phase)."""

    spans: list[Phase] = field(default_factory=list)
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = now_mark()
        try:
            yield
        finally:
            self.add(name, start, now_mark())

    def add(self, name: str, start: Mark, end: Mark) -> None:
        seconds = max(end.at - start.at, 0.0)
        busy = max(end.busy - start.busy, 0.0)
        cpu = min(busy / (seconds * self.cores), 1.0) if seconds > 0 else 0.0
        self.spans.append(Phase(name, seconds, cpu))

    def table(self) -> str:
        total = sum(p.seconds for p in self.spans)
        width = max((len(p.name) for p in self.spans), default=5)
        lines = [
            f"  {p.name.ljust(width)}  {p.seconds:7.1f} s  {p.seconds / total if total else 0:6.1%}"
            f"  cpu {p.cpu:4.0%}"
            for p in self.spans
        ]
        lines.append(f"  {'total'.ljust(width)}  {total:7.1f} s")
        header = f"phases (wall time; cpu: share of this node's {self.cores} cores busy):"
        return "\n".join([header, *lines])

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"phase": p.name, "seconds": round(p.seconds, 3), "cpu_share": round(p.cpu, 3)}
            for p in self.spans
        ]
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")


COUNTS = ("generated", "constrained", "valid", "novel", "evaluated")
TABLE_COLUMNS = (
    "cycle",
    "generated",
    "constrained",
    "valid",
    "novel",
    "evaluated",
    "gamma_t",
    "best",
    "elite_mean",
)


def cycle_rows(archive: ArchiveReader, run_id: str) -> list[dict[str, Any]]:
    """One row per cycle: generated, constrained (of those, sampled under a grammar), valid
    (passed parsing, checks and the build), novel (admitted), evaluated, gamma_t, best score
    so far, mean score of E_t."""
    per_cycle: dict[int, dict[str, Any]] = {}
    for c in archive.candidates(run_id):
        row = per_cycle.setdefault(c.cycle, dict.fromkeys(COUNTS, 0))
        row["generated"] += 1
        row["constrained"] += bool(c.constrained)
        row["evaluated"] += c.status is CandidateStatus.EVALUATED
        admitted = was_admitted(c.status, c.arch_hash)
        novelty = c.error_class in ("duplicate", "not_novel")
        row["valid"] += admitted or novelty
        row["novel"] += admitted
    rows, best = [], None
    for cycle in archive.cycles(run_id):
        counts = per_cycle.get(cycle.t, dict.fromkeys(COUNTS, 0))
        elites = cycle.elites or []
        top = max((e["score"] for e in elites), default=None)
        best = top if best is None or (top is not None and top > best) else best
        mean = sum(e["score"] for e in elites) / len(elites) if elites else None
        rows.append(
            {
                "cycle": cycle.t,
                **counts,
                "gamma_t": cycle.gamma_t,
                "best": best,
                "elite_mean": mean,
                "completed": cycle.status.value == "completed",
            }
        )
    return rows


def cycle_table(rows: list[dict[str, Any]]) -> str:
    """The per-cycle table printed at the end of a run."""
    return format_table(TABLE_COLUMNS, [[r[c] for c in TABLE_COLUMNS] for r in rows], rule=False)


FOUND_K = 3


def found_summary(archive: ArchiveReader, run_id: str) -> str:
    """The end of a run: its best architectures (hash prefix, score, parameters, origin),
    where the archive is, and the commands that show the report, leaderboard and code."""
    top = archive.top(run_id, FOUND_K)
    parents = archive.origins(run_id, [r.hash for r in top])
    # a password is masked in safe_url: then the user's own URL (or its variable) is needed
    url = archive.safe_url
    where = f" --archive {url}" if "***" not in url else " --archive URL"
    lines = [f"run {run_id}: the {len(top)} best architectures" if top else
             f"run {run_id}: no architecture was scored"]  # fmt: skip
    for r in top:
        parent = parents.get(r.hash)
        origin = f"cycle {r.first_cycle}, from {parent[:SHORT_HASH]}" if parent else "seed"
        params = "-" if r.params is None else f"{r.params:,}"
        lines.append(
            f"  {r.rank}. {r.hash[:SHORT_HASH]}  score {r.score:.4f}  params {params}  {origin}"
        )
    lines.append(f"archive: {url}")
    lines.append(f"  report:      llmnas report {run_id}{where}")
    lines.append(f"  leaderboard: llmnas archive top --run {run_id}{where}")
    if top:
        lines.append(f"  best code:   llmnas archive show {top[0].hash[:SHORT_HASH]}{where}")
    return "\n".join(lines)
