"""API keys (401 / 403) and the one error shape, with validation errors naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN, CLIENT


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/recommendations"),
        ("get", "/v1/customers/c1/next-offer"),
        ("post", "/admin/reload"),
    ],
)
def test_missing_key_is_401(client: TestClient, method: str, path: str) -> None:
    r = client.request(method.upper(), path, json={"customer_id": "c1"})
    assert r.status_code == 401
    assert r.json()["error"] == {
        "code": "missing_api_key",
        "message": "X-API-Key: header is required",
        "field": "X-API-Key",
    }


def test_unknown_key_is_401(client: TestClient) -> None:
    r = client.post("/v1/recommendations", json={"customer_id": "c1"}, headers={"X-API-Key": "x"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_wrong_scope_is_403_both_ways(client: TestClient) -> None:
    r = client.post("/admin/reload", json={}, headers=CLIENT)
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_scope"
    r = client.post("/v1/recommendations", json={"customer_id": "c1"}, headers=ADMIN)
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_scope"


def test_health_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({}, "customer_id", "Field required"),
        ({"customer_id": "c1", "channel": "fax"}, "channel", "Input should be"),
        ({"customer_id": "c1", "context": {"timestamp": "soon"}}, "context.timestamp", "ISO 8601"),
        ({"customer_id": "c1", "colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_validation_errors_name_the_field(
    client: TestClient,
    body: dict,
    field: str,
    fragment: str,
) -> None:
    r = client.post("/v1/recommendations", json=body, headers=CLIENT)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert err["field"] == field
    assert err["message"].startswith(f"{field}: ") and fragment in err["message"]


def test_model_level_check_names_its_field(client: TestClient) -> None:
    r = client.post(
        "/v1/events",
        json={"event_id": "e1", "customer_id": "c1", "type": "order", "revenue": 10.0},
        headers=CLIENT,
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "margin"
    assert err["message"] == "margin: required for an order event"


def test_unknown_route_has_the_error_shape(client: TestClient) -> None:
    r = client.get("/v1/nothing-here", headers=CLIENT)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
