"""Shared fixtures: the archive on both backends (SQLite file, local PostgreSQL server).

PostgreSQL databases are created on the server named by LLMNAS_TEST_PG_URL (an admin URL,
default: the local trust-auth server) as llmnas_test_<random>, and dropped afterwards.
Without a reachable server the postgres cases are skipped, or fail when CI is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
from fixtures import PG_ADMIN_URL
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.archive import Archive

BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty PostgreSQL databases (URL returned), dropped at module end."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).host}: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    created: list[str] = []

    def create() -> str:
        name = f"llmnas_test_{secrets.token_hex(6)}"
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()
    admin.dispose()


@pytest.fixture(scope="module")
def _pg_archive(pg_database: Callable[[], str]) -> Iterator[Archive]:
    archive = Archive.from_url(pg_database())
    yield archive
    archive.close()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """URL of a database with nothing in it, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.db'}"
    return request.getfixturevalue("pg_database")()


@pytest.fixture(params=BACKENDS)
def archive(request: pytest.FixtureRequest, tmp_path) -> Iterator[Archive]:
    """An empty archive at schema head: a new SQLite file per test, or the module's
    PostgreSQL database with every table emptied (a migration per test would be slow)."""
    if request.param == "sqlite":
        archive = Archive.from_url(f"sqlite:///{tmp_path / 'archive.db'}")
        yield archive
        archive.close()
        return
    archive = request.getfixturevalue("_pg_archive")
    with archive.engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE evaluations, candidates, adapters, cycles, architectures, runs "
            "RESTART IDENTITY CASCADE"
        )
    yield archive
