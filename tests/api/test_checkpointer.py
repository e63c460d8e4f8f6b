"""The API's WAL checkpointer (`serving.store.checkpoint`): started with each app on a
SQLite store, checkpointing what the requests commit, stopped at shutdown; none on
PostgreSQL or with `wal_checkpoint_interval_seconds` 0; a negative interval refused."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text
from typer.testing import CliRunner

from cli.main import app as cli_app
from serving.api import create_app
from serving.settings import ServingSettings, get_serving_settings
from serving.store.checkpoint import BACKSTOP_PAGES
from tests.api.conftest import CLIENT, CUSTOMERS, Clock, FakeSnapshots, make_snapshot, runtime_of


def _until(done: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def _autocheckpoint(client: TestClient) -> int:
    with runtime_of(client).store.engine.connect() as conn:
        return int(conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def _app(settings: ServingSettings, clock: Clock, interval: float) -> FastAPI:
    cfg = settings.model_copy(update={"wal_checkpoint_interval_seconds": interval})
    return create_app(cfg, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)


def test_the_app_checkpoints_what_requests_commit_and_stops_at_shutdown(
    settings: ServingSettings, clock: Clock
) -> None:
    app = _app(settings, clock, 0.05)
    with TestClient(app) as c:
        cp = app.state.checkpointer
        assert cp is not None and cp.alive
        assert _autocheckpoint(c) == BACKSTOP_PAGES  # SQLite's own only as a backstop
        for cid in CUSTOMERS:
            r = c.post("/v1/recommendations", json={"customer_id": cid}, headers=CLIENT)
            assert r.status_code == 200
        runs = cp.runs
        # a checkpoint after the last commit copied the whole WAL (the decisions included)
        _until(lambda: cp.runs > runs + 1 and cp.last is not None)
        busy, frames, copied = cp.last
        assert busy == 0 and frames > 0 and copied == frames
    assert not cp.alive


def test_an_interval_of_zero_leaves_checkpoints_to_sqlite(
    settings: ServingSettings, clock: Clock
) -> None:
    app = _app(settings, clock, 0)
    with TestClient(app) as c:
        assert app.state.checkpointer is None
        assert _autocheckpoint(c) == 1000  # SQLite's default
        r = c.post("/v1/recommendations", json={"customer_id": "c1"}, headers=CLIENT)
        assert r.status_code == 200


def test_a_checkpointer_only_for_sqlite(store_client: TestClient) -> None:
    app = store_client.app
    sqlite = runtime_of(store_client).store.dialect == "sqlite"
    assert (app.state.checkpointer is not None) is sqlite  # type: ignore[attr-defined]
    r = store_client.post("/v1/recommendations", json={"customer_id": "c1"}, headers=CLIENT)
    assert r.status_code == 200


def test_a_negative_interval_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ServingSettings().wal_checkpoint_interval_seconds == 0.1
    with pytest.raises(ValidationError) as err:
        ServingSettings(wal_checkpoint_interval_seconds=-1)
    [problem] = err.value.errors()
    assert problem["loc"] == ("wal_checkpoint_interval_seconds",)
    assert problem["msg"] == "Input should be greater than or equal to 0"
    # from the environment, as `winback serve` reads it: a one-line error, no traceback
    monkeypatch.setenv("WINBACK_WAL_CHECKPOINT_INTERVAL_SECONDS", "-0.5")
    get_serving_settings.cache_clear()
    try:
        res = CliRunner().invoke(cli_app, ["serve"])
    finally:
        get_serving_settings.cache_clear()
    assert res.exit_code == 1
    assert (
        "WINBACK_*: wal_checkpoint_interval_seconds: Input should be greater than or equal to 0"
        in " ".join(res.output.split())
    )
    assert "Traceback" not in res.output
