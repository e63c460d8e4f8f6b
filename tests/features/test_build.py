"""Hand-computed expectations for every feature family of winback_v2 (winback_v1 plus full-price
economics and lifetime friction counts) on a tiny world."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.build import build_customer_view, build_features
from features.config import FeatureConfig
from features.errors import FeaturesError
from features.featureset import WINBACK_V1, WINBACK_V2, FeatureSet, get_feature_set
from tests.factories import World, dataset

AS_OF = "2024-01-01"


def world() -> World:
    w = World()
    w.customer("c1", "2023-01-01").customer("c2", "2022-01-01")
    w.customer("c3", "2023-05-01").customer("c4", "2024-02-01")
    # c1: three orders, gaps of 92 and 91 days; the order at the as-of time is ignored
    w.order("c1", "2023-06-01", 100.0, 40.0, "books", discount=10.0)
    w.order("c1", "2023-09-01", 50.0, 10.0, "music")
    w.order("c1", "2023-12-01", 150.0, 60.0, "books")
    w.order("c1", AS_OF, 999.0, 1.0, "toys")
    w.event("c1", "2023-11-15", "delivery_issue").event("c1", "2023-03-01", "stockout")
    w.event("c1", AS_OF, "support_ticket")
    w.event("c1", "2023-12-20", "open").event("c1", "2023-11-01", "click")
    w.event("c1", "2023-12-31", "visit")
    w.contact("c1", "2023-10-15", "guide", "email", contact_id="k1")
    w.contact("c1", "2023-11-20", "holdout", contact_id="k2")
    w.contact("c1", "2023-12-10", "freeship", "sms", stage=1, contact_id="k3")
    w.contact("c1", "2023-12-28", "pct10", "email", stage=2, contact_id="k4")
    w.event("c1", "2023-12-29", "click", contact_id="k4")
    w.consent("c1", "email", "opted_in", "2023-01-01")
    w.consent("c1", "email", "opted_out", "2023-12-15")
    w.consent("c1", "sms", "opted_in", "2023-02-01")
    w.consent("c1", "push", "opted_out", AS_OF)
    # c2: one big old order; c3: never ordered, one contact
    w.order("c2", "2022-06-01", 600.0, 100.0, "garden")
    w.event("c2", "2022-06-05", "delivery_issue")  # older than a year: lifetime count only
    w.contact("c3", "2023-11-01", "none", "email", contact_id="k5")
    return w


@pytest.fixture(scope="module")
def view():  # type: ignore[no-untyped-def]
    return build_customer_view(dataset(world()), AS_OF)


def row(view, cid: str) -> pd.Series:  # type: ignore[no-untyped-def]
    return view.features.loc[cid]


def code(name: str, value: str) -> float:
    return float(WINBACK_V1.feature(name).vocabulary.index(value))


def test_shape_order_and_dtypes(view) -> None:  # type: ignore[no-untyped-def]
    f = view.features
    assert list(f.columns) == list(WINBACK_V2.columns)  # the default feature set
    assert WINBACK_V2.columns[: len(WINBACK_V1.columns)] == WINBACK_V1.columns
    assert list(f.index) == ["c1", "c2", "c3"]  # c4 signed up after the as-of time
    assert f.index.name == "customer_id"
    assert (f.dtypes == np.float64).all()


def test_rfm_windows_and_value(view) -> None:  # type: ignore[no-untyped-def]
    r = row(view, "c1")
    assert r["tenure_days"] == 365
    assert r["days_since_last_order"] == 31
    assert r["days_since_first_order"] == 214
    assert [r[f"orders_{w}d"] for w in (30, 90, 180, 365)] == [0, 1, 2, 3]
    assert r["orders_lifetime"] == 3
    assert [r[f"revenue_{w}d"] for w in (30, 90, 180, 365)] == [0, 150, 200, 300]
    assert r["revenue_lifetime"] == 300 and r["margin_lifetime"] == 110
    assert r["margin_365d"] == 110
    assert r["aov_lifetime"] == 100
    assert r["margin_rate_lifetime"] == pytest.approx(110 / 300)
    # at full price: the 10 of discount on the first order added back to revenue and margin
    assert r["aov_gross_lifetime"] == pytest.approx(310 / 3)
    assert r["margin_rate_gross_lifetime"] == pytest.approx(120 / 310)
    assert row(view, "c2")["aov_gross_lifetime"] == 600
    c3 = row(view, "c3")
    assert math.isnan(c3["days_since_last_order"]) and math.isnan(c3["aov_lifetime"])
    assert c3["orders_lifetime"] == 0 and c3["revenue_lifetime"] == 0


def test_cadence(view) -> None:  # type: ignore[no-untyped-def]
    r = row(view, "c1")
    assert r["gap_mean_days"] == pytest.approx(91.5)
    assert r["gap_std_days"] == pytest.approx(0.5)
    assert r["overdue_ratio"] == pytest.approx(31 / 91.5)
    c2 = row(view, "c2")
    assert math.isnan(c2["gap_mean_days"]) and math.isnan(c2["overdue_ratio"])


def test_lapse_state_and_value_tier(view) -> None:  # type: ignore[no-untyped-def]
    state = view.state
    assert state.loc["c1", "lapse_state"] == "active"
    assert state.loc["c2", "lapse_state"] == "churned"  # 579 days without an order
    assert pd.isna(state.loc["c3", "lapse_state"])  # never ordered: no lapse state
    assert math.isnan(row(view, "c3")["lapse_state"])
    assert list(state["value_tier"]) == ["mid", "high", "occasional"]
    assert row(view, "c2")["value_tier"] == code("value_tier", "high")


def test_thresholds_come_from_config() -> None:
    cfg = FeatureConfig(at_risk_days=30, lapsed_days=60, churned_days=600, mid_tier_revenue=400)
    v = build_customer_view(dataset(world()), AS_OF, cfg)
    assert v.state.loc["c1", "lapse_state"] == "at_risk"
    assert v.state.loc["c2", "lapse_state"] == "lapsed"
    assert v.state.loc["c1", "value_tier"] == "occasional"


def test_category_and_discount_affinity(view) -> None:  # type: ignore[no-untyped-def]
    # vocabulary frozen from orders before the as-of time: toys (ordered at it) is absent
    assert view.feature_set.feature("favourite_category").vocabulary == ("books", "garden", "music")
    r = row(view, "c1")
    assert r["favourite_category"] == 0  # books: 250 of 300
    assert r["top_category_share"] == pytest.approx(250 / 300)
    assert r["n_categories"] == 2
    assert r["discount_order_share"] == pytest.approx(1 / 3)
    assert row(view, "c2")["favourite_category"] == 1
    assert math.isnan(row(view, "c3")["favourite_category"])


def test_friction_and_engagement(view) -> None:  # type: ignore[no-untyped-def]
    r = row(view, "c1")
    assert (r["delivery_issues_90d"], r["delivery_issues_365d"]) == (1, 1)
    assert (r["stockouts_90d"], r["stockouts_365d"]) == (0, 1)
    assert r["support_tickets_365d"] == 0  # the ticket at the as-of time is not yet known
    assert (r["delivery_issues_lifetime"], r["stockouts_lifetime"]) == (1, 1)
    assert r["support_tickets_lifetime"] == 0
    c2 = row(view, "c2")
    assert (c2["delivery_issues_365d"], c2["delivery_issues_lifetime"]) == (0, 1)
    assert (r["opens_30d"], r["opens_90d"]) == (1, 1)
    assert (r["clicks_30d"], r["clicks_90d"]) == (1, 2)
    assert (r["visits_30d"], r["visits_90d"]) == (1, 1)


def test_contact_fatigue_and_journey(view) -> None:  # type: ignore[no-untyped-def]
    r = row(view, "c1")
    # the holdout (k2) received nothing and is not a contact
    assert (r["contacts_7d"], r["contacts_30d"], r["contacts_90d"]) == (1, 2, 3)
    assert r["days_since_last_contact"] == 4
    assert r["journey_stage"] == 2  # k3 and k4 came after the last order
    assert r["last_offer_type"] == code("last_offer_type", "percent_discount")
    assert r["last_contact_responded"] == 1  # clicked
    c3 = row(view, "c3")
    assert c3["journey_stage"] == 1 and c3["last_contact_responded"] == 0
    assert c3["last_offer_type"] == code("last_offer_type", "none")
    c2 = row(view, "c2")
    assert math.isnan(c2["days_since_last_contact"]) and c2["journey_stage"] == 0
    assert view.state.loc["c1", "last_offer_id"] == "pct10"
    assert pd.isna(view.state.loc["c2", "last_offer_id"])


def test_consent_per_channel_keeps_unknown(view) -> None:  # type: ignore[no-untyped-def]
    s = view.state
    assert s.loc["c1", "consent_email"] == "opted_out"  # the later record wins
    assert s.loc["c1", "consent_sms"] == "opted_in"
    assert s.loc["c1", "consent_push"] == "unknown"  # recorded at the as-of time: not yet
    assert (s.loc["c2", [f"consent_{ch}" for ch in ("email", "sms")]] == "unknown").all()
    assert row(view, "c1")["consent_email"] == code("consent_email", "opted_out")
    assert row(view, "c2")["consent_email"] == code("consent_email", "unknown")


def test_feature_set_controls_columns_and_round_trips() -> None:
    fs = FeatureSet(
        "mini", "0", (WINBACK_V1.feature("orders_lifetime"), WINBACK_V1.feature("tenure_days"))
    )
    f = build_features(dataset(world()), AS_OF, feature_set=fs)
    assert list(f.columns) == ["orders_lifetime", "tenure_days"]
    assert FeatureSet.from_json(WINBACK_V1.to_json()) == WINBACK_V1
    assert get_feature_set("winback_v1") is WINBACK_V1
    assert get_feature_set() is WINBACK_V2
    with pytest.raises(FeaturesError, match="unknown feature set 'v9'"):
        get_feature_set("v9")


def test_unknown_feature_and_bad_as_of_are_clear_errors() -> None:
    data = dataset(world())
    bogus = FeatureSet("x", "1", (WINBACK_V1.features[0].__class__("nope", "float64", "1d", "?"),))
    with pytest.raises(FeaturesError, match=r"unknown features \['nope'\]"):
        build_features(data, AS_OF, feature_set=bogus)
    with pytest.raises(FeaturesError, match="as_of: not a timestamp"):
        build_features(data, "yesterday-ish")


def test_order_days_count_same_day_orders_once() -> None:
    w = World().customer("c1", "2023-01-01")
    w.order("c1", "2023-06-01 09:00").order("c1", "2023-06-01 17:30").order("c1", "2023-06-02")
    w.order("c1", "2023-12-31 08:00")  # same day as the as-of time, but after it
    f = build_features(dataset(w), "2023-12-31 07:00")
    assert f.loc["c1", "orders_lifetime"] == 3
    assert f.loc["c1", "order_days_lifetime"] == 2


def test_sub_second_timestamps_are_strict_too() -> None:
    w = World().customer("c1", "2023-01-01")
    w.order("c1", "2023-12-31 23:59:59.5").order("c1", "2023-06-01")
    data = dataset(w)
    assert build_features(data, "2023-12-31 23:59:59.5").loc["c1", "orders_lifetime"] == 1
    assert build_features(data, "2023-12-31 23:59:59.6").loc["c1", "orders_lifetime"] == 2


def test_cli_lists_the_feature_set_in_order() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    res = CliRunner().invoke(app, ["features", "list", "--json"])
    assert res.exit_code == 0, res.output
    assert FeatureSet.from_json(res.output) == WINBACK_V2
    bad = CliRunner().invoke(app, ["features", "list", "--feature-set", "nope"])
    assert bad.exit_code == 1 and "unknown feature set 'nope'" in bad.output
