"""The background WAL checkpointer of a SQLite store (`serving.store.checkpoint`): it really
checkpoints (the database file receives the pages, the WAL restarts from its start), off
the writers' path, and stops cleanly, holding no connection outside the store's pool (a
file turned read-only then fails the store's new connections, as without it); request
connections keep a raised autocheckpoint."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from serving.store import create_store_engine
from serving.store.checkpoint import BACKSTOP_PAGES, WalCheckpointer, start_checkpointer
from serving.store.engine import sqlite_file
from tests.api.test_faults import read_only

ROWS = 400  # about 400 pages of WAL (4 KB blobs)


def _until(done: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def _fill(engine: Engine, rows: int = ROWS, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB)"))
    for i in range(start, start + rows, 50):  # several commits, as requests make them
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO t (id, b) VALUES (:i, randomblob(4000))"),
                [{"i": j} for j in range(i, i + 50)],
            )


def _wal_frames(db: Path) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint reports them; it copies what it can)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


def test_the_checkpointer_copies_the_wal_into_the_database_and_the_wal_restarts(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    engine = create_store_engine(f"sqlite:///{db}", wal_autocheckpoint=BACKSTOP_PAGES)
    try:
        with engine.connect() as conn:  # request connections: the raised backstop
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == BACKSTOP_PAGES
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        _fill(engine)
        # nothing checkpointed yet: the rows are in the WAL, not in the database file
        assert db.stat().st_size < 100_000
        assert Path(f"{db}-wal").stat().st_size > ROWS * 4000
        cp = start_checkpointer(engine, 0.05)
        assert isinstance(cp, WalCheckpointer)
        try:
            _until(lambda: cp.last is not None and cp.last[1] > 0)
            assert cp.last is not None
            busy, frames, copied = cp.last
            assert busy == 0 and frames >= ROWS and copied == frames  # all of it, at once
            assert db.stat().st_size > ROWS * 4000  # the pages are in the database file
            # the next commit restarts the WAL from its start: a few frames, not hundreds
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t (id, b) VALUES (-1, x'00')"))
            assert _wal_frames(db) < 20
            # and it keeps checkpointing what writers add (no autocheckpoint below 10,000)
            _fill(engine, rows=200, start=ROWS)
            runs = cp.runs
            _until(lambda: cp.runs > runs + 1 and cp.last is not None and cp.last[2] == cp.last[1])
            assert cp.last is not None and cp.last[1] >= 200
        finally:
            cp.stop()
        assert not cp.alive
        runs = cp.runs
        time.sleep(0.2)
        assert cp.runs == runs  # stopped: no checkpoint after stop()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == ROWS + 201
    finally:
        engine.dispose()


def test_between_checkpoints_no_connection_is_held_and_a_read_only_file_is_seen(
    tmp_path: Path,
) -> None:
    """Between its checkpoints the checkpointer holds no connection (it borrows one from the
    store's pool per checkpoint). One held open made SQLite's unix VFS keep the pool's
    closed file descriptors for reuse, and hand a writable one to connections opened after
    the file was turned read-only: the store then wrote on without seeing the fault."""
    db = tmp_path / "store.db"
    engine = create_store_engine(f"sqlite:///{db}", wal_autocheckpoint=BACKSTOP_PAGES)
    # 3 s between checkpoints: the checks below run between two of them even on a busy host
    cp = start_checkpointer(engine, 3.0)
    assert cp is not None
    try:
        _fill(engine, rows=50)
        _until(lambda: cp.runs >= 1)  # just after a checkpoint: the next is 3 s away
        assert cp.last is not None and cp.last[2] > 0
        engine.dispose()
        assert _open_files(db) == []
        with read_only(db):
            with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
                conn.execute(text("INSERT INTO t (id, b) VALUES (-1, x'00')"))
            engine.dispose()
    finally:
        cp.stop()
        engine.dispose()


def _open_files(db: Path) -> list[str]:
    """This process's open descriptors of the database file itself."""
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if fd.readlink() == db:
                out.append(fd.name)
    return out


def test_a_checkpointer_that_fails_keeps_trying_and_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database it cannot open (the folder is gone) is logged once and retried."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'gone' / 'store.db'}")
    (tmp_path / "gone").rmdir()
    cp = WalCheckpointer(engine, 0.02).start()
    try:
        _until(lambda: cp.runs >= 3)
        assert cp.alive and cp.last is None
    finally:
        cp.stop()
        engine.dispose()
    assert not cp.alive
    failures = [r for r in caplog.records if "WAL checkpoint" in r.getMessage()]
    assert len(failures) == 1


def test_no_checkpointer_for_postgresql_memory_or_interval_zero(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    sqlite_engine = create_store_engine(f"sqlite:///{db}")
    pg_engine = create_store_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    memory = create_store_engine("sqlite://")
    try:
        assert start_checkpointer(sqlite_engine, 0) is None
        assert start_checkpointer(pg_engine, 0.5) is None  # never connects
        assert start_checkpointer(memory, 0.5) is None
        assert sqlite_file(sqlite_engine) == db
        with sqlite_engine.connect() as conn:  # no checkpointer: SQLite's default
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == 1000
        with pytest.raises(ValueError, match="interval"):
            WalCheckpointer(sqlite_engine, 0)
    finally:
        for e in (sqlite_engine, pg_engine, memory):
            e.dispose()
