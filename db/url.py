"""Archive URLs: the one parser, and what file a SQLite URL names.

Kept apart from db/engine.py so a command can ask whether there is an archive to read
(`archive_exists`, used by llmnas_dist/cli/common.py) without loading the engine and
alembic; db/engine.py opens archives with the same functions.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from llmnas_dist.errors import UsageError


def parse_url(url: str) -> URL:
    """The archive URL parsed; UsageError when SQLAlchemy cannot read it."""
    try:
        return make_url(url)
    except ArgumentError:
        raise UsageError(f"invalid archive URL {url!r}") from None


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL names; None for in-memory and `file:` URI databases."""
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def read_only_sqlite_url(path: Path) -> URL:
    """The URL that opens the SQLite file at `path` read-only (`mode=ro`)."""
    return URL.create(
        "sqlite", database=f"file:{path.resolve()}", query={"mode": "ro", "uri": "true"}
    )


def archive_exists(url: str) -> bool:
    """Whether there may be an archive to read without creating one: any server URL (the
    server answers for it), or a SQLite URL naming a file that is there."""
    if not url.startswith("sqlite"):
        return True
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    path = sqlite_path(parsed)
    return path is not None and path.is_file()
