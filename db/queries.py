"""The archive's reads: every query the driver, the report and the CLI make.

`Queries` is the read half of `db.archive.Archive` (the write half is in db/archive.py),
built on `db.engine.Store` for the engine and the one session helper. Each public method
is one short transaction, carries `@reconnecting`, and returns detached rows (db.models)
or the plain records of db/contract.py; what each promises is written in
`db.contract.ArchiveReader`.

The selection queries (`elites`, `top`) read the `arch_scores` running means that
`Archive.record_evaluation` maintains, so they touch one indexed row per architecture.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Float, Integer, case, cast, func, literal, select, text, true
from sqlalchemy.exc import DBAPIError

from db.contract import Elite, LineageStep, SqlResult, TopRow
from db.engine import Store, db_message, reconnecting
from db.errors import AmbiguousPrefix, NotFound
from db.models import (
    Adapter,
    Architecture,
    ArchScore,
    Candidate,
    CandidateStatus,
    Cycle,
    CycleStatus,
    Evaluation,
    Run,
    RunStatus,
    SpanRow,
)
from db.readonly_sql import vet_select
from llmnas_dist.errors import UsageError
from llmnas_dist.spans import Span
from llmnas_dist.vocab import ADMITTED_STATUSES

HEX = re.compile(r"[0-9a-f]+")


class Queries(Store):
    """The reads of the archive (db.contract.ArchiveReader)."""

    # ---- runs and cycles -----------------------------------------------------------------

    @reconnecting
    def get_run(self, run_id: str) -> Run:
        with self._session() as s:
            return Run.get(s, run_id)

    @reconnecting
    def list_runs(self) -> list[Run]:
        with self._session() as s:
            return list(s.scalars(select(Run).order_by(Run.created_at, Run.id)))

    @reconnecting
    def run_summaries(self) -> list[dict[str, Any]]:
        """One row per run with its progress and stream seed: what `llmnas archive runs`
        prints."""
        c, e, y = Candidate, Evaluation, Cycle
        cycles_done = (
            select(func.count())
            .where(y.run_id == Run.id, y.status == CycleStatus.COMPLETED)
            .scalar_subquery()
        )
        n_cand = select(func.count()).where(c.run_id == Run.id).scalar_subquery()
        n_eval = (
            select(func.count(func.distinct(e.arch_hash)))
            .where(e.run_id == Run.id, e.score.is_not(None))
            .scalar_subquery()
        )
        best = (
            select(func.max(e.score))
            .where(e.run_id == Run.id, e.dataset == Run.dataset, e.budget == Run.budget)
            .scalar_subquery()
        )
        q = select(
            Run.id,
            Run.status,
            Run.created_at,
            Run.dataset,
            Run.budget,
            cycles_done.label("cycles_done"),
            n_cand.label("candidates"),
            n_eval.label("evaluated"),
            best.label("best_score"),
            Run.config,
        ).order_by(Run.created_at, Run.id)
        with self._session() as s:
            rows = s.execute(q).mappings().all()
        return [
            {
                **{k: v for k, v in r.items() if k != "config"},
                "status": RunStatus(r["status"]).value,
                "seed": (r["config"].get("ce") or {}).get("seed"),  # ce.seed, to replay the run
            }
            for r in rows
        ]

    @reconnecting
    def last_completed_cycle(self, run_id: str) -> int | None:
        q = select(func.max(Cycle.t)).where(
            Cycle.run_id == run_id, Cycle.status == CycleStatus.COMPLETED
        )
        with self._session() as s:
            return s.scalar(q)

    @reconnecting
    def cycles(self, run_id: str) -> list[Cycle]:
        with self._session() as s:
            return list(s.scalars(select(Cycle).where(Cycle.run_id == run_id).order_by(Cycle.t)))

    # ---- architectures -------------------------------------------------------------------

    @reconnecting
    def get_architecture(self, hash_: str) -> Architecture:
        with self._session() as s:
            return Architecture.get(s, hash_)

    @reconnecting
    def find_architecture(self, hash_prefix: str) -> Architecture:
        """The one architecture whose hash starts with the prefix (NotFound/AmbiguousPrefix)."""
        prefix = hash_prefix.strip().lower()
        if not prefix or not HEX.fullmatch(prefix):
            raise NotFound(f"{hash_prefix!r} is not a hexadecimal hash prefix")
        q = (
            select(Architecture)
            .where(Architecture.hash >= prefix, Architecture.hash < prefix + "g")
            .order_by(Architecture.hash)
            .limit(6)
        )
        with self._session() as s:
            found = list(s.scalars(q))
        if not found:
            raise NotFound(f"no architecture with hash prefix {prefix!r}")
        if len(found) > 1:
            shown = ", ".join(a.hash[:16] for a in found[:5])
            raise AmbiguousPrefix(
                f"hash prefix {prefix!r} matches several architectures ({shown}...); "
                "give more characters"
            )
        return found[0]

    def iter_signatures(self, batch_size: int = 10_000) -> Iterator[tuple[str, int, bytes]]:
        """(hash, num_perm, signature bytes) of every signed architecture, in hash order.

        Keyset-paged, one short transaction per batch, so a long rebuild never holds a lock.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        last = ""
        while True:
            batch = self._signatures_after(last, batch_size)
            yield from batch
            if len(batch) < batch_size:
                return
            last = batch[-1][0]

    @reconnecting
    def _signatures_after(self, last: str, limit: int) -> list[tuple[str, int, bytes]]:
        """One batch of iter_signatures (a generator cannot retry itself: each batch does)."""
        a = Architecture
        q = (
            select(a.hash, a.num_perm, a.signature)
            .where(a.signature.is_not(None), a.hash > last)
            .order_by(a.hash)
            .limit(limit)
        )
        with self._session() as s:
            # the WHERE clause guarantees a signature; num_perm is written with it
            return [(h, int(n or 0), bytes(sig or b"")) for h, n, sig in s.execute(q)]

    # ---- candidates, evaluations, adapters, spans ----------------------------------------

    @reconnecting
    def origins(self, run_id: str, hashes: Sequence[str]) -> dict[str, str]:
        """Architecture hash -> the parent it was proposed from, for the given hashes that
        a candidate of this run produced from a parent (seed programs have none)."""
        if not hashes:
            return {}
        q = (
            select(Candidate.arch_hash, Candidate.parent_hash)
            .where(
                Candidate.run_id == run_id,
                Candidate.arch_hash.in_(list(hashes)),
                Candidate.parent_hash.is_not(None),
                Candidate.status.in_(
                    [
                        CandidateStatus.EVALUATED,
                        CandidateStatus.EVALUATING,
                        CandidateStatus.ADMITTED,
                    ]
                ),
            )
            .order_by(Candidate.cycle, Candidate.slot, Candidate.attempt)
        )
        with self._session() as s:
            out: dict[str, str] = {}
            for child, parent in s.execute(q):
                if child is not None and parent is not None:
                    out.setdefault(child, parent)
            return out

    @reconnecting
    def get_candidate(self, candidate_id: str) -> Candidate:
        with self._session() as s:
            return Candidate.get(s, candidate_id)

    @reconnecting
    def candidates(
        self,
        run_id: str,
        *,
        cycle: int | None = None,
        statuses: Sequence[CandidateStatus | str] | None = None,
    ) -> list[Candidate]:
        """A run's candidates (optionally one cycle, some statuses), in (cycle, slot) order."""
        q = select(Candidate).where(Candidate.run_id == run_id)
        if cycle is not None:
            q = q.where(Candidate.cycle == cycle)
        if statuses is not None:
            q = q.where(Candidate.status.in_([CandidateStatus(x) for x in statuses]))
        q = q.order_by(Candidate.cycle, Candidate.slot, Candidate.attempt)
        with self._session() as s:
            return list(s.scalars(q))

    @reconnecting
    def evaluations(self, run_id: str, arch_hash: str | None = None) -> list[Evaluation]:
        q = select(Evaluation).where(Evaluation.run_id == run_id)
        if arch_hash is not None:
            q = q.where(Evaluation.arch_hash == arch_hash)
        with self._session() as s:
            return list(s.scalars(q.order_by(Evaluation.id)))

    @reconnecting
    def adapters(self, run_id: str) -> list[Adapter]:
        q = select(Adapter).where(Adapter.run_id == run_id).order_by(Adapter.version)
        with self._session() as s:
            return list(s.scalars(q))

    @reconnecting
    def durations(self, dataset: str, budget: str, limit: int = 200) -> list[float]:
        """Training durations of the latest successful evaluations at this dataset and
        budget, over every run (what the adaptive deadline starts from)."""
        e = Evaluation
        q = (
            select(e.duration_s)
            .where(e.dataset == dataset, e.budget == budget)
            .where(e.score.is_not(None), e.duration_s.is_not(None))
            .order_by(e.id.desc())
            .limit(limit)
        )
        with self._session() as s:
            return [float(d) for d in s.scalars(q) if d is not None]

    @reconnecting
    def reusable_evaluation(
        self, run_id: str, arch_hash: str, dataset: str, budget: str, seed: int, recipe: str
    ) -> Evaluation | None:
        """The first successful evaluation another run trained (not itself a copy) for this
        program, dataset, budget and seed with this recipe fingerprint; None when none did."""
        e = Evaluation
        q = (
            select(e)
            .where(e.arch_hash == arch_hash, e.dataset == dataset, e.budget == budget)
            .where(e.seed == seed, e.recipe == recipe, e.run_id != run_id)
            .where(e.score.is_not(None), e.reused_from.is_(None))
            .order_by(e.id)
            .limit(1)
        )
        with self._session() as s:
            return s.scalars(q).first()

    @reconnecting
    def spans(self, run_id: str, cycle: int | None = None) -> list[Span]:
        """A run's spans (one cycle's when given), in start order."""
        q = select(SpanRow).where(SpanRow.run_id == run_id)
        if cycle is not None:
            q = q.where(SpanRow.cycle == cycle)
        fields = [f for f in Span.__dataclass_fields__]
        with self._session() as s:
            rows = s.scalars(q.order_by(SpanRow.started, SpanRow.id)).all()
        return [Span(**{f: getattr(r, f) for f in fields}) for r in rows]

    # ---- selection -----------------------------------------------------------------------

    def _run_target(self, run_id: str, dataset: str | None) -> tuple[str, str]:
        run = self.get_run(run_id)
        return dataset or run.dataset, run.budget

    @reconnecting
    def elites(
        self, run_id: str, rho: float, dataset: str | None = None, min_elites: int = 1
    ) -> tuple[float | None, list[Elite]]:
        """(gamma_t, E_t) over all of the run's evaluated architectures, computed in SQL.

        An architecture's score is the mean of its successful evaluations (failed ones,
        score null, are left out) at the run's budget on `dataset` (default: the run's).
        E_t is the top max(ceil(rho * N), min_elites) by score desc, then hash asc
        (deterministic ties); gamma_t is the last elite's score, the (1 - rho) quantile.
        (None, []) when nothing was evaluated yet.
        """
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if min_elites < 1:
            raise ValueError(f"min_elites must be >= 1, got {min_elites}")
        ds, budget = self._run_target(run_id, dataset)
        sc = ArchScore
        match = (sc.run_id == run_id, sc.dataset == ds, sc.budget == budget)
        total = select(func.count().label("n")).where(*match).cte("total")
        rho_n = literal(rho, Float) * total.c.n
        # read only the head of the rank index: a few rows more than ceil(rho * n) (CAST
        # truncates on SQLite, rounds on PostgreSQL; + 1 covers both), then rank exactly
        approx = cast(rho_n, Integer) + 1
        limit = select(case((approx > min_elites, approx), else_=min_elites)).scalar_subquery()
        head = (
            select(sc.arch_hash.label("hash"), sc.mean_score.label("score"), sc.n_seeds)
            .where(*match)
            .order_by(sc.mean_score.desc(), sc.arch_hash.asc())
            .limit(limit)
            .cte("head")
        )
        ranked = (
            select(
                head,
                func.row_number()
                .over(order_by=(head.c.score.desc(), head.c.hash.asc()))
                .label("rank"),
                rho_n.label("rho_n"),
            )
            .select_from(head.join(total, true()))
            .cte("ranked")
        )
        # rank <= ceil(rho * n)  <=>  rank - 1 < rho * n  for integer rank: no CEIL needed,
        # which SQLite only has when built with its math functions
        q = (
            select(
                ranked.c.rank, ranked.c.hash, ranked.c.score, ranked.c.n_seeds, Architecture.code
            )
            .join(Architecture, Architecture.hash == ranked.c.hash)
            .where((ranked.c.rank - 1 < ranked.c.rho_n) | (ranked.c.rank <= min_elites))
            .order_by(ranked.c.rank)
        )
        with self._session() as s:
            rows = [Elite(int(r[0]), r[1], float(r[2]), int(r[3]), r[4]) for r in s.execute(q)]
        return (rows[-1].score if rows else None), rows

    @reconnecting
    def top(self, run_id: str, k: int = 10, dataset: str | None = None) -> list[TopRow]:
        """The run's k best architectures (same score and order as elites and v_leaderboard)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ds, budget = self._run_target(run_id, dataset)
        sc = ArchScore
        best = (
            select(sc.arch_hash.label("hash"), sc.mean_score.label("score"), sc.n_seeds)
            .where(sc.run_id == run_id, sc.dataset == ds, sc.budget == budget)
            .order_by(sc.mean_score.desc(), sc.arch_hash.asc())
            .limit(k)
        ).subquery("best")
        # run_id goes in the CASE, not the WHERE: with both, SQLite without statistics
        # picks the run_id index and scans the whole run once per row
        first_cycle = (
            select(func.min(case((Candidate.run_id == run_id, Candidate.cycle))))
            .where(Candidate.arch_hash == best.c.hash)
            .scalar_subquery()
        )
        q = (
            select(best.c.hash, best.c.score, best.c.n_seeds, Architecture.param_count, first_cycle)
            .join(Architecture, Architecture.hash == best.c.hash)
            .order_by(best.c.score.desc(), best.c.hash.asc())
        )
        with self._session() as s:
            return [
                TopRow(i, h, float(score), int(n), p, fc)
                for i, (h, score, n, p, fc) in enumerate(s.execute(q), start=1)
            ]

    # ---- reports -------------------------------------------------------------------------

    @reconnecting
    def lineage(self, hash_: str) -> list[LineageStep]:
        """The chain from an architecture back to its seed, through its admitted candidates."""
        self.get_architecture(hash_)
        steps: list[LineageStep] = []
        seen: set[str] = set()
        current: str | None = hash_
        with self._session() as s:
            while current is not None and current not in seen:
                seen.add(current)
                cand = s.scalars(
                    select(Candidate)
                    .where(Candidate.arch_hash == current, Candidate.status.in_(ADMITTED_STATUSES))
                    .order_by(Candidate.created_at, Candidate.id)
                    .limit(1)
                ).first()
                parent = cand.parent_hash if cand is not None else None
                steps.append(
                    LineageStep(
                        current,
                        parent,
                        cand.run_id if cand else None,
                        cand.cycle if cand else None,
                        cand.mode.value if cand else None,
                    )
                )
                current = parent
        return steps

    @reconnecting
    def failures(self, run_id: str) -> list[tuple[str, bool | None, int]]:
        """(error_class, constrained, count) of the run's rejected and failed candidates,
        most first; constrained says whether the answers were sampled under a grammar
        (None: recorded before that was kept)."""
        self.get_run(run_id)
        q = text(
            "SELECT error_class, constrained, count FROM v_failures WHERE run_id = :run "
            "ORDER BY count DESC, error_class, constrained"
        )
        with self._session() as s:
            return [
                (ec, None if c is None else bool(c), int(n))
                for ec, c, n in s.execute(q, {"run": run_id})
            ]

    @reconnecting
    def cycle_stats(self, run_id: str) -> list[dict[str, Any]]:
        q = text("SELECT * FROM v_cycle_stats WHERE run_id = :run ORDER BY cycle")
        with self._session() as s:
            return [dict(r) for r in s.execute(q, {"run": run_id}).mappings()]

    @reconnecting
    def export_rows(self, run_id: str, table: str = "evaluations") -> list[dict[str, Any]]:
        """All of a run's rows of one table (or the leaderboard view) as plain dicts."""
        self.get_run(run_id)
        queries = {  # one per EXPORT_TABLES entry
            "evaluations": "SELECT * FROM evaluations WHERE run_id = :run ORDER BY id",
            "candidates": "SELECT * FROM candidates WHERE run_id = :run "
            "ORDER BY cycle, slot, attempt",
            "cycles": "SELECT * FROM cycles WHERE run_id = :run ORDER BY t",
            "leaderboard": "SELECT * FROM v_leaderboard WHERE run_id = :run "
            "ORDER BY dataset, budget, rank",
        }
        if table not in queries:
            raise ValueError(f"unknown export table {table!r}; choose from {', '.join(queries)}")
        with self._session() as s:
            return [dict(r) for r in s.execute(text(queries[table]), {"run": run_id}).mappings()]

    # ---- read-only SQL -------------------------------------------------------------------

    def sql(self, query: str, max_rows: int = 1000, timeout_s: float = 60.0) -> SqlResult:
        """Run one SELECT/WITH statement on a read-only connection; at most max_rows rows."""
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        vetted = vet_select(query)
        try:
            return self._select(vetted, max_rows, timeout_s)
        except DBAPIError as exc:  # still unreachable after the retries
            raise UsageError(f"query failed: {db_message(exc)}") from None

    @reconnecting
    def _select(self, vetted: str, max_rows: int, timeout_s: float) -> SqlResult:
        """The vetted statement, run once. A failure of the statement itself (a syntax
        error, the timeout) is the user's: UsageError, never retried; a lost connection
        propagates to @reconnecting."""
        engine = self._read_only_engine()
        in_memory = self.dialect == "sqlite" and self._sqlite_path() is None
        with engine.connect() as conn, conn.begin() as tx:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            elif in_memory:  # no read-only file to open
                conn.exec_driver_sql("PRAGMA query_only = ON")
            try:
                result = conn.exec_driver_sql(vetted)
                if not result.returns_rows:
                    raise UsageError("the statement returned no rows (not a query)")
                columns = list(result.keys())
                rows = [tuple(r) for r in result.fetchmany(max_rows + 1)]
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                raise UsageError(f"query failed: {db_message(exc)}") from None
            finally:
                tx.rollback()
                if in_memory:
                    conn.exec_driver_sql("PRAGMA query_only = OFF")
        return SqlResult(columns, rows[:max_rows], len(rows) > max_rows)
