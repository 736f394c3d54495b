"""The archive's connection to its database: URL, engine, schema, sessions, reconnection.

Everything here is about reaching a database, not about what it holds, so the query and
write modules above it (db/queries.py, db/archive.py) never see a dialect detail except
through `Store._insert` and `Store._session`.

- URLs: parsed by db/url.py, the one parser (the CLI uses it too).
- Engines: SQLite gets a WAL journal (readers never block the writer), a busy timeout,
  foreign keys on, and write transactions that take the write lock up front (BEGIN
  IMMEDIATE) so a read-then-write never fails on a stale snapshot; a read-only engine
  opens the file with `mode=ro`. PostgreSQL gets pre-pinged pooled connections.
- Schema: a new or older database is upgraded with alembic (db/migrations); one from a
  newer llmnas, or a foreign one, is refused (SchemaMismatch). PostgreSQL openers upgrade
  one at a time under an advisory lock.
- `Store`: the base the Archive is built on. It owns the engine and the one session
  helper: one `with self._session()` block is one transaction, so every public method is
  atomic and a killed driver leaves no half-written state.
- `reconnecting`: the decorator every public method that touches the database carries;
  it retries while the database is unreachable.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from db.errors import ArchiveUnavailable, NotFound, SchemaMismatch
from db.url import parse_url, read_only_sqlite_url, sqlite_path
from llmnas_dist.config import ArchiveConfig
from llmnas_dist.errors import UsageError

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_S = TypeVar("_S", bound="Store")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_UPGRADE_LOCK = 0x11A5  # advisory lock id: concurrent openers upgrade one at a time


def db_message(exc: DBAPIError) -> str:
    """The first line of the database's own message (no SQL, no parameters)."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def disconnected(exc: DBAPIError) -> bool:
    """A lost or refused connection (server restart, network), as opposed to a bad query."""
    return bool(exc.connection_invalidated) or isinstance(exc, (OperationalError, InterfaceError))


# ---- engines -----------------------------------------------------------------------------


def make_engine(url: URL, *, read_only: bool, busy_timeout_ms: int) -> Engine:
    """An engine for the archive at `url` (see the module docstring for the settings)."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    path = sqlite_path(url)
    if path is None:  # in-memory: one shared connection, or every call sees a new db
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif read_only:
        if not path.is_file():
            raise NotFound(f"no archive at {path} (the file does not exist)")
        engine = create_engine(read_only_sqlite_url(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    configure_sqlite(engine, writable=not read_only, busy_timeout_ms=busy_timeout_ms)
    return engine


def configure_sqlite(engine: Engine, *, writable: bool, busy_timeout_ms: int) -> None:
    busy_ms = int(busy_timeout_ms)

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


def wait_until_reachable(engine: Engine, safe_url: str, retries: int) -> None:
    """Connect once, trying `retries` more times 1 s apart; ArchiveUnavailable if never."""
    for attempt in range(retries + 1):
        try:
            with engine.connect():
                return
        except OperationalError as exc:
            if attempt == retries:
                raise ArchiveUnavailable(
                    f"cannot open archive {safe_url}: {db_message(exc)}"
                ) from None
            time.sleep(1.0)


# ---- schema ------------------------------------------------------------------------------


def alembic_config(safe_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", safe_url.replace("%", "%%"))
    return cfg


def check_schema(engine: Engine, safe_url: str, *, read_only: bool) -> bool:
    """True when the database needs an upgrade (new or older); SchemaMismatch when it is
    from a newer llmnas, a foreign database, or (read-only) not at head."""
    script = ScriptDirectory.from_config(alembic_config(safe_url))
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = set(inspect(conn).get_table_names())
    if current == head:
        return False
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError:
            raise SchemaMismatch(
                f"archive {safe_url} is at schema revision {current!r}, unknown to "
                f"this llmnas (head {head!r}): it was written by a newer version; "
                "upgrade llmnas-dist"
            ) from None
    elif "runs" in tables:
        raise SchemaMismatch(
            f"{safe_url} has llmnas tables but no alembic version; not an archive "
            "this llmnas created"
        )
    if read_only:
        what = (
            "is empty (no archive schema)"
            if current is None
            else (
                f"is at schema revision {current!r}, older than {head!r}; open it once "
                "for writing (for example with the driver) to upgrade it"
            )
        )
        raise SchemaMismatch(f"archive {safe_url} {what}")
    return True


def upgrade(engine: Engine, safe_url: str) -> None:
    """Run alembic migrations to head in one transaction of `engine`."""
    cfg = alembic_config(safe_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_UPGRADE_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# ---- the store ---------------------------------------------------------------------------


def reconnecting(method: Callable[..., _T]) -> Callable[..., _T]:
    """Retry a public method while the database is unreachable (1 s apart, up to
    `connect_retries` times): every method is one transaction and every write is
    idempotent, so repeating one whose commit was not acknowledged is safe."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> _T:
        for attempt in range(self.cfg.connect_retries + 1):
            try:
                return method(self, *args, **kwargs)
            except DBAPIError as exc:
                if not disconnected(exc) or attempt == self.cfg.connect_retries:
                    raise
                log.warning(
                    "archive %s unreachable (%s); retrying in 1 s", self.safe_url, db_message(exc)
                )
                time.sleep(1.0)
        raise AssertionError("unreachable")  # the loop returns or raises

    return wrapper


class Store:
    """An open archive database: its engine, schema check and the one session helper.

    `read_only=True` (the CLI's mode) never creates or upgrades anything: a missing SQLite
    file, an empty database or an out-of-date schema is an error, and SQLite is opened with
    `mode=ro`. `connect_retries` overrides the config's, for the first connection and every
    query after it (the CLI fails fast on an outage, mid-command too).
    """

    def __init__(
        self,
        cfg: ArchiveConfig,
        *,
        read_only: bool = False,
        connect_retries: int | None = None,
    ) -> None:
        if connect_retries is not None:
            cfg = cfg.model_copy(update={"connect_retries": connect_retries})
        self.cfg = cfg
        self.read_only = read_only
        self.url = parse_url(cfg.url)
        self.dialect = self.url.get_backend_name()
        self.safe_url = self.url.render_as_string(hide_password=True)
        self.engine = make_engine(
            self.url, read_only=read_only, busy_timeout_ms=cfg.busy_timeout_ms
        )
        self._ro_engine: Engine | None = self.engine if read_only else None
        wait_until_reachable(self.engine, self.safe_url, cfg.connect_retries)
        if check_schema(self.engine, self.safe_url, read_only=read_only):
            self.upgrade()

    @classmethod
    def from_url(cls: type[_S], url: str, **kwargs: Any) -> _S:
        return cls(ArchiveConfig(url=url), **kwargs)

    def close(self) -> None:
        self.engine.dispose()
        if self._ro_engine is not None and self._ro_engine is not self.engine:
            self._ro_engine.dispose()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- schema --------------------------------------------------------------------------

    def _alembic_config(self) -> AlembicConfig:
        return alembic_config(self.safe_url)

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    @reconnecting
    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self) -> None:
        """Run alembic migrations to head on this archive's connection."""
        if self.read_only:
            raise UsageError("cannot upgrade an archive opened read-only")
        upgrade(self.engine, self.safe_url)

    # ---- sessions ------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """The one session helper: one block, one transaction (committed on exit)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _insert(self, model: type) -> Any:
        """INSERT with ON CONFLICT support; rowcount kept, to tell a new row from a repeat."""
        insert = sqlite_insert if self.dialect == "sqlite" else pg_insert
        return insert(model).execution_options(preserve_rowcount=True)

    def _sqlite_path(self) -> Path | None:
        return sqlite_path(self.url)

    def _read_only_engine(self) -> Engine:
        """SQLite: a second engine on the file with mode=ro. PostgreSQL: the same engine."""
        if self._ro_engine is None:
            path = self._sqlite_path()
            if self.dialect == "sqlite" and path is not None:
                self._ro_engine = create_engine(read_only_sqlite_url(path))
                configure_sqlite(
                    self._ro_engine, writable=False, busy_timeout_ms=self.cfg.busy_timeout_ms
                )
            else:
                self._ro_engine = self.engine
        return self._ro_engine
