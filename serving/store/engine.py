"""Creating the SQLAlchemy engine of the store from a URL.

SQLite (the default) is opened in WAL mode with a busy timeout, and pysqlite's own
transaction handling is switched off so that SQLAlchemy emits `BEGIN` itself: a plain
`BEGIN` (deferred) for reads, `BEGIN IMMEDIATE` for connections carrying the execution option
`winback_write=True`, which takes the database's write lock up front. A cap check and the
write that follows it therefore run under one lock and cannot interleave with another writer.

Writers of one SQLite file also queue at a `WriteGate` (a lock file next to the database,
taken with `flock`) before `BEGIN IMMEDIATE`: SQLite's own busy handler makes a waiting
writer sleep and retry with growing pauses (up to 100 ms), which under two API processes
turned a lock held for a fraction of a millisecond into multi-second tail latencies; a
process blocked in `flock` is woken by the kernel the moment the lock is released.

A pooled SQLite connection can go stale without being closed: one opened while the file was
read-only (SQLite then silently opens it read-only) keeps failing with "attempt to write a
readonly database" after the file is writable again, and so does one that met an I/O error.
Such errors count as disconnects (`stale_sqlite_error`): SQLAlchemy then discards that
connection and every other one the pool held, and the next request opens fresh ones, so
the store recovers by itself once the file is writable again.

PostgreSQL is reached through psycopg 3 (`postgresql+psycopg://user@host/db`; a bare
`postgresql://` URL is given that driver). It runs at READ COMMITTED, where each statement
sees what committed before it started, which the per-customer advisory lock in
`serving.store.repository` relies on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final

try:
    import fcntl
except ImportError:  # not POSIX: the in-process lock only (SQLite's busy handler between processes)
    fcntl = None  # type: ignore[assignment]

from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from serving.errors import StoreUnavailableError

DEFAULT_DATABASE_URL: Final = "sqlite:///winback.db"
WRITE_OPTION: Final = "winback_write"


def json_text(value: Any) -> str:
    """The text a JSON column stores, as every writer spells it (the ORM's `JSON` type
    through the engine's `json_serializer`, and `serving.store.hotpath`).

    pydantic-core's encoder: on a decision's scores and exclusions about 4x faster than
    `json.dumps`, which cost about 5% of a recorded decision's CPU (`bench/README.md`,
    session s33). Compact, UTF-8 rather than escaped, floats in their shortest round-trip
    form, NaN and infinities spelled as `json.dumps` spells them; parsed back, the same
    values as `json.dumps` text. A value it cannot write (a string with a lone surrogate,
    which UTF-8 cannot hold) is written by `json.dumps`, escaped, as before.
    """
    try:
        return to_json(value, inf_nan_mode="constants").decode()
    except PydanticSerializationError:
        return json.dumps(value)


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; give PostgreSQL URLs the psycopg 3 driver."""
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise StoreUnavailableError(f"database url: cannot parse {url!r}: {exc}") from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


class WriteGate:
    """A lock shared by every thread and process writing one SQLite database file.

    In-process a `threading.Lock` (flock locks belong to the open file, which the threads of
    a process share), across processes `flock` on `<database>-writegate`. Held from before
    `BEGIN IMMEDIATE` until after `COMMIT`, it only orders writers that SQLite's lock would
    serialize anyway, without the busy handler's sleeps.
    """

    def __init__(self, database: str | Path) -> None:
        self.path = Path(f"{database}-writegate")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = -1

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:
                yield
                return
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def write_gate(engine: Engine) -> WriteGate | None:
    """The `WriteGate` of a file-backed SQLite engine (None for other databases)."""
    gate = getattr(engine, "_winback_write_gate", None)
    return gate if isinstance(gate, WriteGate) else None


def gated(engine: Engine, write: bool) -> AbstractContextManager[None]:
    """Hold the engine's write gate for a write transaction (a no-op otherwise)."""
    gate = write_gate(engine) if write else None
    return gate.held() if gate is not None else nullcontext()


def _switch_to_wal(cur: Any, busy_timeout_ms: int) -> None:
    """`PRAGMA journal_mode = WAL`, retried while another process holds the file.

    Switching a new database file to WAL needs it to itself, and SQLite reports "database is
    locked" at once, without its busy handler, when a second process (two API workers starting
    on a new store) opens the file at that moment. Once the file is in WAL mode (a persistent
    setting), the pragma is a no-op for every later connection.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.001
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


_STALE_SQLITE_ERRORS: Final = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")


def stale_sqlite_error(exc: BaseException | None) -> bool:
    """Whether a DBAPI error means the SQLite connection itself must be replaced."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    return isinstance(name, str) and name.startswith(_STALE_SQLITE_ERRORS)


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a file-backed SQLite engine, else None (PostgreSQL, in memory)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(str(database)).expanduser()


def _sqlite_engine(
    u: URL, busy_timeout_ms: int, echo: bool, wal_autocheckpoint: int | None
) -> Engine:
    in_memory = u.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_text}
    if in_memory:
        # One shared connection, or each thread would see its own empty database.
        kwargs |= {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        Path(str(u.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs |= {"connect_args": {"timeout": busy_timeout_ms / 1000}}
    engine = create_engine(u, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not in_memory:
                _switch_to_wal(cur, busy_timeout_ms)
                cur.execute("PRAGMA synchronous = NORMAL")
                if wal_autocheckpoint is not None:
                    cur.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        if not ctx.is_disconnect and stale_sqlite_error(ctx.original_exception):
            ctx.is_disconnect = True  # invalidate this connection and the pool's others

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    if not in_memory:
        engine._winback_write_gate = WriteGate(Path(str(u.database)).expanduser())  # type: ignore[attr-defined]
    return engine


def create_store_engine(
    url: str | URL = DEFAULT_DATABASE_URL,
    *,
    busy_timeout_ms: int = 10_000,
    pool_size: int = 10,
    echo: bool = False,
    wal_autocheckpoint: int | None = None,
) -> Engine:
    """An engine for the store at `url` (no connection is opened yet).

    Args:
        url: SQLAlchemy URL; `sqlite:///path.db` (the default, `winback.db` in the working
            directory; its folder is created) or `postgresql+psycopg://user@host:5432/db`.
        busy_timeout_ms: SQLite only: how long a writer waits for the write lock.
        pool_size: PostgreSQL only: connections kept open.
        echo: log every SQL statement.
        wal_autocheckpoint: SQLite only: the WAL size in pages at which a committing
            connection checkpoints (None: SQLite's default, 1,000); raised while a
            background checkpointer runs (`serving.store.checkpoint`).

    Raises:
        StoreUnavailableError: the URL cannot be parsed or its driver is not installed.
    """
    u = normalize_url(url)
    try:
        if u.get_backend_name() == "sqlite":
            return _sqlite_engine(u, busy_timeout_ms, echo, wal_autocheckpoint)
        return create_engine(
            u,
            echo=echo,
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
            json_serializer=json_text,
        )
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreUnavailableError(
            f"database url {u.render_as_string(hide_password=True)}: driver not available "
            f"({exc}); for PostgreSQL install the 'postgres' extra"
        ) from None
