"""Alembic environment of the winback store.

Run through `serving.store.migrate.upgrade_database`, which passes an open connection in
`config.attributes["connection"]` (or an engine in `config.attributes["engine"]`); there is no
alembic.ini and no URL in a config file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from serving.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:
        raise RuntimeError(
            "winback migrations need a connection or engine in Config.attributes; "
            "use serving.store.migrate.upgrade_database(url)"
        )
    with engine.begin() as conn:
        _run(conn)


if context.is_offline_mode():
    raise RuntimeError("winback migrations run online only (upgrade_database(url))")
run_migrations_online()
