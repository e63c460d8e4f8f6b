"""The report's control group: held-out would-be contacts, clustered intervals, honest gaps.

A holdout that records the contact it replaced (offer, channel) is a fair control; a holdout
without one (the old design: drawn among every known customer) is left out when fair ones
exist, and the report says which comparison it made. Engagement nobody reported is "not
reported", never 0%.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app
from serving.reporting import render, report_summary
from serving.reporting.report import FAIR_COMPARISON, HEADLINE_KEYS, LEGACY_COMPARISON
from serving.reporting.stats import difference
from serving.store import Store, upgrade_database
from serving.store.models import Event
from tests.factories import logged_decision

T0 = datetime(2026, 5, 4, 9, 0)
HEADLINE_FIELDS = {"estimate", "ci_low", "ci_high", "n_contacted", "n_control"}


def _fill(store: Store, fair: bool, legacy: bool) -> None:
    """400 contacts (30% convert), 400 held-out would-be contacts (10%) if `fair`, 400 old
    holdouts of every customer (60% convert: active customers) if `legacy`; margin 20."""
    rng = np.random.default_rng(3)
    rows: list[object] = []
    groups = [("t", 400, 0.3, True, "pct10")]
    if fair:
        groups.append(("h", 400, 0.1, False, "pct10"))
    if legacy:
        groups.append(("l", 400, 0.6, False, None))
    for tag, n, p, treated, offer in groups:
        for i in range(n):
            cid, did = f"{tag}{i}", f"{tag}-d{i}"
            rows += logged_decision(did, cid, T0, treated=treated, campaign_id="c", stage=1,
                                    value_tier="mid")  # fmt: skip
            if not treated and offer is not None:  # the replaced contact, as the engine logs it
                rows[-1].offer_id, rows[-1].channel = offer, "email"
            if rng.random() < p:
                at = T0 + timedelta(days=3)
                rows.append(Event(event_id=f"{did}-o", customer_id=cid, ts=at, type="order",
                                  revenue=50.0, margin=20.0, received_ts=at))  # fmt: skip
    with Session(store.engine) as s, s.begin():
        s.add_all(rows)


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[object]:
    stores: list[Store] = []

    def make(fair: bool = True, legacy: bool = False) -> Store:
        url = f"sqlite:///{tmp_path / f'store{len(stores)}.db'}"
        upgrade_database(url)
        s = Store.from_url(url)
        _fill(s, fair, legacy)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.dispose()


def test_held_out_would_be_contacts_are_the_control_and_old_holdouts_are_left_out(
    make_store: object,
) -> None:
    r = report_summary(make_store(fair=True, legacy=True))  # type: ignore[operator]
    assert r["comparison"] == FAIR_COMPARISON
    assert r["totals"]["holdouts"] == 400  # the 400 old holdouts are not in the control
    assert any("400 holdouts recording no replaced contact" in n for n in r["notes"])
    head = r["incremental_conversion"]
    assert head["ci_low"] <= 0.2 <= head["ci_high"] and head["estimate"] > 0.1
    offers = {g["group"]: g for g in r["groups"]["offer_id"]}
    assert offers["pct10"]["control"] == "same segment" and offers["pct10"]["holdouts"] == 400


def test_without_would_be_contacts_the_report_says_the_comparison_is_not_fair(
    make_store: object,
) -> None:
    r = report_summary(make_store(fair=False, legacy=True))  # type: ignore[operator]
    assert r["comparison"] == LEGACY_COMPARISON
    assert any("not a fair estimate" in n for n in r["notes"])
    assert r["incremental_conversion"]["estimate"] < 0  # the old design's wrong sign


def test_headline_keys_are_stable_and_cli_writes_them(make_store: object, tmp_path: Path) -> None:
    store = make_store()  # type: ignore[operator]
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        app, ["report", "--database-url", str(store.engine.url), "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    back = json.loads(out.read_text())
    for key in HEADLINE_KEYS:
        assert set(back[key]) >= HEADLINE_FIELDS
        assert (back[key]["n_contacted"], back[key]["n_control"]) == (400, 400)
    assert back["incremental_margin_per_contact"]["ci_low"] < back[
        "incremental_margin_per_contact"]["estimate"] < back["incremental_margin_per_contact"][
        "ci_high"]  # fmt: skip
    assert "held-out would-be contacts" in res.output
    none = CliRunner().invoke(app, ["report", "--database-url", str(store.engine.url)])
    assert none.exit_code != 0 and "--out or --json" in none.output


def test_engagement_nobody_reported_is_not_reported_not_zero(make_store: object) -> None:
    r = report_summary(make_store())  # type: ignore[operator]
    o = r["overall"]
    assert o["delivered"] is None and o["open_rate"] is None and o["click_rate"] is None
    assert any(n.startswith("open events: none reported") for n in r["notes"])
    page = render(r, "html")
    assert "not reported" in page and "0.0%</td><td>" not in page.split("Open rate")[1][:400]


def test_intention_to_treat_per_customer_and_when_it_does_not_apply(make_store: object) -> None:
    r = report_summary(make_store())  # type: ignore[operator]
    itt = r["intention_to_treat"]
    assert itt["applies"] and itt["customers_treated"] == itt["customers_held_out"] == 400
    assert itt["incremental_conversion_per_customer"] == pytest.approx(
        r["incremental_conversion"]["estimate"]
    )  # one decision per customer: the same comparison


def test_clustered_interval_widens_when_customers_repeat() -> None:
    rng = np.random.default_rng(0)
    t, h = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    tc, hc = [f"t{i}" for i in range(500)], [f"h{i}" for i in range(500)]
    once = difference(t, h, treated_clusters=tc, holdout_clusters=hc)
    welch = difference(t, h)
    assert once.ci_high - once.ci_low == pytest.approx(welch.ci_high - welch.ci_low, rel=0.01)
    # every customer twice with the same outcome: no new information, the interval must not
    # shrink as it would if the rows were independent
    twice = difference(np.repeat(t, 2), np.repeat(h, 2), treated_clusters=np.repeat(tc, 2),
                       holdout_clusters=np.repeat(hc, 2))  # fmt: skip
    naive = difference(np.repeat(t, 2), np.repeat(h, 2))
    width = twice.ci_high - twice.ci_low
    assert width == pytest.approx(once.ci_high - once.ci_low, rel=0.01)
    assert width == pytest.approx(math.sqrt(2) * (naive.ci_high - naive.ci_low), rel=0.02)


def test_customers_in_several_waves_get_the_later_wave_note(make_store: object) -> None:
    store = make_store()  # type: ignore[operator]
    first = report_summary(store)
    assert not any(n.startswith("repeat waves") for n in first["notes"])
    later = T0 + timedelta(days=35)
    rows = logged_decision("t-again", "t0", later, treated=True, campaign_id="c", stage=2,
                           value_tier="mid")  # fmt: skip
    with Session(store.engine) as s, s.begin():
        s.add_all(rows)
    notes = report_summary(store)["notes"]
    assert any(n.startswith("repeat waves: 1 customers") for n in notes)
