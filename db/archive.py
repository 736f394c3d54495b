"""The Archive: the one way to write results, with the reads everything else makes.

`Archive` is the archive's public entry (`from db.archive import Archive`). It is built in
three layers, one concept each:

- db/engine.py (`Store`): URL, engine, schema check and upgrade, the one session helper
  and `@reconnecting`;
- db/queries.py (`Queries`): the reads;
- this module: the writes, each one transaction, each idempotent where a resumed driver
  may repeat it (INSERT ... ON CONFLICT), each with `@reconnecting`.

What every method promises is written in db/contract.py (`ArchiveStore`); the driver, the
report and the CLI type against that contract, and this module checks that `Archive`
satisfies it. Construct with `Archive(cfg)` or `Archive.from_url(url)`; `read_only=True`
(the CLI's mode) never creates or upgrades anything.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.contract import EXPORT_TABLES, Elite, LineageStep, SqlResult, TopRow
from db.engine import reconnecting
from db.errors import AlreadyExists
from db.models import (
    Adapter,
    Architecture,
    ArchScore,
    Candidate,
    CandidateStatus,
    Cycle,
    CycleStatus,
    Evaluation,
    Mode,
    Run,
    RunStatus,
    SpanRow,
    check_transition,
    utcnow,
)
from db.queries import Queries
from llmnas_dist.config import Config
from llmnas_dist.errors import ErrorClass, UsageError, truncate
from llmnas_dist.spans import Span
from llmnas_dist.vocab import budget_key, code_hash

if TYPE_CHECKING:
    from db.contract import ArchiveStore

# the records callers import from here, with the Archive
__all__ = [
    "EXPORT_TABLES",
    "Archive",
    "Elite",
    "LineageStep",
    "SqlResult",
    "TopRow",
    "candidate_id",
    "new_run_id",
]

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def candidate_id(run_id: str, cycle: int, slot: int, attempt: int = 0) -> str:
    """Stable id of one generation attempt: "{run}:{cycle}:{slot}:{attempt}"."""
    return f"{run_id}:{cycle}:{slot}:{attempt}"


def new_run_id() -> str:
    return f"r-{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(2)}"


def _signature_bytes(signature: Any, num_perm: int | None) -> tuple[bytes, int]:
    """Raw bytes, or a datasketch MinHash (anything with `hashvalues`) in its own dtype."""
    if isinstance(signature, bytes | bytearray | memoryview):
        raw = bytes(signature)
        if num_perm is None:
            raise ValueError("num_perm is required with a raw-bytes signature")
    elif hasattr(signature, "hashvalues"):
        values = np.asarray(signature.hashvalues)
        raw = values.tobytes()
        num_perm = num_perm or len(values)
    else:
        raise ValueError(f"signature must be bytes or a MinHash, not {type(signature).__name__}")
    if num_perm < 1 or len(raw) not in (4 * num_perm, 8 * num_perm):
        raise ValueError(
            f"signature has {len(raw)} bytes, expected 4 or 8 per value for num_perm={num_perm}"
        )
    return raw, num_perm


def _error_class(value: ErrorClass | str | None) -> str | None:
    return None if value is None else ErrorClass(value).value


class Archive(Queries):
    """Results of every run: the writes here, the reads inherited from db.queries.Queries,
    the engine and sessions from db.engine.Store."""

    # ---- runs and cycles -----------------------------------------------------------------

    @reconnecting
    def create_run(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        dataset: str | None = None,
        budget: str | None = None,
        notes: str | None = None,
    ) -> Run:
        """A new run; dataset and budget default to the config's (ce.dataset, evaluation)."""
        cfg = config if isinstance(config, Config) else Config.model_validate(config or {})
        cfg = cfg.with_run_seed()  # stored with the run: a resume continues its streams
        run_id = run_id or new_run_id()
        if not RUN_ID.fullmatch(run_id):
            raise ValueError(
                f"run id {run_id!r}: use 1-64 letters, digits, '_', '.', '-' (starting with a "
                "letter or digit)"
            )
        run = Run(
            id=run_id,
            config=cfg.model_dump(mode="json"),
            status=RunStatus.RUNNING,
            dataset=dataset or cfg.ce.dataset,
            budget=budget or budget_key(cfg.evaluation.epochs, cfg.evaluation.budget_s),
            notes=notes,
            created_at=utcnow(),
        )
        with self._session() as s:
            if s.get(Run, run_id) is not None:
                raise AlreadyExists(f"run {run_id!r} already exists")
            s.add(run)
        return run

    @reconnecting
    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETED) -> Run:
        """Mark a run completed, failed or stopped (or running again, to resume it)."""
        with self._session() as s:
            run = Run.get(s, run_id, for_update=True)
            new = RunStatus(status)
            check_transition(run.status, new, f"run {run_id}")
            if new is not run.status:
                run.status = new
                run.finished_at = None if new is RunStatus.RUNNING else utcnow()
        return run

    @reconnecting
    def start_cycle(
        self,
        run_id: str,
        t: int,
        n_evaluators: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Cycle:
        """Open cycle t (a no-op for an open or completed one, so a resumed driver may repeat).

        `settings` (what the cycle runs with) are written when the cycle is created only: a
        resumed driver reads them back instead of recomputing them.
        """
        with self._session() as s:
            Run.get(s, run_id)
            cycle = s.get(Cycle, (run_id, t))
            if cycle is None:
                cycle = Cycle(
                    run_id=run_id,
                    t=t,
                    n_evaluators=n_evaluators,
                    settings=dict(settings) if settings is not None else None,
                    started_at=utcnow(),
                )
                s.add(cycle)
            elif n_evaluators is not None and cycle.status is CycleStatus.RUNNING:
                cycle.n_evaluators = n_evaluators
        return cycle

    @reconnecting
    def complete_cycle(
        self,
        run_id: str,
        t: int,
        gamma_t: float | None = None,
        n_elites: int | None = None,
        elites: Sequence[Elite] | None = None,
    ) -> Cycle:
        """Close cycle t with its threshold and elite set E_t (kept as a snapshot: the next
        cycle's parents come from it). Completing a completed cycle changes nothing."""
        snapshot = (
            None
            if elites is None
            else [{"hash": e.hash, "score": e.score, "n_seeds": e.n_seeds} for e in elites]
        )
        with self._session() as s:
            cycle = Cycle.get(s, (run_id, t), for_update=True)
            check_transition(cycle.status, CycleStatus.COMPLETED, f"cycle {run_id}:{t}")
            if cycle.status is CycleStatus.RUNNING:
                cycle.status = CycleStatus.COMPLETED
                cycle.gamma_t, cycle.n_elites = gamma_t, n_elites
                cycle.elites = snapshot
                cycle.finished_at = utcnow()
        return cycle

    @reconnecting
    def set_run_budget(self, run_id: str, budget: str) -> Run:
        """Rank the run at another proxy budget from now on (the reliability gate)."""
        with self._session() as s:
            run = Run.get(s, run_id, for_update=True)
            run.budget = budget
        return run

    @reconnecting
    def set_evaluators_target(self, run_id: str, count: int) -> Run:
        """Ask a running driver for `count` evaluators (applied between cycles)."""
        if count < 1:
            raise ValueError(f"an evaluator count must be at least 1, got {count}")
        with self._session() as s:
            run = Run.get(s, run_id, for_update=True)
            if run.status is not RunStatus.RUNNING:
                raise UsageError(
                    f"run {run_id!r} is {run.status.value}; only a running run can be scaled"
                )
            run.evaluators_target = count
        return run

    # ---- architectures and candidates ----------------------------------------------------

    @reconnecting
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
        """Store a canonical program under code_hash(code); True when it was new.

        `signature` is a datasketch MinHash (num_perm, seed and scheme are read from it) or
        its hashvalues bytes with num_perm (and seed, scheme) given.
        """
        stmt = self._architecture_insert(
            code,
            signature=signature,
            num_perm=num_perm,
            seed=seed,
            scheme=scheme,
            shingle_size=shingle_size,
            param_count=param_count,
            run_id=run_id,
        )
        with self._session() as s:
            return s.connection().execute(stmt).rowcount == 1

    def _architecture_insert(
        self,
        code: str,
        *,
        signature: Any,
        num_perm: int | None,
        seed: int | None,
        scheme: str | None,
        shingle_size: int | None,
        param_count: int | None,
        run_id: str | None,
    ) -> Any:
        values: dict[str, Any] = {
            "hash": code_hash(code),
            "code": code,
            "shingle_size": shingle_size,
            "param_count": param_count,
            "first_run": run_id,
            "created_at": utcnow(),
        }
        if signature is not None:
            raw, num_perm = _signature_bytes(signature, num_perm)
            values |= {"signature": raw, "num_perm": num_perm}
            values["seed"] = seed if seed is not None else getattr(signature, "seed", None)
            values["scheme"] = scheme or getattr(signature, "scheme", None)
        return (
            self._insert(Architecture)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["hash"])
        )

    @reconnecting
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
        """Record one generation attempt; returns its id. Repeating it changes nothing."""
        cid = candidate_id(run_id, cycle, slot, attempt)
        now = utcnow()
        stmt = (
            self._insert(Candidate)
            .values(
                id=cid,
                run_id=run_id,
                cycle=cycle,
                slot=slot,
                attempt=attempt,
                parent_hash=parent_hash,
                arch_hash=arch_hash,
                mode=Mode(mode),
                adapter_version=adapter_version,
                prompt=prompt,
                raw_output=raw_output,
                status=CandidateStatus(status),
                error_class=_error_class(error_class),
                message=None if message is None else truncate(message),
                nearest_hash=nearest_hash,
                nearest_jaccard=nearest_jaccard,
                output_tokens=output_tokens,
                constrained=constrained,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        with self._session() as s:
            s.connection().execute(stmt)
        return cid

    @reconnecting
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
        """Move a candidate along its state machine; True when something changed.

        Setting the status it already has is a no-op (a resumed driver may repeat it);
        a transition the state machine forbids raises IllegalTransition.
        """
        updates = {
            "arch_hash": arch_hash,
            "error_class": _error_class(error_class),
            "message": None if message is None else truncate(message),
            "nearest_hash": nearest_hash,
            "nearest_jaccard": nearest_jaccard,
        }
        with self._session() as s:
            return self._move(s, candidate_id, CandidateStatus(status), updates)

    @staticmethod
    def _move(
        s: Session, candidate_id: str, new: CandidateStatus, updates: Mapping[str, Any]
    ) -> bool:
        cand = Candidate.get(s, candidate_id, for_update=True)
        check_transition(cand.status, new, f"candidate {candidate_id}")
        if new is cand.status:
            return False
        cand.status = new
        cand.updated_at = utcnow()
        for name, value in updates.items():
            if value is not None:
                setattr(cand, name, value)
        return True

    @reconnecting
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
        """Store the admitted program and mark its candidate admitted, in one transaction
        (a crash never leaves an archived program whose candidate still looks unjudged).
        Returns the program's hash; repeating it changes nothing."""
        hash_ = code_hash(code)
        cand_run = candidate_id.split(":", 1)[0]
        stmt = self._architecture_insert(
            code,
            signature=signature,
            num_perm=num_perm,
            seed=seed,
            scheme=scheme,
            shingle_size=shingle_size,
            param_count=param_count,
            run_id=cand_run,
        )
        updates = {
            "arch_hash": hash_,
            "nearest_hash": nearest_hash,
            "nearest_jaccard": nearest_jaccard,
            "message": message or None,
        }
        with self._session() as s:
            s.connection().execute(stmt)
            self._move(s, candidate_id, CandidateStatus.ADMITTED, updates)
        return hash_

    # ---- results -------------------------------------------------------------------------

    @reconnecting
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
        """Store one result; True when the row was written. `recipe` is the training
        recipe's fingerprint, `reused_from` the archived evaluation a reused result copies.

        Unique per (run, architecture, dataset, seed, budget): recording it again changes
        nothing and raises nothing. The one exception is a failed row (score null), which a
        later successful attempt replaces, so a retried evaluation ends with its result.
        """
        if score is not None and not math.isfinite(score):
            raise ValueError(f"score must be finite or None, got {score!r}")
        values = {
            "run_id": run_id,
            "arch_hash": arch_hash,
            "candidate_id": candidate_id,
            "dataset": dataset,
            "seed": seed,
            "budget": budget,
            "score": score,
            "loss": loss,
            "accuracy": accuracy,
            "epochs_done": epochs_done,
            "duration_s": duration_s,
            "samples_per_s": samples_per_s,
            "worker_id": worker_id,
            "node_id": node_id,
            "gpu_id": gpu_id,
            "attempt": attempt,
            "error_class": _error_class(error_class),
            "message": None if message is None else truncate(message),
            "deadline_s": deadline_s,
            "recipe": recipe,
            "reused_from": reused_from,
            "created_at": utcnow(),
        }
        stmt = self._insert(Evaluation).values(**values)
        key = ["run_id", "arch_hash", "dataset", "seed", "budget"]
        stmt = stmt.on_conflict_do_update(
            index_elements=key,
            set_={k: stmt.excluded[k] for k in values if k not in key},
            where=Evaluation.score.is_(None) & stmt.excluded.score.is_not(None),
        )
        with self._session() as s:
            conn = s.connection()
            written = conn.execute(stmt).rowcount == 1
            if written and score is not None:
                conn.execute(self._add_to_mean(run_id, arch_hash, dataset, budget, score))
        return written

    def _add_to_mean(
        self, run_id: str, arch_hash: str, dataset: str, budget: str, score: float
    ) -> Any:
        """Upsert that folds one new successful score into arch_scores' running mean."""
        t = ArchScore.__table__
        stmt = self._insert(ArchScore).values(
            run_id=run_id,
            arch_hash=arch_hash,
            dataset=dataset,
            budget=budget,
            n_seeds=1,
            score_sum=score,
            mean_score=score,
        )
        return stmt.on_conflict_do_update(
            index_elements=["run_id", "arch_hash", "dataset", "budget"],
            set_={
                "n_seeds": t.c.n_seeds + 1,
                "score_sum": t.c.score_sum + stmt.excluded.score_sum,
                "mean_score": (t.c.score_sum + stmt.excluded.score_sum) / (t.c.n_seeds + 1),
            },
        )

    @reconnecting
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
        stmt = (
            self._insert(Adapter)
            .values(
                run_id=run_id,
                cycle=cycle,
                version=version,
                path=path,
                base_model=base_model,
                n_examples=n_examples,
                train_loss=train_loss,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["run_id", "version"])
        )
        with self._session() as s:
            return s.connection().execute(stmt).rowcount == 1

    @reconnecting
    def record_spans(self, run_id: str, spans: Sequence[Span]) -> None:
        """Store busy spans (llmnas_dist/spans.py); each needs its cycle."""
        rows = []
        for sp in spans:
            if sp.cycle is None:
                raise ValueError(f"span {sp.kind} of {sp.actor} has no cycle")
            row = dict(sp.__dict__)
            row["message"] = None if sp.message is None else truncate(sp.message)
            rows.append({**row, "run_id": run_id})
        if rows:
            with self._session() as s:
                s.execute(insert(SpanRow), rows)


if TYPE_CHECKING:

    def _satisfies_the_contract(archive: Archive) -> ArchiveStore:
        return archive  # mypy checks Archive against db.contract.ArchiveStore here
