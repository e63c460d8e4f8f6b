"""`GET /v1/reports/summary` (admin only) and the segment an API decision logs with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from serving.api import create_app
from serving.settings import ServingSettings
from serving.store.models import Decision
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
from tests.factories import REPORT_SECTIONS

SUMMARY_KEYS = {"schema_version", *REPORT_SECTIONS}


@pytest.fixture
def model_client(settings: ServingSettings, clock: Clock) -> Iterator[TestClient]:
    """A model that values pct10 best and predicts P(convert) = 0.1 for every option."""
    scorer = FakeScorer({"pct10": 4.0, "freeship": 1.0, "guide": 2.0, "none": 0.5})
    app = create_app(
        settings,
        scorer_loader=loader_of({CHAMPION: scorer}),
        snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=clock,
    )
    with TestClient(app) as c:
        yield c


def _logged(client: TestClient, decision_id: str) -> Decision:
    with Session(runtime_of(client).store.engine) as s:
        row = s.get(Decision, decision_id)
    assert row is not None
    return row


def _decide(client: TestClient, cid: str, campaign: str = "spring") -> dict:
    r = client.post(
        "/v1/recommendations",
        json={"customer_id": cid, "channel": "email", "context": {"campaign_id": campaign}},
        headers=CLIENT,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_summary_needs_an_admin_key(client: TestClient) -> None:
    r = client.get("/v1/reports/summary")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    r = client.get("/v1/reports/summary", headers={"X-API-Key": "nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = client.get("/v1/reports/summary", headers=CLIENT)
    assert r.status_code == 403
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("wrong_scope", "X-API-Key")
    assert "needs an admin key" in err["message"]


def test_summary_is_the_report_as_json(client: TestClient) -> None:
    _decide(client, "c1")  # rules only: an offer by rules, logged under campaign spring
    r = client.get("/v1/reports/summary", params={"campaign": "spring"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= SUMMARY_KEYS
    assert body["filters"] == {"since": None, "until": None, "campaign": "spring"}
    assert body["totals"]["decisions"] == 1 and body["totals"]["contacts"] == 1
    other = client.get("/v1/reports/summary", params={"campaign": "autumn"}, headers=ADMIN)
    assert other.status_code == 200 and other.json()["totals"]["decisions"] == 0
    period = client.get(
        "/v1/reports/summary",
        params={"since": "2026-01-11T00:00:00", "until": "2026-02-01"},
        headers=ADMIN,
    )
    assert period.status_code == 200, period.text
    assert period.json()["totals"]["decisions"] == 0  # the decision was made on 2026-01-10
    assert period.json()["filters"]["since"] == "2026-01-11T00:00:00"


def test_bad_query_parameters_are_422_naming_the_field(client: TestClient) -> None:
    r = client.get(
        "/v1/reports/summary",
        params={"since": "2026-03-01", "until": "2026-02-01"},
        headers=ADMIN,
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("report_invalid", "until")
    assert err["message"].startswith("until: ")
    r = client.get("/v1/reports/summary", params={"since": "last tuesday"}, headers=ADMIN)
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("validation_error", "since")


def test_api_decisions_log_segment_and_p_convert(model_client: TestClient) -> None:
    offer = _decide(model_client, "c1")
    assert offer["action"] == "offer"
    row = _logged(model_client, offer["decision_id"])
    assert (row.value_tier, row.lapse_state) == ("mid", "lapsed")
    assert row.p_convert == pytest.approx(0.1)  # the model's P(convert) of pct10

    none = _decide(model_client, "c-noconsent")  # no consent on any channel: no contact
    assert none["action"] == "none"
    row = _logged(model_client, none["decision_id"])
    assert (row.value_tier, row.lapse_state, row.p_convert) == ("mid", "lapsed", None)

    unknown = _decide(model_client, "not-in-snapshot")
    row = _logged(model_client, unknown["decision_id"])
    assert (row.value_tier, row.lapse_state, row.p_convert) == (None, None, None)

    # a second contact within the policy's 1-in-7-days cap: the engine says none, no P(convert)
    again = _decide(model_client, "c1")
    assert again["action"] == "none"
    assert _logged(model_client, again["decision_id"]).p_convert is None

    body = model_client.get(
        "/v1/reports/summary", params={"campaign": "spring"}, headers=ADMIN
    ).json()
    tiers = {g["group"] for g in body["groups"]["value_tier"]}
    assert tiers == {"mid"}
    assert {g["group"] for g in body["groups"]["lapse_state"]} == {"lapsed"}


def test_rules_only_api_decision_logs_segment_without_p_convert(client: TestClient) -> None:
    d = _decide(client, "c2")
    assert d["action"] in ("offer", "message") and d["model_version"] == "rules-only"
    row = _logged(client, d["decision_id"])
    assert (row.value_tier, row.lapse_state, row.p_convert) == ("mid", "lapsed", None)
    assert row.ts == T0
