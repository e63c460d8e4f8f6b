"""Exploration among options not priced as losses: probabilities, the floor, recorded propensity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.engine import decide
from serving.engine.choose import choose, exploration_probabilities
from serving.errors import PolicyError
from serving.policy import parse_policy
from tests.serving.test_engine import NOW, OPTIONS, POLICY, batch, scores, value_row


def policy(epsilon: float, among: str = "positive", floor: float = 0.0):  # type: ignore[no-untyped-def]
    text = POLICY % {"share": 0.0, "epsilon": epsilon}
    text = text.replace(
        f"exploration: {{epsilon: {epsilon}}}",
        f"exploration: {{epsilon: {epsilon}, among: {among}, floor: {floor}}}",
    )
    return parse_policy(text)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    k=st.integers(1, 8),
    n=st.integers(1, 5),
    epsilon=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    among=st.booleans(),
)
def test_probabilities_sum_to_one_and_only_allowed_options_get_any(
    data: st.DataObject, k: int, n: int, epsilon: float, among: bool
) -> None:
    allowed = np.array(
        data.draw(
            st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=n, max_size=n)
        ),
        dtype=bool,
    )
    allowed[:, 0] = True  # a row to be contacted has its best option allowed
    values = np.array(
        data.draw(
            st.lists(
                st.lists(st.floats(-5, 5) | st.just(float("nan")), min_size=k, max_size=k),
                min_size=n,
                max_size=n,
            )
        )
    )
    floor = data.draw(st.sampled_from([0.0, epsilon / 4, epsilon])) if among else 0.0
    best = np.zeros(n, dtype=np.int64)
    p = exploration_probabilities(allowed, values, best, epsilon, floor, among)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p >= 0).all() and (p[~allowed] == 0).all()
    # every allowed option keeps at least its share of the floor (positivity)
    k_allowed = allowed.sum(axis=1, keepdims=True)
    assert (p[allowed] >= np.broadcast_to(floor / k_allowed, p.shape)[allowed] - 1e-12).all()
    if among:
        # options valued as losses (or not scorable) get the floor share and nothing more
        losing = allowed & ~(np.nan_to_num(values, nan=-1.0) > 0)
        losing[:, 0] = False
        share = np.broadcast_to(floor / k_allowed, p.shape)
        np.testing.assert_allclose(p[losing], share[losing])


def test_among_positive_never_explores_a_loss_beyond_the_floor() -> None:
    allowed = np.ones((1, 4), dtype=bool)
    values = np.array([[3.0, 1.0, -2.0, -0.5]])
    p = exploration_probabilities(allowed, values, np.array([0]), 0.2, 0.04, True)
    np.testing.assert_allclose(p, [[0.8 + 0.01 + 0.08, 0.01 + 0.08, 0.01, 0.01]])
    uniform = exploration_probabilities(allowed, values, np.array([0]), 0.2)
    np.testing.assert_allclose(uniform, [[0.85, 0.05, 0.05, 0.05]])


def test_rules_only_exploration_is_unchanged_by_among_positive() -> None:
    """Rules-only preferences are all positive: the same draws and propensities either way."""
    allowed = np.ones((50, 5), dtype=bool)
    values = np.tile([3.0, 2.0, 1.5, 1.2, 1.1], (50, 1))
    ids = [f"c{i}" for i in range(50)]
    a = choose(allowed, values, 0.3, ids, "k", require_positive=False)
    b = choose(
        allowed, values, 0.3, ids, "k", require_positive=False, floor=0.1, among_positive=True
    )
    np.testing.assert_array_equal(a.chosen, b.chosen)
    np.testing.assert_allclose(a.propensity, b.propensity)


def test_recorded_propensity_is_the_chosen_options_probability_and_matches_frequency() -> None:
    eps, floor = 0.4, 0.08
    pol = policy(eps, "positive", floor)
    b = batch(1, journey_stage=1, days_since_last_contact=10.0, consent_sms=1.0, consent_push=1.0)
    # allowed at this stage: pct10, freeship, expert, none; expert is priced as a loss
    values = scores([value_row(pct10=5.0, freeship=3.0, expert=-1.0, none=0.5)])
    picks: dict[str, list[float]] = {}
    n = 4000
    for j in range(n):
        d = decide(b, OPTIONS, pol, values, NOW, decision_key=f"camp-{j}").decision(0)
        picks.setdefault(str(d.offer_id), []).append(d.propensity)
    props = {o: p[0] for o, p in picks.items()}
    assert all(len(set(p)) == 1 for p in picks.values())
    expected = {
        "pct10": 1 - eps + floor / 4 + (eps - floor) / 3,
        "freeship": floor / 4 + (eps - floor) / 3,
        "none": floor / 4 + (eps - floor) / 3,
        "expert": floor / 4,
    }
    assert set(props) == set(expected)
    assert sum(expected.values()) == pytest.approx(1.0)
    for o, p in expected.items():
        assert props[o] == pytest.approx(p), o
        freq = len(picks[o]) / n
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), o


def test_exploration_settings_are_validated() -> None:
    with pytest.raises(PolicyError, match="floor"):
        policy(0.1, "positive", 0.2)
    with pytest.raises(PolicyError, match="floor"):
        policy(0.1, "allowed", 0.05)
    with pytest.raises(PolicyError, match="among"):
        policy(0.1, "sometimes", 0.0)
