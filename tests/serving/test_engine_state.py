"""CustomerBatch: the snapshot plus the live overlay, and the live overlay wins."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from features.featureset import WINBACK_V1
from serving.engine import CustomerBatch, EngineInputError, LiveContact, LivePreferences, LiveState
from serving.engine.state import CONSENT_IN, CONSENT_OUT, CONSENT_UNKNOWN, required_columns
from serving.engine.timeutil import to_days
from tests.factories import feature_rows

AS_OF = datetime(2024, 3, 1)


def build(live: dict[str, LiveState] | None = None, n: int = 1, **cols: object) -> CustomerBatch:
    ids = [f"c{i}" for i in range(n)]
    return CustomerBatch.from_features(feature_rows(n, **cols), WINBACK_V1, ids, AS_OF, live=live)


def test_snapshot_columns_are_read_by_name() -> None:
    b = build(
        n=2,
        lapse_state=[1.0, np.nan],
        value_tier=[2.0, 0.0],
        consent_sms=[1.0, np.nan],
        journey_stage=[3.0, np.nan],
        days_since_last_contact=[4.0, np.nan],
        aov_lifetime=[80.0, np.nan],
        margin_rate_lifetime=0.25,
    )
    assert b.lapse_state.tolist() == [1, -1]  # NaN -> unknown
    assert b.value_tier.tolist() == [2, 0]
    assert b.consent[:, 1].tolist() == [CONSENT_OUT, CONSENT_UNKNOWN]  # missing is unknown
    assert b.journey_position.tolist() == [3, 0]
    assert b.last_contact_day[0] == pytest.approx(to_days(AS_OF) - 4.0)
    assert np.isnan(b.last_contact_day[1])
    assert b.expected_margin[0] == pytest.approx(20.0) and np.isnan(b.expected_revenue[1])
    assert set(required_columns()) <= set(WINBACK_V1.columns)


def test_live_overlay_wins_over_the_snapshot() -> None:
    live = {
        "c0": LiveState(
            consent={"email": "opted_out", "in_app": "opted_in", "fax": "opted_in"},
            preferences=LivePreferences(channels=("email",), max_contacts=2, per_days=10),
        )
    }
    b = build(live, consent_email=0.0, consent_in_app=2.0)
    assert b.consent[0, 0] == CONSENT_OUT and b.consent[0, 3] == CONSENT_IN
    assert b.channels_off[0].tolist() == [False, True, True, True, True]
    assert (b.pref_max_contacts[0], b.pref_per_days[0]) == (2.0, 10.0)


def test_live_contacts_advance_the_journey_and_an_order_resets_it() -> None:
    after = [LiveContact(AS_OF + timedelta(days=d), "email", "none") for d in (1, 3)]
    before = LiveContact(AS_OF - timedelta(days=2), "email", "pct10")
    live = {
        "c0": LiveState(contacts=(before, *after)),  # snapshot 2 + 2 after as_of
        "c1": LiveState(contacts=(before, *after), last_order_ts=AS_OF + timedelta(days=2)),
        "c2": LiveState(last_order_ts=AS_OF - timedelta(days=1)),  # already in the snapshot
    }
    b = build(live, n=3, journey_stage=2.0, days_since_last_contact=2.0)
    assert b.journey_position.tolist() == [4, 1, 2]
    assert b.last_contact_day[0] == pytest.approx(to_days(AS_OF) + 3)
    assert b.last_order_day[1] == pytest.approx(to_days(AS_OF) + 2)
    assert len(b.contacts.day) == 6 and b.contacts.customer.tolist() == [0, 0, 0, 1, 1, 1]


def test_the_stores_customer_state_is_a_live_overlay() -> None:
    records = pytest.importorskip("serving.store.records")
    state = records.CustomerState(
        customer_id="c0",
        contacts=(records.ContactRow(AS_OF + timedelta(hours=5), "sms", "pct10", "k1", 1),),
        consent={"sms": "opted_out"},
        preferences=records.Preferences("c0", AS_OF, ("sms",), 1, 7),
        last_order_ts=None,
    )
    b = build({"c0": state}, journey_stage=0.0)
    assert b.consent[0, 1] == CONSENT_OUT
    assert b.journey_position[0] == 1 and b.contacts.offer_id.tolist() == ["pct10"]
    assert b.pref_max_contacts[0] == 1


def test_bad_shapes_name_the_argument() -> None:
    with pytest.raises(EngineInputError, match="known: expected 1 values"):
        CustomerBatch.from_features(feature_rows(1), WINBACK_V1, ["a"], AS_OF, known=[1, 0])
    narrow = WINBACK_V1.__class__(name="tiny", version="1", features=WINBACK_V1.features[:3])
    with pytest.raises(EngineInputError, match="tiny@1 lacks column"):
        CustomerBatch.from_features(np.zeros((1, 3)), narrow, ["a"], AS_OF)
