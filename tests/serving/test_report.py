"""The campaign report: planted effects are recovered, small groups say so, outputs are sound.

The store is filled through `Store` (decisions, contacts, events) with a known truth:
contacts convert with probability 20%, holdouts with 10%, every order has margin 30 and a
contact's order costs 5 of incentive, so incremental conversion is 0.10 and incremental net
margin per contact is 0.2 * 25 - 0.1 * 30 = 2.0.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app
from serving.errors import StoreUnavailableError
from serving.reporting import ReportError, ReportOptions, render, report_summary
from serving.reporting.metrics import attribute_outcomes
from serving.reporting.stats import difference
from serving.store import DecisionRecord, EventRecord, Store, upgrade_database
from serving.store.models import Event
from tests.factories import REPORT_SECTIONS, logged_decision

T0 = datetime(2026, 3, 2, 9, 0)
TRUE_LIFT = 0.10
TRUE_MARGIN_LIFT = 2.0


def _plant(
    store: Store,
    n_treated: int,
    n_holdout: int,
    campaign: str,
    seed: int,
    p_holdout: float = 0.10,
    repeat_every: int = 0,
) -> None:
    """Decisions of one campaign with Bernoulli outcomes drawn from the known truth.

    Written in one transaction of ORM rows shaped as `Store.try_record_contact` and
    `Store.append_event` write them (one transaction per row would take seconds).
    """
    rng = np.random.default_rng(seed)
    rows: list[object] = []

    def event(eid: str, cid: str, ts: datetime, etype: str, **kw: object) -> None:
        rows.append(Event(event_id=eid, customer_id=cid, ts=ts, type=etype, received_ts=ts, **kw))

    for i in range(n_treated + n_holdout):
        treated = i < n_treated
        cid, did = f"{campaign}-c{i}", f"{campaign}-d{i}"
        ts = T0 + timedelta(minutes=i)
        tier = ("occasional", "mid", "high")[i % 3]
        p_conv = float(rng.uniform(0.05, 0.35)) if treated else p_holdout
        rows += logged_decision(
            did,
            cid,
            ts,
            treated=treated,
            campaign_id=campaign,
            offer_id=("pct10", "ship")[i % 2],
            stage=1,
            reasons=["chosen_best_value" if treated else "holdout_group", {"value_tier": tier}],
            scores={"p_convert": p_conv} if treated else None,
            excluded=[{"offer_id": "sms10", "reason": "consent_unknown"}] if treated else [],
        )
        if treated:
            event(f"{did}-dl", cid, ts, "delivered", decision_id=did)
            if i % 2 == 0:
                event(f"{did}-op", cid, ts, "open", decision_id=did)
        if rng.random() < p_conv:
            at = ts + timedelta(days=float(rng.uniform(0.5, 20)))
            cost = {"incentive_cost": 5.0} if treated else None
            event(f"{did}-o1", cid, at, "order", revenue=100.0, margin=30.0, payload=cost)
            if repeat_every and i % repeat_every == 0:
                later = at + timedelta(days=60)
                event(f"{did}-o2", cid, later, "order", revenue=80.0, margin=20.0)
    with Session(store.engine) as s, s.begin():
        s.add_all(rows)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'store.db'}"
    upgrade_database(url)
    s = Store.from_url(url)
    _plant(s, 1500, 1500, "spring", seed=7, repeat_every=2)
    for i in range(12 + 9):  # the small campaign goes through the store's own write path
        treated = i < 12
        did, cid = f"tiny-d{i}", f"tiny-c{i}"
        s.record_decision(
            DecisionRecord(did, cid, T0, "offer" if treated else "holdout", campaign_id="tiny",
                           offer_id="pct10" if treated else None,
                           channel="email" if treated else None)
        )  # fmt: skip
        if i % 3 == 0:
            s.append_event(EventRecord(f"{did}-o", cid, T0 + timedelta(days=2), "order",
                                       revenue=50.0, margin=15.0))  # fmt: skip
    s.record_decision(
        DecisionRecord(
            "n1",
            "spring-none",
            T0,
            "none",
            reasons=["no_allowed_option"],
            excluded=[{"offer_id": "pct10", "reason": "consent_opted_out"}],
            campaign_id="spring",
        )
    )
    # a late event so that two quarters have passed for every reactivation
    s.append_event(EventRecord("late", "spring-c1", T0 + timedelta(days=400), "open"))
    yield s
    s.dispose()


@pytest.fixture(scope="module")
def spring(store: Store) -> dict:
    return report_summary(store, campaign="spring")


def test_planted_incremental_conversion_and_margin_are_covered(spring: dict) -> None:
    o = spring["overall"]
    assert o["contacts"] == 1500 and o["holdouts"] == 1500
    assert o["incremental_conversion_ci_low"] <= TRUE_LIFT <= o["incremental_conversion_ci_high"]
    assert o["incremental_conversion_conclusion"] == "positive"
    assert abs(o["incremental_conversion"] - TRUE_LIFT) < 0.03
    assert o["incremental_margin_ci_low"] <= TRUE_MARGIN_LIFT <= o["incremental_margin_ci_high"]
    assert o["statement"].startswith("Contacts raised conversion by")
    assert o["delivered"] == 1500 and o["open_rate"] == pytest.approx(0.5)
    assert o["incentive_cost"] == pytest.approx(5.0 * o["conversions"])


def test_seeded_bootstrap_covers_the_truth_and_repeats(store: Store) -> None:
    opts = ReportOptions(method="bootstrap", seed=3)
    a = report_summary(store, campaign="spring", options=opts)["overall"]
    assert a["incremental_conversion_ci_low"] <= TRUE_LIFT <= a["incremental_conversion_ci_high"]
    assert a["incremental_margin_ci_low"] <= TRUE_MARGIN_LIFT <= a["incremental_margin_ci_high"]
    t, h = [1.0, 0.0, 0.0] * 50, [1.0, 0.0, 0.0, 0.0] * 40
    same = difference(t, h, method="bootstrap", seed=5)
    assert same == difference(t, h, method="bootstrap", seed=5)
    assert same != difference(t, h, method="bootstrap", seed=6)


def test_tiny_group_says_it_is_too_small(store: Store) -> None:
    o = report_summary(store, campaign="tiny")["overall"]
    assert (o["contacts"], o["holdouts"]) == (12, 9)
    assert o["incremental_conversion_conclusion"] == "too_small"
    assert o["statement"].startswith("Too small to conclude anything: 12 contacts and 9 holdouts")


def test_segments_compare_with_the_right_holdouts(spring: dict) -> None:
    tiers = {r["group"]: r for r in spring["groups"]["value_tier"]}
    assert set(tiers) == {"occasional", "mid", "high"}
    assert all(r["control"] == "same segment" and r["holdouts"] == 500 for r in tiers.values())
    offers = {r["group"]: r for r in spring["groups"]["offer_id"]}
    assert offers["pct10"]["control"] == "all holdouts" and offers["pct10"]["holdouts"] == 1500
    assert "lapse_state: not recorded for any contact in the decision log" in spring["notes"]


def test_repeat_purchase_guardrails_and_calibration(spring: dict) -> None:
    treated = spring["repeat_purchase"][0]
    assert treated["arm"] == "treated"
    assert treated["mature_reactivations"] == treated["reactivations"] > 0
    # every second customer (even index) who converted bought again 60 days later
    assert 0.4 < treated["repeat_rate"] < 0.6
    assert "reactivated customers bought again within 182 days" in treated["statement"]
    blocks = {b["reason"]: b for b in spring["guardrail_blocks"]}
    assert blocks["consent_unknown"]["decisions"] == 1500
    assert blocks["consent_opted_out"]["decisions"] == 1
    assert spring["no_contact_reasons"] == {"no_allowed_option": 1}
    deciles = spring["calibration"]
    assert len(deciles) == 10
    assert deciles[-1]["realised"] > deciles[0]["realised"] + 0.1  # predictions carry signal


def test_json_summary_shape_and_csv(spring: dict) -> None:
    text = render(spring, "json")
    back = json.loads(text)
    assert set(back) >= REPORT_SECTIONS
    assert back["filters"]["campaign"] == "spring"
    assert set(back["groups"]) >= {"campaign_id", "wave", "offer_id", "channel", "stage"}
    curve = back["conversion_curve"]
    assert curve[-1]["treated"] > curve[-1]["holdout"] and curve[0]["day"] == 0
    rows = pd.read_csv(io.StringIO(render(spring, "csv")))
    assert rows.iloc[0]["dimension"] == "overall"
    assert "incremental_conversion_ci_low" in rows.columns


def test_html_is_self_contained_and_has_the_charts(spring: dict) -> None:
    page = render(spring, "html")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page
    for chart in ("lift-chart", "conversion-curve", "calibration-chart", "blocks-chart"):
        assert re.search(rf"<figure id='{chart}'><svg", page), chart
    assert "Contacts raised conversion by" in page


def test_attribution_window_and_next_decision_split() -> None:
    d = pd.DataFrame(
        {
            "decision_id": ["a", "b", "h"],
            "customer_id": ["c1", "c1", "c2"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-10", "2026-01-01"]),
            "action": ["offer", "message", "holdout"],
            "contact_status": ["sent", "sent", None],
            **{k: [None] * 3 for k in ("offer_id", "channel", "campaign_id", "stage")},
            "predicted_conversion": [np.nan] * 3,
        }
    )
    ev = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "ts": pd.to_datetime(["2026-01-12", "2026-01-15", "2026-03-01"]),
            "type": ["order"] * 3,
            "decision_id": [None] * 3,
            "revenue": [50.0, 70.0, 10.0],
            "margin": [10.0, 20.0, 1.0],
            "incentive_cost": [np.nan] * 3,
        }
    )
    out = attribute_outcomes(d, ev, window_days=30).set_index("decision_id")
    assert not out.loc["a", "converted"]  # its window ends at the next decision
    assert out.loc["b", "orders"] == 2 and out.loc["b", "margin"] == 30.0
    assert out.loc["b", "days_to_purchase"] == 2.0
    assert not out.loc["h", "converted"]  # the order came after 30 days


def test_difference_on_known_samples() -> None:
    d = difference([1, 0] * 200, [1, 0, 0, 0] * 100, min_group=100)
    assert d.estimate == pytest.approx(0.25)
    assert d.ci_low < 0.25 < d.ci_high and d.conclusion == "positive"
    assert difference([1, 0] * 200, [1, 0] * 30, min_group=100).conclusion == "too_small"


def test_bad_options_name_the_field(store: Store) -> None:
    with pytest.raises(ReportError, match="until"):
        report_summary(store, since=T0, until=T0 - timedelta(days=1))
    with pytest.raises(ReportError, match="min_group"):
        ReportOptions(min_group=0)
    with pytest.raises(ReportError, match="format"):
        render({}, "pdf")


def test_cli_writes_json_and_html(store: Store, tmp_path: Path) -> None:
    url = str(store.engine.url)
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        ["report", "--database-url", url, "--campaign", "tiny", "--out", str(out),
         "--format", "json", "--since", "2026-03-01"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["totals"]["contacts"] == 12
    html_out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--database-url", url, "--out", str(html_out)])
    assert res.exit_code == 0, res.output
    assert html_out.read_text().startswith("<!DOCTYPE html>")
    bad = runner.invoke(app, ["report", "--database-url", url, "--out", "x", "--format", "pdf"])
    assert bad.exit_code != 0 and "format" in bad.output


def test_empty_store_reports_nothing_to_conclude(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade_database(url)
    summary = report_summary(Store.from_url(url))
    assert summary["totals"]["contacts"] == 0
    assert summary["overall"]["incremental_conversion_conclusion"] == "too_small"
    assert "<svg" in render(summary, "html")


def test_unmigrated_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="no such table"):
        report_summary(Store.from_url(f"sqlite:///{tmp_path / 'blank.db'}"))
