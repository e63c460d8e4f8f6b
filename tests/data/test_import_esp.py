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


def test_esp_import_refuses_a_partitioned_directory(shop: Path, tmp_path: Path) -> None:
    from features.partitioned import partition_data_dir

    partition_data_dir(shop, tmp_path / "parts", 2)
    src = tmp_path / "list.csv"
    pd.DataFrame({"id": ["a"], "s": ["subscribed"]}).to_csv(src, index=False)
    before = sorted(p.name for p in (tmp_path / "parts").iterdir())
    with pytest.raises(DataSourceError, match="partitioned"):
        import_consent(src, tmp_path / "parts", {"customer_id": "id", "status": "s"}, as_of="2024")
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == before
