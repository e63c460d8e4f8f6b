"""The decision store on SQLite and PostgreSQL: caps under concurrency, events, consent,
preferences, budgets and migrations.

PostgreSQL cases run when WINBACK_TEST_DATABASE_URL is set; each test gets its own schema,
dropped afterwards, so reruns and parallel runs never collide.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.orm import Session

from serving.errors import (
    DuplicateDecisionError,
    IdempotencyKeyTakenError,
    StoreError,
    StoreUnavailableError,
)
from serving.policy import FrequencyCaps
from serving.store import (
    CapWindow,
    ContactCaps,
    DecisionRecord,
    EventRecord,
    IdempotencyClaim,
    Preferences,
    Store,
    check_caps,
    create_store_engine,
    upgrade_database,
)
from serving.store.caps import CAP_CHANNEL, CAP_MIN_GAP, CAP_REPEAT_OFFER
from serving.store.engine import WriteGate, _switch_to_wal, write_gate
from serving.store.migrate import current_revision
from serving.store.models import Base, Contact, Decision
from serving.store.records import PastContact

T0 = datetime(2026, 3, 1, 12, 0)
CAP_ONE = ContactCaps(windows=(CapWindow(1, 7),))


def offer(
    decision_id: str, customer: str = "c1", ts: datetime = T0, **kw: object
) -> DecisionRecord:
    fields: dict[str, object] = {"offer_id": "pct10", "channel": "email", "stage": 1}
    fields.update(kw)
    return DecisionRecord(decision_id, customer, ts, "offer", **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    upgrade_database(url)
    s = Store.from_url(url)
    yield s
    s.dispose()


def _contacts(store: Store, customer: str = "c1") -> int:
    with store.engine.connect() as conn:
        q = select(func.count()).select_from(Contact).where(Contact.customer_id == customer)
        return int(conn.execute(q).scalar_one())


# --- migrations ----------------------------------------------------------------------------
def test_migrations_build_the_models_schema_and_are_idempotent(url: str) -> None:
    upgrade_database(url)
    upgrade_database(url)  # second run at head does nothing
    engine = create_store_engine(url)
    try:
        assert current_revision(engine) == "0005"
        names = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= names
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        engine.dispose()


def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreUnavailableError) as info:
        upgrade_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert info.value.code == "store_unavailable"


# --- caps and concurrency ------------------------------------------------------------------
def test_cap_blocks_second_contact_and_not_sent_releases_it(store: Store) -> None:
    assert store.try_record_contact(offer("d1"), CAP_ONE).recorded
    blocked = store.try_record_contact(offer("d2", ts=T0 + timedelta(hours=1)), CAP_ONE)
    assert (blocked.recorded, blocked.reason) == (False, "cap_across_channels")
    assert not store.decision_exists("d2")  # a blocked attempt writes nothing

    ev = store.append_event(
        EventRecord("e1", "c1", T0 + timedelta(minutes=5), "not_sent", decision_id="d1")
    )
    assert (ev.duplicate, ev.released_contact_id) == (False, "d1")
    assert store.try_record_contact(offer("d2", ts=T0 + timedelta(hours=1)), CAP_ONE).recorded
    # the window slides: 8 days later the cap is free again
    assert store.try_record_contact(offer("d3", ts=T0 + timedelta(days=8)), CAP_ONE).recorded


def test_content_message_is_not_repeated_but_a_plain_message_may_be(store: Store) -> None:
    caps = ContactCaps(no_repeat_offer_days=30)

    def message(did: str, offer_id: str, days: int) -> DecisionRecord:
        return DecisionRecord(
            did, "c1", T0 + timedelta(days=days), "message", offer_id=offer_id, channel="email"
        )

    assert store.try_record_contact(message("m1", "guide", 0), caps).recorded
    again = store.try_record_contact(message("m2", "guide", 3), caps)
    assert (again.recorded, again.reason) == (False, "cap_repeat_offer")  # as the engine rules
    assert store.try_record_contact(message("m3", "none", 4), caps).recorded
    assert store.try_record_contact(message("m4", "none", 5), caps).recorded


def test_per_channel_cap_and_other_customers_are_independent(store: Store) -> None:
    caps = ContactCaps(windows=(CapWindow(1, 7, "sms"),))
    assert store.try_record_contact(offer("d1", channel="sms"), caps).recorded
    assert not store.try_record_contact(offer("d2", channel="sms"), caps).recorded
    assert store.try_record_contact(offer("d3", channel="email"), caps).recorded
    assert store.try_record_contact(offer("d4", customer="c2", channel="sms"), caps).recorded


def test_duplicate_decision_id_is_rejected(store: Store) -> None:
    store.try_record_contact(offer("d1"), ContactCaps())
    with pytest.raises(DuplicateDecisionError) as info:
        store.try_record_contact(offer("d1"), ContactCaps())
    assert info.value.code == "duplicate_decision"
    assert _contacts(store) == 1


def test_non_contact_decisions_are_logged_without_a_contact(store: Store) -> None:
    store.try_record_contact(offer("d1"), CAP_ONE)
    for i, action in enumerate(("none", "holdout")):
        res = store.record_decision(DecisionRecord(f"n{i}", "c1", T0, action, reasons=["x"]))
        assert res.recorded and res.contact_id is None
    dry = store.record_decision(offer("dry", dry_run=True), CAP_ONE)
    assert dry.recorded and dry.contact_id is None  # a dry run never takes a cap
    assert _contacts(store) == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Decision)).scalar_one() == 4
    with pytest.raises(StoreError, match="implies a contact"):
        store.try_record_contact(DecisionRecord("n9", "c1", T0, "none"), CAP_ONE)


def _race(store: Store, n: int, customer: str = "c1", prefix: str = "") -> list[bool]:
    barrier = threading.Barrier(n)

    def one(i: int) -> bool:
        barrier.wait()
        return store.try_record_contact(offer(f"{prefix}t{i}", customer=customer), CAP_ONE).recorded

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_fifty_concurrent_requests_under_cap_of_one_record_exactly_one(store: Store) -> None:
    results = _race(store, 50)
    assert sum(results) == 1
    assert _contacts(store) == 1


def _process_worker(url: str, prefix: str, n: int) -> int:
    store = Store.from_url(url)
    try:
        return sum(_race(store, n, prefix=prefix))
    finally:
        store.dispose()


def test_two_processes_under_cap_of_one_record_exactly_one(store: Store, url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        wins = pool.starmap(_process_worker, [(url, "p0", 15), (url, "p1", 15)])
    assert sum(wins) == 1
    assert _contacts(store) == 1


def _withdrawn_as_none(rec: DecisionRecord) -> Any:
    return lambda code: replace(
        rec, action="none", offer_id=None, channel=None, reasons=[code, *rec.reasons]
    )


def _group_worker(url: str, prefix: str, n: int) -> list[str]:
    """`n` threads at once, each a group commit of a contact for c1 and one for a customer
    of its own; the statuses of the c1 entries."""
    from serving.store.repository import GroupEntry

    store = Store.from_url(url)
    barrier = threading.Barrier(n)

    def one(i: int) -> str:
        recs = [offer(f"{prefix}g{i}", "c1"), offer(f"{prefix}h{i}", f"{prefix}-own{i}")]
        entries = [GroupEntry(r, caps=CAP_ONE, withdrawn=_withdrawn_as_none(r)) for r in recs]
        barrier.wait()
        first, own = store.record_group(entries)
        assert own.status == "recorded", own  # nothing else blocks a customer of its own
        return first.status

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        store.dispose()


def test_group_commits_in_two_processes_under_cap_of_one_record_exactly_one(
    store: Store, url: str
) -> None:
    """The API's micro-batched groups from two worker processes racing for one customer:
    exactly one contact, every other group's entry for that customer withdrawn, not lost."""
    from serving.store.repository import RECORDED, WITHDRAWN

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        statuses = pool.starmap(_group_worker, [(url, "p0", 10), (url, "p1", 10)])
    flat = [s for part in statuses for s in part]
    assert flat.count(RECORDED) == 1 and flat.count(WITHDRAWN) == 19
    assert _contacts(store) == 1
    with store.engine.connect() as conn:  # every decision logged, 20 for c1 and 20 others
        assert conn.execute(select(func.count()).select_from(Decision)).scalar_one() == 40


class _LockedCursor:
    """A cursor whose WAL switch finds the file locked `locked` times, then succeeds."""

    def __init__(self, locked: int, error: str = "database is locked") -> None:
        self.locked, self.error, self.calls = locked, error, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.locked:
            raise sqlite3.OperationalError(self.error)


def test_switching_a_new_file_to_wal_retries_while_another_process_holds_it() -> None:
    """Two API workers opening a new store at once: SQLite answers "database is locked" at
    once (no busy handler) to one of them while the other switches the file to WAL (seen when
    `winback serve --workers 2` started on a fresh database)."""
    cur = _LockedCursor(locked=3)
    _switch_to_wal(cur, busy_timeout_ms=5_000)
    assert cur.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _switch_to_wal(_LockedCursor(locked=10**9), busy_timeout_ms=50)  # gives up in time
    other = _LockedCursor(locked=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        _switch_to_wal(other, busy_timeout_ms=5_000)
    assert other.calls == 1  # only a lock is waited out


def _hold_gate(database: str, held: Any, release: Any) -> None:
    gate = WriteGate(database)
    with gate.held():
        held.set()
        release.wait(30)


def test_sqlite_writers_queue_at_the_write_gate_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    upgrade_database(url)
    store = Store.from_url(url)
    gate = write_gate(store.engine)
    assert gate is not None and write_gate(Store.from_url("sqlite://").engine) is None
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_gate, args=(str(tmp_path / "gate.db"), held, release))
    other.start()
    try:
        assert held.wait(30)
        done = threading.Event()

        def write() -> None:
            store.record_decision(DecisionRecord("gated", "c1", T0, "none", reasons=["x"]))
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert store.customer_states(["c1"], T0, 30)  # reads do not queue at the gate
        assert not done.wait(0.5)  # the write waits for the other process's gate
        release.set()
        assert done.wait(10)
        writer.join()
    finally:
        release.set()
        other.join(10)
    assert store.decision_exists("gated")


# --- events --------------------------------------------------------------------------------
def test_event_is_idempotent_by_event_id(store: Store) -> None:
    ev = EventRecord("e1", "c1", T0, "order", revenue=80.0, margin=30.0, payload={"k": 1})
    assert store.append_event(ev).duplicate is False
    assert store.append_event(ev).duplicate is True
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 1
    assert store.customer_states(["c1"], T0, 30)["c1"].last_order_ts == T0


def test_unsubscribe_opts_out_of_the_contacted_channel_once(store: Store) -> None:
    store.record_consent("c1", "email", "opted_in", T0 - timedelta(days=30))
    store.try_record_contact(offer("d1"), CAP_ONE)
    unsub = EventRecord("u1", "c1", T0 + timedelta(hours=2), "unsubscribe", contact_id="d1")
    assert store.append_event(unsub).opted_out_channels == ("email",)
    assert store.append_event(unsub).duplicate
    assert store.current_consent(["c1"]) == {"c1": {"email": "opted_out"}}
    assert len(store.consent_history("c1")) == 2
    # a complaint naming no channel and no contact opts out of every channel
    res = store.append_event(EventRecord("u2", "c2", T0, "complaint"))
    assert set(store.current_consent(["c2"])["c2"]) == set(res.opted_out_channels)
    assert len(res.opted_out_channels) == 5


# --- consent, preferences, budgets ---------------------------------------------------------
def test_consent_history_keeps_every_change_and_latest_wins(store: Store) -> None:
    store.record_consent("c1", "email", "opted_in", T0)
    store.record_consent("c1", "email", "opted_out", T0 + timedelta(days=1))
    store.record_consent("c1", "sms", "opted_in", T0)
    store.record_consent("c1", "email", "opted_in", T0 + timedelta(days=2))
    # same timestamp: the change recorded last wins
    store.record_consent("c1", "sms", "opted_out", T0)
    hist = store.consent_history("c1")
    assert [(h.channel, h.status) for h in hist if h.channel == "email"] == [
        ("email", "opted_in"),
        ("email", "opted_out"),
        ("email", "opted_in"),
    ]
    assert len(hist) == 5
    assert store.current_consent(["c1", "c9"]) == {
        "c1": {"email": "opted_in", "sms": "opted_out"},
        "c9": {},  # never recorded: no consent is assumed
    }
    as_of = store.current_consent(["c1"], as_of=T0 + timedelta(hours=30))
    assert as_of["c1"]["email"] == "opted_out"


def test_aware_timestamps_are_stored_as_naive_utc(store: Store) -> None:
    aware = datetime(2026, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    store.record_consent("c1", "email", "opted_in", aware)
    assert store.consent_history("c1")[0].ts == datetime(2026, 3, 1, 14, 0)
    with pytest.raises(StoreError, match="status: must be one of"):
        store.record_consent("c1", "email", "maybe", aware)


def test_preferences_latest_wins_and_tighten_caps(store: Store) -> None:
    store.set_preferences(Preferences("c1", T0, ("email", "sms"), None, None))
    store.set_preferences(Preferences("c1", T0 + timedelta(days=1), ("email",), 1, 30))
    assert len(store.preferences_history("c1")) == 2
    current = store.current_preferences(["c1", "c2"])
    assert set(current) == {"c1"}
    p = current["c1"]
    assert (p.channels, p.max_contacts, p.per_days) == (("email",), 1, 30)
    caps = ContactCaps().tightened(p.max_contacts, p.per_days, channels_off=("sms",))
    assert store.try_record_contact(offer("d1"), caps).recorded
    late = store.try_record_contact(offer("d2", ts=T0 + timedelta(days=20)), caps)
    assert not late.recorded  # the customer's 1-in-30-days is tighter than no policy cap
    sms = store.try_record_contact(offer("d3", customer="c3", channel="sms"), caps)
    assert (sms.recorded, sms.reason) == (False, CAP_CHANNEL)
    state = store.customer_states(["c1"], T0 + timedelta(days=21), 30)["c1"]
    assert [c.contact_id for c in state.contacts] == ["d1"]
    assert state.preferences == p


def test_budget_usage_accumulates_per_day_and_in_total(store: Store) -> None:
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    store.add_budget_usage("pct10", d1, 1, 8.0)
    store.add_budget_usage("pct10", d1, 2, 4.5)
    store.add_budget_usage("pct10", d2, 1, 1.0)
    usage = store.budget_usage(["pct10", "freeship"], d2)
    assert (usage["pct10"].day_redemptions, usage["pct10"].total_redemptions) == (1, 4)
    assert usage["pct10"].total_cost == pytest.approx(13.5)
    assert usage["freeship"].total_redemptions == 0


def test_cached_budget_usage_sees_own_increments_and_expires(store: Store) -> None:
    day = date(2026, 3, 1)
    store.add_budget_usage("pct10", day, 1, 8.0)
    first = store.budget_usage_cached(["pct10"], day, max_age_s=60)
    assert first["pct10"].total_redemptions == 1
    store.add_budget_usage("pct10", day, 1, 8.0)  # this process: the cache is emptied
    assert store.budget_usage_cached(["pct10"], day, max_age_s=60)["pct10"].total_redemptions == 2
    # another process's increment (same database, another Store) shows once the entry expires
    other = Store(store.engine)
    other.add_budget_usage("pct10", day, 1, 8.0)
    assert store.budget_usage_cached(["pct10"], day, max_age_s=60)["pct10"].total_redemptions == 2
    assert store.budget_usage_cached(["pct10"], day, max_age_s=0)["pct10"].total_redemptions == 3


def test_store_without_migrations_raises_store_error(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    assert store.ping()
    with pytest.raises(StoreError):
        store.current_consent(["c1"])
    store.dispose()


# --- the pure cap check --------------------------------------------------------------------
def test_check_caps_rules() -> None:
    past = [PastContact(T0 - timedelta(hours=30), "email", "pct10")]
    gap = ContactCaps(min_gap=timedelta(hours=48))
    assert check_caps(past, gap, T0, "sms", None)[0] == CAP_MIN_GAP  # type: ignore[index]
    assert check_caps(past, gap, T0 + timedelta(hours=19), "sms", None) is None
    repeat = ContactCaps(no_repeat_offer_days=30)
    assert check_caps(past, repeat, T0, "email", "pct10")[0] == CAP_REPEAT_OFFER  # type: ignore[index]
    assert check_caps(past, repeat, T0, "email", "freeship") is None
    assert check_caps([], CAP_ONE, T0, "email", "pct10") is None
    # a plain message is not an offer: sending another one is never a "repeat offer"
    messages = [PastContact(T0 - timedelta(days=3), "email", "none")]
    assert check_caps(messages, repeat, T0, "email", "none") is None


def test_caps_from_policy() -> None:
    freq = FrequencyCaps.model_validate(
        {
            "across_channels": [{"max_contacts": 1, "days": 3}],
            "per_channel": {"sms": [{"max_contacts": 1, "days": 14}]},
            "min_gap_hours": 24,
            "no_repeat_offer_days": 30,
        }
    )
    caps = ContactCaps.from_policy(freq)
    assert caps.windows == (CapWindow(1, 3), CapWindow(1, 14, "sms"))
    assert caps.horizon == timedelta(days=30)
    assert caps.min_gap == timedelta(hours=24)


# --- consent re-checked inside the contact's transaction ------------------------------------
def test_no_contact_is_recorded_once_an_opt_out_is_acknowledged(store: Store) -> None:
    """Contact attempts (no caps) race one unsubscribe: every attempt that starts after the
    unsubscribe was acknowledged is refused with `consent_opted_out`."""
    store.record_consent("c1", "email", "opted_in", T0 - timedelta(days=1))
    ack: list[float] = []
    attempts: list[tuple[float, bool, str | None]] = []
    stop = threading.Event()

    def contacts(worker: int) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            started = time.monotonic()
            res = store.try_record_contact(offer(f"w{worker}-{i}", ts=T0), ContactCaps(), now=T0)
            attempts.append((started, res.recorded, res.reason))
            i += 1

    def unsubscribe() -> None:
        time.sleep(0.05)
        store.append_event(
            EventRecord("u1", "c1", T0 + timedelta(days=30), "unsubscribe", channel="email"),
            received=T0,
        )
        ack.append(time.monotonic())
        time.sleep(0.1)
        stop.set()

    threads = [threading.Thread(target=contacts, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=unsubscribe))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert ack, "the unsubscribe was never acknowledged"
    after = [(rec, why) for started, rec, why in attempts if started > ack[0]]
    assert after, "no attempt started after the acknowledgement: the race was not exercised"
    assert all(not rec and why == "consent_opted_out" for rec, why in after)
    assert any(rec for _, rec, _ in attempts)  # before the opt-out, contacts did record


def test_consent_in_force_counts_an_opt_out_whatever_its_date(store: Store) -> None:
    store.record_consent("c1", "email", "opted_in", T0 - timedelta(days=10))
    store.record_consent("c1", "email", "opted_out", T0 + timedelta(days=10))  # dated ahead
    store.record_consent("c1", "sms", "opted_in", T0 + timedelta(days=10))  # not in force yet
    assert store.current_consent(["c1"], as_of=T0) == {"c1": {"email": "opted_out"}}
    state = store.customer_states(["c1"], T0, 7)["c1"]
    assert dict(state.consent) == {"email": "opted_out"}
    assert store.contact_guard("c1", "email", T0) == (
        "consent_opted_out",
        "the customer opted out of email",
    )
    assert store.contact_guard("c1", "sms", T0) is None


def test_preferences_are_re_read_under_the_lock(store: Store) -> None:
    store.set_preferences(Preferences("c1", T0, ("sms",), None, None, "api"))
    res = store.try_record_contact(offer("p1"), ContactCaps(), now=T0)
    assert not res.recorded and res.reason == "channel_off_by_preference"
    store.set_preferences(Preferences("c1", T0 + timedelta(seconds=1), None, 1, 30, "api"))
    assert store.try_record_contact(offer("p2"), ContactCaps(), now=T0).recorded
    # the customer's own 1-per-30-days, read in the transaction, blocks the second
    res = store.try_record_contact(offer("p3", offer_id="pct20"), ContactCaps(), now=T0)
    assert not res.recorded and res.reason == "cap_across_channels"


def test_an_idempotency_key_is_claimed_once(store: Store) -> None:
    assert store.claim_idempotency_key("k", "fp1", "recommendations", T0) is None
    assert store.claim_idempotency_key("k", "fp2", "recommendations", T0) == (
        "fp1",
        "recommendations",
    )
    assert store.idempotency_fingerprint("k") == ("fp1", "recommendations")
    assert store.idempotency_fingerprint("other") is None


def test_a_claimed_key_commits_with_its_decision_or_not_at_all(store: Store) -> None:
    claim = IdempotencyClaim("k1", "fp1", "recommendations", T0)
    none = DecisionRecord("n1", "c1", T0, "none", request_id="k1", reasons=["no_allowed_option"])
    assert store.record_decision(none, claim=claim).recorded
    assert store.idempotency_fingerprint("k1") == ("fp1", "recommendations")
    # the key exists: the next transaction claiming it writes nothing, contact or not
    with pytest.raises(IdempotencyKeyTakenError):
        store.record_decision(replace(none, decision_id="n2"), claim=claim)
    with pytest.raises(IdempotencyKeyTakenError):
        store.try_record_contact(offer("o1"), ContactCaps(), now=T0, claim=claim)
    assert not store.decision_exists("n2") and not store.decision_exists("o1")
    assert _contacts(store) == 0
    # a contact the caps block still stores its claim (the request's decision follows)
    assert store.try_record_contact(offer("o2"), CAP_ONE, now=T0).recorded
    k2 = IdempotencyClaim("k2", "fp2", "recommendations", T0)
    res = store.try_record_contact(offer("o3", offer_id="pct20"), CAP_ONE, now=T0, claim=k2)
    assert not res.recorded and res.reason == "cap_across_channels"
    assert store.idempotency_fingerprint("k2") == ("fp2", "recommendations")
    # a failed write leaves no key behind
    k3 = IdempotencyClaim("k3", "fp3", "recommendations", T0)
    with pytest.raises(DuplicateDecisionError):
        store.record_decision(replace(none, decision_id="n1", request_id="k3"), claim=k3)
    assert store.idempotency_fingerprint("k3") is None


def test_request_path_rows_read_back_as_the_orm_wrote_them(store: Store) -> None:
    """The plain-SQL inserts (serving.store.hotpath) give the rows the ORM types describe."""
    at = T0 + timedelta(microseconds=7)
    rec = offer(
        "h1",
        ts=at,
        request_id="r1",
        propensity=0.9,
        expected_value=1.25,
        reasons=["chosen_best_value"],
        scores={"pct10": 1.25, "pct20": None},
        excluded=[{"offer_id": "free", "reason": "margin_floor"}],
        model_version="m/1",
        policy_version="p1",
        value_tier="mid",
        lapse_state="lapsed",
        p_convert=0.2,
    )
    assert store.try_record_contact(rec, ContactCaps(), now=at).recorded
    plain = DecisionRecord("h2", "c2", T0, "none", reasons=["unknown_customer"])
    assert store.record_decision(plain).recorded
    with Session(store.engine) as s:
        row, other = s.get_one(Decision, "h1"), s.get_one(Decision, "h2")
        contact = s.get_one(Contact, "h1")
    assert (row.ts, row.request_id, row.dry_run) == (at, "r1", False)
    assert row.reasons == ["chosen_best_value"]
    assert row.scores == {"pct10": 1.25, "pct20": None}
    assert row.excluded == [{"offer_id": "free", "reason": "margin_floor"}]
    assert (row.value_tier, row.lapse_state, row.p_convert) == ("mid", "lapsed", 0.2)
    assert (other.scores, other.excluded, other.offer_id) == (None, None, None)
    assert (contact.ts, contact.channel, contact.status) == (at, "email", "sent")
    # and the request path's read sees them (datetimes parsed back)
    state = store.customer_states(["c1"], at, 7)["c1"]
    assert [(c.ts, c.channel, c.offer_id) for c in state.contacts] == [(at, "email", "pct10")]


def _seed_live_state(store: Store) -> list[str]:
    """Contacts, consent, preferences and orders for a few customers; their ids."""
    for i, cid in enumerate(("c1", "c2", "c3")):
        ts = T0 - timedelta(days=i + 1, microseconds=i)
        assert store.try_record_contact(offer(f"s{cid}", cid, ts=ts), ContactCaps()).recorded
    store.record_consent("c1", "email", "opted_in", T0 - timedelta(days=30))
    store.record_consent("c1", "email", "opted_out", T0 - timedelta(days=2))
    store.record_consent("c2", "sms", "opted_in", T0 - timedelta(days=3))
    store.set_preferences(Preferences("c2", T0 - timedelta(days=1), ("email",), 2, 30))
    store.append_event(EventRecord("o1", "c3", T0 - timedelta(days=4), "order", revenue=20.0))
    return ["c1", "c2", "c3", "c4"]


def test_a_group_read_of_live_state_equals_the_general_read(store: Store) -> None:
    """The request path's plain-SQL read of several customers (a micro-batched group) gives
    what the SQLAlchemy read gives, customer by customer and for one at a time."""
    from serving.store import queries

    ids = _seed_live_state(store)
    grouped = store.customer_states(ids, T0, 7)
    with store.engine.connect() as conn:
        general = queries.customer_states(conn, ids, T0, 7)
    assert grouped == general
    assert {cid: store.customer_states([cid], T0, 7)[cid] for cid in ids} == general
    assert grouped["c1"].consent == {"email": "opted_out"}
    assert grouped["c2"].preferences is not None and grouped["c3"].last_order_ts is not None


_IDS = ("decision_id", "contact_id", "customer_id", "key")


def _logged(store: Store, ids: list[str]) -> list[tuple[dict[str, Any], ...]]:
    """The decision, contact and key rows of decisions `ids`, without their ids."""
    from serving.store.models import IdempotencyKey

    def row(table: Any, where: Any) -> dict[str, Any]:
        found = conn.execute(select(*table.__table__.c).where(where)).one_or_none()
        return {} if found is None else {k: v for k, v in found._mapping.items() if k not in _IDS}

    out = []
    with store.engine.connect() as conn:
        for i in ids:
            out.append(
                (
                    row(Decision, Decision.decision_id == i),
                    row(Contact, Contact.decision_id == i),
                    row(IdempotencyKey, IdempotencyKey.key == f"k-{i}"),
                )
            )
    return out


def test_a_group_writes_the_rows_each_entry_writes_alone(store: Store) -> None:
    """Several contacts, messages and non-contacts in one group: every column of every
    decision, contact and key row equals what the entry writes alone (PostgreSQL writes a
    group's rows in one statement per table, JSON, timestamps, NULLs and flags included)."""
    from serving.store.repository import RECORDED, GroupEntry, GroupResult

    def records(tag: str) -> list[DecisionRecord]:
        full = {
            "reasons": ["chosen_best_value"],
            "scores": {"pct10": 1.25, "none": None, "guide": -0.5},
            "excluded": [{"offer_id": "bundle", "reason": "margin_floor"}],
            "model_version": "7",
            "policy_version": "p1",
            "campaign_id": "spring",
            "propensity": 0.9,
            "expected_value": 1.25,
            "value_tier": "gold",
            "lapse_state": "lapsed",
            "p_convert": 0.125,
        }
        return [
            offer(f"{tag}1", f"{tag}-c1", request_id="r1", **full),  # type: ignore[arg-type]
            offer(f"{tag}2", f"{tag}-c2", offer_id="guide", stage=2),
            DecisionRecord(f"{tag}3", f"{tag}-c3", T0, "message", channel="sms", stage=3),
            DecisionRecord(f"{tag}4", f"{tag}-c4", T0, "none", reasons=["no_allowed_option"]),
            DecisionRecord(
                f"{tag}5",
                f"{tag}-c5",
                T0,
                "holdout",
                offer_id="pct10",
                channel="email",
                propensity=0.05,
                replaced_propensity=0.8,
                scores=None,
                excluded=None,
            ),
        ]

    def entry(r: DecisionRecord) -> GroupEntry:
        claim = IdempotencyClaim(f"k-{r.decision_id}", "f", "recommendations", T0)
        return GroupEntry(r, caps=CAP_ONE, claim=claim)

    together = records("g")
    assert store.record_group([entry(r) for r in together]) == [GroupResult(RECORDED)] * 5
    alone = records("a")
    for r in alone:
        assert store.record_group([entry(r)]) == [GroupResult(RECORDED)]
    grouped = _logged(store, [r.decision_id for r in together])
    assert grouped == _logged(store, [r.decision_id for r in alone])
    assert [c != {} for _, c, _ in grouped] == [True, True, True, False, False]
    assert grouped[0][0]["scores"] == {"pct10": 1.25, "none": None, "guide": -0.5}


def test_json_columns_have_one_spelling_whoever_writes_them(store: Store) -> None:
    """The request path's plain SQL and the ORM's `JSON` type store the same text
    (`engine.json_text`), which parses back to the values written."""
    scores = {"pct10": -0.34442075325625576, "none": None, "tiny": 1e-07, "big": 1e16}
    excluded = [{"offer_id": "bundle", "reason": "margin_floor"}, {"offer_id": "été"}]
    reasons = ["no_allowed_option"]
    store.record_decision(  # the request path's plain SQL (`hotpath`)
        DecisionRecord("hot", "c1", T0, "none", reasons=reasons, scores=scores, excluded=excluded)
    )
    with Session(store.engine) as session, session.begin():
        session.add(
            Decision(
                decision_id="orm",
                customer_id="c1",
                ts=T0,
                action="none",
                reasons=reasons,
                scores=scores,
                excluded=excluded,
                dry_run=False,
            )
        )
    with store.engine.connect() as conn:
        sql = (
            "SELECT decision_id, CAST(reasons AS TEXT), CAST(scores AS TEXT), "
            "CAST(excluded AS TEXT) FROM decisions ORDER BY decision_id"
        )
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(text(sql))}
    assert rows["hot"] == rows["orm"]
    assert [json.loads(t) for t in rows["hot"]] == [reasons, scores, excluded]


def test_json_text_writes_a_lone_surrogate_as_json_dumps_does() -> None:
    """pydantic-core cannot write a string UTF-8 cannot hold; `json.dumps` escapes it."""
    from serving.store.engine import json_text

    value = {"payload": "a\ud800b", "n": float("nan")}
    assert json_text(value) == json.dumps(value)
    assert json_text({"a": 0.5, "b": None}) == '{"a":0.5,"b":null}'  # the usual: compact


def test_a_group_with_a_key_or_decision_id_twice_judges_them_in_order(store: Store) -> None:
    """A key or a decision id twice in one group (the API never sends that): the first entry
    is written, the later one finds it taken, as if each entry were recorded alone in turn."""
    from serving.store.repository import DUPLICATE, KEY_TAKEN, RECORDED, GroupEntry, GroupResult

    claim = IdempotencyClaim("same", "f", "recommendations", T0)
    entries = [
        GroupEntry(offer("d1", "c1"), caps=CAP_ONE, claim=claim),
        GroupEntry(offer("d2", "c2"), caps=CAP_ONE, claim=claim),
        GroupEntry(offer("d3", "c3"), caps=CAP_ONE),
        GroupEntry(offer("d3", "c4"), caps=CAP_ONE),
    ]
    assert store.record_group(entries) == [
        GroupResult(RECORDED),
        GroupResult(KEY_TAKEN),
        GroupResult(RECORDED),
        GroupResult(DUPLICATE),
    ]
    assert [_contacts(store, c) for c in ("c1", "c2", "c3", "c4")] == [1, 0, 1, 0]


def test_a_group_with_a_value_json_cannot_spell_is_written_row_by_row(store: Store) -> None:
    """A NaN expected value has no JSON spelling (PostgreSQL's one-statement group write
    carries the rows as JSON): the group is written one row at a time, as before, not lost."""
    import math

    from serving.store.repository import RECORDED, GroupEntry, GroupResult

    recs = [offer("n1", "c1", expected_value=float("nan")), offer("n2", "c2")]
    assert (
        store.record_group([GroupEntry(r, caps=CAP_ONE) for r in recs])
        == [GroupResult(RECORDED)] * 2
    )
    with store.engine.connect() as conn:
        q = select(Decision.expected_value).where(Decision.decision_id == "n1")
        stored = conn.execute(q).scalar_one()
    assert stored is None or math.isnan(stored)  # SQLite stores a NaN as NULL
    assert (_contacts(store, "c1"), _contacts(store, "c2")) == (1, 1)


def test_a_group_commit_records_each_entry_as_alone(store: Store) -> None:
    """`record_group`: caps, consent, keys and duplicates judged per entry, as the
    one-decision methods judge them, in one transaction."""
    from serving.store.repository import (
        DUPLICATE,
        KEY_TAKEN,
        RECORDED,
        WITHDRAWN,
        GroupEntry,
        GroupResult,
    )

    _seed_live_state(store)  # c1 opted out of email; c2, c3 contacted 2-3 days ago
    assert store.record_decision(DecisionRecord("dup", "c6", T0, "none")).recorded
    assert store.claim_idempotency_key("taken", "f", "recommendations", T0) is None

    def none_of(rec: DecisionRecord) -> Any:
        return lambda code: replace(
            rec, action="none", offer_id=None, channel=None, reasons=[code, *rec.reasons]
        )

    recs = [
        offer("g1", "c1"),  # opted out of email: withdrawn
        offer("g2", "c2"),  # contacted yesterday, cap of one a week: withdrawn
        offer("g4", "c4"),  # new: recorded with its contact
        offer("g5", "c5"),  # its key exists: nothing written
        DecisionRecord("dup", "c6", T0, "none"),  # its id exists: nothing written
        DecisionRecord("g7", "c7", T0, "none"),
    ]
    claims = [None, None, IdempotencyClaim("k4", "f", "recommendations", T0), None, None, None]
    claims[3] = IdempotencyClaim("taken", "f", "recommendations", T0)
    entries = [
        GroupEntry(r, caps=CAP_ONE, claim=c, withdrawn=none_of(r))
        for r, c in zip(recs, claims, strict=True)
    ]
    assert store.record_group(entries) == [
        GroupResult(WITHDRAWN, "consent_opted_out"),
        GroupResult(WITHDRAWN, "cap_across_channels"),
        GroupResult(RECORDED),
        GroupResult(KEY_TAKEN),
        GroupResult(DUPLICATE),
        GroupResult(RECORDED),
    ]
    assert [store.decision_exists(d) for d in ("g1", "g2", "g4", "g5", "g7")] == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert (_contacts(store, "c1"), _contacts(store, "c2"), _contacts(store, "c4")) == (1, 1, 1)
    assert store.idempotency_fingerprint("k4") == ("f", "recommendations")
    with pytest.raises(StoreError, match="one customer twice"):
        store.record_group([GroupEntry(offer("x1", "c9")), GroupEntry(offer("x2", "c9"))])
