"""SQLAlchemy 2.0 models of the archive; the schema itself changes only through alembic.

Status columns are Python enums stored as short strings (no database enum type), so the
same schema runs on SQLite and PostgreSQL and adding a status needs no type migration.
Error classes are plain strings (values of `llmnas_dist.errors.ErrorClass`) for the same
reason. Timestamps are UTC.

Every model has one lookup, `Model.get(session, key)`, which raises db.errors.NotFound with
the model's own message ("no run 'r1' in the archive"), so no query writes get-or-NotFound
by hand.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from db.errors import IllegalTransition, NotFound
from llmnas_dist.vocab import CandidateStatus, CycleStatus, Mode, RunStatus

__all__ = ["CandidateStatus", "CycleStatus", "Mode", "RunStatus"]  # the stored vocabulary

_M = TypeVar("_M", bound="Base")

HASH_LEN = 64  # sha256 hex digest
ID_LEN = 128

# Deterministic constraint names, so migrations and autogenerate agree on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    @classmethod
    def get(cls: type[_M], session: Session, key: Any, *, for_update: bool = False) -> _M:
        """The row with this primary key, read in `session` (locked for update when asked);
        NotFound, saying what was missing, when there is none: the archive's one lookup."""
        row = session.get(cls, key, with_for_update=for_update)
        if row is None:
            raise NotFound(cls._missing(key))
        return row

    @classmethod
    def _missing(cls, key: Any) -> str:
        return f"no {cls.__tablename__} row {key!r} in the archive"


def check_transition(current: Any, new: Any, what: str) -> None:
    """Raise IllegalTransition unless current -> new is allowed (staying put is allowed)."""
    target = type(current)(new)
    if target is not current and not current.can_become(target):
        allowed = ", ".join(s.value for s in current.successors()) or "none"
        raise IllegalTransition(
            f"{what}: cannot go from {current.value!r} to {target.value!r} (allowed: {allowed})"
        )


def _status(enum_cls: type[enum.Enum]) -> Enum:
    # VARCHAR holding the enum's value; no native enum type and no CHECK (Python enforces).
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[RunStatus] = mapped_column(_status(RunStatus), default=RunStatus.RUNNING)
    dataset: Mapped[str] = mapped_column(String(ID_LEN))
    # the proxy budget whose scores rank this run's architectures, e.g. "epochs=1"
    budget: Mapped[str] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    # evaluator count asked for by `llmnas scale`; the driver applies it between cycles
    evaluators_target: Mapped[int | None] = mapped_column(Integer)

    @classmethod
    def _missing(cls, key: Any) -> str:
        return f"no run {key!r} in the archive"


class Cycle(Base):
    __tablename__ = "cycles"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    t: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[CycleStatus] = mapped_column(_status(CycleStatus), default=CycleStatus.RUNNING)
    gamma_t: Mapped[float | None] = mapped_column(Float)
    n_elites: Mapped[int | None] = mapped_column(Integer)
    n_evaluators: Mapped[int | None] = mapped_column(Integer)
    # E_t when the cycle completed: [{"hash", "score", "n_seeds"}, ...] in rank order
    elites: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # what the cycle ran with: {"seeds": k, "budget": "epochs=1", ...}
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @classmethod
    def _missing(cls, key: Any) -> str:
        run_id, t = key
        return f"no cycle {t} in run {run_id!r}"


class Architecture(Base):
    __tablename__ = "architectures"

    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    code: Mapped[str] = mapped_column(Text)
    # MinHash hashvalues as numpy .tobytes() (uint32 for datasketch's affine32 scheme,
    # uint64 for legacy), with the parameters needed to compare them
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    num_perm: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)
    scheme: Mapped[str | None] = mapped_column(String(16))
    shingle_size: Mapped[int | None] = mapped_column(Integer)
    param_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    first_run: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))

    @classmethod
    def _missing(cls, key: Any) -> str:
        return f"no architecture {key!r} in the archive"


class Candidate(Base):
    """One generation attempt; id is "{run}:{cycle}:{slot}:{attempt}" (see candidate_id)."""

    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("run_id", "cycle", "slot", "attempt"),
        Index(None, "run_id", "arch_hash"),
        Index(None, "arch_hash"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN + 48), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    cycle: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    parent_hash: Mapped[str | None] = mapped_column(ForeignKey("architectures.hash"))
    # null when the output could not be turned into a program
    arch_hash: Mapped[str | None] = mapped_column(ForeignKey("architectures.hash"))
    mode: Mapped[Mode] = mapped_column(_status(Mode))
    adapter_version: Mapped[int | None] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text, default="")
    raw_output: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[CandidateStatus] = mapped_column(
        _status(CandidateStatus), default=CandidateStatus.GENERATED
    )
    error_class: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    nearest_hash: Mapped[str | None] = mapped_column(String(HASH_LEN))
    nearest_jaccard: Mapped[float | None] = mapped_column(Float)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    # sampled under a grammar (None: recorded before constrained decoding existed)
    constrained: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @classmethod
    def _missing(cls, key: Any) -> str:
        return f"no candidate {key!r} in the archive"


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("run_id", "arch_hash", "dataset", "seed", "budget"),
        # covers the elite/top query: filter on (run, dataset, budget), group by arch, read score
        Index(None, "run_id", "dataset", "budget", "arch_hash", "score"),
        # an earlier run's result for the same program, dataset, budget and seed (reuse)
        Index(None, "arch_hash", "dataset", "budget", "seed"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    arch_hash: Mapped[str] = mapped_column(ForeignKey("architectures.hash"))
    candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id"))
    dataset: Mapped[str] = mapped_column(String(ID_LEN))
    seed: Mapped[int] = mapped_column(Integer)
    budget: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)  # null: the evaluation failed
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    epochs_done: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    node_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    gpu_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    error_class: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    # the wall-clock limit this evaluation ran under (the adaptive deadline, see
    # llmnas_dist/evaluation/deadline.py); null: recorded before revision 0005
    deadline_s: Mapped[float | None] = mapped_column(Float)
    # the training recipe's fingerprint (llmnas_dist/evaluation/recipe.py): results with the
    # same one, program, dataset, budget and seed are interchangeable (evaluation.reuse);
    # null: recorded before revision 0006, or its evaluators were lost (worker_lost)
    recipe: Mapped[str | None] = mapped_column(String(16))
    # the id of the evaluation (of an earlier run) this row copies instead of training
    # again; null: trained for this run. Copies carry no duration, worker or node.
    reused_from: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpanRow(Base):
    """One busy interval of one actor (llmnas_dist/spans.py): what the utilisation
    timeline, busy shares and scaling advice are computed from. Times are Unix seconds."""

    __tablename__ = "spans"
    __table_args__ = (Index(None, "run_id", "cycle"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    cycle: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(ID_LEN))
    node_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    gpu_id: Mapped[str | None] = mapped_column(String(64))
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    key: Mapped[str | None] = mapped_column(String(ID_LEN + 64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    message: Mapped[str | None] = mapped_column(Text)


class ArchScore(Base):
    """Running mean of each architecture's successful scores, per run, dataset and budget.

    Maintained by Archive.record_evaluation in the same transaction as the evaluation, so
    the elite and top queries read one indexed row per architecture instead of
    re-aggregating every evaluation (10x+ faster at 100k rows).
    """

    __tablename__ = "arch_scores"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    arch_hash: Mapped[str] = mapped_column(ForeignKey("architectures.hash"), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    budget: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_seeds: Mapped[int] = mapped_column(Integer)
    score_sum: Mapped[float] = mapped_column(Float)
    mean_score: Mapped[float] = mapped_column(Float)


# in the elite order (score desc, hash asc), so top-k reads the first k index entries
Index(
    "ix_arch_scores_rank",
    ArchScore.run_id,
    ArchScore.dataset,
    ArchScore.budget,
    ArchScore.mean_score.desc(),
    ArchScore.arch_hash,
)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("run_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    cycle: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(Text)
    n_examples: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
