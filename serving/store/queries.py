"""Read queries of the store, batched over customers (one statement per table).

"Latest row wins" for consent and preferences means the row with the latest `ts`, and among
rows with the same `ts` the one recorded last (highest id); it is computed with
`row_number()` over a window, which SQLite (3.25+) and PostgreSQL both run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.store.models import SENT, ConsentChange, Contact, Event, PreferencesChange
from serving.store.records import ConsentEntry, ContactRow, CustomerState, Preferences

ORDER_EVENT = "order"


def counted_contacts(
    s: Session, customer_ids: Sequence[str], since: datetime
) -> dict[str, list[ContactRow]]:
    """Contacts with status `sent` and `ts > since`, per customer, oldest first."""
    rows = s.execute(
        select(
            Contact.customer_id,
            Contact.ts,
            Contact.channel,
            Contact.offer_id,
            Contact.contact_id,
            Contact.stage,
            Contact.campaign_id,
        )
        .where(
            Contact.customer_id.in_(list(customer_ids)),
            Contact.status == SENT,
            Contact.ts > since,
        )
        .order_by(Contact.customer_id, Contact.ts)
    ).all()
    out: dict[str, list[ContactRow]] = defaultdict(list)
    for cid, ts, channel, offer_id, contact_id, stage, campaign_id in rows:
        out[cid].append(ContactRow(ts, channel, offer_id, contact_id, stage, campaign_id))
    return out


def consent_history(s: Session, customer_id: str) -> list[ConsentEntry]:
    rows = s.scalars(
        select(ConsentChange)
        .where(ConsentChange.customer_id == customer_id)
        .order_by(ConsentChange.ts, ConsentChange.id)
    ).all()
    return [ConsentEntry(r.customer_id, r.channel, r.status, r.ts, r.source) for r in rows]


def current_consent(
    s: Session, customer_ids: Sequence[str], as_of: datetime | None = None
) -> dict[str, dict[str, str]]:
    c = ConsentChange
    rn = (
        func.row_number()
        .over(partition_by=(c.customer_id, c.channel), order_by=(c.ts.desc(), c.id.desc()))
        .label("rn")
    )
    inner = select(c.customer_id, c.channel, c.status, rn).where(
        c.customer_id.in_(list(customer_ids))
    )
    if as_of is not None:
        inner = inner.where(c.ts <= as_of)
    sub = inner.subquery()
    rows = s.execute(
        select(sub.c.customer_id, sub.c.channel, sub.c.status).where(sub.c.rn == 1)
    ).all()
    out: dict[str, dict[str, str]] = {cid: {} for cid in customer_ids}
    for cid, channel, status in rows:
        out[cid][channel] = status
    return out


def _prefs(r: PreferencesChange) -> Preferences:
    channels = tuple(r.channels) if r.channels is not None else None
    return Preferences(r.customer_id, r.ts, channels, r.max_contacts, r.per_days, r.source)


def preferences_history(s: Session, customer_id: str) -> list[Preferences]:
    rows = s.scalars(
        select(PreferencesChange)
        .where(PreferencesChange.customer_id == customer_id)
        .order_by(PreferencesChange.ts, PreferencesChange.id)
    ).all()
    return [_prefs(r) for r in rows]


def current_preferences(s: Session, customer_ids: Sequence[str]) -> dict[str, Preferences]:
    p = PreferencesChange
    rn = (
        func.row_number()
        .over(partition_by=p.customer_id, order_by=(p.ts.desc(), p.id.desc()))
        .label("rn")
    )
    sub = select(p.id, rn).where(p.customer_id.in_(list(customer_ids))).subquery()
    rows = s.scalars(select(p).join(sub, sub.c.id == p.id).where(sub.c.rn == 1)).all()
    return {r.customer_id: _prefs(r) for r in rows}


def last_orders(s: Session, customer_ids: Sequence[str]) -> dict[str, datetime]:
    rows = s.execute(
        select(Event.customer_id, func.max(Event.ts))
        .where(Event.customer_id.in_(list(customer_ids)), Event.type == ORDER_EVENT)
        .group_by(Event.customer_id)
    ).all()
    return {cid: ts for cid, ts in rows}


def customer_states(
    s: Session, customer_ids: Sequence[str], now: datetime, lookback_days: int
) -> dict[str, CustomerState]:
    contacts = counted_contacts(s, customer_ids, now - timedelta(days=lookback_days))
    consent = current_consent(s, customer_ids, as_of=now)
    prefs = current_preferences(s, customer_ids)
    orders = last_orders(s, customer_ids)
    return {
        cid: CustomerState(
            cid,
            tuple(contacts.get(cid, ())),
            consent.get(cid, {}),
            prefs.get(cid),
            orders.get(cid),
        )
        for cid in customer_ids
    }
