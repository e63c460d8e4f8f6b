"""The request path's statements, run on the pooled DBAPI connection itself.

A recorded API decision needs one read transaction (the customer's live state) and one write
transaction (idempotency key, cap check under the customer's lock, decision and contact).
Through SQLAlchemy's `Connection` each of those statements cost 100-200 microseconds of CPU
(execution context, bind and result processing, cache lookups), several times SQLite's own
work (measured: a one-insert transaction 276 us through `Connection`, 65 us like this). So
the few statements of the request path are plain SQL run on the DBAPI connection checked out
of the engine's pool, which keeps everything the pool does (pool events, PostgreSQL's
pre-ping, the SQLite write gate is taken by the caller), with:

- parameters converted as SQLAlchemy's column types would (SQLite: datetimes as text in
  SQLAlchemy's storage format, booleans as 0/1, JSON as `engine.json_text`, `None` as JSON
  `null` like the `JSON` type; PostgreSQL: native values, JSON text cast to `jsonb`), so rows
  written here and through the ORM are the same;
- results converted back (SQLite datetimes parsed);
- DBAPI errors translated into `serving.errors` as `Store._translated` translates
  SQLAlchemy's, and a connection that went stale (a read-only or failed SQLite file, a
  dropped PostgreSQL connection) invalidated with the pool's others, as SQLAlchemy does on a
  disconnect (`serving.store.engine`), so the store recovers by itself.

Only SQLite and PostgreSQL (psycopg 3) are supported, as by the rest of the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine

from serving.errors import StoreError, StoreUnavailableError
from serving.store.engine import json_text, stale_sqlite_error

_SQLITE_TS: Final = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


class ConstraintError(StoreError):
    """An integrity constraint failed (the repository maps it to a public error)."""


def _sqlite_ts(ts: datetime | None) -> str | None:
    """A naive datetime as SQLAlchemy's SQLite `DateTime` stores it."""
    if ts is None:
        return None
    return _SQLITE_TS % (ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond)


def _parse_ts(value: Any) -> Any:
    """A datetime as read back (SQLite returns the stored text); None stays None."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class HotPath:
    """Plain-SQL transactions on the engine's pooled DBAPI connections (one per Store)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"store: unsupported database dialect {self.dialect!r}")
        self.sqlite = self.dialect == "sqlite"
        self._dbapi = engine.dialect.loaded_dbapi
        self._sql: dict[str, str] = {}

    # --- statements -------------------------------------------------------------------------
    def sql(self, statement: str) -> str:
        """`statement` with `:name` parameters in this driver's style (cached)."""
        out = self._sql.get(statement)
        if out is None:
            out = statement if self.sqlite else _NAMED.sub(r"%(\1)s", statement)
            self._sql[statement] = out
        return out

    def json(self, name: str) -> str:
        """The placeholder of a JSON parameter (text, cast to `jsonb` on PostgreSQL)."""
        return f":{name}" if self.sqlite else f"CAST(:{name} AS JSONB)"

    def ts(self, value: datetime | None) -> Any:
        """A naive UTC datetime as a parameter."""
        return _sqlite_ts(value) if self.sqlite else value

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else bool(value)

    @staticmethod
    def json_text(value: Any) -> str:
        """A JSON parameter: `None` becomes JSON `null`, as SQLAlchemy's `JSON` type stores it
        (the engine's `json_serializer` is the same `engine.json_text`)."""
        return json_text(value)

    parse_ts = staticmethod(_parse_ts)

    # --- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, write: bool) -> Iterator[Cursor]:
        """One transaction: `BEGIN IMMEDIATE` for writes on SQLite (`BEGIN` for reads);
        PostgreSQL begins implicitly at READ COMMITTED. Commits on success, rolls back on
        any exception; DBAPI errors come out as `serving.errors` store errors."""
        try:
            raw = self.engine.raw_connection()  # a pool error: the caller translates it
        except self._dbapi.Error as exc:  # the driver's own, when a new connection fails
            raise self._translated(exc) from None
        try:
            cur = raw.cursor()
            try:
                if self.sqlite:
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield Cursor(self, cur)
                raw.commit()
            except BaseException:
                with suppress(Exception):
                    raw.rollback()
                raise
            finally:
                with suppress(Exception):
                    cur.close()
        except self._dbapi.Error as exc:
            self._invalidate_if_stale(raw, exc)
            raise self._translated(exc) from None
        finally:
            raw.close()

    def _invalidate_if_stale(self, raw: Any, exc: Exception) -> None:
        stale = stale_sqlite_error(exc) if self.sqlite else False
        with suppress(Exception):
            dialect = self.engine.dialect
            gone = dialect.is_disconnect(exc, raw.dbapi_connection, None)  # type: ignore[arg-type]
            stale = stale or bool(gone)
        if stale:
            # As SQLAlchemy does on a disconnect: every connection the pool holds is
            # replaced at its next checkout, and this one at once (SQLAlchemy 2 `Pool`).
            self.engine.pool._invalidate(raw, exc)

    def _translated(self, exc: BaseException) -> StoreError:
        if isinstance(exc, self._dbapi.OperationalError | self._dbapi.InterfaceError):
            return StoreUnavailableError(f"store: database error: {exc}")
        if isinstance(exc, self._dbapi.IntegrityError):
            return ConstraintError(f"store: constraint violated: {exc}")
        return StoreError(f"store: {type(exc).__name__}: {exc}")


class Cursor:
    """A DBAPI cursor inside a `HotPath` transaction, taking `:name` statements."""

    def __init__(self, hot: HotPath, cur: Any) -> None:
        self.hot = hot
        self._cur = cur

    def execute(self, statement: str, params: Mapping[str, Any]) -> None:
        self._cur.execute(self.hot.sql(statement), params)

    def all(self, statement: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        self._cur.execute(self.hot.sql(statement), params)
        return list(self._cur.fetchall())

    def first(self, statement: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        self._cur.execute(self.hot.sql(statement), params)
        row = self._cur.fetchone()
        return tuple(row) if row is not None else None
