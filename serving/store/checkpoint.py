"""WAL checkpoints of a SQLite store, off the request path.

In WAL mode every commit appends pages to the `-wal` file, and SQLite copies them back into
the database file (a checkpoint) when the committing connection finds the WAL over
`wal_autocheckpoint` pages (1,000 by default). That connection is an API request's, inside
its write transaction's commit, behind the store's write gate (`serving.store.engine`): on
the bench about 1% of commits ran a checkpoint there (page copies and an fsync), and every
other writer of both workers queued behind it (commit p99 11.4 ms).

`WalCheckpointer` runs `PRAGMA wal_checkpoint(PASSIVE)` in a background thread every
`interval` seconds, outside the write gate: a PASSIVE checkpoint copies what no reader
still needs without taking the write lock and without waiting for anyone, so writers go on
meanwhile, and the next writer restarts the WAL from its start once it is all copied (the
file then stops growing). Request connections keep SQLite's autocheckpoint as a backstop,
raised to `BACKSTOP_PAGES` (`create_store_engine(wal_autocheckpoint=...)`), for a
checkpointer that falls behind or has stopped. With the checkpointer the same bench's commit
p99 was 3.0 ms.

Only for a file-backed SQLite store; PostgreSQL checkpoints by itself (`start_checkpointer`
returns None there, as for an in-memory database or an interval of 0).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from serving.store.engine import sqlite_file, stale_sqlite_error

log = logging.getLogger("winback.store")

BACKSTOP_PAGES: Final = 10_000
"""`wal_autocheckpoint` of request connections while a checkpointer runs (about 40 MB of
WAL at the default page size: reached only if the checkpointer falls behind)."""


class WalCheckpointer:
    """A thread checkpointing one SQLite engine's WAL every `interval` seconds.

    Each checkpoint runs on a connection checked out of the engine's pool and returned at
    once: the process then holds no SQLite connection outside the pool. (A connection kept
    open by the checkpointer made SQLite's unix VFS hand its writable file descriptor to
    connections the pool opened later, so a file made read-only would still be written.)

    Attributes:
        runs: checkpoints attempted so far.
        last: the last checkpoint's result row (busy, WAL frames, frames checkpointed), or
            None before the first succeeded; -1 frames when the database is not in WAL mode.
    """

    def __init__(self, engine: Engine, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval: must be > 0 seconds, got {interval}")
        self.engine = engine
        self.interval = interval
        self.runs = 0
        self.last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="winback-wal-checkpoint", daemon=True
        )
        self._error: str | None = None

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the checkpoint in hand, if any)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.last = self.checkpoint()
                self._error = None
            except (sqlite3.Error, SQLAlchemyError) as exc:
                # a file gone or read-only: retried at the next tick, said once
                if str(exc) != self._error:
                    log.warning("WAL checkpoint of %s failed: %s", self.engine.url, exc)
                    self._error = str(exc)
            finally:
                self.runs += 1

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint now: (busy, WAL frames, frames checkpointed).

        Raises:
            sqlite3.Error, SQLAlchemyError: the database could not be opened or checkpointed
                (a connection that went stale is discarded, as the store's own are).
        """
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                row = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                cur.close()
            return (int(row[0]), int(row[1]), int(row[2]))
        except sqlite3.Error as exc:
            if stale_sqlite_error(exc):
                raw.invalidate(exc)
            raise
        finally:
            raw.close()


def start_checkpointer(engine: Engine, interval: float) -> WalCheckpointer | None:
    """A running checkpointer for `engine`'s SQLite file, or None (PostgreSQL, an in-memory
    database, or `interval` 0: SQLite's own autocheckpoint alone)."""
    if sqlite_file(engine) is None or interval <= 0:
        return None
    return WalCheckpointer(engine, interval).start()
