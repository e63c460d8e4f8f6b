"""Tiny, hand-readable data built in code for tests.

`World` collects rows table by table; `build()` returns the tables as DataFrames in the
contract's column layout and `write(dir)` writes a data directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features import constants as c
from features.contract import SCHEMAS
from features.datadir import write_data_dir
from features.offers import OfferCatalog, parse_catalog

if TYPE_CHECKING:
    from features.featureset import FeatureSet
    from features.snapshot import Snapshot

CATALOG_YAML = """
version: test-1
offers:
  - offer_id: pct10
    type: percent_discount
    value: 10
    cost: {revenue_fraction: 0.10}
    channels: [email, sms]
    title: 10% off your next order
  - offer_id: freeship
    type: free_shipping
    cost: {fixed: 6.0}
    channels: [email, sms, push]
    title: Free shipping
  - offer_id: expert
    type: expert_consult
    cost: {fixed: 15.0}
    channels: [email]
    min_value_tier: mid
    title: Talk to an expert
  - offer_id: guide
    type: content
    channels: [email, push, in_app]
    title: Our buying guide
"""


def catalog() -> OfferCatalog:
    return parse_catalog(CATALOG_YAML, source="tests/factories.py")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


@dataclass
class World:
    """Rows of every table, added with small helper methods."""

    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in c.TABLES}
    )

    def customer(self, cid: str, signup: str = "2023-01-01", **extra: Any) -> World:
        self.rows[c.CUSTOMERS].append({c.CUSTOMER_ID: cid, c.SIGNUP_TS: ts(signup), **extra})
        return self

    def order(
        self,
        cid: str,
        when: str,
        revenue: float = 50.0,
        margin: float = 20.0,
        category: str = "books",
        discount: float = 0.0,
        order_id: str | None = None,
    ) -> World:
        oid = order_id or f"o{len(self.rows[c.ORDERS]) + 1}"
        self.rows[c.ORDERS].append(
            {
                c.ORDER_ID: oid,
                c.CUSTOMER_ID: cid,
                c.ORDER_TS: ts(when),
                c.REVENUE: revenue,
                c.MARGIN: margin,
                c.CATEGORY: category,
                c.DISCOUNT_AMOUNT: discount,
            }
        )
        return self

    def contact(
        self,
        cid: str,
        when: str,
        offer_id: str = "none",
        channel: str | None = "email",
        stage: int = 1,
        propensity: float | None = 0.5,
        campaign: str = "wave1",
        contact_id: str | None = None,
    ) -> World:
        kid = contact_id or f"k{len(self.rows[c.CONTACTS]) + 1}"
        if offer_id == c.HOLDOUT:
            channel = None
        self.rows[c.CONTACTS].append(
            {
                c.CONTACT_ID: kid,
                c.CUSTOMER_ID: cid,
                c.TS: ts(when),
                c.CHANNEL: channel,
                c.CAMPAIGN_ID: campaign,
                c.OFFER_ID: offer_id,
                c.STAGE: stage,
                c.PROPENSITY: propensity,
            }
        )
        return self

    def event(
        self,
        cid: str,
        when: str,
        kind: str,
        contact_id: str | None = None,
        event_id: str | None = None,
    ) -> World:
        eid = event_id or f"e{len(self.rows[c.EVENTS]) + 1}"
        self.rows[c.EVENTS].append(
            {
                c.EVENT_ID: eid,
                c.CUSTOMER_ID: cid,
                c.TS: ts(when),
                c.EVENT_TYPE: kind,
                c.CONTACT_ID: contact_id,
            }
        )
        return self

    def consent(self, cid: str, channel: str, status: str, when: str = "2023-01-01") -> World:
        self.rows[c.CONSENT].append(
            {c.CUSTOMER_ID: cid, c.CHANNEL: channel, c.STATUS: status, c.UPDATED_TS: ts(when)}
        )
        return self

    def build(self) -> dict[str, pd.DataFrame]:
        out = {}
        for name, schema in SCHEMAS.items():
            rows = self.rows[name]
            df = pd.DataFrame(rows, columns=list(schema.names) if not rows else None)
            if rows:
                df = df.reindex(
                    columns=[*schema.names, *[k for k in df.columns if k not in schema.names]]
                )
            out[name] = df
        return out

    def write(self, directory: Path, fmt: str = "parquet") -> Path:
        write_data_dir(directory, self.build(), catalog(), fmt=fmt)
        return directory


def small_world() -> World:
    """Three customers with orders, one past contact, an event and consent."""
    w = World()
    w.customer("c1", "2023-01-01").customer("c2", "2023-02-01").customer("c3", "2023-03-01")
    w.order("c1", "2023-01-05", 80.0, 30.0, "books")
    w.order("c1", "2023-03-05", 40.0, 12.0, "music", discount=4.0)
    w.order("c2", "2023-02-10", 120.0, 50.0, "garden")
    w.contact("c1", "2023-09-01", offer_id="pct10", channel="email", contact_id="k1")
    w.contact("c2", "2023-09-01", offer_id="holdout", contact_id="k2")
    w.event("c1", "2023-09-02", "open", contact_id="k1")
    w.consent("c1", "email", "opted_in").consent("c2", "email", "opted_out", "2023-05-01")
    return w


from features.dataset import DataSet  # noqa: E402  (appended helper; see `dataset`)


def dataset(world: World) -> DataSet:
    """The world as a validated in-memory DataSet (no files); contract problems fail loudly."""
    from features.contract import ValidationReport
    from features.errors import DataContractError
    from features.validation import validate_tables

    cat = catalog()
    tables, problems = validate_tables(world.build(), cat.offer_ids)
    if problems:
        raise DataContractError(ValidationReport("tests.factories.dataset", problems))
    return DataSet(**tables, catalog=cat, source="tests.factories.dataset")


# --- decision engine --------------------------------------------------------------------------
ENGINE_DEFAULTS: dict[str, float] = {
    "lapse_state": 2.0,  # lapsed
    "value_tier": 1.0,  # mid
    "journey_stage": 0.0,
    "days_since_last_order": 200.0,
    "aov_lifetime": 100.0,
    "margin_rate_lifetime": 0.4,
    "contacts_7d": 0.0,
    "contacts_30d": 0.0,
    "contacts_90d": 0.0,
    "consent_email": 0.0,  # opted_in
    "consent_sms": 0.0,
    "consent_push": 0.0,
    "consent_in_app": 2.0,  # unknown
    "consent_direct_mail": 2.0,
}


def feature_rows(n: int = 1, **columns: Any) -> Any:
    """(n, winback_v1 width) float matrix: NaN except `ENGINE_DEFAULTS` and `columns`.

    Each keyword is a winback_v1 column name with a scalar or an n-long sequence.
    """
    import numpy as np

    from features.featureset import WINBACK_V1

    index = {name: i for i, name in enumerate(WINBACK_V1.columns)}
    x = np.full((n, len(index)), np.nan)
    for name, value in {**ENGINE_DEFAULTS, **columns}.items():
        x[:, index[name]] = value
    return x


def snapshot_of(matrix: Any, ids: Sequence[str], feature_set: FeatureSet | None = None) -> Snapshot:
    """An in-memory snapshot "snap-1" as of 2026-01-01 whose row i is customer `ids[i]`.

    `feature_set` defaults to winback_v1; no state columns.
    """
    from features.featureset import WINBACK_V1
    from features.snapshot import Snapshot

    return Snapshot(
        version="snap-1",
        as_of=pd.Timestamp("2026-01-01"),
        feature_set=feature_set or WINBACK_V1,
        matrix=matrix,
        row_of={c: i for i, c in enumerate(ids)},
        state_columns={},
    )


# --- decision store ---------------------------------------------------------------------------
def logged_decision(
    decision_id: str,
    customer_id: str,
    ts: datetime,
    *,
    treated: bool,
    campaign_id: str,
    offer_id: str = "pct10",
    stage: int | None = None,
    **columns: Any,
) -> list[Any]:
    """ORM rows of one logged decision: an email offer and its sent contact when `treated`,
    else a holdout with no contact.

    Extra `columns` go to the decision row. Adding the rows in one session is much faster than
    writing each decision through `Store` when a test plants thousands.
    """
    from serving.store.models import Contact, Decision

    rows: list[Any] = [
        Decision(
            decision_id=decision_id,
            customer_id=customer_id,
            ts=ts,
            action="offer" if treated else "holdout",
            offer_id=offer_id if treated else None,
            channel="email" if treated else None,
            stage=stage,
            campaign_id=campaign_id,
            dry_run=False,
            **columns,
        )
    ]
    if treated:
        rows.append(
            Contact(
                contact_id=decision_id,
                decision_id=decision_id,
                customer_id=customer_id,
                ts=ts,
                channel="email",
                offer_id=offer_id,
                campaign_id=campaign_id,
                stage=stage,
                status="sent",
            )
        )
    return rows


# The sections of the JSON summary (the API's summary adds its `schema_version`).
REPORT_SECTIONS = {
    "filters",
    "definitions",
    "totals",
    "overall",
    "groups",
    "conversion_curve",
    "repeat_purchase",
    "guardrail_blocks",
    "calibration",
    "budget_usage",
    "notes",
}
