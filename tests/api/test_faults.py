"""Faults injected into a running app: the store read-only or full, PostgreSQL refused, a bad
model or snapshot on reload and at start (issue 15; SQLite's anomaly tests are the model).

Each test asserts three things: while the fault lasts the service says so (503s with a code,
`/readyz` not ready or degraded with the reason); nothing it acknowledged is lost; and once
the fault is gone it recovers by itself, without a restart.

A read-only file is made with `chmod` (or, as root, whom file modes do not stop, with
`chattr +i`); a full database with SQLite's `max_page_count`, applied to every connection at
checkout as a full disk would be; a refused PostgreSQL by a TCP proxy in front of the test
server that is stopped and started again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from features.build import build_customer_view
from features.snapshot import SnapshotStore, write_snapshot
from serving.api import create_app
from serving.api.sync import apply_pending
from serving.settings import ServingSettings
from serving.store import upgrade_database
from tests.api.conftest import (
    ADMIN,
    CHAMPION,
    CLIENT,
    CUSTOMERS,
    T0,
    Clock,
    FakeScorer,
    FakeSnapshots,
    loader_of,
    make_snapshot,
    runtime_of,
)
from tests.conftest import postgres_schema
from tests.factories import dataset, small_world

RECOVER_WITHIN = 10.0  # seconds


# --- the four kinds of writes, and what was acknowledged --------------------------------------
class Traffic:
    """Decisions, batches, events and preference changes; remembers what got a 200."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.decisions: list[str] = []
        self.events: list[str] = []
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    def all_kinds(self) -> dict[str, Any]:
        """One request of each kind; the responses by kind."""
        c = self.client
        out = {
            "decision": c.post(
                "/v1/recommendations",
                json={"customer_id": "c1", "channel": "email", "request_id": self._id("rq")},
                headers=CLIENT,
            ),
            "batch": c.post(
                "/v1/recommendations/batch",
                json={"customer_ids": ["c2", "c3"], "channel": "email"},
                headers=CLIENT,
            ),
            "event": c.post(
                "/v1/events",
                json={"event_id": self._id("ev"), "customer_id": "c1", "type": "open"},
                headers=CLIENT,
            ),
            "preferences": c.put(
                "/v1/customers/c3/preferences",
                json={"channels": ["email", "sms"], "max_contacts": 3, "per_days": 30},
                headers=CLIENT,
            ),
        }
        for kind, r in out.items():
            if r.status_code != 200:
                continue
            if kind == "decision":
                self.decisions.append(r.json()["decision_id"])
            elif kind == "batch":
                self.decisions += [d["decision_id"] for d in r.json()["decisions"]]
            elif kind == "event":
                self.events.append(cast(str, r.request.read().decode()))
        return out

    def assert_nothing_lost(self) -> None:
        store = runtime_of(self.client).store
        missing = [d for d in self.decisions if not store.decision_exists(d)]
        assert missing == [], f"acknowledged decisions not in the store: {missing}"
        for body in self.events:  # posting an acknowledged event again is a duplicate
            r = self.client.post(
                "/v1/events", content=body, headers=CLIENT | {"content-type": "application/json"}
            )
            assert r.status_code == 200 and r.json()["duplicate"] is True, r.text


def wait_ready(client: TestClient, within: float = RECOVER_WITHIN) -> float:
    """Seconds until `/readyz` answers 200 (fails after `within`)."""
    start = time.monotonic()
    while True:
        r = client.get("/readyz")
        if r.status_code == 200:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"not ready after {within} s: {r.json()}"
        time.sleep(0.2)


def wait_not_ready(client: TestClient, reason: str) -> dict[str, Any]:
    """The first not-ready `/readyz` body (the write probe runs at most once a second)."""
    start = time.monotonic()
    while True:
        r = client.get("/readyz")
        if r.status_code == 503:
            body = cast(dict[str, Any], r.json())
            assert body["ready"] is False and reason in body["reasons"], body
            assert body["details"][reason]
            return body
        assert time.monotonic() - start < 5, f"still ready: {r.json()}"
        time.sleep(0.2)


def assert_all_ok(responses: dict[str, Any]) -> None:
    bad = {k: (r.status_code, r.text) for k, r in responses.items() if r.status_code != 200}
    assert bad == {}


NEVER_SHOWN = ("Traceback", "INSERT", "SELECT", "sqlite", "store.db", "127.0.0.1", "5432")


def assert_all_unavailable(responses: dict[str, Any], *never_shown: str) -> None:
    """Every response a clean 503 whose body names no SQL, file, host, port or database."""
    for kind, r in responses.items():
        assert r.status_code == 503, (kind, r.text)
        body = r.json()["error"]
        assert body["code"] == "store_unavailable", (kind, body)
        for secret in NEVER_SHOWN + never_shown:
            assert secret not in r.text, (kind, secret, r.text)


@pytest.fixture
def sqlite_client(settings: ServingSettings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)
    with TestClient(app) as c:
        yield c


# --- SQLite read-only -------------------------------------------------------------------------
@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` cannot be opened for writing inside the block."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a file read-only")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(path)], check=True)
        return
    mode = path.stat().st_mode
    path.chmod(0o444)
    try:
        yield
    finally:
        path.chmod(mode)


def test_read_only_sqlite_is_not_ready_then_recovers_without_restart(
    sqlite_client: TestClient, files: dict[str, Path]
) -> None:
    traffic = Traffic(sqlite_client)
    assert_all_ok(traffic.all_kinds())
    assert sqlite_client.get("/readyz").status_code == 200
    store = runtime_of(sqlite_client).store
    # A checkpoint in flight when the file turns read-only holds a writable descriptor, which
    # SQLite's unix VFS may hand to the connections opened next (they then keep writing: what
    # a process that opened the file before a chmod may do). Stopped here so the fault is
    # seen on every run; tests/serving/test_checkpoint.py covers the checkpointer under it.
    sqlite_client.app.state.checkpointer.stop()  # type: ignore[attr-defined]
    with read_only(files["db"]):
        # Connections opened now open the file read-only (SQLite does so silently); closing
        # the pooled ones stands for the pool opening new connections during the fault.
        store.engine.dispose()
        body = wait_not_ready(sqlite_client, "store_read_only")
        assert body["store_reachable"] is True
        for _ in range(3):
            assert_all_unavailable(traffic.all_kinds())
    # The read-only connections opened during the fault are still pooled: they must not
    # keep failing now that the file is writable again.
    took = wait_ready(sqlite_client)
    assert took < RECOVER_WITHIN
    for _ in range(3):
        assert_all_ok(traffic.all_kinds())
    traffic.assert_nothing_lost()


def test_a_stale_read_only_connection_is_replaced_after_one_failure(
    settings: ServingSettings, files: dict[str, Path]
) -> None:
    """The store alone, without `/readyz` probing: one failed write and the pool heals."""
    from serving.store import Store
    from serving.store.records import Preferences

    upgrade_database(settings.database_url)
    store = Store.from_url(settings.database_url)
    try:
        prefs = Preferences("c1", T0, channels=("email",), max_contacts=2, per_days=30)
        with read_only(files["db"]):
            store.engine.dispose()
            with pytest.raises(Exception, match="readonly"):
                store.set_preferences(prefs)
        failures = 0
        for _ in range(5):
            try:
                store.set_preferences(prefs)
            except Exception:
                failures += 1
        assert failures <= 1
        assert len(store.preferences_history("c1")) == 5 - failures
    finally:
        store.dispose()


# --- SQLite full ------------------------------------------------------------------------------
class PageLimit:
    """`PRAGMA max_page_count` on every connection at checkout: a disk that can fill up."""

    def __init__(self) -> None:
        self.limit: int | None = None

    def install(self, engine: Any) -> None:
        @event.listens_for(engine, "checkout")
        def _limit(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute(f"PRAGMA max_page_count = {self.limit or 1_073_741_823}")
            cur.close()

    def fill(self, engine: Any) -> None:
        with engine.connect() as conn:
            self.limit = int(conn.exec_driver_sql("PRAGMA page_count").scalar())


def test_full_sqlite_is_not_ready_keeps_what_it_acknowledged_and_recovers(
    sqlite_client: TestClient,
) -> None:
    traffic = Traffic(sqlite_client)
    store = runtime_of(sqlite_client).store
    full = PageLimit()
    full.install(store.engine)
    assert_all_ok(traffic.all_kinds())
    full.fill(store.engine)
    wait_not_ready(sqlite_client, "store_full")
    refused = 0
    for _ in range(60):  # until the pages left are used up
        responses = traffic.all_kinds()
        refused += sum(r.status_code == 503 for r in responses.values())
        assert all(r.status_code in (200, 503) for r in responses.values())
        if refused >= 8:
            break
    assert refused >= 8, "the page limit never refused a write"
    full.limit = None  # space is freed
    wait_ready(sqlite_client)
    assert_all_ok(traffic.all_kinds())
    traffic.assert_nothing_lost()


# --- PostgreSQL refused, then allowed ---------------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `stop()` refuses new and drops open connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._server is not None:
            with suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
            self._server.close()
            self._server = None
        with self._lock:
            for s in self._open:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()


@pytest.fixture
def pg_schema_url(database_url: str) -> Iterator[str]:
    with postgres_schema(database_url) as url:
        yield url


@pytest.mark.postgres
def test_postgres_refused_gives_clean_503s_then_recovers_by_itself(
    settings: ServingSettings, clock: Clock, pg_schema_url: str
) -> None:
    u = make_url(pg_schema_url)
    proxy = TcpProxy((u.host or "127.0.0.1", u.port or 5432))
    proxy.start()
    url = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    upgrade_database(url)
    cfg = settings.model_copy(update={"database_url": url})
    app = create_app(cfg, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)
    try:
        with TestClient(app) as client:
            traffic = Traffic(client)
            assert_all_ok(traffic.all_kinds())
            proxy.stop()
            body = wait_not_ready(client, "store_unreachable")
            assert body["store_reachable"] is False
            for _ in range(3):
                assert_all_unavailable(traffic.all_kinds(), str(proxy.port), u.database or "")
            proxy.start()
            wait_ready(client)
            for _ in range(3):
                assert_all_ok(traffic.all_kinds())
            traffic.assert_nothing_lost()
    finally:
        proxy.stop()


# --- a bad model, on reload and at start ------------------------------------------------------
def _app(
    settings: ServingSettings,
    clock: Clock,
    load: Callable[[str], Any],
    snapshots: Any = None,
) -> FastAPI:
    return create_app(
        settings,
        scorer_loader=load,
        snapshots=snapshots or FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=clock,
    )


def _decide(client: TestClient) -> dict[str, Any]:
    r = client.post(
        "/v1/recommendations",
        json={"customer_id": "c1", "channel": "email", "dry_run": True},
        headers=CLIENT,
    )
    assert r.status_code == 200, r.text
    return cast(dict[str, Any], r.json())


def test_reload_refuses_a_missing_alias_or_a_corrupt_model_and_keeps_serving(
    settings: ServingSettings, clock: Clock
) -> None:
    good = FakeScorer({"pct10": 4.0, "freeship": 1.0, "guide": 2.0, "none": 0.5})
    models = {CHAMPION: good}
    corrupt = "models:/winback-policy@corrupt"

    def load(uri: str) -> Any:
        if uri == corrupt:
            raise ValueError("model.txt: unexpected end of file")  # not a ModelUnavailableError
        return loader_of(models)(uri)

    with TestClient(_app(settings, clock, load)) as client:
        assert _decide(client)["model_version"] == "fake-model/1"
        for uri, why in ((corrupt, "unexpected end of file"), ("models:/x@nope", "nothing")):
            r = client.post("/admin/reload", json={"model_uri": uri}, headers=ADMIN)
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "reload_refused" and err["field"] == "model_uri"
            assert uri in err["message"] and why in err["message"]
            assert "still serving fake-model/1" in err["message"]
            ready = client.get("/readyz").json()
            assert ready["model_version"] == "fake-model/1" and ready["model_uri"] == CHAMPION
            assert ready["degraded"] is False
            assert _decide(client)["model_version"] == "fake-model/1"


def test_a_model_that_fails_at_start_is_reported_and_a_good_reload_recovers(
    settings: ServingSettings, clock: Clock
) -> None:
    models: dict[str, Any] = {}
    with TestClient(_app(settings, clock, loader_of(models))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["degraded"] is True and body["reasons"] == ["model_unavailable"]
        assert "nothing registered" in body["details"]["model_unavailable"]
        assert _decide(client)["model_version"] == "rules-only"
        models[CHAMPION] = FakeScorer({"pct10": 4.0, "guide": 2.0, "none": 0.5})
        r = client.post("/admin/reload", json={}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["degraded"] is False
        assert _decide(client)["model_version"] == "fake-model/1"


# --- a bad snapshot, at start and on reload ---------------------------------------------------
def _write_snapshot(root: Path) -> str:
    return write_snapshot(build_customer_view(dataset(small_world()), "2023-10-01"), root)


def _corrupt(root: Path) -> str:
    """A new version whose feature matrix is garbage, made current; returns its name."""
    good = (root / "CURRENT").read_text().strip()
    bad = "20231001T000000-99999999T999999999999"
    shutil.copytree(root / "versions" / good, root / "versions" / bad)
    (root / "versions" / bad / "features.npy").write_bytes(b"not a numpy file")
    (root / "CURRENT").write_text(bad + "\n")
    return good


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_a_bad_snapshot_at_start_is_degraded_and_retried_only_on_refresh(
    settings: ServingSettings, clock: Clock, tmp_path: Path, fault: str
) -> None:
    root = tmp_path / "snapshot"
    good = None
    if fault == "corrupt":
        _write_snapshot(root)
        good = _corrupt(root)
    handle = SnapshotStore(root)
    app = _app(settings, clock, loader_of({}), snapshots=handle)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 200  # decisions can be made (every customer unknown)
        body = r.json()
        assert body["degraded"] is True and "snapshot_unavailable" in body["reasons"]
        detail = body["details"]["snapshot_unavailable"]
        assert ("cannot read snapshot" if fault == "corrupt" else "no snapshot") in detail
        assert _decide(client)["reasons"] == ["unknown_customer"]
        # the snapshot is repaired: requests do not reload it, the refresh interval does
        if good is not None:
            (root / "CURRENT").write_text(good + "\n")
        else:
            _write_snapshot(root)
        for _ in range(5):
            assert _decide(client)["reasons"] == ["unknown_customer"]
        assert apply_pending(app) is True  # what the watcher runs every interval
        assert _decide(client)["reasons"] != ["unknown_customer"]
        body = client.get("/readyz").json()
        assert "snapshot_unavailable" not in body["reasons"] and body["snapshot_version"]


def test_reload_with_a_corrupt_snapshot_is_refused_and_the_old_one_serves(
    settings: ServingSettings, clock: Clock, tmp_path: Path
) -> None:
    root = tmp_path / "snapshot"
    version = _write_snapshot(root)
    app = _app(settings, clock, loader_of({}), snapshots=SnapshotStore(root))
    with TestClient(app) as client:
        _corrupt(root)
        r = client.post("/admin/reload", json={}, headers=ADMIN)
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "reload_refused" and err["field"] == "snapshot"
        assert "cannot read snapshot" in err["message"]
        body = client.get("/readyz").json()
        assert body["snapshot_version"] == version  # the old one still serves
        assert "snapshot_refresh_failed" in body["reasons"] and body["degraded"] is True
        assert _decide(client)["reasons"] != ["unknown_customer"]
        # without the snapshot, the rest of a reload applies
        r = client.post("/admin/reload", json={"snapshot": False}, headers=ADMIN)
        assert r.status_code == 200


def test_the_store_probe_runs_at_most_once_per_interval(
    settings: ServingSettings, files: dict[str, Path]
) -> None:
    from serving.store import Store
    from serving.store.health import StoreProbe

    upgrade_database(settings.database_url)
    store = Store.from_url(settings.database_url)
    now = [0.0]
    probe = StoreProbe(store.engine, min_interval=1.0, clock=lambda: now[0])
    try:
        assert probe.check().writable
        with read_only(files["db"]):
            now[0] += 0.5
            assert probe.check().writable  # the last result, within the interval
            now[0] += 0.6
            health = probe.check()
            assert health.problem == "store_read_only" and health.reachable
        now[0] += 1.0
        assert probe.check().writable
    finally:
        store.dispose()


def test_a_model_store_error_shows_no_sql_in_the_reload_answer_or_readyz(
    settings: ServingSettings, clock: Clock
) -> None:
    good = FakeScorer({"pct10": 4.0, "none": 0.5})
    sql_error = (
        "(sqlite3.OperationalError) duplicate column name: step\n"
        "[SQL: ALTER TABLE metrics ADD COLUMN step BIGINT DEFAULT '0' NOT NULL]\n"
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )

    def load(uri: str) -> Any:
        if uri == CHAMPION:
            return good
        raise RuntimeError(sql_error)

    with TestClient(_app(settings, clock, load)) as client:
        r = client.post("/admin/reload", json={"model_uri": "models:/m@x"}, headers=ADMIN)
        assert r.status_code == 422
        message = r.json()["error"]["message"]
        assert "duplicate column name: step" in message
        assert "ALTER TABLE" not in message and "sqlalche.me" not in message
    cfg = settings.model_copy(update={"model_uri": "models:/m@x"})
    with TestClient(_app(cfg, clock, load)) as client:
        detail = client.get("/readyz").json()["details"]["model_unavailable"]
        assert "duplicate column name" in detail and "ALTER TABLE" not in detail
