"""The ways around consent and caps an outside attack found (issue 15), each made impossible,
on SQLite and (with WINBACK_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving.api.service import decision_time, legacy_keyed_decision_id, withdrawn
from serving.store.models import Contact, Decision, Event
from tests.api.conftest import CLIENT, T0, Clock, metric_value, runtime_of


def _decide(c: TestClient, cid: str = "c1", **extra: Any) -> dict[str, Any]:
    r = c.post("/v1/recommendations", json={"customer_id": cid, **extra}, headers=CLIENT)
    assert r.status_code == 200, r.text
    return r.json()


def _event(c: TestClient, **body: Any) -> Any:
    return c.post("/v1/events", json=body, headers=CLIENT)


def _opt_out(c: TestClient, kind: str = "unsubscribe") -> Any:
    return _event(c, event_id="u1", customer_id="c1", type=kind)


def _count(c: TestClient, table: type, **where: str) -> int:
    rt = runtime_of(c)
    q = select(func.count()).select_from(table)
    for k, v in where.items():
        q = q.where(getattr(table, k) == v)
    with rt.store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


# --- 1. an opt-out takes effect when received, whatever its ts ------------------------------
@pytest.mark.parametrize("offset", [timedelta(seconds=2), timedelta(days=400), -timedelta(days=3)])
def test_an_unsubscribe_blocks_the_next_decision_whatever_its_ts(
    store_client: TestClient, offset: timedelta
) -> None:
    ts = (T0 + offset).isoformat()
    r = _event(store_client, event_id="u1", customer_id="c1", type="unsubscribe", ts=ts)
    assert r.status_code == 200 and r.json()["opted_out_channels"] == [
        "email",
        "sms",
        "push",
        "in_app",
        "direct_mail",
    ]
    d = _decide(store_client)
    assert d["action"] == "none"
    assert {e["reason"] for e in d["excluded"]} == {"consent_opted_out"}
    assert _count(store_client, Contact, customer_id="c1") == 0
    # the event keeps the ts it was reported with
    with runtime_of(store_client).store.engine.connect() as conn:
        kept = conn.execute(select(Event.ts).where(Event.event_id == "u1")).scalar_one()
    assert kept == T0 + offset


def test_a_dry_run_about_the_past_still_honours_an_opt_out_received_since(
    store_client: TestClient,
) -> None:
    assert (
        _event(store_client, event_id="u1", customer_id="c1", type="complaint").status_code == 200
    )
    past = (T0 - timedelta(days=30)).isoformat()
    d = _decide(store_client, dry_run=True, context={"timestamp": past})
    assert d["action"] == "none" and d["recorded"] is False


# --- 2. a caller's clock cannot move caps or consent -----------------------------------------
@pytest.mark.parametrize("offset", [timedelta(hours=-1), timedelta(days=31), timedelta(days=-31)])
def test_a_recorded_decision_refuses_a_time_far_from_the_server_clock(
    store_client: TestClient, offset: timedelta
) -> None:
    _decide(store_client)  # the one contact the 7-day cap allows
    body = {"customer_id": "c1", "context": {"timestamp": (T0 + offset).isoformat()}}
    r = store_client.post("/v1/recommendations", json=body, headers=CLIENT)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "timestamp_out_of_tolerance"
    assert _count(store_client, Contact, customer_id="c1") == 1


def test_decision_time_rules(client: TestClient, clock: Clock) -> None:
    rt = runtime_of(client)
    assert decision_time(rt, None, dry_run=False) == T0
    assert decision_time(rt, T0 + timedelta(seconds=299), dry_run=False) == T0  # server clock
    assert decision_time(rt, T0 + timedelta(days=9), dry_run=True) == T0 + timedelta(days=9)


# --- 3. a next-offer repeat re-checks consent --------------------------------------------
def test_next_offer_repeat_after_an_unsubscribe_says_do_not_send(store_client: TestClient) -> None:
    url = "/v1/customers/c1/next-offer?channel=email&campaign=w1"
    first = store_client.get(url, headers=CLIENT).json()
    assert first["send"] is True
    assert (
        _event(store_client, event_id="u1", customer_id="c1", type="unsubscribe").status_code == 200
    )
    again = store_client.get(url, headers=CLIENT).json()
    assert again["decision_id"] == first["decision_id"]  # the same (deduplicated) decision
    assert again["send"] is False and again["reason"] == "consent_opted_out"
    assert _count(store_client, Decision, customer_id="c1") == 1


def test_next_offer_repeat_after_a_preference_change_says_do_not_send(
    store_client: TestClient,
) -> None:
    url = "/v1/customers/c1/next-offer?channel=email&campaign=w1"
    assert store_client.get(url, headers=CLIENT).json()["send"] is True
    r = store_client.put("/v1/customers/c1/preferences", json={"channels": ["sms"]}, headers=CLIENT)
    assert r.status_code == 200
    assert r.json()["ts"].endswith(("Z", "+00:00"))  # a response time carries its offset
    again = store_client.get(url, headers=CLIENT).json()
    assert again["send"] is False and again["reason"] == "channel_off_by_preference"


# --- 4. an opt-out between the state read and the recording transaction -------------------
def test_an_opt_out_after_the_state_read_stops_the_contact(store_client: TestClient) -> None:
    """The race of the attack, made deterministic: the engine read the state (consented),
    the opt-out is acknowledged, then the contact's transaction runs: it must not record."""
    from serving.store import DecisionRecord

    rt = runtime_of(store_client)
    proposed = DecisionRecord(
        decision_id="d-race",
        customer_id="c1",
        ts=T0,
        action="message",
        offer_id="guide",
        channel="email",
        stage=1,
        propensity=1.0,
        expected_value=None,
        reasons=("chosen_by_rules",),
    )
    assert (
        _event(store_client, event_id="u1", customer_id="c1", type="unsubscribe").status_code == 200
    )
    res = rt.store.try_record_contact(proposed, rt.base_caps, now=T0)
    assert not res.recorded and res.reason == "consent_opted_out"
    assert _count(store_client, Contact, customer_id="c1") == 0


def test_withdrawn_turns_a_contact_into_no_contact_with_the_reason_first(
    client: TestClient,
) -> None:
    from serving.api.decision_log import decision_from_row, get_decision

    d = _decide(client)
    row = get_decision(runtime_of(client).store, d["decision_id"])
    assert row is not None
    w = withdrawn(decision_from_row(row, runtime_of(client).policy), "consent_opted_out")
    assert (w.action, w.offer_id, w.channel) == ("none", None, None)
    assert w.reasons[0] == "consent_opted_out"


# --- 5. request_id is an idempotency key -------------------------------------------------
def test_the_same_request_id_gives_the_same_answer_recorded_once(store_client: TestClient) -> None:
    first = _decide(store_client, request_id="k-1")
    again = _decide(store_client, request_id="k-1")
    assert first["action"] == "message"
    assert again["decision_id"] == first["decision_id"]
    assert again["action"] == first["action"] and again["offer_id"] == first["offer_id"]
    assert again["recorded"] is True
    assert _count(store_client, Decision, request_id="k-1") == 1
    assert _count(store_client, Contact, customer_id="c1") == 1


def test_a_request_id_reused_with_another_body_is_a_409(store_client: TestClient) -> None:
    _decide(store_client, request_id="k-1")
    r = store_client.post(
        "/v1/recommendations", json={"customer_id": "c2", "request_id": "k-1"}, headers=CLIENT
    )
    assert r.status_code == 409
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("idempotency_key_reused", "request_id")
    # and on the other endpoint
    r = store_client.post(
        "/v1/recommendations/batch",
        json={"customer_ids": ["c1"], "request_id": "k-1"},
        headers=CLIENT,
    )
    assert r.status_code == 409
    assert _count(store_client, Decision) == 1


def test_a_batch_repeat_is_answered_from_the_log(store_client: TestClient) -> None:
    body = {"customer_ids": ["c1", "c2", "nobody"], "request_id": "b-1"}
    first = store_client.post("/v1/recommendations/batch", json=body, headers=CLIENT).json()
    again = store_client.post("/v1/recommendations/batch", json=body, headers=CLIENT).json()
    key = [(d["decision_id"], d["action"], d["offer_id"]) for d in first["decisions"]]
    assert key == [(d["decision_id"], d["action"], d["offer_id"]) for d in again["decisions"]]
    assert _count(store_client, Decision, request_id="b-1") == 3


def test_a_repeated_request_id_after_an_opt_out_does_not_say_send(
    store_client: TestClient,
) -> None:
    assert _decide(store_client, request_id="k-1")["action"] == "message"
    _event(store_client, event_id="u1", customer_id="c1", type="unsubscribe")
    again = _decide(store_client, request_id="k-1")
    assert again["action"] == "none" and again["reasons"][0] == "consent_opted_out"
    assert _count(store_client, Decision, request_id="k-1") == 1


def test_keyed_decision_ids_sort_by_claim_time_and_a_late_repeat_finds_its_own(
    store_client: TestClient, clock: Clock
) -> None:
    first = _decide(store_client, "c1", request_id="k-1")
    clock.advance(seconds=1)
    second = _decide(store_client, "c2", request_id="k-2")
    clock.advance(hours=2)  # out of the clock tolerance of a new request: a repeat still answers
    again = _decide(store_client, "c1", request_id="k-1")
    assert first["decision_id"] < second["decision_id"]  # the B-trees take them in order
    assert again["decision_id"] == first["decision_id"]
    assert _count(store_client, Decision) == 2


def test_a_request_recorded_under_a_revision_0004_id_is_repeated_from_the_log(
    store_client: TestClient,
) -> None:
    first = _decide(store_client, "c1", request_id="k-old")
    assert first["action"] == "message"
    old = legacy_keyed_decision_id("k-old", "c1")  # as recorded before the ids held the time
    with runtime_of(store_client).store.engine.begin() as conn:
        conn.execute(
            Decision.__table__.update()
            .where(Decision.decision_id == first["decision_id"])
            .values(decision_id=old)
        )
        conn.execute(
            Contact.__table__.update()
            .where(Contact.decision_id == first["decision_id"])
            .values(decision_id=old, contact_id=old)
        )
    again = _decide(store_client, "c1", request_id="k-old")
    assert again["decision_id"] == old and again["action"] == "message"
    assert _count(store_client, Decision) == 1 and _count(store_client, Contact) == 1


# --- bad input: a clear 4xx naming the field, on every store ------------------------------
REC, EV = "/v1/recommendations", "/v1/events"
C1 = {"customer_id": "c1"}
DRY = {"customer_id": "c1", "dry_run": True}
E1 = {"event_id": "e1", "customer_id": "c1"}
ORDER = {**E1, "type": "order"}
OPEN = {**E1, "type": "open"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (REC, {"customer_id": "c\u0000"}, "customer_id"),
        (REC, {**C1, "context": {"campaign_id": "w\u0000"}}, "context.campaign_id"),
        (REC, {**C1, "request_id": "\u0000"}, "request_id"),
        (EV, {**E1, "customer_id": "c\u0000", "type": "unsubscribe"}, "customer_id"),
        (EV, {**OPEN, "payload": {"a": ["x\u0000"]}}, "payload.a[0]"),
        (EV, {**OPEN, "payload": {"a\u0000": 1}}, "payload"),
        (EV, {**OPEN, "ts": "0001-01-01T00:00:00"}, "ts"),
        (REC, {**DRY, "context": {"timestamp": "0001-01-01T00:00:00+05:00"}}, "context.timestamp"),
        (REC, {**DRY, "context": {"timestamp": "9999-12-31T23:59:59"}}, "context.timestamp"),
        (REC, {**DRY, "context": {"timestamp": 1767225600}}, "context.timestamp"),
        (EV, {**ORDER, "revenue": 1e308, "margin": 1.0}, "revenue"),
        (EV, {**ORDER, "revenue": 10.0, "margin": "5"}, "margin"),
        (EV, {**OPEN, "payload": {"big": ["x" * 4000] * 5}}, "payload"),
        (REC, {**C1, "dry_run": 0}, "dry_run"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    store_client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = store_client.post(path, json=body, headers=CLIENT)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert _count(store_client, Decision) == 0 and _count(store_client, Event) == 0


def test_non_finite_amounts_are_refused(store_client: TestClient) -> None:
    raw = '{"event_id": "e1", "customer_id": "c1", "type": "order", "revenue": 1e999, "margin": 1}'
    r = store_client.post(
        "/v1/events", content=raw, headers={**CLIENT, "content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "revenue"
    assert _count(store_client, Event) == 0


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(store_client: TestClient) -> None:
    payload = {"blob": "x" * 2_000_000}
    body = {"event_id": "e1", "customer_id": "c1", "type": "open", "payload": payload}
    r = store_client.post("/v1/events", content=json.dumps(body), headers=CLIENT)
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "too_large",
        "message": "body: at most 1,048,576 bytes per request",
        "field": "body",
    }
    assert _count(store_client, Event) == 0


def test_a_body_over_the_limit_in_chunks_is_a_413_and_counted(store_client: TestClient) -> None:
    """Sent without a Content-Length, the body is cut off where it passes the limit. FastAPI
    turns an error raised while it reads a body into its own 400, so the limit answers
    first; the latency histogram counts the 413 under the route's own template."""
    head = b'{"event_id": "e1", "customer_id": "c1", "type": "open", "payload": {"blob": "'
    chunks = [head, *(b"x" * 65_536 for _ in range(17)), b'"}}']  # over 1 MiB in all
    r = store_client.post("/v1/events", content=iter(chunks), headers=CLIENT)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    assert _count(store_client, Event) == 0
    series = (
        'winback_http_request_duration_seconds_count{method="POST",route="/v1/events",status="413"}'
    )
    assert metric_value(store_client.get("/metrics").text, series) == 1.0


def test_a_body_that_is_not_json_says_so_and_where(client: TestClient) -> None:
    r = client.post(
        "/v1/recommendations",
        content=b'{"customer_id": "c1",,}',
        headers={**CLIENT, "content-type": "application/json"},
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "body"
    assert err["message"].startswith("body: not valid JSON at character 21")


def test_a_405_says_what_is_allowed(client: TestClient) -> None:
    r = client.delete("/v1/recommendations", headers=CLIENT)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
