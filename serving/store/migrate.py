"""Schema migrations: `upgrade_database(url)` runs `alembic upgrade head` programmatically.

The Alembic configuration is built in code (no alembic.ini); the migration scripts live in
`serving/store/migrations`. The URL is handed to `env.py` through `Config.attributes`, never
through the ini parser (which would choke on `%` in passwords or options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from serving.errors import MigrationError, StoreUnavailableError
from serving.store.engine import WRITE_OPTION, create_store_engine

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant: serializes concurrent upgrades of one PostgreSQL database.
_PG_MIGRATION_LOCK: Final = 0x57494E4241434B  # "WINBACK"


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (and `engine`, if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade_database(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the database schema to `revision` (idempotent: at head it does nothing).

    Runs in one transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: under an advisory lock),
    so two processes starting at once cannot both apply a revision.

    Raises:
        StoreUnavailableError: the database cannot be reached.
        MigrationError: a migration failed (the transaction is rolled back).
    """
    owned = isinstance(url_or_engine, str)
    engine = create_store_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(
                f"store: cannot connect: {getattr(exc, 'orig', None) or exc}"
            ) from None
        with conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    except CommandError as exc:
        raise MigrationError(f"store migration: {exc}") from None
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise MigrationError(f"store migration failed: {orig}") from None
    finally:
        if owned:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
