"""Readiness (degraded without a model), scoring with a model, broken models, reload."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.api.sync import apply_pending
from serving.precomputed import SCORES, scores_attachment
from serving.settings import ServingSettings
from tests.api.conftest import (
    ADMIN,
    CHAMPION,
    CLIENT,
    CUSTOMERS,
    Clock,
    FakeScorer,
    FakeSnapshots,
    loader_of,
    make_snapshot,
)

CHALLENGER = "models:/winback-policy@challenger"


def _recommend(client: TestClient, cid: str = "c1") -> dict:
    r = client.post(
        "/v1/recommendations",
        json={"customer_id": cid, "channel": "email", "dry_run": True},
        headers=CLIENT,
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def models() -> dict[str, FakeScorer]:
    return {
        CHAMPION: FakeScorer({"pct10": 4.0, "freeship": 1.0, "guide": 2.0, "none": 0.5}),
        CHALLENGER: FakeScorer(
            {"pct10": 1.0, "freeship": 3.0, "guide": 2.0, "none": 0.5}, version="fake-model/2"
        ),
    }


@pytest.fixture
def model_client(
    settings: ServingSettings, clock: Clock, models: dict[str, FakeScorer]
) -> Iterator[TestClient]:
    app = create_app(
        settings,
        scorer_loader=loader_of(models),
        snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=clock,
    )
    with TestClient(app) as c:
        yield c


def test_readyz_is_degraded_without_a_model(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["degraded"] is True
    assert body["reasons"] == ["model_unavailable"]
    assert body["model_version"] is None
    assert body["policy_version"].startswith("sha256:")
    assert body["snapshot_version"] == "snap-1" and body["store_reachable"] is True
    assert "winback_degraded 1.0" in client.get("/metrics").text


def test_readyz_without_a_snapshot_is_degraded_and_customers_unknown(
    settings: ServingSettings, clock: Clock
) -> None:
    app = create_app(settings, snapshots=FakeSnapshots(None), clock=clock)
    with TestClient(app) as c:
        body = c.get("/readyz").json()
        assert body["degraded"] is True and "snapshot_unavailable" in body["reasons"]
        assert _recommend(c)["reasons"] == ["unknown_customer"]


def test_model_scores_choose_the_best_value(model_client: TestClient) -> None:
    ready = model_client.get("/readyz").json()
    assert ready["degraded"] is False and ready["model_version"] == "fake-model/1"
    assert ready["stored_scores"] is False  # this snapshot carries no scores: scored live
    d = _recommend(model_client)
    assert d["action"] == "offer" and d["offer_id"] == "pct10"
    assert d["offer"]["value"] == 10.0
    assert d["reasons"] == ["chosen_best_value"]
    assert d["model_version"] == "fake-model/1"
    assert d["scores"]["pct10"] == 4.0
    assert d["scores"]["expert"] is None  # an offer the model does not know: never by value


def test_broken_model_falls_back_to_rules_not_500(
    model_client: TestClient, models: dict[str, FakeScorer]
) -> None:
    models[CHAMPION].broken = True
    d = _recommend(model_client)
    assert d["model_version"] == "rules-only"
    assert d["reasons"][0] == "model_unavailable"


def test_reload_switches_the_model_alias_without_restart(model_client: TestClient) -> None:
    r = model_client.post("/admin/reload", json={"model_uri": CHALLENGER}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "fake-model/2"
    d = _recommend(model_client)
    assert d["offer_id"] == "freeship" and d["model_version"] == "fake-model/2"
    # An alias with nothing behind it: refused, the challenger keeps serving.
    r = model_client.post("/admin/reload", json={"model_uri": "models:/x@none"}, headers=ADMIN)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "reload_refused" and err["field"] == "model_uri"
    assert "models:/x@none" in err["message"] and "still serving fake-model/2" in err["message"]
    assert model_client.get("/readyz").json()["model_version"] == "fake-model/2"
    assert _recommend(model_client)["model_version"] == "fake-model/2"


def test_reload_picks_up_a_new_policy_and_rejects_a_broken_one(
    model_client: TestClient, files: dict[str, Path]
) -> None:
    before = model_client.get("/readyz").json()["policy_version"]
    text = files["policy"].read_text(encoding="utf-8")
    files["policy"].write_text(text.replace("share: 0.0", "share: 0.999"), encoding="utf-8")
    r = model_client.post("/admin/reload", headers=ADMIN)
    assert r.status_code == 200
    after = r.json()["policy_version"]
    assert after != before
    assert _recommend(model_client)["action"] == "holdout"

    bad = tmp_bad = files["policy"].parent / "bad.yaml"
    tmp_bad.write_text(text.replace("sunset_days: 0", "sunset_days: -3"), encoding="utf-8")
    r = model_client.post("/admin/reload", json={"policy_path": str(bad)}, headers=ADMIN)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "policy_invalid" and "journey.sunset_days" in err["message"]
    assert model_client.get("/readyz").json()["policy_version"] == after  # old one stays


def test_a_reload_reaches_the_other_worker_processes(
    settings: ServingSettings, clock: Clock, models: dict[str, FakeScorer]
) -> None:
    """Two apps on one store stand for two uvicorn workers; the reload hits only one."""
    apps: list[FastAPI] = []

    def worker() -> TestClient:
        apps.append(
            create_app(
                settings,
                scorer_loader=loader_of(models),
                snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
                clock=clock,
            )
        )
        return TestClient(apps[-1])

    with worker() as a, worker() as b:
        r = a.post("/admin/reload", json={"model_uri": CHALLENGER}, headers=ADMIN)
        assert r.status_code == 200
        assert _recommend(b)["model_version"] == "fake-model/1"  # not yet polled
        assert apply_pending(apps[1]) is True  # what b's watcher does every few seconds
        assert _recommend(b)["model_version"] == "fake-model/2"
        assert apply_pending(apps[1]) is False  # applied once
        assert apply_pending(apps[0]) is False  # a published it and runs it already


def test_stored_scores_serve_their_model_until_a_reload_moves_on(
    settings: ServingSettings, clock: Clock, models: dict[str, FakeScorer]
) -> None:
    plain = make_snapshot(CUSTOMERS)
    stored = scores_attachment(models[CHAMPION], np.asarray(plain.matrix))
    snap = dataclasses.replace(plain, attachments={SCORES: stored})
    app = create_app(
        settings, scorer_loader=loader_of(models), snapshots=FakeSnapshots(snap), clock=clock
    )
    with TestClient(app) as c:
        assert c.get("/readyz").json()["stored_scores"] is True
        d = _recommend(c)
        assert d["offer_id"] == "pct10" and d["scores"]["pct10"] == 4.0
        models[CHAMPION].broken = True  # proves the stored rows were used, not the model
        assert _recommend(c)["offer_id"] == "pct10"
        r = c.post("/admin/reload", json={"model_uri": CHALLENGER}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["stored_scores"] is False
        assert _recommend(c)["offer_id"] == "freeship"  # the champion's rows no longer apply


def _in_collector_generations(obj: object) -> bool:
    return any(o is obj for gen in (0, 1, 2) for o in gc.get_objects(generation=gen))


def test_the_loaded_runtime_is_kept_out_of_the_collectors_full_passes(
    model_client: TestClient,
) -> None:
    """A full pass of the cyclic collector visits every tracked object of the worker; the
    runtime (snapshot, model, policy, store) is frozen once loaded, and again after a reload,
    so those passes skip it (`serving.api.heap`), and a replaced runtime is still freed."""
    app = model_client.app
    assert isinstance(app, FastAPI)
    first = app.state.runtime
    assert gc.get_freeze_count() > 0
    assert not _in_collector_generations(first)
    gone = weakref.ref(first)
    del first
    r = model_client.post("/admin/reload", json={"model_uri": CHALLENGER}, headers=ADMIN)
    assert r.status_code == 200, r.text
    second = app.state.runtime
    assert not _in_collector_generations(second)
    # the next settle (here a second reload) collects the replaced runtimes' cycles
    r = model_client.post("/admin/reload", json={"model_uri": CHAMPION}, headers=ADMIN)
    assert r.status_code == 200, r.text
    del second
    gc.collect()
    assert gone() is None
