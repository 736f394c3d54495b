"""The archive's written contract: what every caller may rely on, and the records it returns.

After optuna's BaseStorage (optuna/storages/_base.py): the storage promises are written
down once, as two Protocols, and the callers type against them instead of `Any`:

- `ArchiveReader`: the reads. The report and the CLI (llmnas_dist/cli), the end-of-run
  summary (cluster/progress.py) and a resuming driver rely on these.
- `ArchiveStore`: the reads plus the writes, what the driver (cluster/driver.py,
  cluster/entry.py) and the evaluation recorder (cluster/pool.py) rely on.

`db.archive.Archive` is the one implementation (SQLite and PostgreSQL); db/archive.py checks
that it satisfies `ArchiveStore`. Promises every method keeps, unless its docstring says
otherwise:

- Atomic: one method is one transaction; a killed caller leaves no half-written state.
- Reconnecting: a method that touches the database retries while it is unreachable
  (`connect_retries` times, 1 s apart) before it raises.
- Idempotent writes: a write a resumed driver may repeat changes nothing the second time
  and raises nothing.
- Errors are db.errors (ValueErrors): NotFound for a run, cycle, candidate or architecture
  the archive does not hold, IllegalTransition for a status change the state machine of
  llmnas_dist/vocab.py forbids, AlreadyExists, AmbiguousPrefix; bad arguments raise
  ValueError, and what a user asked for wrongly raises llmnas_dist.errors.UsageError.
- Returned rows (db.models) are detached snapshots: reading their columns needs no session,
  writing them changes nothing in the archive.

(llmnas_dist/analysis may not import db; it states the few reads it needs as its own
Protocol, llmnas_dist/analysis/source.py, which `Archive` satisfies structurally.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from db.models import (
    Adapter,
    Architecture,
    Candidate,
    CandidateStatus,
    Cycle,
    Evaluation,
    Mode,
    Run,
    RunStatus,
)
from llmnas_dist.config import Config
from llmnas_dist.errors import ErrorClass
from llmnas_dist.spans import Span

# the tables (and view) `export_rows` can return
EXPORT_TABLES = ("evaluations", "candidates", "cycles", "leaderboard")


class Elite(NamedTuple):
    """One member of E_t: its rank (1 = best), hash, mean score, seed count and program."""

    rank: int
    hash: str
    score: float
    n_seeds: int
    code: str


class TopRow(NamedTuple):
    """One leaderboard row: rank, hash, mean score, seeds, parameters, first cycle seen."""

    rank: int
    hash: str
    score: float
    n_seeds: int
    params: int | None
    first_cycle: int | None


class LineageStep(NamedTuple):
    """One step from an architecture back towards its seed (None fields: no candidate)."""

    hash: str
    parent_hash: str | None
    run_id: str | None
    cycle: int | None
    mode: str | None


@dataclass(frozen=True)
class SqlResult:
    """The answer to `ArchiveReader.sql`."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than max_rows


class ArchiveReader(Protocol):
    """The reads of the archive."""

    @property
    def safe_url(self) -> str:
        """The archive's URL with any password masked ("***"): safe to print."""
        ...

    # ---- runs and cycles ---------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        """The run; NotFound when the archive holds none by that id."""
        ...

    def list_runs(self) -> list[Run]:
        """Every run, oldest first."""
        ...

    def run_summaries(self) -> list[dict[str, Any]]:
        """One row per run with its progress (id, status, created_at, dataset, budget,
        cycles_done, candidates, evaluated, best_score), oldest first."""
        ...

    def cycles(self, run_id: str) -> list[Cycle]:
        """The run's cycles in order (completed ones carry gamma_t and their E_t)."""
        ...

    def last_completed_cycle(self, run_id: str) -> int | None:
        """The number of the run's last completed cycle (where a resume continues after);
        None before any."""
        ...

    # ---- architectures -----------------------------------------------------------------

    def get_architecture(self, hash_: str) -> Architecture:
        """The program stored under its full hash; NotFound when there is none."""
        ...

    def find_architecture(self, hash_prefix: str) -> Architecture:
        """The one architecture whose hash starts with the prefix (any case): NotFound when
        none does or the prefix is not hexadecimal, AmbiguousPrefix when several do."""
        ...

    def iter_signatures(self, batch_size: int = 10_000) -> Iterator[tuple[str, int, bytes]]:
        """(hash, num_perm, MinHash bytes) of every signed architecture, in hash order, in
        batches of short transactions (never one long lock): what a novelty index is
        rebuilt from on resume and by `llmnas check`."""
        ...

    # ---- candidates, evaluations, adapters, spans -------------------------------------

    def get_candidate(self, candidate_id: str) -> Candidate:
        """The candidate by id; NotFound when there is none."""
        ...

    def candidates(
        self,
        run_id: str,
        *,
        cycle: int | None = None,
        statuses: Sequence[CandidateStatus | str] | None = None,
    ) -> list[Candidate]:
        """The run's candidates (one cycle's, some statuses' when given), in (cycle, slot,
        attempt) order."""
        ...

    def origins(self, run_id: str, hashes: Sequence[str]) -> dict[str, str]:
        """Architecture hash -> the parent a candidate of this run proposed it from, for
        those of `hashes` that have one (seed programs have none)."""
        ...

    def evaluations(self, run_id: str, arch_hash: str | None = None) -> list[Evaluation]:
        """The run's evaluations (one architecture's when given), in the order recorded;
        failed ones have score None."""
        ...

    def adapters(self, run_id: str) -> list[Adapter]:
        """The run's fine-tuned adapters, by version."""
        ...

    def durations(self, dataset: str, budget: str, limit: int = 200) -> list[float]:
        """Training durations of the latest `limit` successful evaluations at this dataset
        and budget, over every run (what the adaptive deadline starts from)."""
        ...

    def reusable_evaluation(
        self, run_id: str, arch_hash: str, dataset: str, budget: str, seed: int, recipe: str
    ) -> Evaluation | None:
        """The first successful evaluation another run than `run_id` trained itself (not a
        copy) for this program, dataset, budget and seed under this recipe fingerprint
        (`Recipe.fingerprint`); None when there is none."""
        ...

    def spans(self, run_id: str, cycle: int | None = None) -> list[Span]:
        """The run's busy spans (one cycle's when given), in start order."""
        ...

    # ---- selection and reports ---------------------------------------------------------

    def elites(
        self, run_id: str, rho: float, dataset: str | None = None, min_elites: int = 1
    ) -> tuple[float | None, list[Elite]]:
        """(gamma_t, E_t): the top max(ceil(rho * N), min_elites) of the run's N scored
        architectures at its budget on `dataset` (default the run's), by mean score desc
        then hash asc (deterministic ties); gamma_t is the last elite's score. (None, [])
        when nothing was scored. ValueError unless 0 < rho <= 1 and min_elites >= 1."""
        ...

    def top(self, run_id: str, k: int = 10, dataset: str | None = None) -> list[TopRow]:
        """The run's k best architectures, in the order and with the scores of `elites`
        and the v_leaderboard view."""
        ...

    def lineage(self, hash_: str) -> list[LineageStep]:
        """The chain from an architecture back to its seed through admitted candidates;
        NotFound when the architecture is not archived."""
        ...

    def failures(self, run_id: str) -> list[tuple[str, bool | None, int]]:
        """(error_class, constrained, count) of the run's rejected and failed candidates,
        most first (constrained None: recorded before grammars were kept)."""
        ...

    def cycle_stats(self, run_id: str) -> list[dict[str, Any]]:
        """The v_cycle_stats rows of the run, by cycle."""
        ...

    def export_rows(self, run_id: str, table: str = "evaluations") -> list[dict[str, Any]]:
        """Every row of one of EXPORT_TABLES for the run, as plain dicts; NotFound for an
        unknown run, ValueError for an unknown table."""
        ...

    def sql(self, query: str, max_rows: int = 1000, timeout_s: float = 60.0) -> SqlResult:
        """One user SELECT/WITH statement on a read-only connection, at most max_rows rows;
        anything else, or a query that fails, raises UsageError."""
        ...


class ArchiveStore(ArchiveReader, Protocol):
    """The reads plus the writes: what the driver holds."""

    # ---- runs and cycles ---------------------------------------------------------------

    def create_run(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        dataset: str | None = None,
        budget: str | None = None,
        notes: str | None = None,
    ) -> Run:
        """A new running run (a fresh id unless given); dataset and budget default to the
        config's. AlreadyExists for a taken id, ValueError for a malformed one."""
        ...

    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETED) -> Run:
        """Mark the run completed, failed or stopped (or running again, to resume it);
        repeating the status it has changes nothing."""
        ...

    def set_run_budget(self, run_id: str, budget: str) -> Run:
        """Rank the run at another proxy budget from now on (the reliability gate)."""
        ...

    def set_evaluators_target(self, run_id: str, count: int) -> Run:
        """Ask the running driver of a running run for `count` evaluators (applied between
        cycles); UsageError when the run is not running."""
        ...

    def start_cycle(
        self,
        run_id: str,
        t: int,
        n_evaluators: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Cycle:
        """Open cycle t; a no-op for an open or completed one, so a resume may repeat it.
        `settings` are written at creation only: a resumed driver reads them back."""
        ...

    def complete_cycle(
        self,
        run_id: str,
        t: int,
        gamma_t: float | None = None,
        n_elites: int | None = None,
        elites: Sequence[Elite] | None = None,
    ) -> Cycle:
        """Close cycle t with its threshold and the snapshot of E_t the next cycle's
        parents come from; completing a completed cycle changes nothing."""
        ...

    # ---- architectures and candidates --------------------------------------------------

    def add_architecture(
        self,
        code: str,
        *,
        signature: Any = None,
        num_perm: int | None = None,
        seed: int | None = None,
        scheme: str | None = None,
        shingle_size: int | None = None,
        param_count: int | None = None,
        run_id: str | None = None,
    ) -> bool:
        """Store a canonical program under code_hash(code) (with its MinHash: a datasketch
        MinHash or its bytes plus num_perm); True when it was new."""
        ...

    def add_candidate(
        self,
        run_id: str,
        cycle: int,
        slot: int,
        *,
        mode: Mode | str,
        prompt: str = "",
        raw_output: str = "",
        attempt: int = 0,
        parent_hash: str | None = None,
        arch_hash: str | None = None,
        adapter_version: int | None = None,
        status: CandidateStatus | str = CandidateStatus.GENERATED,
        error_class: ErrorClass | str | None = None,
        message: str | None = None,
        nearest_hash: str | None = None,
        nearest_jaccard: float | None = None,
        output_tokens: int | None = None,
        constrained: bool | None = None,
    ) -> str:
        """Record one generation attempt; returns its id "{run}:{cycle}:{slot}:{attempt}".
        Repeating it changes nothing."""
        ...

    def update_candidate_status(
        self,
        candidate_id: str,
        status: CandidateStatus | str,
        *,
        arch_hash: str | None = None,
        error_class: ErrorClass | str | None = None,
        message: str | None = None,
        nearest_hash: str | None = None,
        nearest_jaccard: float | None = None,
    ) -> bool:
        """Move a candidate along its state machine; True when something changed (setting
        the status it has is a no-op), IllegalTransition for a forbidden move."""
        ...

    def admit_candidate(
        self,
        candidate_id: str,
        code: str,
        *,
        signature: Any = None,
        num_perm: int | None = None,
        seed: int | None = None,
        scheme: str | None = None,
        shingle_size: int | None = None,
        param_count: int | None = None,
        nearest_hash: str | None = None,
        nearest_jaccard: float | None = None,
        message: str | None = None,
    ) -> str:
        """Store the admitted program and mark its candidate admitted in one transaction
        (never an archived program whose candidate looks unjudged); returns the hash."""
        ...

    # ---- results -----------------------------------------------------------------------

    def record_evaluation(
        self,
        run_id: str,
        arch_hash: str,
        *,
        dataset: str,
        seed: int,
        budget: str,
        score: float | None,
        loss: float | None = None,
        accuracy: float | None = None,
        epochs_done: float | None = None,
        duration_s: float | None = None,
        samples_per_s: float | None = None,
        worker_id: str | None = None,
        node_id: str | None = None,
        gpu_id: str | None = None,
        attempt: int = 1,
        error_class: ErrorClass | str | None = None,
        message: str | None = None,
        candidate_id: str | None = None,
        deadline_s: float | None = None,
        recipe: str | None = None,
        reused_from: int | None = None,
    ) -> bool:
        """Store one result (score None: it failed; `recipe` its recipe's fingerprint;
        `reused_from` the evaluation of another run it copies); True when written. Unique
        per (run, architecture, dataset, seed, budget): a repeat changes nothing, except that a
        successful attempt replaces a failed row. The architecture's running mean score
        is updated in the same transaction."""
        ...

    def record_adapter(
        self,
        run_id: str,
        cycle: int,
        version: int,
        *,
        path: str,
        base_model: str,
        n_examples: int,
        train_loss: float | None = None,
    ) -> bool:
        """Store a fine-tuned adapter (unique per run and version); True when new."""
        ...

    def record_spans(self, run_id: str, spans: Sequence[Span]) -> None:
        """Store busy spans; each must carry its cycle (ValueError otherwise)."""
        ...
