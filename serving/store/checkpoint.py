"""WAL checkpoints of a SQLite store, off the request path.

In WAL mode every commit appends pages to the `-wal` file, and SQLite copies them back into
the database file (a checkpoint) when the committing connection finds the WAL over
`wal_autocheckpoint` pages (1,000 by default). That connection is an API request's, inside
its write transaction's commit, behind the store's write gate (`serving.store.engine`): on
the bench about 1% of commits ran a checkpoint there (page copies and an fsync), and every
other writer of both workers queued behind it (commit p99 11.4 ms).

`WalCheckpointer` runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own, in a
background thread, every `interval` seconds: a PASSIVE checkpoint copies what no reader
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
from pathlib import Path
from typing import Final

from sqlalchemy import Engine

log = logging.getLogger("winback.store")

BACKSTOP_PAGES: Final = 10_000
"""`wal_autocheckpoint` of request connections while a checkpointer runs (about 40 MB of
WAL at the default page size: reached only if the checkpointer falls behind)."""


class WalCheckpointer:
    """A thread checkpointing one SQLite database's WAL every `interval` seconds.

    Attributes:
        runs: checkpoints attempted so far.
        last: the last checkpoint's result row (busy, WAL frames, frames checkpointed), or
            None before the first; -1 frames when the database is not in WAL mode.
    """

    def __init__(self, database: str | Path, interval: float, busy_timeout_ms: int = 1000):
        if interval <= 0:
            raise ValueError(f"interval: must be > 0 seconds, got {interval}")
        self.database = Path(database)
        self.interval = interval
        self.busy_timeout_ms = busy_timeout_ms
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
        """Stop the thread (after the checkpoint in hand, if any) and close its connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = self._connect()
                    self.last = self.checkpoint(conn)
                    self._error = None
                except sqlite3.Error as exc:
                    # a file that went away or read-only: reopen next time; said once
                    if str(exc) != self._error:
                        log.warning("WAL checkpoint of %s failed: %s", self.database, exc)
                        self._error = str(exc)
                    if conn is not None:
                        conn.close()
                        conn = None
                finally:
                    self.runs += 1
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        # autocommit: the pragma must not run inside a transaction; no WAL switch here (the
        # store's own connections set the mode; checkpointing a rollback journal is a no-op)
        conn = sqlite3.connect(
            self.database, timeout=self.busy_timeout_ms / 1000, isolation_level=None
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        return conn

    @staticmethod
    def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One PASSIVE checkpoint on `conn`: (busy, WAL frames, frames checkpointed)."""
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (int(row[0]), int(row[1]), int(row[2]))


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a file-backed SQLite engine, else None."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database)).expanduser()


def start_checkpointer(engine: Engine, interval: float) -> WalCheckpointer | None:
    """A running checkpointer for `engine`'s SQLite file, or None (PostgreSQL, an in-memory
    database, or `interval` 0: SQLite's own autocheckpoint alone)."""
    path = sqlite_file(engine)
    if path is None or interval <= 0:
        return None
    return WalCheckpointer(path, interval).start()
