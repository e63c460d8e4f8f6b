"""Export the decision log and the events reported back as a data directory to train on.

The store knows what the service decided (`decisions`, `contacts`) and what followed
(`events`, `consent_history`). `read_log` turns them into the data contract's tables, so that
`winback train` builds the offer-response frame from what the service itself decided:

- contacts: one row per non-dry-run `offer` or `message` decision whose contact was sent
  (a contact the sender reported `not_sent` is left out), and one per `holdout` decision
  (channel empty, offer `holdout`). `contact_id` is the decision id. Decisions with action
  `none` contacted nobody and are not rows.
- propensity: the probability with which the logged option was chosen, unconditionally. The
  engine logs an offer's propensity given that the customer is not in the holdout group, and a
  holdout's as the holdout share, so an offer's logged value is multiplied by (1 - share),
  the share being read from the holdout decisions made under the same policy version (no
  holdout decision under a version: share 0). These are the weights that make the next
  model's off-policy evaluation unbiased.
- orders: one per `order` event with a revenue (`order_id` = event id; `margin`, and
  `discount_amount` and `category` from the payload when given); an order event without a
  revenue cannot be an order of the contract and is counted as dropped.
- events: the events whose type the contract knows (open, click, unsubscribe, ...); other
  types (`sent`, `not_sent`, ...) are counted and dropped.
- consent: the store's consent history.

`export_log` writes these, merged with a base data directory (customers, orders, history)
when one is given, and validates the result against the contract.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from features import constants as c
from features.contract import ValidationReport
from features.datadir import load_data_dir, validate_data_dir, write_data_dir
from features.offers import OfferCatalog, load_catalog
from serving.errors import StoreError, StoreUnavailableError
from serving.store import Store
from serving.store.models import (
    ACTION_HOLDOUT,
    CONTACT_ACTIONS,
    NOT_SENT,
    ConsentChange,
    Contact,
    Decision,
    Event,
)

ORDER_EVENT = "order"
DEFAULT_CAMPAIGN = "api"
"""Campaign id of a logged contact whose decision named none (a live API request)."""
DEFAULT_CATEGORY = "unknown"
ORDER_NO_REVENUE = "order without revenue"


@dataclass
class LogTables:
    """The store's log as contract tables (customers lists everyone the log mentions)."""

    customers: pd.DataFrame
    contacts: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    consent: pd.DataFrame
    holdout_share: dict[str, float] = field(default_factory=dict)
    dropped_events: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportCounts:
    """What an export wrote, and what it left out."""

    contacts: int = 0
    holdouts: int = 0
    orders: int = 0
    events: int = 0
    consent: int = 0
    dropped_events: dict[str, int] = field(default_factory=dict)
    holdout_share: dict[str, float] = field(default_factory=dict)
    report: ValidationReport | None = None


def _rows(store: Store, stmt: Any) -> list[Any]:
    try:
        with Session(store.engine) as s:
            return list(s.execute(stmt).all())
    except OperationalError as exc:
        raise StoreUnavailableError(f"store: database error: {exc.orig}") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"store: reading the log: {type(exc).__name__}: {exc}") from None


def _between(col: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    out = []
    if since is not None:
        out.append(col >= since)
    if until is not None:
        out.append(col < until)
    return out


def _contacts(
    store: Store, since: datetime | None, until: datetime | None
) -> tuple[pd.DataFrame, dict[str, float]]:
    stmt = (
        select(
            Decision.decision_id,
            Decision.customer_id,
            Decision.ts,
            Decision.action,
            Decision.offer_id,
            Decision.channel,
            Decision.stage,
            Decision.propensity,
            Decision.policy_version,
            Decision.campaign_id,
            Contact.status,
        )
        .outerjoin(Contact, Contact.decision_id == Decision.decision_id)
        .where(
            Decision.dry_run.is_(False),
            Decision.action.in_([*CONTACT_ACTIONS, ACTION_HOLDOUT]),
            *_between(Decision.ts, since, until),
        )
        .order_by(Decision.ts, Decision.decision_id)
    )
    cols = [
        "decision_id",
        "customer_id",
        "ts",
        "action",
        "offer_id",
        "channel",
        "stage",
        "propensity",
        "policy_version",
        "campaign_id",
        "status",
    ]
    d = pd.DataFrame(_rows(store, stmt), columns=cols)
    held = d["action"] == ACTION_HOLDOUT
    # a contact decision counts only if its contact was recorded and not reported unsent
    sent = ~held & d["status"].notna() & (d["status"] != NOT_SENT)
    d = d[held | sent].reset_index(drop=True)
    hold = (d["action"] == ACTION_HOLDOUT).to_numpy()
    version = d["policy_version"].fillna("").astype(str)
    prop = pd.to_numeric(d["propensity"], errors="coerce").to_numpy(dtype=float)
    share = pd.Series(prop[hold], index=version[hold]).groupby(level=0).max().to_dict()
    h = version.map(share).fillna(0.0).to_numpy(dtype=float)
    marginal = np.where(hold, prop, prop * (1.0 - h))
    stage = pd.to_numeric(d["stage"], errors="coerce").fillna(1).astype("int64")
    out = pd.DataFrame(
        {
            c.CONTACT_ID: d["decision_id"].astype(str),
            c.CUSTOMER_ID: d["customer_id"].astype(str),
            c.TS: pd.to_datetime(d["ts"]),
            c.CHANNEL: d["channel"].where(~hold, None),
            c.CAMPAIGN_ID: d["campaign_id"].fillna(DEFAULT_CAMPAIGN).astype(str),
            c.OFFER_ID: np.where(hold, c.HOLDOUT, d["offer_id"].fillna(c.NO_INCENTIVE)),
            c.STAGE: np.maximum(stage.to_numpy(), 1),
            c.PROPENSITY: np.where(np.isfinite(marginal) & (marginal > 0), marginal, np.nan),
        }
    )
    return out, {str(k): float(v) for k, v in share.items()}


def _events(
    store: Store, since: datetime | None, until: datetime | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    stmt = (
        select(
            Event.event_id,
            Event.customer_id,
            Event.ts,
            Event.type,
            Event.contact_id,
            Event.decision_id,
            Event.revenue,
            Event.margin,
            Event.payload,
        )
        .where(*_between(Event.ts, since, until))
        .order_by(Event.ts, Event.event_id)
    )
    cols = ["event_id", "customer_id", "ts", "type", "contact_id", "decision_id"]
    e = pd.DataFrame(_rows(store, stmt), columns=[*cols, "revenue", "margin", "payload"])
    is_order = (e["type"] == ORDER_EVENT) & e["revenue"].notna()
    known = e["type"].isin(c.EVENT_TYPES)
    dropped = Counter(e.loc[~known & ~is_order, "type"].astype(str))
    if (no_revenue := int(((e["type"] == ORDER_EVENT) & ~is_order).sum())) > 0:
        dropped[ORDER_NO_REVENUE] = no_revenue
        del dropped[ORDER_EVENT]
    o = e[is_order]
    payload = o["payload"].map(lambda p: p if isinstance(p, dict) else {})
    revenue = o["revenue"].astype(float)
    orders = pd.DataFrame(
        {
            c.ORDER_ID: o["event_id"].astype(str),
            c.CUSTOMER_ID: o["customer_id"].astype(str),
            c.ORDER_TS: pd.to_datetime(o["ts"]),
            c.REVENUE: revenue,
            c.MARGIN: o["margin"].astype(float).fillna(0.0),
            c.CATEGORY: payload.map(lambda p: str(p.get(c.CATEGORY) or DEFAULT_CATEGORY)),
            c.DISCOUNT_AMOUNT: payload.map(lambda p: float(p.get(c.DISCOUNT_AMOUNT) or 0.0)),
        }
    )
    k = e[known]
    events = pd.DataFrame(
        {
            c.EVENT_ID: k["event_id"].astype(str),
            c.CUSTOMER_ID: k["customer_id"].astype(str),
            c.TS: pd.to_datetime(k["ts"]),
            c.EVENT_TYPE: k["type"].astype(str),
            c.CONTACT_ID: k["contact_id"].fillna(k["decision_id"]),
        }
    )
    return orders.reset_index(drop=True), events.reset_index(drop=True), dict(dropped)


def _consent(store: Store, until: datetime | None) -> pd.DataFrame:
    stmt = select(
        ConsentChange.customer_id, ConsentChange.channel, ConsentChange.status, ConsentChange.ts
    ).where(*_between(ConsentChange.ts, None, until))
    cols = [c.CUSTOMER_ID, c.CHANNEL, c.STATUS, c.UPDATED_TS]
    df = pd.DataFrame(_rows(store, stmt), columns=cols)
    df[c.UPDATED_TS] = pd.to_datetime(df[c.UPDATED_TS])
    return df.drop_duplicates([c.CUSTOMER_ID, c.CHANNEL, c.UPDATED_TS], keep="last")


def read_log(
    store: Store, since: datetime | None = None, until: datetime | None = None
) -> LogTables:
    """The store's decisions, contacts, events and consent as contract tables.

    Args:
        store: the decision store.
        since, until: only decisions and events with `since <= ts < until` (naive UTC).

    Raises:
        StoreError: the store cannot be read.
    """
    contacts, share = _contacts(store, since, until)
    orders, events, dropped = _events(store, since, until)
    consent = _consent(store, until)
    first: dict[str, pd.Timestamp] = {}
    for df, col in ((contacts, c.TS), (orders, c.ORDER_TS), (events, c.TS)):
        for cid, ts in df.groupby(c.CUSTOMER_ID)[col].min().items():
            first[str(cid)] = min(ts, first.get(str(cid), ts))
    customers = pd.DataFrame(
        {c.CUSTOMER_ID: list(first), c.SIGNUP_TS: pd.to_datetime(list(first.values()))}
    )
    return LogTables(customers, contacts, orders, events, consent, share, dropped)


def _merge(base: pd.DataFrame | None, log: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Base rows plus the log's; on a repeated key the log's row wins."""
    if base is None or not len(base):
        return log.reset_index(drop=True)
    if not len(log):
        return base.reset_index(drop=True)
    both = pd.concat([base, log], ignore_index=True)
    return both.drop_duplicates(key, keep="last").reset_index(drop=True)


def export_log(
    store: Store,
    out: Path,
    base: Path | None = None,
    catalog: OfferCatalog | Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "parquet",
) -> ExportCounts:
    """Write the store's log as a data directory `out` that `winback train` accepts.

    Args:
        store: the decision store to read.
        out: the directory to write (created; tables of the same names are replaced).
        base: a data directory whose customers, orders, contacts, events and consent are
            kept (customers the log mentions but `base` lacks are added, first seen = signup).
        catalog: the offer catalog (object or offers.yaml path); default: `base`'s.
        since, until: restrict the log (see `read_log`).
        fmt: `parquet` or `csv`.

    Returns:
        Counts of what was written, with the contract validation report of `out`.

    Raises:
        StoreError: the store cannot be read.
        FeaturesError: `base` or the catalog is invalid, or nothing names a catalog.
    """
    from features.errors import FeaturesError

    log = read_log(store, since, until)
    data = load_data_dir(base) if base is not None else None
    if isinstance(catalog, Path):
        catalog = load_catalog(catalog)
    cat = catalog or (data.catalog if data is not None else None)
    if cat is None:
        raise FeaturesError("catalog: give --base (a data directory) or --catalog (offers.yaml)")
    tables = {
        c.CUSTOMERS: _merge(None, log.customers, [c.CUSTOMER_ID]),
        c.ORDERS: log.orders,
        c.CONTACTS: log.contacts,
        c.EVENTS: log.events,
        c.CONSENT: log.consent,
    }
    if data is not None:
        new = log.customers[~log.customers[c.CUSTOMER_ID].isin(data.customers[c.CUSTOMER_ID])]
        tables[c.CUSTOMERS] = _merge(data.customers, new, [c.CUSTOMER_ID])
        tables[c.ORDERS] = _merge(data.orders, log.orders, [c.ORDER_ID])
        tables[c.CONTACTS] = _merge(data.contacts, log.contacts, [c.CONTACT_ID])
        tables[c.EVENTS] = _merge(data.events, log.events, [c.EVENT_ID])
        consent_key = [c.CUSTOMER_ID, c.CHANNEL, c.UPDATED_TS]
        tables[c.CONSENT] = _merge(data.consent, log.consent, consent_key)
    write_data_dir(Path(out), tables, cat, fmt=fmt)
    report, _ = validate_data_dir(Path(out))
    n_hold = int((log.contacts[c.OFFER_ID] == c.HOLDOUT).sum())
    return ExportCounts(
        contacts=len(log.contacts) - n_hold,
        holdouts=n_hold,
        orders=len(log.orders),
        events=len(log.events),
        consent=len(log.consent),
        dropped_events=log.dropped_events,
        holdout_share=log.holdout_share,
        report=report,
    )
