"""Micro-batched decisions (`serving.api.microbatch`): requests decided together answer
exactly as if each had been decided alone, and no guardrail bends.

Concurrent requests are sent in the app's own event loop (the `TestClient`'s portal) through
`httpx.ASGITransport`, so they reach the batcher while it is busy, as under load; the same
requests sent one at a time to a twin app (same clock, a store of its own) are the
reference.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from serving.api import create_app
from serving.api.microbatch import DecisionBatcher, batcher_of
from serving.api.runtime import reloaded
from serving.api.schemas import RecommendationRequest
from tests.api.conftest import (
    CHAMPION,
    CLIENT,
    POLICY_YAML,
    Clock,
    FakeScorer,
    FakeSnapshots,
    loader_of,
    make_snapshot,
    metric_value,
    runtime_of,
    settings_for,
    write_files,
)
from tests.conftest import postgres_schema

CUSTOMERS = {
    "c1": {"email": "opted_in"},
    "c2": {"email": "opted_in", "sms": "opted_in"},
    "c3": {"email": "opted_in", "push": "opted_in"},
    "c4": {"sms": "opted_in"},
    "c5": {"email": "opted_out", "sms": "opted_in"},
    "c-noconsent": {},
} | {f"e{i}": {"email": "opted_in"} for i in range(12)}
FEW = ["c1", "c2", "c3", "c4", "c5", "c-noconsent", "e0", "nobody"]
# exploration on, so that each request's own key (its request_id) changes its draw
EXPLORING = POLICY_YAML + "exploration: {epsilon: 0.6}\n"
SCORER = FakeScorer({"pct10": 4.0, "freeship": 3.0, "guide": 2.0, "expert": 1.0, "none": 0.5})


def _app(
    root: Path,
    clock: Clock,
    url: str | None = None,
    scorer: FakeScorer = SCORER,
    policy: str = EXPLORING,
) -> FastAPI:
    files = write_files(root)
    files["policy"].write_text(policy, encoding="utf-8")
    cfg = settings_for(files, database_url=url or f"sqlite:///{files['db']}")
    return create_app(
        cfg,
        scorer_loader=loader_of({CHAMPION: scorer}),
        snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=clock,
    )


LINGER = 0.02
"""The batched twin's linger in the `lingering` variant (seconds)."""


@pytest.fixture(
    params=["sqlite", "lingering", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def twins(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient, Clock]]:
    """(batched app, reference app, their shared clock), each on a store of its own:
    SQLite, and PostgreSQL when WINBACK_TEST_DATABASE_URL is set. In `lingering` (SQLite),
    the batched app's groups wait for company from the first request on (a new batcher
    would first have to see arrivals more often than one per linger) and never give up
    (all of a test's requests arrive at once, so most lingers are futile): up to `LINGER`
    for a fill of 4, so that groups end by the fill and by the timer. A group lingers only
    until its oldest request has waited `LINGER`, so how many do depends on the machine's
    speed (none, when the earlier groups took longer): these tests check the answers;
    `test_a_group_lingers_*` checks the lingering itself, with arrivals it controls."""
    clock = Clock()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ExitStack() as stack:
        urls: list[str | None] = [None, None]
        if request.param == "postgresql":
            base = request.getfixturevalue("database_url")
            urls = [stack.enter_context(postgres_schema(base)) for _ in range(2)]
        a = stack.enter_context(TestClient(_app(tmp_path / "a", clock, urls[0])))
        b = stack.enter_context(TestClient(_app(tmp_path / "b", clock, urls[1])))
        if request.param == "lingering":
            batcher = batcher_of(runtime_of(a))
            batcher.gap, batcher.linger, batcher.fill = 0.0, LINGER, 4
            batcher.futile_limit = 2.0
        yield a, b, clock


@pytest.fixture
def sqlite_twins(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient, Clock]]:
    """`twins` on SQLite (the faults below are SQLite triggers)."""
    clock = Clock()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        TestClient(_app(tmp_path / "a", clock)) as a,
        TestClient(_app(tmp_path / "b", clock)) as b,
    ):
        yield a, b, clock


def _concurrently(client: TestClient, bodies: Sequence[dict[str, Any]]) -> list[httpx.Response]:
    """The bodies posted at once, in the app's own event loop."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return list(
                await asyncio.gather(
                    *(c.post("/v1/recommendations", json=b, headers=CLIENT) for b in bodies)
                )
            )

    assert client.portal is not None
    return client.portal.call(run)


def _one_by_one(client: TestClient, bodies: Sequence[dict[str, Any]]) -> list[httpx.Response]:
    return [client.post("/v1/recommendations", json=b, headers=CLIENT) for b in bodies]


def _view(r: httpx.Response, keyed: bool) -> dict[str, Any]:
    """What must be equal: the whole answer (a random decision id only if unkeyed)."""
    body = r.json()
    if r.status_code == 200 and not keyed:
        body.pop("decision_id")
    return {"status": r.status_code, "body": body}


def _contacts(client: TestClient) -> list[tuple[str, str]]:
    with runtime_of(client).store.engine.connect() as conn:
        sql = "SELECT customer_id, ts FROM contacts ORDER BY ts, customer_id"
        rows = conn.execute(text(sql)).all()
    return [(r[0], str(r[1])) for r in rows]


def _decisions(client: TestClient) -> int:
    with runtime_of(client).store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM decisions")).scalar_one())


def test_a_group_decides_each_customer_as_alone_with_its_own_key(
    twins: tuple[TestClient, TestClient, Clock],
) -> None:
    a, b, _ = twins
    rt = runtime_of(a)
    bodies = [
        {"customer_id": cid, "channel": "auto", "request_id": f"rq-{i}"}
        for i, cid in enumerate(CUSTOMERS)
    ] + [{"customer_id": "unknown-customer", "channel": "auto", "request_id": "rq-u"}]
    models = [RecommendationRequest.model_validate(x) for x in bodies]

    async def together() -> list[Any]:
        batcher = batcher_of(rt)
        return list(await asyncio.gather(*(batcher.decide(m) for m in models)))

    assert a.portal is not None
    outcomes = a.portal.call(together)
    batcher = batcher_of(rt)
    assert (batcher.groups, batcher.grouped) == (1, len(bodies))  # one group, one engine call
    metrics = a.get("/metrics").text  # what an operator sees of it
    assert metric_value(metrics, "winback_decision_group_size_count") == 1
    assert metric_value(metrics, "winback_decision_group_size_sum") == len(bodies)
    assert metric_value(metrics, "winback_decision_group_seconds_count") == 1
    assert metric_value(metrics, "winback_decision_group_fallbacks_total") == 0
    reference = _one_by_one(b, bodies)
    for o, r in zip(outcomes, reference, strict=True):
        want = r.json()
        assert o.decision_id == want["decision_id"]
        assert o.decision.action == want["action"]
        assert o.decision.offer_id == want["offer_id"]
        assert o.decision.channel == want["channel"]
        assert o.decision.propensity == want["propensity"]
        assert list(o.decision.reasons) == want["reasons"]
        assert o.decision.model_version == want["model_version"] == SCORER.version
        assert o.recorded
    # exploration drew differently for different keys: the test can see a shared key
    assert len({o.decision.offer_id for o in outcomes if o.decision.is_contact}) > 1
    assert _decisions(a) == _decisions(b) == len(bodies)


def test_one_customer_many_times_at_once_is_capped_and_answers_as_in_sequence(
    twins: tuple[TestClient, TestClient, Clock],
) -> None:
    a, b, _ = twins
    bodies = [{"customer_id": "c2", "channel": "auto", "request_id": f"k{i}"} for i in range(8)]
    bodies += [{"customer_id": "c1", "channel": "email"} for _ in range(4)]  # unkeyed
    got = _concurrently(a, bodies)
    want = _one_by_one(b, bodies)
    assert [_view(r, "request_id" in x) for r, x in zip(got, bodies, strict=True)] == [
        _view(r, "request_id" in x) for r, x in zip(want, bodies, strict=True)
    ]
    sends = [r.json()["customer_id"] for r in got if r.json()["action"] in ("offer", "message")]
    assert sorted(sends) == ["c1", "c2"]  # the cap: one contact per customer per 7 days
    assert sorted(c for c, _ in _contacts(a)) == ["c1", "c2"]
    batcher = batcher_of(runtime_of(a))
    assert batcher.groups >= 8  # c2 waited for a group of its own each time


request = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(FEW),
        "channel": st.sampled_from(["auto", "email", "sms"]),
    },
    optional={
        "request_id": st.sampled_from(["r1", "r2", "r3", "r4"]),
        "context": st.fixed_dictionaries({"campaign_id": st.sampled_from(["w1", "w2"])}),
        "candidate_offer_ids": st.just(["pct10", "freeship"]),
        "dry_run": st.booleans(),
    },
)


@settings(
    max_examples=25,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bodies=st.lists(request, min_size=1, max_size=12))
def test_any_concurrent_requests_answer_as_the_same_requests_in_sequence(
    twins: tuple[TestClient, TestClient, Clock], bodies: list[dict[str, Any]]
) -> None:
    a, b, clock = twins
    clock.advance(days=1)  # each example a new day; caps (7 days) and keys carry over
    got = _concurrently(a, bodies)
    want = _one_by_one(b, bodies)
    for x, g, w in zip(bodies, got, want, strict=True):
        keyed = "request_id" in x and not x.get("dry_run", False)
        assert _view(g, keyed) == _view(w, keyed), x
    # the guardrail itself: at most one contact per customer in any 7 days
    recorded = _contacts(a)
    assert recorded == [(c, t) for c, t in _contacts(b)]
    by_customer: dict[str, list[str]] = {}
    for cid, ts in recorded:
        by_customer.setdefault(cid, []).append(ts)
    for cid, times in by_customer.items():
        at = [datetime.fromisoformat(t) for t in times]
        assert all(t2 - t1 >= timedelta(days=7) for t1, t2 in pairwise(at)), (cid, times)


def test_a_store_fault_in_a_group_answers_each_request_as_alone_and_loses_nothing(
    sqlite_twins: tuple[TestClient, TestClient, Clock],
) -> None:
    """A write that fails for one customer (a trigger) rolls the group back; each request is
    then decided alone: the others are recorded, the faulty one gets its own 503."""
    a, b, _ = sqlite_twins
    for client in (a, b):
        with runtime_of(client).store.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER fault BEFORE INSERT ON decisions WHEN NEW.customer_id = 'c3' "
                    "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
                )
            )
    bodies = [
        {"customer_id": cid, "channel": "auto", "request_id": f"f-{cid}"}
        for cid in ("c1", "c2", "c3", "c4", "c-noconsent")
    ]
    got = _concurrently(a, bodies)
    want = _one_by_one(b, bodies)
    assert [_view(r, True) for r in got] == [_view(r, True) for r in want]
    assert [r.status_code for r in got] == [200, 200, 503, 200, 200]
    assert got[2].json()["error"]["code"] == "store_unavailable"
    store = runtime_of(a).store
    for r in got:
        if r.status_code == 200:  # acknowledged: in the log
            assert store.decision_exists(r.json()["decision_id"])
    assert batcher_of(runtime_of(a)).fallbacks >= 1  # the group did fail, and was split
    fallbacks = metric_value(a.get("/metrics").text, "winback_decision_group_fallbacks_total")
    assert fallbacks == batcher_of(runtime_of(a)).fallbacks
    # the faulty request, repeated once the fault is gone, is decided and recorded once
    with store.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER fault"))
    again = _concurrently(a, [bodies[2], bodies[2], bodies[0]])
    assert [r.status_code for r in again] == [200, 200, 200]
    assert again[0].json() == again[1].json()
    assert again[2].json() == got[0].json()
    assert _decisions(a) == 5


def test_a_store_down_answers_every_request_of_the_group_503(
    sqlite_twins: tuple[TestClient, TestClient, Clock],
) -> None:
    a, _, _ = sqlite_twins
    store = runtime_of(a).store
    with store.engine.begin() as conn:  # every write fails, as a read-only file would
        conn.execute(
            text(
                "CREATE TRIGGER down BEFORE INSERT ON idempotency_keys "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        )
    bodies = [{"customer_id": c, "channel": "auto", "request_id": f"d-{c}"} for c in CUSTOMERS]
    got = _concurrently(a, bodies)
    assert [r.status_code for r in got] == [503] * len(bodies)
    assert {r.json()["error"]["code"] for r in got} == {"store_unavailable"}
    assert _decisions(a) == 0


@dataclass
class WatchedScorer(FakeScorer):
    """`FakeScorer` taking `pause` seconds per call (the GIL released, as in a booster or
    a store wait), noting the threads it ran on and how many calls ran at once."""

    pause: float = 0.0
    threads: set[str] = field(default_factory=set)
    calls: int = 0
    most_at_once: int = 0
    _active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.calls += 1
            self._active += 1
            self.most_at_once = max(self.most_at_once, self._active)
        try:
            time.sleep(self.pause)
            return super().score(features)
        finally:
            with self._lock:
                self._active -= 1


def _decide_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("winback-decide")}


def test_groups_and_lone_requests_run_one_at_a_time_in_one_decision_thread_off_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every group and every request decided alone (dry runs, a caller's timestamp) runs in
    the worker's one decision thread, strictly one after another, while the event loop
    stays free; every decision keeps its record, cap, log line and metric."""
    before = _decide_threads()
    scorer = WatchedScorer(dict(SCORER.values), pause=0.02)
    clock = Clock()
    bodies: list[dict[str, Any]] = [
        {"customer_id": cid, "channel": "auto", "request_id": f"t-{cid}"}
        for cid in CUSTOMERS
        if cid.startswith("e")
    ]
    bodies += [{"customer_id": "c1", "channel": "email"} for _ in range(3)]  # one customer
    bodies += [{"customer_id": "c2", "channel": "auto", "dry_run": True} for _ in range(2)]
    stamp = {"timestamp": clock.now.isoformat() + "Z"}
    bodies += [{"customer_id": "c3", "channel": "auto", "context": stamp}]
    with TestClient(_app(tmp_path, clock, scorer=scorer)) as a:
        rt = runtime_of(a)
        assert rt.decision_thread is not None
        assert reloaded(rt)[0].decision_thread is rt.decision_thread  # a reload keeps it

        async def run() -> tuple[list[httpx.Response], int]:
            ticks, done = 0, False

            async def ticker() -> None:  # counts the loop's turns while the groups run
                nonlocal ticks
                while not done:
                    await asyncio.sleep(0.002)
                    ticks += 1

            tick = asyncio.create_task(ticker())
            transport = httpx.ASGITransport(app=a.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                got = await asyncio.gather(
                    *(c.post("/v1/recommendations", json=b, headers=CLIENT) for b in bodies)
                )
            done = True
            await tick
            return list(got), ticks

        assert a.portal is not None
        with caplog.at_level(logging.INFO, logger="winback.api"):
            got, ticks = a.portal.call(run)
        assert [r.status_code for r in got] == [200] * len(bodies)
        [thread] = scorer.threads  # one thread decided everything, never two calls at once
        assert thread.startswith("winback-decide")
        assert scorer.most_at_once == 1
        batcher = batcher_of(rt)
        assert batcher.groups >= 3 and batcher.grouped < len(bodies)  # grouped, and alone
        # the loop kept turning while the thread decided (on the loop it could not)
        assert ticks >= scorer.calls * 3, (ticks, scorer.calls)
        # every invariant of a decision decided in the thread
        recorded = [r.json() for r, b in zip(got, bodies, strict=True) if not b.get("dry_run")]
        store = rt.store
        assert all(store.decision_exists(x["decision_id"]) for x in recorded)
        assert _decisions(a) == len(recorded)
        assert sorted(c for c, _ in _contacts(a)).count("c1") == 1  # the cap
        lines = [r for r in caplog.records if r.getMessage() == "decision"]
        assert sorted(line.__dict__["decision_id"] for line in lines) == sorted(
            r.json()["decision_id"] for r in got
        )
        metrics = a.get("/metrics").text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("winback_decisions_total{")
        )
        assert counted == len(bodies)
    assert _decide_threads() == before  # stopped at shutdown


def test_a_group_in_the_decision_thread_keeps_each_customers_holdout(
    tmp_path: Path,
) -> None:
    """The control group: a customer held out alone is held out in a group (same draw)."""
    policy = POLICY_YAML.replace(
        "holdout: {share: 0.0, salt: tests}", "holdout: {share: 0.5, salt: tests}"
    )
    clock = Clock()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bodies = [
        {"customer_id": cid, "channel": "auto", "request_id": f"h-{cid}"} for cid in CUSTOMERS
    ]
    with (
        TestClient(_app(tmp_path / "a", clock, policy=policy)) as a,
        TestClient(_app(tmp_path / "b", clock, policy=policy)) as b,
    ):
        got = _concurrently(a, bodies)
        want = _one_by_one(b, bodies)
        assert [_view(r, True) for r in got] == [_view(r, True) for r in want]
        assert batcher_of(runtime_of(a)).groups >= 1
        actions = [r.json()["action"] for r in got]
        assert "holdout" in actions and any(x in ("offer", "message") for x in actions)


def _decide_at(
    client: TestClient, batcher: DecisionBatcher, customers: Sequence[str], gap: float
) -> list[float]:
    """Each customer's request handed to `batcher` `gap` seconds after the previous one, in
    the app's own loop; each request's seconds from its arrival to its answer."""

    async def one(cid: str) -> float:
        start = time.perf_counter()
        body = RecommendationRequest.model_validate(
            {"customer_id": cid, "channel": "auto", "request_id": f"l-{cid}"}
        )
        await batcher.decide(body)
        return time.perf_counter() - start

    async def run() -> list[float]:
        tasks = []
        for cid in customers:
            tasks.append(asyncio.create_task(one(cid)))
            await asyncio.sleep(gap)
        return list(await asyncio.gather(*tasks))

    assert client.portal is not None
    return client.portal.call(run)


def _lingers(client: TestClient) -> tuple[float, float]:
    """(groups that waited for company, seconds they waited) from `/metrics`."""
    metrics = client.get("/metrics").text
    name = "winback_decision_group_linger_seconds"
    return metric_value(metrics, f"{name}_count"), metric_value(metrics, f"{name}_sum")


def test_a_group_lingers_for_fill_requests_when_they_arrive_often_and_never_longer_than_linger(
    tmp_path: Path,
) -> None:
    """Requests that arrive often wait for `fill` of them and are decided together (less CPU
    per request); a request with no company waits at most `linger`; requests that arrive
    seldom are decided at once (nothing to wait for)."""
    customers = [f"e{i}" for i in range(12)]
    with TestClient(_app(tmp_path, Clock())) as a:
        rt = runtime_of(a)
        # arrivals 1 ms apart, far more often than one per 30 s: every group waits for 4
        often = DecisionBatcher(rt, linger=30.0, fill=4)
        waits = _decide_at(a, often, customers[:8], gap=0.001)
        assert (often.groups, often.grouped) == (2, 8)
        assert max(waits) < 10.0  # woken by the fourth request, not by the 30 s timer

        # a new batcher counts one arrival per second: often for a 1.5 s linger, so one
        # request with no company is answered after `linger`, not before
        alone = DecisionBatcher(rt, linger=1.5, fill=4)
        before = _lingers(a)
        [wait] = _decide_at(a, alone, customers[8:9], gap=0.0)
        assert 1.45 <= wait < 10.0
        assert (alone.groups, alone.grouped) == (1, 1)
        after = _lingers(a)  # what the group waited is on /metrics
        assert after[0] == before[0] + 1 and 1.45 <= after[1] - before[1] < 10

        # arrivals 0.6 s apart, seldom for a 0.3 s linger: each decided at once, alone
        seldom = DecisionBatcher(rt, linger=0.3, fill=4)
        _decide_at(a, seldom, customers[9:12], gap=0.6)
        assert (seldom.groups, seldom.grouped) == (3, 3)
        assert _lingers(a) == after  # none of them waited

        # off: never waits, whatever the rate
        off = DecisionBatcher(rt, linger=0.0, fill=4, gap=0.0)
        _decide_at(a, off, ["c1", "c2"], gap=0.001)
        assert _lingers(a) == after


def test_a_caller_that_waits_for_each_answer_stops_being_kept_waiting(tmp_path: Path) -> None:
    """A sequential caller brings nobody while its request lingers: after a few futile
    lingers its requests are decided at once, but for one probe per `PROBE_EVERY` groups."""
    with TestClient(_app(tmp_path, Clock())) as a:
        # a batcher that has seen arrivals more often than one per linger
        seq = DecisionBatcher(runtime_of(a), linger=0.2, fill=4, gap=0.0)

        def held(prefix: str, n: int) -> list[bool]:
            """Whether each of n requests, sent one after the other, waited for company."""
            out = []
            for i in range(n):
                before = _lingers(a)[0]
                _decide_at(a, seq, [f"{prefix}{i}"], gap=0.0)
                out.append(_lingers(a)[0] == before + 1)
            return out

        assert held("x", 16) == [True] * 11 + [False] * 5  # until the average says so
        assert seq.groups == 16
        # the probe: the 64th group not held is held again (5 were above)
        assert [i for i, h in enumerate(held("y", 60)) if h] == [58]
