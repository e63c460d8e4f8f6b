"""Can the store take writes right now? A cheap, rate-limited probe for `/readyz`.

A `SELECT 1` only shows that the database answers. A store whose file was made read-only, or
that is full, still answers it, and `/readyz` then said ready while every decision, event
and preference change failed. `StoreProbe.check()` therefore also tries a write and rolls it
back, at most once per `min_interval` seconds per process (concurrent callers share the
last result):

- SQLite: under the store's write gate, `BEGIN IMMEDIATE`, `CREATE TABLE` (which must
  allocate a page, so a connection that opened the file read-only fails with
  SQLITE_READONLY, and a database at its page limit with no free page inside fails with
  SQLITE_FULL), a count of the pages left for writes (fewer than `MIN_FREE_PAGES`, free pages
  inside the file included, is full too), `ROLLBACK`; nothing is left behind. A failed
  probe on a stale read-only connection also invalidates the pool (`serving.store.engine`),
  so the probe helps the store recover even without traffic.
  Besides, the database file must open for writing *now* (a pooled connection opened before
  a `chmod` keeps writing through its old descriptor while every new one is read-only), and
  its file system must have `MIN_FREE_BYTES` free.
- PostgreSQL: the server must not be a standby or default to read-only transactions. A full
  disk on the server is not visible from a client without writing; it shows as failed
  writes (503s).

Results carry a stable reason code and a message for operators that names no host, port,
database name or SQL.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from serving.store.engine import WRITE_OPTION, gated, sqlite_file

MIN_FREE_BYTES: Final = 4 * 1024 * 1024
"""Below this much free space on the SQLite file's file system the store counts as full."""

MIN_FREE_PAGES: Final = 32
"""Below this many pages left for writes (under the file's `max_page_count`, counting the
free pages inside it) the SQLite store counts as full: one group commit can need a few new
pages per B-tree, more than the single page the probe's `CREATE TABLE` takes."""

PROBE_TABLE: Final = "winback_write_probe"

UNREACHABLE: Final = "store_unreachable"
READ_ONLY: Final = "store_read_only"
FULL: Final = "store_full"


@dataclass(frozen=True)
class StoreHealth:
    """What the last probe found: `problem` is None, or a reason code with a message."""

    problem: str | None = None
    message: str | None = None

    @property
    def reachable(self) -> bool:
        return self.problem != UNREACHABLE

    @property
    def writable(self) -> bool:
        return self.problem is None


def _sqlite_error_name(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlite_errorname", "") or "")


def _file_problem(path: Path) -> StoreHealth | None:
    """Whether a new connection could write the SQLite file, and whether space is left."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return StoreHealth(UNREACHABLE, "the database file does not exist")
    except OSError:
        return StoreHealth(READ_ONLY, "the database file cannot be opened for writing")
    os.close(fd)
    if not os.access(path.parent, os.W_OK):
        return StoreHealth(
            READ_ONLY, "the database's directory is read-only (its journal cannot be written)"
        )
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
        return StoreHealth(FULL, "the disk of the database file is full")
    return None


def _sqlite_write_probe(engine: Engine) -> StoreHealth:
    try:
        with gated(engine, True), engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})  # BEGIN IMMEDIATE (see engine)
            with conn.begin() as tx:
                conn.exec_driver_sql(f"CREATE TABLE {PROBE_TABLE} (x INTEGER)")
                left = conn.exec_driver_sql(
                    "SELECT m.max_page_count - c.page_count + f.freelist_count "
                    "FROM pragma_max_page_count() AS m, pragma_page_count() AS c, "
                    "pragma_freelist_count() AS f"
                ).scalar()
                tx.rollback()
    except SQLAlchemyError as exc:
        name = _sqlite_error_name(exc)
        if name.startswith("SQLITE_READONLY"):
            return StoreHealth(READ_ONLY, "the database refuses writes (read-only)")
        if name == "SQLITE_FULL":
            return StoreHealth(FULL, "the database is full (no page left for a write)")
        return StoreHealth(UNREACHABLE, "the database cannot be opened or written")
    if left is not None and int(left) < MIN_FREE_PAGES:
        return StoreHealth(FULL, f"the database is full ({int(left)} pages left for writes)")
    return StoreHealth()


def _postgres_probe(engine: Engine) -> StoreHealth:
    try:
        with engine.connect() as conn:
            standby, read_only = conn.execute(
                text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
            ).one()
    except SQLAlchemyError:
        return StoreHealth(UNREACHABLE, "the database cannot be reached")
    if standby or read_only == "on":
        return StoreHealth(READ_ONLY, "the database server accepts only read-only transactions")
    return StoreHealth()


def probe_store(engine: Engine) -> StoreHealth:
    """Probe now (no rate limit); never raises."""
    path = sqlite_file(engine)
    if path is not None:
        found = _file_problem(path)
        if found is not None and found.problem == UNREACHABLE:
            return found
        probed = _sqlite_write_probe(engine)
        return probed if probed.problem is not None else (found or probed)
    if engine.dialect.name == "postgresql":
        return _postgres_probe(engine)
    try:  # another database (in-memory SQLite): that it answers
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return StoreHealth(UNREACHABLE, "the database cannot be reached")
    return StoreHealth()


class StoreProbe:
    """`probe_store`, run at most once per `min_interval` seconds; callers share the result."""

    def __init__(
        self,
        engine: Engine,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: StoreHealth | None = None
        self._at = 0.0

    def check(self) -> StoreHealth:
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._at >= self.min_interval:
                self._last = probe_store(self.engine)
                self._at = now
            return self._last
