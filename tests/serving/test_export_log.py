"""Exporting the decision log and events as a data directory to train on."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from features import constants as c
from features import modeling_frame as mf
from features.datadir import load_data_dir
from features.engine import FeatureEngine
from features.errors import FeaturesError
from features.frames import offer_response_frame
from serving.learning import export_log, read_log
from serving.settings import get_serving_settings
from serving.store import DecisionRecord, EventRecord, Store, upgrade_database
from serving.store.models import NOT_SENT
from tests.factories import small_world

T = datetime(2024, 1, 10, 9, 0, 0)


def _decision(did: str, cid: str, action: str, **kw: object) -> DecisionRecord:
    return DecisionRecord(
        decision_id=did,
        customer_id=cid,
        ts=T,
        action=action,
        stage=1,
        policy_version="sha256:p1",
        campaign_id="wave-1",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    s = Store.from_url(url)
    s.record_decision(
        _decision("d1", "c1", "offer", offer_id="pct10", channel="email", propensity=0.5)
    )
    s.record_decision(
        _decision("d2", "c2", "message", offer_id="none", channel="sms", propensity=1.0)
    )
    s.record_decision(_decision("d3", "c3", "holdout", propensity=0.1))
    s.record_decision(_decision("d4", "c1", "none", propensity=1.0))
    s.record_decision(
        _decision("d5", "c3", "offer", offer_id="freeship", channel="email", dry_run=True)
    )
    s.record_decision(
        _decision("d6", "c9", "offer", offer_id="guide", channel="push", propensity=0.25)
    )
    s.set_contact_status("d6", NOT_SENT, T)
    payload = {"category": "books", "discount_amount": 4.0}
    s.append_event(
        EventRecord(
            "e1",
            "c1",
            datetime(2024, 1, 14),
            "order",
            decision_id="d1",
            payload=payload,
            revenue=36.0,
            margin=10.5,
        )
    )
    s.append_event(EventRecord("e2", "c3", datetime(2024, 1, 20), "order", revenue=20.0))
    s.append_event(EventRecord("e3", "c1", datetime(2024, 1, 11), "open", contact_id="d1"))
    s.append_event(EventRecord("e4", "c2", datetime(2024, 1, 11), "unsubscribe", decision_id="d2"))
    s.append_event(EventRecord("e5", "c1", datetime(2024, 1, 10, 9), "sent", decision_id="d1"))
    s.append_event(EventRecord("e6", "c2", datetime(2024, 1, 12), "order"))  # no revenue
    return s


def test_contacts_carry_unconditional_logged_propensities(store: Store) -> None:
    log = read_log(store)
    k = log.contacts.set_index(c.CONTACT_ID)
    # none, dry-run and unsent decisions contacted nobody
    assert sorted(k.index) == ["d1", "d2", "d3"]
    assert log.holdout_share == {"sha256:p1": pytest.approx(0.1)}
    assert k.loc["d1", c.PROPENSITY] == pytest.approx(0.5 * 0.9)
    assert k.loc["d2", c.PROPENSITY] == pytest.approx(0.9)
    assert k.loc["d3", c.PROPENSITY] == pytest.approx(0.1)
    assert k.loc["d3", c.OFFER_ID] == c.HOLDOUT and k[c.CHANNEL].isna()["d3"]
    assert k.loc["d2", c.OFFER_ID] == c.NO_INCENTIVE
    assert set(k[c.CAMPAIGN_ID]) == {"wave-1"}


def test_orders_and_events_come_from_reported_events(store: Store) -> None:
    log = read_log(store)
    o = log.orders.set_index(c.ORDER_ID)
    assert sorted(o.index) == ["e1", "e2"]  # an order event without revenue is not an order
    assert o.loc["e1", c.REVENUE] == 36.0 and o.loc["e1", c.MARGIN] == 10.5
    assert o.loc["e1", c.DISCOUNT_AMOUNT] == 4.0 and o.loc["e1", c.CATEGORY] == "books"
    assert o.loc["e2", c.CATEGORY] == "unknown" and o.loc["e2", c.MARGIN] == 0.0
    assert sorted(log.events[c.EVENT_TYPE]) == ["open", "unsubscribe"]
    assert log.events.set_index(c.EVENT_ID).loc["e4", c.CONTACT_ID] == "d2"
    assert log.dropped_events == {"sent": 1, "order without revenue": 1}
    # the unsubscribe opted c2 out of sms, the contact's channel
    assert log.consent[[c.CUSTOMER_ID, c.CHANNEL, c.STATUS]].values.tolist() == [
        ["c2", "sms", c.OPTED_OUT]
    ]


def test_since_until_restrict_the_log(store: Store) -> None:
    log = read_log(store, since=datetime(2024, 1, 13))
    assert log.contacts.empty
    assert sorted(log.orders[c.ORDER_ID]) == ["e1", "e2"]


def test_export_merges_with_base_and_frames_the_logged_contacts(
    store: Store, tmp_path: Path
) -> None:
    base = small_world().write(tmp_path / "base")
    counts = export_log(store, tmp_path / "out", base=base)
    assert counts.report is not None
    assert counts.report.ok, counts.report.to_dict()
    assert (counts.contacts, counts.holdouts, counts.orders) == (2, 1, 2)
    data = load_data_dir(tmp_path / "out")
    assert set(data.contacts[c.CONTACT_ID]) == {"k1", "k2", "d1", "d2", "d3"}
    assert len(data.orders) == 3 + 2
    frame = offer_response_frame(FeatureEngine(data)).data.set_index(c.CONTACT_ID)
    assert frame.loc["d1", mf.CONVERTED] == 1
    assert frame.loc["d1", mf.OUTCOME_MARGIN] == pytest.approx(10.5)
    assert frame.loc["d3", mf.CONVERTED] == 1  # the holdout came back on its own
    assert frame.loc["d2", mf.UNSUBSCRIBED] == 1
    assert frame.loc["d1", c.PROPENSITY] == pytest.approx(0.45)


def test_export_without_a_catalog_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(FeaturesError, match="catalog: give --base"):
        export_log(store, tmp_path / "out")


def test_cli_export_log(store: Store, tmp_path: Path) -> None:
    base = small_world().write(tmp_path / "base")
    url = str(store.engine.url)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["export-log", "--out", str(tmp_path / "o"), "--base", str(base), "--database-url", url],
    )
    assert ok.exit_code == 0, ok.output
    assert "2 contacts, 1 holdouts, 2 orders" in ok.output


def test_cli_export_log_defaults_to_the_configured_catalog(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Without --base or --catalog the export uses WINBACK_CATALOG_PATH and says so."""
    request.addfinalizer(get_serving_settings.cache_clear)
    world = small_world().write(tmp_path / "base")
    url = str(store.engine.url)
    runner = CliRunner()
    monkeypatch.setenv("WINBACK_CATALOG_PATH", str(world / "offers.yaml"))
    get_serving_settings.cache_clear()
    ok = runner.invoke(app, ["export-log", "--out", str(tmp_path / "o"), "--database-url", url])
    assert ok.exit_code == 0, ok.output
    assert f"catalog: {world / 'offers.yaml'} (WINBACK_CATALOG_PATH" in ok.output
    assert "2 contacts, 1 holdouts, 2 orders" in ok.output
    assert load_data_dir(tmp_path / "o").catalog == load_data_dir(world).catalog

    monkeypatch.setenv("WINBACK_CATALOG_PATH", str(tmp_path / "missing.yaml"))
    get_serving_settings.cache_clear()
    bad = runner.invoke(app, ["export-log", "--out", str(tmp_path / "o2"), "--database-url", url])
    assert bad.exit_code == 1
    assert "missing.yaml: cannot read offer catalog" in bad.output
