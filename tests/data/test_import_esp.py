"""`winback import consent` / `import esp-events`: an ESP's exports added to a data directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import constants as c
from features.datadir import load_data_dir
from features.errors import DataSourceError
from features.importers.esp import import_consent, import_esp_events
from features.importers.transactions import TransactionMapping, import_transactions


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    src = tmp_path / "orders.csv"
    pd.DataFrame(
        {
            "cust": ["a", "b", "c"],
            "day": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "amount": ["10", "20", "30"],
        }
    ).to_csv(src, index=False)
    mapping = TransactionMapping(columns={"customer_id": "cust", "ts": "day", "revenue": "amount"})
    import_transactions(src, tmp_path / "shop", mapping)
    return tmp_path / "shop"


def test_consent_statuses_are_mapped_and_bad_rows_counted(shop: Path, tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c", "", "zz", "c"],
            "Status": ["subscribed", "Unsubscribed", "pending", "subscribed", "subscribed", "vip"],
        }
    ).to_csv(src, index=False)
    cols = {"customer_id": "id", "status": "Status"}
    r = import_consent(src, shop, cols, as_of="2024-02-01", status_words={"vip": "opted_in"})
    assert r.dropped == {
        "missing_customer_id": 1,
        "unknown_customer": 1,
        "unrecognised_status": 1,
    }
    consent = load_data_dir(shop).consent.sort_values(c.CUSTOMER_ID)
    assert list(consent[c.STATUS]) == [c.OPTED_IN, c.OPTED_OUT, c.OPTED_IN]
    assert set(consent[c.CHANNEL]) == {"email"}
    assert (consent[c.UPDATED_TS] == pd.Timestamp("2024-02-01")).all()
    with pytest.raises(DataSourceError, match="--as-of"):
        import_consent(src, shop, cols)


def test_events_become_contacts_events_and_opt_outs_once(shop: Path, tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "who": ["a", "a", "b", "b", "c", "c"],
            "what": ["sent", "opened", "sent", "unsubscribed", "bounce", "teleported"],
            "when": ["2024-02-01 09:00"] * 6,
        }
    ).to_csv(src, index=False)
    cols = {"customer_id": "who", "event": "what", "ts": "when"}
    first = import_esp_events(src, shop, cols)
    assert first.added == {c.CONTACTS: 2, c.EVENTS: 3, c.CONSENT: 1}
    assert first.dropped == {"unrecognised_event": 1}
    again = import_esp_events(src, shop, cols)
    assert again.added == {c.CONTACTS: 0, c.EVENTS: 0, c.CONSENT: 0}
    data = load_data_dir(shop)
    assert set(data.contacts[c.OFFER_ID]) == {c.NO_INCENTIVE}
    assert sorted(data.events[c.EVENT_TYPE]) == ["delivery_issue", "open", "unsubscribe"]
    assert data.consent.set_index(c.CUSTOMER_ID).loc["b", c.STATUS] == c.OPTED_OUT


def test_esp_import_needs_the_customers_first(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    pd.DataFrame({"id": ["a"], "s": ["subscribed"]}).to_csv(src, index=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="import the transactions first"):
        import_consent(src, tmp_path / "empty", {"customer_id": "id", "status": "s"}, as_of="2024")


def test_esp_import_into_a_partitioned_directory_equals_the_flat_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed into partitions: the same rows added, dropped and counted as into one file
    per table; a re-import adds nothing; the manifest's row counts follow."""
    from features.importers import esp

    # every import within the same second: their files must not replace one another
    monkeypatch.setattr(esp.time, "strftime", lambda fmt, *a: "20240201T000000")
    from features.datadir import partition_data_dir
    from features.importers import transactions as tx
    from features.partition_layout import read_layout

    ids = [f"k{i:03d}" for i in range(60)]
    orders = tmp_path / "orders.csv"
    pd.DataFrame({"cust": ids, "day": ["2024-01-01"] * 60, "amount": ["10"] * 60}).to_csv(
        orders, index=False
    )
    mapping = TransactionMapping(columns={"customer_id": "cust", "ts": "day", "revenue": "amount"})
    import_transactions(orders, tmp_path / "flat", mapping)
    partition_data_dir(tmp_path / "flat", tmp_path / "part", 4)
    consent = tmp_path / "list.csv"
    pd.DataFrame(
        {"id": [*ids[:40], "", "zz"], "Status": ["subscribed", "unsubscribed"] * 20 + ["x", "y"]}
    ).to_csv(consent, index=False)
    events = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "who": [i for i in ids for _ in range(3)] + ["zz"],
            "what": ["sent", "opened", "unsubscribed"] * 60 + ["sent"],
            "when": ["2024-02-01 09:00"] * 181,
        }
    ).to_csv(events, index=False)
    event_map = {"customer_id": "who", "event": "what", "ts": "when"}
    results = {}
    for name in ("flat", "part"):
        a = import_consent(
            consent, tmp_path / name, {"customer_id": "id", "status": "Status"}, as_of="2024-02-01"
        )
        b = import_esp_events(events, tmp_path / name, event_map)
        results[name] = (a.dropped, a.added, b.dropped, b.added)
    assert results["flat"] == results["part"]
    assert results["part"][3] == {c.CONTACTS: 60, c.EVENTS: 120, c.CONSENT: 60}
    flat, part = load_data_dir(tmp_path / "flat"), load_data_dir(tmp_path / "part")
    for table, key in (
        (c.CONTACTS, [c.CONTACT_ID]),
        (c.EVENTS, [c.EVENT_ID]),
        (c.CONSENT, [c.CUSTOMER_ID, c.CHANNEL, c.UPDATED_TS]),
    ):
        x = getattr(flat, table).sort_values(key).reset_index(drop=True)
        y = getattr(part, table).sort_values(key).reset_index(drop=True)
        assert len(x) > 0
        pd.testing.assert_frame_equal(x, y, check_dtype=False)
    counts = read_layout(tmp_path / "part").row_counts
    assert (counts[c.CONTACTS], counts[c.EVENTS]) == (60, 120)
    again = import_esp_events(events, tmp_path / "part", event_map)
    assert again.added == {c.CONTACTS: 0, c.EVENTS: 0, c.CONSENT: 0}
    assert not list((tmp_path / "part").glob(".import-*"))  # the scratch folder is gone
    assert tx  # the transactions importer wrote the shop
