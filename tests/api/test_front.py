"""`serving.api.front`: the plain decision request answered in front of FastAPI's stack gets
exactly what the stack answers, and everything else is the stack's own answer.

Twins on stores of their own and one clock: `front` as served, and `stack`, where a
dependency override (a function replaced by itself: nothing changes but the path) sends
every request through FastAPI's whole stack, as before the front existed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.api.deps import require_admin
from serving.api.errors import ApiError
from serving.api.routes import recommendations
from serving.errors import StoreUnavailableError
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
    settings_for,
    write_files,
)

LIMIT = 2_000
"""The twins' `max_body_bytes`."""
PATH = "/v1/recommendations"
JSON = {"content-type": "application/json"}


def _app(root: Path, clock: Clock) -> FastAPI:
    cfg = settings_for(write_files(root), max_body_bytes=LIMIT)
    scorer = FakeScorer({"pct10": 4.0, "freeship": 3.0, "guide": 2.0, "none": 0.5})
    return create_app(
        cfg,
        scorer_loader=loader_of({CHAMPION: scorer}),
        snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=clock,
    )


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """(front, stack): the app as served, and one whose requests all take FastAPI's stack."""
    clock = Clock()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stack_app = _app(tmp_path / "b", clock)
    stack_app.dependency_overrides[require_admin] = require_admin  # only the path changes
    with (
        TestClient(_app(tmp_path / "a", clock), raise_server_exceptions=False) as front,
        TestClient(stack_app, raise_server_exceptions=False) as stack,
    ):
        yield front, stack


@dataclass(frozen=True)
class Call:
    """One request: what is sent, and whether the front answers it itself."""

    name: str
    content: bytes | list[bytes]  # a list: sent chunked, without a Content-Length
    headers: list[tuple[str, str]]
    front: bool = False


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


PLAIN = [("content-type", "application/json"), ("x-api-key", "client-key")]
"""The headers of a plain request."""


KEYED = {"customer_id": "c1", "channel": "email", "request_id": "rq-1"}
CALLS = [
    Call("a contact", _json(KEYED), PLAIN, front=True),
    Call("the same key again: the recorded decision", _json(KEYED), PLAIN, True),
    Call(
        "the same key, another body: 409",
        _json(KEYED | {"customer_id": "c2"}),
        PLAIN,
        front=True,
    ),
    Call(
        "no consent",
        _json({"customer_id": "c-noconsent", "request_id": "rq-2"}),
        PLAIN,
        front=True,
    ),
    Call(
        "an unknown customer",
        _json({"customer_id": "nobody", "request_id": "rq-3"}),
        PLAIN,
        front=True,
    ),
    Call(
        "a dry run",
        _json({"customer_id": "c3", "dry_run": True, "request_id": "rq-4"}),
        PLAIN,
        front=True,
    ),
    Call(
        "a timestamp far from the clock: 409 from inside the decision",
        _json({"customer_id": "c3", "request_id": "rq-5", "context": {"timestamp": "2020-01-01"}}),
        PLAIN,
        front=True,
    ),
    Call(
        "the first of two keys counts",
        _json({"customer_id": "c2", "request_id": "rq-6"}),
        [*JSON.items(), ("x-api-key", "client-key"), ("x-api-key", "wrong")],
        front=True,
    ),
    Call(
        "a body sent in chunks, within the limit",
        [b'{"customer_id": "c2", ', b'"request_id": "rq-7"}'],
        PLAIN,
        front=True,
    ),
    Call("no key", _json({"customer_id": "c1"}), [*JSON.items()]),
    Call("an empty key", _json({"customer_id": "c1"}), [*JSON.items(), ("x-api-key", "")]),
    Call("a wrong key", _json({"customer_id": "c1"}), [*JSON.items(), ("x-api-key", "nope")]),
    Call("an admin key", _json({"customer_id": "c1"}), [*JSON.items(), *ADMIN.items()]),
    Call(
        "the first of two keys is wrong",
        _json({"customer_id": "c1"}),
        [*JSON.items(), ("x-api-key", "wrong"), ("x-api-key", "client-key")],
    ),
    Call(
        "a charset in the content type",
        _json({"customer_id": "c2", "request_id": "rq-8"}),
        [("content-type", "application/json; charset=utf-8"), *CLIENT.items()],
    ),
    Call(
        "another content type",
        _json({"customer_id": "c2", "request_id": "rq-9"}),
        [("content-type", "text/plain"), *CLIENT.items()],
    ),
    Call("no content type", _json({"customer_id": "c2"}), [*CLIENT.items()]),
    Call("not JSON", b'{"customer_id": ', PLAIN),
    Call("a JSON list", b"[1, 2]", PLAIN),
    Call("a field the API does not know", _json({"customer_id": "c1", "x": 1}), PLAIN),
    Call("a bad channel", _json({"customer_id": "c1", "channel": "fax"}), PLAIN),
    Call("a body over the limit", _json({"customer_id": "c1", "pad": "x" * LIMIT}), PLAIN),
    Call(
        "a body over the limit, in chunks",
        [b'{"customer_id": "c1", "pad": "', b"x" * LIMIT, b'"}'],
        PLAIN,
    ),
]


def _send(client: TestClient, call: Call) -> httpx.Response:
    content: Any = call.content
    if isinstance(content, list):
        chunks = list(content)
        content = iter(chunks)  # an iterator: httpx sends it chunked
    return client.request("POST", PATH, content=content, headers=call.headers)


def _view(r: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    if isinstance(body, dict) and body.get("dry_run"):
        body.pop("decision_id")  # a dry run's id is new each time
    return {
        "status": r.status_code,
        "body": body,
        "content-type": r.headers.get("content-type"),
        "www-authenticate": r.headers.get("www-authenticate"),
        "content-length": r.headers.get("content-length"),
    }


def test_every_request_gets_what_the_stack_answers(
    twins: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    front, stack = twins
    through_stack: list[str] = []
    stack_call = FastAPI.__call__

    async def counted(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self is front.app:
            through_stack.append(scope["path"])
        await stack_call(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counted)
    statuses = set()
    for call in CALLS:
        through_stack.clear()
        got, want = _send(front, call), _send(stack, call)
        assert _view(got) == _view(want), call.name
        assert through_stack == ([] if call.front else [PATH]), call.name
        statuses.add(want.status_code)
    assert statuses == {200, 401, 403, 409, 413, 422}  # the calls cover every kind of answer
    # the latency histogram counts each request once, under the route and its status
    assert _latency_counts(front) == _latency_counts(stack)
    by_status = {"200": 8.0, "401": 4.0, "403": 1.0, "409": 2.0, "413": 2.0, "422": 6.0}
    assert _latency_counts(front) == by_status


def _latency_counts(client: TestClient) -> dict[str, float]:
    """Requests counted by the latency histogram for the decision route, by status."""
    prefix = f'winback_http_request_duration_seconds_count{{method="POST",route="{PATH}",status="'
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            series, _, value = line.rpartition(" ")
            out[series.removeprefix(prefix).removesuffix('"}')] = float(value)
    return out


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            ApiError(404, "unknown_customer", "customer_id: 'c1' is not known", "customer_id"),
            404,
            "unknown_customer",
        ),
        (StoreUnavailableError("database is locked (SQL: INSERT ...)"), 503, "store_unavailable"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
def test_an_error_inside_the_decision_is_answered_by_the_apps_handlers(
    twins: tuple[TestClient, TestClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    code: str,
) -> None:
    front, stack = twins

    async def failing(*_: Any) -> Any:
        raise error

    monkeypatch.setattr(recommendations, "decide_request", failing)
    body = {"customer_id": "c1", "request_id": "rq-1"}
    got = front.post(PATH, json=body, headers=CLIENT)
    want = stack.post(PATH, json=body, headers=CLIENT)
    assert _view(got) == _view(want)
    assert (got.status_code, got.json()["error"]["code"]) == (status, code)
    assert "SQL" not in got.text and "a bug" not in got.text  # the log has it, not the caller
    assert _latency_counts(front) == _latency_counts(stack) == {str(status): 1.0}


def test_an_unhandled_error_is_raised_again_for_the_server_to_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Starlette's `ServerErrorMiddleware`: the 500 is answered, then the error raised."""

    async def failing(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(recommendations, "decide_request", failing)
    with TestClient(_app(tmp_path, Clock())) as front, pytest.raises(RuntimeError, match="a bug"):
        front.post(PATH, json={"customer_id": "c1"}, headers=CLIENT)
