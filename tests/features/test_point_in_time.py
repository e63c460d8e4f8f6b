"""Point-in-time correctness, by property: the future never leaks into a feature."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.build import build_features
from tests.factories import World, dataset

CUTOFF = pd.Timestamp("2024-01-01")
CUSTOMERS = ("c1", "c2", "c3")
CATEGORIES = ("books", "music", "garden")
OFFERS = ("pct10", "freeship", "guide", "none", "holdout")
EVENTS = ("open", "click", "visit", "unsubscribe", "support_ticket", "delivery_issue", "stockout")
CHANNELS = ("email", "sms", "push")

customer = st.sampled_from(CUSTOMERS)
past_seconds = st.integers(1, 700 * 86400)  # strictly before the cutoff
future_seconds = st.integers(0, 400 * 86400)  # at or after the cutoff (0 = exactly at it)

order_rows = st.tuples(
    customer, st.floats(0, 500, allow_nan=False), st.sampled_from(CATEGORIES), st.booleans()
)
contact_rows = st.tuples(customer, st.sampled_from(OFFERS))
event_rows = st.tuples(customer, st.sampled_from(EVENTS))
consent_rows = st.tuples(customer, st.sampled_from(CHANNELS), st.booleans())


def at(seconds: int, sign: int) -> str:
    return str(CUTOFF + sign * pd.Timedelta(seconds=seconds))


def base_world(orders, contacts, events, consent) -> World:  # type: ignore[no-untyped-def]
    w = World()
    for cid in CUSTOMERS:
        w.customer(cid, "2020-01-01")
    for (cid, rev, cat, disc), s in orders:
        w.order(cid, at(s, -1), rev, rev * 0.3, cat, discount=1.0 if disc else 0.0)
    for i, ((cid, offer), s) in enumerate(contacts):
        w.contact(cid, at(s, -1), offer, "email", contact_id=f"k{i}")
        w.event(cid, at(s // 2, -1), "open", contact_id=f"k{i}")  # a response before the cutoff
    for (cid, kind), s in events:
        w.event(cid, at(s, -1), kind)
    for (cid, ch, opted_in), s in consent:
        w.consent(cid, ch, "opted_in" if opted_in else "opted_out", at(s, -1))
    return w


def past(rows):  # type: ignore[no-untyped-def]
    return st.lists(st.tuples(rows, past_seconds), max_size=6, unique_by=lambda r: r[1])


def future(rows):  # type: ignore[no-untyped-def]
    return st.lists(st.tuples(rows, future_seconds), max_size=6, unique_by=lambda r: r[1])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    past(order_rows),
    past(contact_rows),
    past(event_rows),
    past(consent_rows),
    future(order_rows),
    future(contact_rows),
    future(event_rows),
    future(consent_rows),
)
def test_rows_at_or_after_the_cutoff_never_change_a_feature(  # type: ignore[no-untyped-def]
    p_orders, p_contacts, p_events, p_consent, f_orders, f_contacts, f_events, f_consent
) -> None:
    w = base_world(p_orders, p_contacts, p_events, p_consent)
    before = build_features(dataset(w), CUTOFF)
    for (cid, rev, cat, disc), s in f_orders:
        w.order(cid, at(s, 1), rev, rev * 0.3, cat + "_new", discount=1.0 if disc else 0.0)
    for i, ((cid, offer), s) in enumerate(f_contacts):
        w.contact(cid, at(s, 1), offer, "sms", contact_id=f"f{i}")
    for (cid, kind), s in f_events:
        w.event(cid, at(s, 1), kind)
        if p_contacts:  # a late response to a past contact is not known at the cutoff either
            (kcid, _), _ = p_contacts[0]
            w.event(kcid, at(s, 1), "click", contact_id="k0")
    for (cid, ch, opted_in), s in f_consent:
        w.consent(cid, ch, "opted_in" if opted_in else "opted_out", at(s, 1))
    after = build_features(dataset(w), CUTOFF)
    pd.testing.assert_frame_equal(before, after, check_exact=True)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(order_rows, past_seconds), min_size=1, max_size=6, unique_by=lambda r: r[1]),
    st.data(),
)
def test_moving_a_purchase_earlier_never_lowers_days_since_last_order(  # type: ignore[no-untyped-def]
    orders, data
) -> None:
    i = data.draw(st.integers(0, len(orders) - 1))
    shift = data.draw(st.integers(1, 300 * 86400))
    before = build_features(dataset(base_world(orders, [], [], [])), CUTOFF)
    moved = list(orders)
    moved[i] = (orders[i][0], orders[i][1] + shift)
    after = build_features(dataset(base_world(moved, [], [], [])), CUTOFF)
    cid = orders[i][0][0]
    assert after.loc[cid, "days_since_last_order"] >= before.loc[cid, "days_since_last_order"]
