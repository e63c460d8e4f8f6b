"""POST /v1/recommendations and /batch: decisions, defined non-500 cases, caps, dry runs."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.api.logs import JsonFormatter
from tests.api.conftest import CLIENT, T0, Clock


def _recommend(client: TestClient, cid: str, **extra: object) -> dict:
    body = {"customer_id": cid, "channel": "auto", **extra}
    r = client.post("/v1/recommendations", json=body, headers=CLIENT)
    assert r.status_code == 200, r.text
    return r.json()


def test_rules_only_decision_has_offer_fields_and_categories(client: TestClient) -> None:
    d = _recommend(client, "c1", request_id="r-1")
    assert d["action"] == "message"
    assert d["offer_id"] == "guide"  # rules only: content first
    assert d["channel"] == "email"
    assert d["offer"]["title"] == "Our buying guide"
    assert d["top_categories"] == ["books"]
    assert d["reasons"][0] == "model_unavailable"
    assert d["model_version"] == "rules-only"
    assert d["policy_version"].startswith("sha256:")
    assert d["recorded"] is True
    assert d["request_id"] == "r-1"


def test_unknown_customer_and_missing_consent_are_defined_not_500(client: TestClient) -> None:
    unknown = _recommend(client, "nobody")
    assert (unknown["action"], unknown["reasons"]) == ("none", ["unknown_customer"])
    no_consent = _recommend(client, "c-noconsent")
    assert no_consent["action"] == "none"
    assert "no_allowed_option" in no_consent["reasons"]
    assert {e["reason"] for e in no_consent["excluded"]} == {"consent_unknown"}


def test_cap_blocks_second_contact_and_dry_run_records_nothing(client: TestClient) -> None:
    dry = _recommend(client, "c1", dry_run=True)
    assert dry["action"] == "message" and dry["recorded"] is False
    first = _recommend(client, "c1")
    assert first["action"] == "message"
    second = _recommend(client, "c1")
    assert second["action"] == "none"
    assert {e["reason"] for e in second["excluded"]} == {"cap_across_channels"}


def test_unknown_candidate_offer_is_a_422_naming_the_field(client: TestClient) -> None:
    r = client.post(
        "/v1/recommendations",
        json={"customer_id": "c1", "candidate_offer_ids": ["nope"]},
        headers=CLIENT,
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_decision_input"
    assert "candidate_offer_ids" in err["message"] and "nope" in err["message"]


def test_recorded_decisions_happen_at_the_server_clock(client: TestClient, clock: Clock) -> None:
    _recommend(client, "c1", context={"timestamp": T0.isoformat(), "campaign_id": "w1"})
    # A caller's clock 10 days ahead cannot pass the 7-day cap: it is refused, naming the field.
    later = (T0 + timedelta(days=10)).isoformat()
    r = client.post(
        "/v1/recommendations",
        json={"customer_id": "c1", "context": {"timestamp": later}},
        headers=CLIENT,
    )
    assert r.status_code == 409
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("timestamp_out_of_tolerance", "context.timestamp")
    # Within the tolerance the server's clock decides: still capped.
    near = (T0 + timedelta(seconds=100)).isoformat()
    d = _recommend(client, "c1", context={"timestamp": near})
    assert d["action"] == "none"
    # 10 days later by the server's clock the cap has passed.
    clock.advance(days=10)
    d = _recommend(client, "c1", context={"campaign_id": "w1"})
    assert d["action"] == "message" and d["campaign_id"] == "w1"


def test_a_dry_run_may_ask_about_any_time(client: TestClient) -> None:
    _recommend(client, "c1")
    later = (T0 + timedelta(days=10)).isoformat()
    d = _recommend(client, "c1", dry_run=True, context={"timestamp": later})
    assert d["action"] == "message" and d["recorded"] is False


def test_batch_decides_each_customer(client: TestClient) -> None:
    r = client.post(
        "/v1/recommendations/batch",
        json={"customer_ids": ["c1", "c2", "nobody"], "channel": "email"},
        headers=CLIENT,
    )
    assert r.status_code == 200, r.text
    actions = [d["action"] for d in r.json()["decisions"]]
    assert actions == ["message", "message", "none"]


def test_batch_over_the_limit_is_rejected_clearly(client: TestClient) -> None:
    ids = [f"x{i}" for i in range(1001)]
    r = client.post("/v1/recommendations/batch", json={"customer_ids": ids}, headers=CLIENT)
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "batch_too_large" and err["field"] == "customer_ids"
    assert "1,000" in err["message"]
    ok = client.post("/v1/recommendations/batch", json={"customer_ids": ids[:1000]}, headers=CLIENT)
    assert ok.status_code == 200
    assert len(ok.json()["decisions"]) == 1000


def test_metrics_count_decisions_and_latency(client: TestClient) -> None:
    _recommend(client, "c1")
    _recommend(client, "nobody")
    text = client.get("/metrics").text
    assert (
        'winback_decisions_total{action="message",offer="guide",reason="model_unavailable"} 1.0'
        in text
    )
    assert 'winback_decisions_total{action="none",offer="-",reason="unknown_customer"} 1.0' in text
    assert (
        'winback_http_request_duration_seconds_count{method="POST",route="/v1/recommendations",'
        'status="200"} 2.0'
    ) in text


def test_decision_log_lines_carry_the_decision_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="winback.api"):
        d = _recommend(client, "c1", request_id="req-9")
    [record] = [r for r in caplog.records if r.getMessage() == "decision"]
    line = json.loads(JsonFormatter().format(record))
    assert line["decision_id"] == d["decision_id"]
    assert line["request_id"] == "req-9" and line["action"] == "message"


def test_a_log_line_writes_what_json_cannot_spell_without_losing_the_line() -> None:
    """Values with no JSON spelling are written as their `str`; a lone surrogate (which
    UTF-8 cannot hold) is escaped, as `json.dumps` escapes it."""

    def line(**extra: object) -> dict[str, Any]:
        record = logging.LogRecord("winback.api", logging.INFO, "", 0, "decision", None, None)
        record.__dict__ |= extra
        return dict(json.loads(JsonFormatter().format(record)))

    got = line(when=datetime(2026, 1, 2, 3, 4), odd=object())
    assert got["when"] == "2026-01-02T03:04:00"
    assert got["odd"].startswith("<object object at ")
    got = line(text="a\ud800", decision_id="d1")
    assert got["text"] == "a\ud800" and got["decision_id"] == "d1"


def test_new_decision_ids_are_uuid7_sorting_by_their_millisecond() -> None:
    import time
    import uuid

    from serving.api.service import new_decision_id

    before = time.time_ns() // 1_000_000
    ids = [new_decision_id() for _ in range(2_000)]
    time.sleep(0.002)
    later = new_decision_id()
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    assert all(before <= int(i[:12], 16) <= before + 1_000 for i in ids)  # ms since the epoch
    assert later > max(ids)  # a later millisecond sorts after every earlier id
