"""The decision engine end to end: what is never done, what is always done, and determinism."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.featureset import WINBACK_V1
from serving.engine import (
    CustomerBatch,
    EngineInputError,
    LiveContact,
    LiveState,
    OptionSet,
    Scores,
    decide,
)
from serving.engine import reasons as r
from serving.engine.state import CONSENT_IN
from serving.policy import Policy, parse_policy
from tests.factories import catalog, feature_rows

AS_OF = datetime(2024, 3, 1)
NOW = datetime(2024, 3, 2, 12)

POLICY = """
journey:
  stages:
    - {name: reconnect, offer_types: [none, content], min_days_since_previous: 0}
    - {name: offer, offer_types: [percent_discount, free_shipping, expert_consult, none],
       min_days_since_previous: 7}
  sunset_days: 90
frequency:
  across_channels: [{max_contacts: 3, days: 30}]
  per_channel: {email: [{max_contacts: 1, days: 14}]}
  min_gap_hours: 48
  no_repeat_offer_days: 30
margin_floor: {absolute: 5.0, share_of_revenue: 0.1}
eligibility: {channels: [email, sms, push]}
holdout: {share: %(share)s, salt: test-salt}
exploration: {epsilon: %(epsilon)s}
channel_preference: [email, sms, push]
"""

OPTIONS = OptionSet.from_catalog(catalog())  # pct10, freeship, expert, guide, none
K = OPTIONS.index


def policy(share: float = 0.0, epsilon: float = 0.0) -> Policy:
    return parse_policy(POLICY % {"share": share, "epsilon": epsilon})


def batch(
    n: int = 1,
    live: dict[str, LiveState] | None = None,
    known: list[bool] | None = None,
    ids: list[str] | None = None,
    **cols: object,
) -> CustomerBatch:
    ids = ids or [f"c{i}" for i in range(n)]
    x = feature_rows(len(ids), **cols)
    return CustomerBatch.from_features(x, WINBACK_V1, ids, AS_OF, known=known, live=live)


def scores(value: np.ndarray | list[list[float]]) -> Scores:
    v = np.asarray(value, dtype=np.float64)
    return Scores(p_convert=np.full(v.shape, 0.1), value=v, model_version="m@3")


def value_row(**values: float) -> list[float]:
    row = [0.0] * len(OPTIONS)
    for oid, v in values.items():
        row[K[oid]] = v
    return row


# --- what must never happen ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    epsilon=st.sampled_from([0.0, 0.3]),
    channel=st.sampled_from(["email", "sms", "auto"]),
)
def test_a_blocked_option_is_never_chosen_whatever_its_score(
    data: st.DataObject, n: int, epsilon: float, channel: str
) -> None:
    k = len(OPTIONS)
    values = np.array(
        data.draw(
            st.lists(st.lists(st.floats(-50, 50), min_size=k, max_size=k), min_size=n, max_size=n)
        )
    )
    consent = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=n, max_size=n))
    sms = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=n, max_size=n))
    position = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    since = data.draw(st.lists(st.sampled_from([np.nan, 1.0, 10.0, 100.0]), min_size=n, max_size=n))
    candidates = data.draw(st.sets(st.sampled_from(OPTIONS.offer_ids[:-1])))
    b = batch(
        n,
        consent_email=consent,
        consent_sms=sms,
        journey_stage=position,
        days_since_last_contact=since,
    )
    res = decide(
        b, OPTIONS, policy(epsilon=epsilon), scores(values), NOW, channel=channel,
        decision_key="k", candidate_offer_ids=candidates,
    )  # fmt: skip
    for i in range(n):
        k_chosen = res.chosen[i]
        if k_chosen < 0:
            assert res.action[i] == "none"
            continue
        assert res.exclusion[i, k_chosen] == 0
        assert OPTIONS.offer_ids[k_chosen] in candidates | {"none"}
        ch = res.channel[i]
        assert b.consent[i, ["email", "sms", "push", "in_app", "direct_mail"].index(ch)] == 0
        d = res.decision(i)
        assert d.offer_id not in {e.offer_id for e in d.excluded}
        if epsilon == 0:
            allowed = res.exclusion[i] == 0
            assert values[i, k_chosen] == values[i][allowed].max()


def test_unknown_consent_is_never_assumed() -> None:
    b = batch(1, consent_email=2.0, consent_sms=2.0, consent_push=2.0)
    d = decide(b, OPTIONS, policy(), None, NOW, channel="auto").decision(0)
    assert d.action == "none" and d.channel is None
    assert d.reasons == (r.MODEL_UNAVAILABLE, r.NO_ALLOWED_OPTION)
    assert {e.reason for e in d.excluded} == {r.CONSENT_UNKNOWN}
    assert len(d.excluded) == len(OPTIONS)


def test_auto_picks_the_first_consented_channel_in_preference_order() -> None:
    b = batch(1, consent_email=1.0, consent_sms=2.0, consent_push=0.0)
    d = decide(b, OPTIONS, policy(), None, NOW, channel="auto").decision(0)
    assert d.action == "message" and d.channel == "push"
    only_email = decide(b, OPTIONS, policy(), None, NOW, channel="email").decision(0)
    assert only_email.action == "none"
    assert {e.reason for e in only_email.excluded} == {r.CONSENT_OPTED_OUT}


def test_a_live_unsubscribe_beats_the_snapshot() -> None:
    live = {"c0": LiveState(consent={"email": "opted_out"})}
    b = batch(1, live=live, consent_email=0.0)
    assert b.consent[0, 0] != CONSENT_IN
    d = decide(b, OPTIONS, policy(), None, NOW, channel="email").decision(0)
    assert d.action == "none" and {e.reason for e in d.excluded} == {r.CONSENT_OPTED_OUT}


def test_channel_switched_off_by_preference() -> None:
    from serving.engine import LivePreferences

    live = {"c0": LiveState(preferences=LivePreferences(channels=("sms",)))}
    d = decide(batch(1, live=live), OPTIONS, policy(), None, NOW, channel="auto").decision(0)
    assert d.channel == "sms"
    d_email = decide(batch(1, live=live), OPTIONS, policy(), None, NOW, channel="email")
    assert {e.reason for e in d_email.decision(0).excluded} == {r.CHANNEL_OFF_BY_PREFERENCE}


# --- caps, journey, margins through the engine -----------------------------------------------
def _sent(days_ago: float, channel: str = "email", offer: str | None = "none") -> LiveContact:
    return LiveContact(NOW - timedelta(days=days_ago), channel, offer)


def test_email_cap_moves_auto_to_sms_and_the_across_cap_stops_all() -> None:
    three = (_sent(3), _sent(5, "sms"), _sent(8, "push"))
    live = {"c0": LiveState(contacts=(_sent(10),)), "c1": LiveState(contacts=three)}
    b = batch(2, live=live, journey_stage=[1, 0], days_since_last_contact=[10.0, 3.0])
    res = decide(b, OPTIONS, policy(), None, NOW, channel="auto")
    d0 = res.decision(0)
    assert (d0.channel, d0.stage, d0.offer_id) == ("sms", 2, "none")
    email_only = decide(b, OPTIONS, policy(), None, NOW, channel="email").decision(0)
    assert {e.reason for e in email_only.excluded} == {r.CAP_CHANNEL}
    d1 = res.decision(1)
    assert d1.action == "none" and {e.reason for e in d1.excluded} == {r.CAP_ACROSS_CHANNELS}


def test_min_gap_blocks_every_option() -> None:
    live = {"c0": LiveState(contacts=(_sent(1.9, "sms"),))}
    d = decide(batch(1, live=live), OPTIONS, policy(), None, NOW, channel="email").decision(0)
    assert d.action == "none" and {e.reason for e in d.excluded} == {r.CAP_MIN_GAP}
    later = decide(batch(1, live=live), OPTIONS, policy(), None, NOW + timedelta(hours=3))
    assert later.decision(0).action == "message"


def test_repeat_offer_is_excluded_but_others_remain() -> None:
    live = {"c0": LiveState(contacts=(_sent(20, "sms", "pct10"),))}
    values = [value_row(pct10=9.0, freeship=3.0)]
    b = batch(1, live=live, journey_stage=1, days_since_last_contact=20.0)
    d = decide(b, OPTIONS, policy(), scores(values), NOW, channel="auto").decision(0)
    assert d.stage == 2 and d.offer_id == "freeship" and d.action == "offer"
    assert ("pct10", r.CAP_REPEAT_OFFER) in {(e.offer_id, e.reason) for e in d.excluded}
    later = decide(b, OPTIONS, policy(), scores(values), NOW + timedelta(days=10.1))
    assert later.decision(0).offer_id == "pct10"


def test_margin_floor_excludes_incentives_that_eat_the_margin() -> None:
    # aov 100, margin rate 0.15 -> margin 15; floor 10; pct10 leaves 5, freeship 9, expert 0
    b = batch(1, journey_stage=1, days_since_last_contact=10.0, margin_rate_lifetime=0.15)
    values = [value_row(pct10=9.0, freeship=3.0, expert=8.0, none=1.0)]
    d = decide(b, OPTIONS, policy(), scores(values), NOW).decision(0)
    reasons = {e.offer_id: e.reason for e in d.excluded}
    assert reasons["pct10"] == reasons["freeship"] == reasons["expert"] == r.MARGIN_FLOOR
    assert d.offer_id == "none" and d.action == "message"


def test_journey_stage_gating_sunset_and_reset_by_purchase() -> None:
    pol = policy()
    values = [value_row(pct10=5.0, guide=4.0, none=1.0)] * 4
    b = batch(
        4,
        journey_stage=[0, 1, 2, 2],
        days_since_last_contact=[np.nan, 10.0, 30.0, 10.0],
        live={"c3": LiveState(last_order_ts=NOW - timedelta(days=1))},
    )
    res = decide(b, OPTIONS, pol, scores(values), NOW)
    ds = res.decisions()
    assert (ds[0].stage, ds[0].offer_id) == (1, "guide")  # stage 1: no incentives
    assert (ds[1].stage, ds[1].offer_id) == (2, "pct10")
    assert ds[2].action == "none" and {e.reason for e in ds[2].excluded} == {r.SUNSET}
    assert ds[2].stage is None
    # c3 bought yesterday: back to stage 1, and its gap counts from the last contact
    assert ds[3].stage == 1 and ds[3].offer_id == "guide"


def test_not_positive_value_means_no_contact() -> None:
    b = batch(1)
    values = [value_row(guide=-1.0, none=0.0)]
    d = decide(b, OPTIONS, policy(), scores(values), NOW).decision(0)
    assert d.action == "none" and d.reasons == (r.NO_POSITIVE_VALUE,)
    assert d.scores["guide"] == -1.0 and d.model_version == "m@3"


# --- defined behaviours --------------------------------------------------------------------
def test_unknown_customer_gets_a_defined_no_contact() -> None:
    b = batch(2, known=[False, True])
    res = decide(b, OPTIONS, policy(share=0.5), scores([value_row(guide=2.0)] * 2), NOW)
    d = res.decision(0)
    assert d.action == "none" and d.reasons == (r.UNKNOWN_CUSTOMER,)
    assert d.offer_id is None and d.scores == {}
    assert {e.reason for e in d.excluded} == {r.UNKNOWN_CUSTOMER}


def test_rules_only_mode_is_flagged_and_prefers_no_incentive() -> None:
    b = batch(2, journey_stage=[0, 1], days_since_last_contact=[np.nan, 10.0])
    res = decide(b, OPTIONS, policy(), None, NOW)
    d0, d1 = res.decisions()
    assert d0.model_version == "rules-only" and d0.reasons == (
        r.MODEL_UNAVAILABLE,
        r.CHOSEN_BY_RULES,
    )
    assert d0.offer_id == "guide"  # content first
    assert d1.offer_id == "none"  # stage 2: the plain message beats any incentive
    only_incentives = decide(
        b, OPTIONS, policy(), None, NOW, candidate_offer_ids=["pct10", "freeship"]
    )
    # stage 2 without `none`: the cheapest incentive (freeship 6 < pct10 10)
    b2 = batch(1, journey_stage=1, days_since_last_contact=10.0)
    pol = parse_policy((POLICY % {"share": 0, "epsilon": 0}).replace(
        "free_shipping, expert_consult, none]", "free_shipping, expert_consult]"))  # fmt: skip
    d2 = decide(b2, OPTIONS, pol, None, NOW).decision(0)
    assert d2.offer_id == "freeship" and d2.action == "offer"
    assert only_incentives.decision(1).offer_id == "none"  # `none` is always a candidate


def test_holdout_is_deterministic_and_near_its_share() -> None:
    ids = [f"cust-{i}" for i in range(10_000)]
    pol = policy(share=0.1)
    b = batch(ids=ids)
    res = decide(b, OPTIONS, pol, None, NOW)
    held = res.action == "holdout"
    assert abs(held.mean() - 0.1) < 0.01  # binomial sd 0.003
    again = decide(batch(ids=ids[::-1]), OPTIONS, pol, None, NOW)
    assert ((again.action == "holdout")[::-1] == held).all()
    d = res.decision(int(np.flatnonzero(held)[0]))
    assert d.offer_id is None and d.channel is None and d.reasons == (r.HOLDOUT_GROUP,)
    assert d.propensity == pytest.approx(0.1)
    assert d.replaced is not None and d.replaced.offer_id == "guide"  # rules-only: content
    assert np.isin(res.action[~held], ["message", "offer"]).all()


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 40),
    share=st.sampled_from([0.2, 0.5, 0.9]),
    epsilon=st.sampled_from([0.0, 0.3]),
    scored=st.booleans(),
)
def test_the_holdout_is_drawn_only_among_would_be_contacts_and_keeps_the_replaced_decision(
    data: st.DataObject, n: int, share: float, epsilon: float, scored: bool
) -> None:
    """Deciding with a holdout equals deciding without one, except that some customers who
    would have been contacted are held out, each recording the contact it replaced."""
    consent = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=n, max_size=n))
    since = data.draw(st.lists(st.sampled_from([np.nan, 1.0, 10.0]), min_size=n, max_size=n))
    known = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    values = np.array(
        data.draw(
            st.lists(
                st.lists(st.floats(-20, 20), min_size=len(OPTIONS), max_size=len(OPTIONS)),
                min_size=n,
                max_size=n,
            )
        )
    )
    b = batch(n, known=known, consent_email=consent, days_since_last_contact=since)
    sc = scores(values) if scored else None
    without = decide(b, OPTIONS, policy(0.0, epsilon), sc, NOW, channel="auto", decision_key="w")
    res = decide(b, OPTIONS, policy(share, epsilon), sc, NOW, channel="auto", decision_key="w")
    held = res.action == "holdout"
    would_contact = np.isin(without.action, ["offer", "message"])
    assert not (held & ~would_contact).any()  # never among customers who get no contact
    assert (res.action[~held] == without.action[~held]).all()
    for i in np.flatnonzero(held):
        d, w = res.decision(i), without.decision(i)
        assert d.replaced is not None and w.offer_id is not None and w.channel is not None
        assert (d.replaced.offer_id, d.replaced.channel) == (w.offer_id, w.channel)
        assert d.replaced.propensity == pytest.approx(w.propensity)
        assert d.replaced.value == w.value and d.stage == w.stage
        assert d.propensity == pytest.approx(share) and d.offer_id is None


def test_same_inputs_same_decision() -> None:
    pol = policy(epsilon=0.5)
    v = np.random.default_rng(7).normal(size=(50, len(OPTIONS)))
    b = batch(50, journey_stage=1, days_since_last_contact=10.0)
    a = decide(b, OPTIONS, pol, scores(v), NOW, decision_key="req-1")
    c = decide(b, OPTIONS, pol, scores(v), NOW, decision_key="req-1")
    assert a.decisions() == c.decisions()
    other = decide(b, OPTIONS, pol, scores(v), NOW, decision_key="req-2")
    assert (other.chosen != a.chosen).any()


def test_exploration_propensity_matches_empirical_frequency() -> None:
    eps = 0.4
    pol = policy(epsilon=eps)
    b = batch(1, journey_stage=1, days_since_last_contact=10.0, consent_sms=1.0, consent_push=1.0)
    values = scores([value_row(pct10=5.0, freeship=3.0, expert=1.0, none=0.5)])
    picks: dict[str, list[float]] = {}
    n = 4000
    for j in range(n):
        d = decide(b, OPTIONS, pol, values, NOW, decision_key=f"camp-{j}").decision(0)
        picks.setdefault(str(d.offer_id), []).append(d.propensity)
    allowed = {"pct10", "freeship", "expert", "none"}
    assert set(picks) == allowed
    props = {o: p[0] for o, p in picks.items()}
    assert all(len(set(p)) == 1 for p in picks.values())  # one propensity per option
    assert sum(props.values()) == pytest.approx(1.0)
    assert props["pct10"] == pytest.approx(1 - eps + eps / 4)
    for o, p in props.items():
        freq = len(picks[o]) / n
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), o


def test_bad_inputs_are_named_errors() -> None:
    b = batch(2)
    with pytest.raises(EngineInputError, match="channel"):
        decide(b, OPTIONS, policy(), None, NOW, channel="fax")
    with pytest.raises(EngineInputError, match=r"scores.p_convert: expected shape \(2, 5\)"):
        decide(b, OPTIONS, policy(), scores([[1.0] * 5]), NOW)
    with pytest.raises(EngineInputError, match="candidate_offer_ids: unknown offer id 'x'"):
        decide(b, OPTIONS, policy(), None, NOW, candidate_offer_ids=["x"])
    with pytest.raises(EngineInputError, match="matrix"):
        CustomerBatch.from_features(np.zeros((2, 3)), WINBACK_V1, ["a", "b"], AS_OF)
    assert EngineInputError.code == "invalid_decision_input"


def test_budgets_and_candidate_restrictions_exclude_with_their_reasons() -> None:
    from features.offers import Budget

    class Usage:
        day_redemptions, day_cost, total_redemptions, total_cost = 0, 0.0, 0, 500.0

    options = OptionSet.from_catalog(catalog(), Budget(max_cost=500.0))
    b = batch(1, journey_stage=1, days_since_last_contact=10.0)
    values = scores([value_row(pct10=9.0, freeship=3.0, expert=2.0, none=1.0)])
    d = decide(b, options, policy(), values, NOW, budget_usage={"pct10": Usage()}).decision(0)
    assert d.offer_id == "freeship"
    assert ("pct10", r.BUDGET_EXHAUSTED) in {(e.offer_id, e.reason) for e in d.excluded}
    d2 = decide(b, options, policy(), values, NOW, candidate_offer_ids=["expert"]).decision(0)
    assert d2.offer_id == "expert"
    assert {e.offer_id: e.reason for e in d2.excluded}["pct10"] == r.NOT_IN_CANDIDATES


@pytest.mark.parametrize("kept", [0, 1, 4096])
def test_each_decision_lists_its_own_exclusions_however_many_patterns_are_kept(
    monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """`Decision.excluded` comes from patterns kept by `serving.engine.decision` (up to
    `EXCLUDED_KEPT`): each customer still gets the blocks of its own row."""
    from serving.engine import decision as decision_module

    monkeypatch.setattr(decision_module, "_excluded_of", {})
    monkeypatch.setattr(decision_module, "EXCLUDED_KEPT", kept)
    live = {"c1": LiveState(contacts=(_sent(20, "sms", "pct10"),))}
    b = batch(
        4,
        live=live,
        known=[True, True, True, False],
        journey_stage=1,
        days_since_last_contact=20.0,
        margin_rate_lifetime=0.15,
    )
    values = [value_row(pct10=9.0, freeship=3.0, expert=8.0, none=1.0)] * 4
    out = decide(b, OPTIONS, policy(), scores(values), NOW, channel="auto")
    patterns = set()
    for _ in range(2):  # the second pass reads what the first one kept
        for i in range(len(out)):
            row = out.exclusion[i]
            want = [(OPTIONS.offer_ids[j], r.EXCLUSION_ORDER[row[j]]) for j in np.flatnonzero(row)]
            got = [(e.offer_id, e.reason) for e in out.decision(i).excluded]
            assert got == want, i
            patterns.add(tuple(want))
    assert len(patterns) >= 3  # c0, c1 (a repeat offer too) and the unknown c3 differ
    assert len(decision_module._excluded_of) == min(kept, len(patterns))
