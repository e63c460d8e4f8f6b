"""A hypothesis state machine over the HTTP API of a real app, on SQLite and PostgreSQL.

Rules call the API in any order with generated arguments: decisions (with arbitrary caller
timestamps, dry runs, request ids that repeat), events of any type dated anywhere, preference
changes, next-offer repeats and a clock that moves forward. After every step the store is
checked against a small reference model of the invariants:

- no contact is recorded on a channel after an opt-out of it was acknowledged, or while the
  customer's preferences switch it off;
- no cap window, measured on the recorded times of the contacts, is ever over its limit
  (the test policy: one contact per 7 days across channels);
- one decision per idempotency key and customer, and a repeat answers with the same decision;
- every answer is a documented status (200, 409, 422), never a 5xx.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from serving.api import create_app
from serving.settings import ServingSettings
from serving.store.models import Contact, Decision
from tests.api.conftest import CLIENT, T0, Clock, FakeSnapshots, make_snapshot, write_files
from tests.conftest import postgres_schema

CUSTOMERS = ("s1", "s2", "s3")
CHANNELS = ("email", "sms")
CAP_DAYS = 7  # the test policy: at most one contact per 7 days across channels
TOLERANCE_S = 300

offsets = st.one_of(
    st.just(0),
    st.integers(-TOLERANCE_S, TOLERANCE_S),
    st.integers(-400 * 86400, 400 * 86400),
)


class ApiMachine(RuleBasedStateMachine):
    """One fresh app and store per run; `make_url` gives the store."""

    make_url: Callable[[ExitStack], str]

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        paths = write_files(tmp)
        cfg = ServingSettings(
            database_url=self.make_url(self.stack) or f"sqlite:///{paths['db']}",
            policy_path=paths["policy"],
            catalog_path=paths["catalog"],
            snapshot_dir=tmp / "no-snapshot",
            model_uri="",
            api_keys=["client-key"],
            admin_keys=["admin-key"],
            next_offer_window_seconds=600,
            clock_tolerance_seconds=TOLERANCE_S,
            reload_state_path=tmp / "reload.json",
            refresh_interval_seconds=0,
        )
        self.clock = Clock(now=T0)
        consent = dict.fromkeys(CHANNELS, "opted_in")
        snap = make_snapshot({cid: consent for cid in CUSTOMERS})
        app = create_app(cfg, snapshots=FakeSnapshots(snap), clock=self.clock)
        self.client = self.stack.enter_context(TestClient(app))
        self.engine = app.state.runtime.store.engine
        self.seen_contacts: set[str] = set()
        self.opted_out: set[tuple[str, str]] = set()
        self.prefs_off: dict[str, set[str]] = {}
        self.keys: dict[str, dict[str, Any]] = {}  # request_id -> body
        self.answers: dict[str, str] = {}  # request_id -> decision_id
        self.event_ids = itertools.count()

    def teardown(self) -> None:
        self.stack.close()

    # --- rules ---------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.client.post(path, json=body, headers=CLIENT)
        assert r.status_code in (200, 409, 422), (r.status_code, r.text)
        return r

    @rule(
        cid=st.sampled_from(CUSTOMERS),
        channel=st.sampled_from(("auto", *CHANNELS)),
        offset=st.one_of(st.none(), offsets),
        dry_run=st.booleans(),
        key=st.one_of(st.none(), st.sampled_from(("k1", "k2", "k3"))),
    )
    def decide(
        self, cid: str, channel: str, offset: int | None, dry_run: bool, key: str | None
    ) -> None:
        body: dict[str, Any] = {"customer_id": cid, "channel": channel, "dry_run": dry_run}
        if offset is not None:
            body["context"] = {
                "timestamp": (self.clock.now + timedelta(seconds=offset)).isoformat()
            }
        if key is not None:
            body["request_id"] = key
        r = self._post("/v1/recommendations", body)
        if r.status_code == 409:
            code = r.json()["error"]["code"]
            late = offset is not None and abs(offset) > TOLERANCE_S and not dry_run
            reused = key is not None and key in self.keys and self.keys[key] != body
            assert (code == "timestamp_out_of_tolerance" and late) or (
                code == "idempotency_key_reused" and reused
            ), r.text
            return
        assert r.status_code == 200, r.text
        d = r.json()
        if key is not None and not dry_run:
            if key in self.answers:
                assert d["decision_id"] == self.answers[key]  # same key, same decision
            self.keys.setdefault(key, body)
            self.answers.setdefault(key, d["decision_id"])

    @rule(
        cid=st.sampled_from(CUSTOMERS),
        kind=st.sampled_from(("unsubscribe", "complaint", "open", "click", "bounce")),
        channel=st.sampled_from(CHANNELS),
        offset=offsets,
    )
    def event(self, cid: str, kind: str, channel: str, offset: int) -> None:
        ts = (self.clock.now + timedelta(seconds=offset)).isoformat()
        body = {
            "event_id": f"e{next(self.event_ids)}",
            "customer_id": cid,
            "type": kind,
            "channel": channel,
            "ts": ts,
        }
        r = self._post("/v1/events", body)
        assert r.status_code == 200, r.text
        if kind in ("unsubscribe", "complaint"):
            self.opted_out.add((cid, channel))  # acknowledged now

    @rule(
        cid=st.sampled_from(CUSTOMERS),
        channels=st.one_of(st.none(), st.lists(st.sampled_from(CHANNELS), unique=True)),
    )
    def preferences(self, cid: str, channels: list[str] | None) -> None:
        r = self.client.put(
            f"/v1/customers/{cid}/preferences", json={"channels": channels}, headers=CLIENT
        )
        assert r.status_code == 200, r.text
        self.prefs_off[cid] = set() if channels is None else set(CHANNELS) - set(channels)

    @rule(cid=st.sampled_from(CUSTOMERS), channel=st.sampled_from(CHANNELS))
    def next_offer(self, cid: str, channel: str) -> None:
        r = self.client.get(
            f"/v1/customers/{cid}/next-offer?channel={channel}&campaign=w", headers=CLIENT
        )
        assert r.status_code == 200, r.text
        d = r.json()
        if d["send"]:  # never "send" where consent or preferences forbid it now
            # (a repeat within the window answers with the decision already made, whose
            # channel may differ from the one asked for this time)
            assert (cid, d["channel"]) not in self.opted_out
            assert d["channel"] not in self.prefs_off.get(cid, set())

    @precondition(lambda self: self.keys)
    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.keys)))
        r = self._post("/v1/recommendations", self.keys[key])
        assert r.status_code == 200, r.text  # a repeat is never refused, however late
        d = r.json()
        assert d["decision_id"] == self.answers[key]
        if d["action"] in ("offer", "message"):
            assert (d["customer_id"], d["channel"]) not in self.opted_out

    @rule(seconds=st.integers(1, 10 * 86400))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)

    # --- invariants ----------------------------------------------------------------------
    @invariant()
    def contacts_respect_consent_and_caps(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Contact.contact_id, Contact.customer_id, Contact.channel, Contact.ts)
                .where(Contact.status == "sent")
                .order_by(Contact.customer_id, Contact.ts)
            ).all()
        for contact_id, cid, channel, _ in rows:
            if contact_id in self.seen_contacts:
                continue
            assert (cid, channel) not in self.opted_out, f"contact {contact_id} after an opt-out"
            assert channel not in self.prefs_off.get(cid, set()), f"{contact_id}: channel off"
            self.seen_contacts.add(contact_id)
        by_customer: dict[str, list[Any]] = {}
        for _, cid, _, ts in rows:
            by_customer.setdefault(cid, []).append(ts)
        for cid, times in by_customer.items():
            for a, b in itertools.pairwise(times):
                assert b - a >= timedelta(days=CAP_DAYS), f"{cid}: contacts at {a} and {b}"

    @invariant()
    def one_decision_per_key(self) -> None:
        with self.engine.connect() as conn:
            for key in self.keys:
                n = conn.execute(
                    select(Decision.decision_id).where(Decision.request_id == key)
                ).all()
                assert len(n) == 1, f"request_id {key}: {len(n)} decisions"


def _run(make_url: Callable[[ExitStack], str], examples: int) -> None:
    machine = type("Machine", (ApiMachine,), {"make_url": staticmethod(make_url)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_invariants_hold_for_any_sequence_of_calls_sqlite() -> None:
    _run(lambda stack: "", examples=int(os.environ.get("WINBACK_STATEFUL_EXAMPLES", "40")))


@pytest.mark.postgres
def test_invariants_hold_for_any_sequence_of_calls_postgresql(database_url: str) -> None:
    def pg(stack: ExitStack) -> str:
        return stack.enter_context(postgres_schema(database_url))

    _run(pg, examples=int(os.environ.get("WINBACK_STATEFUL_EXAMPLES", "20")))
