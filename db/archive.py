"""The Archive: the one way to write results, and the queries everything else reads.

One engine per Archive, one `with self._session()` block (one transaction) per public
method, so every call is atomic and a killed driver leaves no half-written state.
Writes that a resumed driver may repeat are idempotent (INSERT ... ON CONFLICT).

SQLite: WAL journal (readers never block the writer), a busy timeout, foreign keys on,
and write transactions that take the write lock up front (BEGIN IMMEDIATE) so a
read-then-write never fails on a stale snapshot. PostgreSQL: pre-ping pooled connections.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    case,
    cast,
    create_engine,
    event,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from db.errors import (
    AlreadyExists,
    AmbiguousPrefix,
    ArchiveUnavailable,
    NotFound,
    SchemaMismatch,
)
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
from db.readonly_sql import vet_select
from llmnas_dist.analysis.timeline import Span
from llmnas_dist.config import ArchiveConfig, Config
from llmnas_dist.errors import ErrorClass, UsageError, truncate
from llmnas_dist.vocab import budget_key, code_hash

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HEX = re.compile(r"[0-9a-f]+")
PG_UPGRADE_LOCK = 0x11A5  # advisory lock id: concurrent openers upgrade one at a time
EXPORT_TABLES = ("evaluations", "candidates", "cycles", "leaderboard")


def candidate_id(run_id: str, cycle: int, slot: int, attempt: int = 0) -> str:
    """Stable id of one generation attempt: "{run}:{cycle}:{slot}:{attempt}"."""
    return f"{run_id}:{cycle}:{slot}:{attempt}"


def new_run_id() -> str:
    return f"r-{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(2)}"


class Elite(NamedTuple):
    rank: int
    hash: str
    score: float
    n_seeds: int
    code: str


class TopRow(NamedTuple):
    rank: int
    hash: str
    score: float
    n_seeds: int
    params: int | None
    first_cycle: int | None


class LineageStep(NamedTuple):
    hash: str
    parent_hash: str | None
    run_id: str | None
    cycle: int | None
    mode: str | None


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than max_rows


def _db_message(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


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


def _disconnected(exc: DBAPIError) -> bool:
    """A lost or refused connection (server restart, network), as opposed to a bad query."""
    return bool(exc.connection_invalidated) or isinstance(exc, (OperationalError, InterfaceError))


def _reconnecting(method: Callable[..., _T]) -> Callable[..., _T]:
    """Retry a public method while the database is unreachable (1 s apart, up to
    `connect_retries` times): every method is one transaction and every write is
    idempotent, so repeating one whose commit was not acknowledged is safe."""

    @functools.wraps(method)
    def wrapper(self: Archive, *args: Any, **kwargs: Any) -> _T:
        for attempt in range(self.cfg.connect_retries + 1):
            try:
                return method(self, *args, **kwargs)
            except DBAPIError as exc:
                if not _disconnected(exc) or attempt == self.cfg.connect_retries:
                    raise
                log.warning(
                    "archive %s unreachable (%s); retrying in 1 s", self.safe_url, _db_message(exc)
                )
                time.sleep(1.0)
        raise AssertionError("unreachable")  # the loop returns or raises

    return wrapper


class Archive:
    """Results of every run: construct with `Archive(cfg)` or `Archive.from_url(url)`.

    `read_only=True` (the CLI's mode) never creates or upgrades anything: a missing SQLite
    file, an empty database or an out-of-date schema is an error, and SQLite is opened with
    `mode=ro`.
    """

    def __init__(
        self,
        cfg: ArchiveConfig,
        *,
        read_only: bool = False,
        connect_retries: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.read_only = read_only
        self.url = make_url(cfg.url) if _valid_url(cfg.url) else None
        if self.url is None:
            raise UsageError(f"invalid archive URL {cfg.url!r}")
        self.dialect = self.url.get_backend_name()
        self.safe_url = self.url.render_as_string(hide_password=True)
        self.engine = self._make_engine(self.url, read_only)
        self._ro_engine: Engine | None = self.engine if read_only else None
        retries = cfg.connect_retries if connect_retries is None else connect_retries
        self._wait_until_reachable(retries)
        self._check_schema()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Archive:
        return cls(ArchiveConfig(url=url), **kwargs)

    def close(self) -> None:
        self.engine.dispose()
        if self._ro_engine is not None and self._ro_engine is not self.engine:
            self._ro_engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- engine, schema ------------------------------------------------------------------

    def _sqlite_path(self) -> Path | None:
        db = self.url.database if self.url is not None else None
        if not db or db == ":memory:" or db.startswith("file:"):
            return None
        return Path(db)

    def _make_engine(self, url: URL, read_only: bool) -> Engine:
        if self.dialect != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        path = self._sqlite_path()
        if path is None:  # in-memory: one shared connection, or every call sees a new db
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        elif read_only:
            if not path.is_file():
                raise NotFound(f"no archive at {path} (the file does not exist)")
            ro = URL.create(
                "sqlite", database=f"file:{path.resolve()}", query={"mode": "ro", "uri": "true"}
            )
            engine = create_engine(ro)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url)
        self._configure_sqlite(engine, writable=not read_only)
        return engine

    def _configure_sqlite(self, engine: Engine, writable: bool) -> None:
        busy_ms = int(self.cfg.busy_timeout_ms)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # we emit BEGIN ourselves (below); pysqlite's implicit transactions would not
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if writable:
                cur.execute("PRAGMA journal_mode = WAL")
                # in WAL mode NORMAL loses at most the last commits on power loss, never
                # corrupts; FULL would fsync every small driver transaction
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writable else "BEGIN")

    def _wait_until_reachable(self, retries: int) -> None:
        for attempt in range(retries + 1):
            try:
                with self.engine.connect():
                    return
            except OperationalError as exc:
                if attempt == retries:
                    raise ArchiveUnavailable(
                        f"cannot open archive {self.safe_url}: {_db_message(exc)}"
                    ) from None
                time.sleep(1.0)

    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.safe_url.replace("%", "%%"))
        return cfg

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _check_schema(self) -> None:
        """Upgrade a new or older database; refuse one from a newer llmnas or a foreign one."""
        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            tables = set(inspect(conn).get_table_names())
        if current == head:
            return
        if current is not None:
            try:
                script.get_revision(current)
            except CommandError:
                raise SchemaMismatch(
                    f"archive {self.safe_url} is at schema revision {current!r}, unknown to "
                    f"this llmnas (head {head!r}): it was written by a newer version; "
                    "upgrade llmnas-dist"
                ) from None
        elif "runs" in tables:
            raise SchemaMismatch(
                f"{self.safe_url} has llmnas tables but no alembic version; not an archive "
                "this llmnas created"
            )
        if self.read_only:
            what = (
                "is empty (no archive schema)"
                if current is None
                else (
                    f"is at schema revision {current!r}, older than {head!r}; open it once "
                    "for writing (for example with the driver) to upgrade it"
                )
            )
            raise SchemaMismatch(f"archive {self.safe_url} {what}")
        self.upgrade()

    def upgrade(self) -> None:
        """Run alembic migrations to head on this archive's connection."""
        if self.read_only:
            raise UsageError("cannot upgrade an archive opened read-only")
        cfg = self._alembic_config()
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_UPGRADE_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _insert(self, model: type) -> Any:
        """INSERT with ON CONFLICT support; rowcount kept, to tell a new row from a repeat."""
        insert = sqlite_insert if self.dialect == "sqlite" else pg_insert
        return insert(model).execution_options(preserve_rowcount=True)

    # ---- runs ----------------------------------------------------------------------------

    @_reconnecting
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

    @_reconnecting
    def get_run(self, run_id: str) -> Run:
        with self._session() as s:
            run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in the archive")
        return run

    def list_runs(self) -> list[Run]:
        with self._session() as s:
            return list(s.scalars(select(Run).order_by(Run.created_at, Run.id)))

    @_reconnecting
    def finish_run(self, run_id: str, status: RunStatus | str = RunStatus.COMPLETED) -> Run:
        """Mark a run completed, failed or stopped (or running again, to resume it)."""
        with self._session() as s:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the archive")
            new = RunStatus(status)
            check_transition(run.status, new, f"run {run_id}")
            if new is not run.status:
                run.status = new
                run.finished_at = None if new is RunStatus.RUNNING else utcnow()
        return run

    @_reconnecting
    def run_summaries(self) -> list[dict[str, Any]]:
        """One row per run with its progress: what `llmnas archive runs` prints."""
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
        ).order_by(Run.created_at, Run.id)
        with self._session() as s:
            rows = s.execute(q).mappings().all()
        return [{**r, "id": r["id"], "status": RunStatus(r["status"]).value} for r in rows]

    # ---- cycles --------------------------------------------------------------------------

    @_reconnecting
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
            if s.get(Run, run_id) is None:
                raise NotFound(f"no run {run_id!r} in the archive")
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

    @_reconnecting
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
            cycle = s.get(Cycle, (run_id, t), with_for_update=True)
            if cycle is None:
                raise NotFound(f"no cycle {t} in run {run_id!r}")
            check_transition(cycle.status, CycleStatus.COMPLETED, f"cycle {run_id}:{t}")
            if cycle.status is CycleStatus.RUNNING:
                cycle.status = CycleStatus.COMPLETED
                cycle.gamma_t, cycle.n_elites = gamma_t, n_elites
                cycle.elites = snapshot
                cycle.finished_at = utcnow()
        return cycle

    @_reconnecting
    def set_run_budget(self, run_id: str, budget: str) -> Run:
        """Rank the run at another proxy budget from now on (the reliability gate)."""
        with self._session() as s:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the archive")
            run.budget = budget
        return run

    @_reconnecting
    def set_evaluators_target(self, run_id: str, count: int) -> Run:
        """Ask a running driver for `count` evaluators (applied between cycles)."""
        if count < 1:
            raise ValueError(f"an evaluator count must be at least 1, got {count}")
        with self._session() as s:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the archive")
            if run.status is not RunStatus.RUNNING:
                raise UsageError(
                    f"run {run_id!r} is {run.status.value}; only a running run can be scaled"
                )
            run.evaluators_target = count
        return run

    @_reconnecting
    def last_completed_cycle(self, run_id: str) -> int | None:
        q = select(func.max(Cycle.t)).where(
            Cycle.run_id == run_id, Cycle.status == CycleStatus.COMPLETED
        )
        with self._session() as s:
            return s.scalar(q)

    @_reconnecting
    def cycles(self, run_id: str) -> list[Cycle]:
        with self._session() as s:
            return list(s.scalars(select(Cycle).where(Cycle.run_id == run_id).order_by(Cycle.t)))

    # ---- architectures -------------------------------------------------------------------

    @_reconnecting
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

    @_reconnecting
    def get_architecture(self, hash_: str) -> Architecture:
        with self._session() as s:
            arch = s.get(Architecture, hash_)
        if arch is None:
            raise NotFound(f"no architecture {hash_!r} in the archive")
        return arch

    def find_architectures(self, hash_prefix: str) -> Architecture:
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
        a = Architecture
        last = ""
        while True:
            q = (
                select(a.hash, a.num_perm, a.signature)
                .where(a.signature.is_not(None), a.hash > last)
                .order_by(a.hash)
                .limit(batch_size)
            )
            with self._session() as s:
                batch = s.execute(q).all()
            for h, num_perm, sig in batch:
                # the WHERE clause guarantees a signature; num_perm is written with it
                yield h, int(num_perm or 0), bytes(sig or b"")
            if len(batch) < batch_size:
                return
            last = batch[-1][0]

    # ---- candidates ----------------------------------------------------------------------

    @_reconnecting
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

    @_reconnecting
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
        cand = s.get(Candidate, candidate_id, with_for_update=True)
        if cand is None:
            raise NotFound(f"no candidate {candidate_id!r} in the archive")
        check_transition(cand.status, new, f"candidate {candidate_id}")
        if new is cand.status:
            return False
        cand.status = new
        cand.updated_at = utcnow()
        for name, value in updates.items():
            if value is not None:
                setattr(cand, name, value)
        return True

    @_reconnecting
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

    @_reconnecting
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

    @_reconnecting
    def get_candidate(self, candidate_id: str) -> Candidate:
        with self._session() as s:
            cand = s.get(Candidate, candidate_id)
        if cand is None:
            raise NotFound(f"no candidate {candidate_id!r} in the archive")
        return cand

    @_reconnecting
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

    # ---- evaluations, adapters -----------------------------------------------------------

    @_reconnecting
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
    ) -> bool:
        """Store one result; True when the row was written.

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

    def _add_to_mean(self, run_id: str, arch_hash: str, dataset: str, budget: str, score: float):
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

    @_reconnecting
    def evaluations(self, run_id: str, arch_hash: str | None = None) -> list[Evaluation]:
        q = select(Evaluation).where(Evaluation.run_id == run_id)
        if arch_hash is not None:
            q = q.where(Evaluation.arch_hash == arch_hash)
        with self._session() as s:
            return list(s.scalars(q.order_by(Evaluation.id)))

    @_reconnecting
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

    @_reconnecting
    def adapters(self, run_id: str) -> list[Adapter]:
        q = select(Adapter).where(Adapter.run_id == run_id).order_by(Adapter.version)
        with self._session() as s:
            return list(s.scalars(q))

    @_reconnecting
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

    # ---- utilisation ---------------------------------------------------------------------

    @_reconnecting
    def record_spans(self, run_id: str, spans: Sequence[Span]) -> None:
        """Store busy spans (llmnas_dist/analysis/timeline.py); each needs its cycle."""
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

    @_reconnecting
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

    @_reconnecting
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

    @_reconnecting
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

    def lineage(self, hash_: str) -> list[LineageStep]:
        """The chain from an architecture back to its seed, through its admitted candidates."""
        self.get_architecture(hash_)
        admitted = (CandidateStatus.ADMITTED, CandidateStatus.EVALUATING, CandidateStatus.EVALUATED)
        steps: list[LineageStep] = []
        seen: set[str] = set()
        current: str | None = hash_
        with self._session() as s:
            while current is not None and current not in seen:
                seen.add(current)
                cand = s.scalars(
                    select(Candidate)
                    .where(Candidate.arch_hash == current, Candidate.status.in_(admitted))
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

    def cycle_stats(self, run_id: str) -> list[dict[str, Any]]:
        q = text("SELECT * FROM v_cycle_stats WHERE run_id = :run ORDER BY cycle")
        with self._session() as s:
            return [dict(r) for r in s.execute(q, {"run": run_id}).mappings()]

    def export_rows(self, run_id: str, table: str = "evaluations") -> list[dict[str, Any]]:
        """All of a run's rows of one table (or the leaderboard view) as plain dicts."""
        self.get_run(run_id)
        queries = {
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

    def _read_only_engine(self) -> Engine:
        """SQLite: a second engine on the file with mode=ro. PostgreSQL: the same engine."""
        if self._ro_engine is None:
            path = self._sqlite_path()
            if self.dialect == "sqlite" and path is not None:
                ro = URL.create(
                    "sqlite",
                    database=f"file:{path.resolve()}",
                    query={"mode": "ro", "uri": "true"},
                )
                self._ro_engine = create_engine(ro)
                self._configure_sqlite(self._ro_engine, writable=False)
            else:
                self._ro_engine = self.engine
        return self._ro_engine

    def sql(self, query: str, max_rows: int = 1000, timeout_s: float = 60.0) -> SqlResult:
        """Run one SELECT/WITH statement on a read-only connection; at most max_rows rows."""
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        vetted = vet_select(query)
        engine = self._read_only_engine()
        try:
            with engine.connect() as conn, conn.begin() as tx:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                elif self._sqlite_path() is None:  # in-memory: no read-only file to open
                    conn.exec_driver_sql("PRAGMA query_only = ON")
                try:
                    result = conn.exec_driver_sql(vetted)
                    if not result.returns_rows:
                        raise UsageError("the statement returned no rows (not a query)")
                    columns = list(result.keys())
                    rows = [tuple(r) for r in result.fetchmany(max_rows + 1)]
                finally:
                    tx.rollback()
                    if self.dialect == "sqlite" and self._sqlite_path() is None:
                        conn.exec_driver_sql("PRAGMA query_only = OFF")
        except DBAPIError as exc:
            raise UsageError(f"query failed: {_db_message(exc)}") from None
        return SqlResult(columns, rows[:max_rows], len(rows) > max_rows)


def _valid_url(url: str) -> bool:
    try:
        make_url(url)
    except ArgumentError:
        return False
    return True
