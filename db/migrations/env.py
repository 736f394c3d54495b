"""Alembic environment: runs on the Archive's connection (config.attributes["connection"]).

Without one (a developer running alembic by hand), it connects to `sqlalchemy.url`.
SQLite gets batch mode, so later ALTERs work through table copies.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from db.models import Base
from db.views import include_object

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no connection and no sqlalchemy.url configured")
    engine = create_engine(url)
    with engine.begin() as conn:
        run_on(conn)
