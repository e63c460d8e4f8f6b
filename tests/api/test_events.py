"""POST /v1/events: idempotency, opt-outs for the very next decision, not_sent releases caps."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import CLIENT, runtime_of


def _decide(client: TestClient, cid: str, channel: str = "email") -> dict:
    r = client.post(
        "/v1/recommendations", json={"customer_id": cid, "channel": channel}, headers=CLIENT
    )
    assert r.status_code == 200, r.text
    return r.json()


def _event(client: TestClient, **body: object) -> dict:
    r = client.post("/v1/events", json=body, headers=CLIENT)
    assert r.status_code == 200, r.text
    return r.json()


def test_event_is_idempotent_by_event_id(client: TestClient) -> None:
    first = _event(client, event_id="ev-1", customer_id="c1", type="open", channel="email")
    again = _event(client, event_id="ev-1", customer_id="c1", type="open", channel="email")
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    metrics = client.get("/metrics").text
    assert 'winback_events_total{duplicate="true",type="open"} 1.0' in metrics
    assert 'winback_events_total{duplicate="false",type="open"} 1.0' in metrics


def test_unsubscribe_blocks_the_very_next_decision(client: TestClient) -> None:
    d = _decide(client, "c2", channel="email")
    assert d["action"] == "message"
    _event(client, event_id="u-1", customer_id="c2", type="unsubscribe", channel="sms")
    res = _event(client, event_id="u-2", customer_id="c2", type="unsubscribe", channel="email")
    assert res["opted_out_channels"] == ["email"]
    # The snapshot still says opted_in on email; the live opt-out wins.
    after = _decide(client, "c2", channel="email")
    assert after["action"] == "none"
    assert {e["reason"] for e in after["excluded"]} == {"consent_opted_out"}


def test_complaint_without_channel_opts_out_of_everything(client: TestClient) -> None:
    _event(client, event_id="k-1", customer_id="c3", type="complaint")
    after = _decide(client, "c3", channel="auto")
    assert after["action"] == "none"
    assert {e["reason"] for e in after["excluded"]} == {"consent_opted_out"}


def test_not_sent_releases_the_cap(client: TestClient) -> None:
    first = _decide(client, "c1")
    assert first["action"] == "message"
    assert _decide(client, "c1")["action"] == "none"  # cap of one contact in 7 days
    res = _event(
        client,
        event_id="ns-1",
        customer_id="c1",
        type="not_sent",
        decision_id=first["decision_id"],
    )
    assert res["released_contact_id"] == first["decision_id"]
    assert _decide(client, "c1")["action"] == "message"


def test_order_on_an_offer_counts_against_its_budget(client: TestClient) -> None:
    body = {"event_id": "o-1", "customer_id": "c1", "type": "order", "offer_id": "pct10"}
    _event(client, **body, revenue=100.0, margin=30.0)
    _event(client, **body, revenue=100.0, margin=30.0)  # duplicate: counted once
    rt = runtime_of(client)
    usage = rt.store.budget_usage(["pct10"], rt.clock().date())
    assert usage["pct10"].total_redemptions == 1
    assert usage["pct10"].total_cost == 10.0


def test_preferences_switching_off_a_channel_block_it(client: TestClient) -> None:
    r = client.put(
        "/v1/customers/c2/preferences",
        json={"channels": ["sms"], "max_contacts": 2, "per_days": 30},
        headers=CLIENT,
    )
    assert r.status_code == 200 and r.json()["channels"] == ["sms"]
    d = _decide(client, "c2", channel="email")
    assert d["action"] == "none"
    assert {e["reason"] for e in d["excluded"]} == {"channel_off_by_preference"}
    assert _decide(client, "c2", channel="auto")["channel"] == "sms"


def test_preferences_need_both_frequency_fields(client: TestClient) -> None:
    r = client.put("/v1/customers/c2/preferences", json={"max_contacts": 2}, headers=CLIENT)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "per_days"
