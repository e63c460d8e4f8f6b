"""Guardrails as pure functions: each rule's boundary, and how rules combine."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pytest

from features.featureset import WINBACK_V1
from features.offers import Budget, parse_catalog
from serving.engine import CustomerBatch, LiveContact, LivePreferences, LiveState, OptionSet, rules
from serving.engine import reasons as r
from serving.engine.state import CONSENT_IN, CONSENT_OUT, CONSENT_UNKNOWN
from serving.engine.timeutil import to_days
from serving.policy import FrequencyCaps, MarginFloor, parse_policy
from tests.factories import catalog, feature_rows

AS_OF = datetime(2024, 3, 1)
NOW = datetime(2024, 3, 2)
DAY = to_days(NOW)

JOURNEY = """
journey:
  stages:
    - {name: reconnect, offer_types: [none], min_days_since_previous: 0}
    - {name: content, offer_types: [content, none], min_days_since_previous: 7}
    - {name: offer, offer_types: [percent_discount, free_shipping], min_days_since_previous: 10}
  sunset_days: 90
holdout: {share: 0.0, salt: s}
channel_preference: [email]
"""


def batch(n: int = 1, live: dict[str, LiveState] | None = None, **cols: object) -> CustomerBatch:
    ids = [f"c{i}" for i in range(n)]
    return CustomerBatch.from_features(feature_rows(n, **cols), WINBACK_V1, ids, AS_OF, live=live)


def contacts(*ages_days: float, channel: str = "email", offer: str | None = None) -> LiveState:
    return LiveState(
        contacts=tuple(LiveContact(NOW - timedelta(days=a), channel, offer) for a in ages_days)
    )


def test_combine_reports_the_first_rule_in_pipeline_order() -> None:
    a = np.array([[[True, False]]])  # (1, 1, 2)
    b = np.array([[[True, True]]])
    codes = rules.combine(
        [(r.CONSENT_UNKNOWN, a), (r.MARGIN_FLOOR, b), (r.BUDGET_EXHAUSTED, None)], (1, 3, 2)
    )
    assert codes.shape == (1, 3, 2)
    assert (codes[:, :, 0] == r.CODE[r.CONSENT_UNKNOWN]).all()
    assert (codes[:, :, 1] == r.CODE[r.MARGIN_FLOOR]).all()
    with pytest.raises(ValueError, match="EXCLUSION_ORDER"):
        rules.combine([(r.MARGIN_FLOOR, b), (r.CONSENT_UNKNOWN, a)], (1, 3, 2))


def test_consent_only_opted_in_passes() -> None:
    consent = np.array([[CONSENT_IN, CONSENT_OUT, CONSENT_UNKNOWN]])
    unknown, out = rules.consent_blocks(consent, np.array([0, 1, 2]))
    assert unknown[0, 0].tolist() == [False, False, True]
    assert out[0, 0].tolist() == [False, True, False]


def test_unknown_lapse_state_or_tier_is_not_eligible() -> None:
    policy = parse_policy(JOURNEY)
    state, tier = rules.customer_eligibility(
        np.array([-1, 0, 2]), np.array([1, -1, 2]), policy.eligibility
    )
    # default eligibility: at_risk and lapsed; "active" (0) is not eligible
    assert state.ravel().tolist() == [True, True, False]
    assert tier.ravel().tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("position", "days_since", "stage", "sunset", "too_soon"),
    [
        (0, np.nan, 0, False, False),  # never contacted: stage 1
        (1, 6.9, 1, False, True),  # stage 2 needs 7 days
        (1, 7.0, 1, False, False),
        (2, 9.0, 2, False, True),
        (3, 89.0, 0, True, False),  # after the last stage: sunset for 90 days
        (3, 90.0, 0, False, False),  # then the journey starts again
        (4, 8.0, 1, False, False),
    ],
)
def test_journey_state(
    position: int, days_since: float, stage: int, sunset: bool, too_soon: bool
) -> None:
    journey = parse_policy(JOURNEY).journey
    js = rules.journey_state(np.array([position]), np.array([DAY - days_since]), DAY, journey)
    assert (js.stage_index[0], bool(js.sunset[0]), bool(js.too_soon[0])) == (
        stage,
        sunset,
        too_soon,
    )


def test_stage_offer_types_follow_the_stage() -> None:
    options = OptionSet.from_catalog(catalog())
    journey = parse_policy(JOURNEY).journey
    blocked = rules.stage_offer_types(np.array([0, 1, 2]), options, journey)[:, :, 0]
    allowed = {
        i: {o for o, b in zip(options.offer_ids, blocked[i], strict=True) if not b}
        for i in range(3)
    }
    assert allowed == {0: {"none"}, 1: {"guide", "none"}, 2: {"pct10", "freeship"}}


def test_across_channel_cap_counts_contacts_inside_the_window_only() -> None:
    caps = FrequencyCaps.model_validate({"across_channels": [{"max_contacts": 2, "days": 30}]})
    live = {
        "c0": contacts(1, 29.9),  # two inside: full
        "c1": contacts(1, 30.0),  # one exactly 30 days ago: outside
        "c2": contacts(1, channel="sms"),
    }
    b = batch(3, live=live)
    assert rules.cap_across_channels(b, DAY, caps).ravel().tolist() == [True, False, False]


def test_snapshot_counts_add_to_live_contacts_after_the_snapshot() -> None:
    caps = FrequencyCaps.model_validate({"across_channels": [{"max_contacts": 2, "days": 7}]})
    # one contact in the snapshot (3 days before as_of), one live after the snapshot
    live = {"c0": contacts(0.5), "c1": contacts(0.5)}
    b = batch(2, live=live, contacts_7d=[1.0, 0.0], days_since_last_contact=[3.0, np.nan])
    assert rules.cap_across_channels(b, DAY, caps).ravel().tolist() == [True, False]
    # the live contact also in the snapshot is counted once (max, not sum)
    both = {"c0": contacts(4.0)}  # 3 days before as_of = 4 days before now
    b2 = batch(1, live=both, contacts_7d=1.0, days_since_last_contact=3.0)
    assert rules.window_counts(b2, DAY, 7).tolist() == [1.0]
    # a snapshot whose last contact has left the window counts nothing
    b3 = batch(1, contacts_90d=5.0, days_since_last_contact=80.0)
    assert rules.window_counts(b3, DAY, 30).tolist() == [0.0]


def test_customer_frequency_preference_tightens_the_caps() -> None:
    caps = FrequencyCaps.model_validate({"across_channels": [{"max_contacts": 5, "days": 30}]})
    prefs = LivePreferences(max_contacts=1, per_days=20)
    live = {
        "c0": LiveState(contacts=contacts(10).contacts, preferences=prefs),
        "c1": LiveState(contacts=contacts(25).contacts, preferences=prefs),
        "c2": contacts(10),
    }
    assert rules.cap_across_channels(batch(3, live=live), DAY, caps).ravel().tolist() == [
        True,
        False,
        False,
    ]


def test_per_channel_cap_blocks_that_channel_only() -> None:
    caps = FrequencyCaps.model_validate(
        {"per_channel": {"email": [{"max_contacts": 1, "days": 14}]}}
    )
    b = batch(2, live={"c0": contacts(3), "c1": contacts(3, channel="sms")})
    blocked = rules.cap_per_channel(b.contacts, 2, DAY, caps, ("email", "sms"))[:, 0, :]
    assert blocked.tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize(("hours_ago", "blocked"), [(47.9, True), (48.0, False), (-1.0, True)])
def test_min_gap(hours_ago: float, blocked: bool) -> None:
    last = np.array([DAY - hours_ago / 24.0])
    assert bool(rules.min_gap(last, DAY, 48.0)[0, 0, 0]) is blocked
    assert not rules.min_gap(last, DAY, 0.0).any()


def test_repeat_offer_blocks_the_same_offer_within_the_period() -> None:
    options = OptionSet.from_catalog(catalog())
    live = {
        "c0": contacts(29, offer="pct10"),
        "c1": contacts(30, offer="pct10"),
        "c2": contacts(1, offer="none"),
    }
    b = batch(3, live=live)
    blocked = rules.repeat_offer(b.contacts, 3, options, DAY, 30)[:, :, 0]
    k = options.index
    assert blocked[0, k["pct10"]] and blocked[0].sum() == 1
    assert not blocked[1].any()
    assert not blocked[2].any()  # the plain message is not an offer


def test_margin_floor_boundaries() -> None:
    options = OptionSet.from_catalog(catalog())
    floor = MarginFloor(absolute=5.0, share_of_revenue=0.1)
    # revenue 100: floor max(5, 10) = 10; pct10 costs 10, freeship 6, expert 15
    revenue = np.array([100.0, 100.0, 100.0, np.nan, 20.0])
    margin = np.array([20.0, 19.999, 16.0, 50.0, 11.0])
    blocked = rules.margin_floor(revenue, margin, options, floor)[:, :, 0]
    k = options.index
    assert not blocked[0, k["pct10"]]  # 20 - 10 = 10 >= 10: exactly at the floor passes
    assert blocked[1, k["pct10"]]  # 9.999 < 10
    assert not blocked[2, k["freeship"]] and blocked[2, k["pct10"]]
    assert blocked[3, k["pct10"]] and blocked[3, k["freeship"]]  # unknown revenue
    # revenue 20: absolute floor 5 binds; freeship leaves 11 - 6 = 5 (passes), pct10 11 - 2 = 9
    assert not blocked[4, k["freeship"]] and not blocked[4, k["pct10"]]
    assert blocked[4, k["expert"]]
    assert not blocked[:, [k["guide"], k["none"]]].any()  # non-incentives never blocked


def test_offer_validity_dates_are_inclusive() -> None:
    cat = parse_catalog(
        """
offers:
  - {offer_id: spring, type: free_shipping, cost: {fixed: 5}, title: S,
     valid_from: 2024-03-02, valid_to: 2024-03-02}
  - {offer_id: later, type: free_shipping, cost: {fixed: 5}, title: L, valid_from: 2024-03-03}
  - {offer_id: over, type: free_shipping, cost: {fixed: 5}, title: O, valid_to: 2024-03-01}
"""
    )
    options = OptionSet.from_catalog(cat)
    blocked = rules.offer_validity(options, to_days(datetime(2024, 3, 2, 23, 59)))[0, :, 0]
    assert blocked.tolist() == [False, True, True, False]
    assert to_days(date(2024, 3, 2)) == np.floor(DAY)


def test_offer_tier_range() -> None:
    options = OptionSet.from_catalog(catalog())  # expert: mid and above
    blocked = rules.offer_tier(np.array([0, 1, 2]), options)[:, options.index["expert"], 0]
    assert blocked.tolist() == [True, False, False]


def test_budget_exhausted_at_any_limit_and_defaults_apply() -> None:
    class Usage:
        def __init__(self, day_redemptions: int = 0, total_cost: float = 0.0) -> None:
            self.day_redemptions = day_redemptions
            self.day_cost = 0.0
            self.total_redemptions = 0
            self.total_cost = total_cost

    options = OptionSet.from_catalog(catalog(), Budget(max_redemptions_per_day=10))
    k = options.index
    usage = {"pct10": Usage(day_redemptions=10), "freeship": Usage(day_redemptions=9)}
    blocked = rules.budget_exhausted(options, usage)
    assert blocked[k["pct10"]] and not blocked[k["freeship"]] and not blocked[k["none"]]
    no_default = OptionSet.from_catalog(catalog())
    assert not rules.budget_exhausted(no_default, usage).any()


def test_out_of_vocabulary_codes_are_unknown_not_an_error() -> None:
    from serving.engine.rules import customer_eligibility
    from serving.policy import Eligibility

    lapse, tier = customer_eligibility(np.array([1, 9, -1]), np.array([7, 0, 1]), Eligibility())
    # code 9 / 7 are outside the vocabularies: treated as unknown, hence blocked
    assert lapse[:, 0, 0].tolist() == [False, True, True]
    assert tier[:, 0, 0].tolist() == [True, False, False]
