"""Tables of the decision store (SQLAlchemy 2 typed ORM).

Timestamps are timezone-naive UTC, as everywhere in winback. Ids are strings chosen by the
caller (decision ids by the engine, event ids by the sender of the event). The schema itself
is created and changed only by the Alembic migrations in `serving/store/migrations`.

- `decisions`        append-only decision log: one row per decision, never updated; it
                     carries the customer's value tier and lapse state and the predicted
                     conversion, so the campaign report can break results down by segment.
- `contacts`         contacts implied by decisions; `status` says whether one still counts
                     against the frequency caps (`sent`) or not (`not_sent`, `released`).
- `events`           events reported back (sent, open, order, unsubscribe, ...), unique by id.
- `consent_history`  every consent change per customer and channel; the latest row wins.
- `preferences_history` every preference change per customer; the latest row wins.
- `budget_usage`     redemptions and cost per offer and day.
- `idempotency_keys` one row per `request_id` a caller sent with a recorded decision request:
                     the fingerprint of its body, so a repeat gets the same answer and a
                     different body under the same key is refused (added in 0003).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Index, Integer, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Contact statuses: only `sent` counts against the caps.
SENT: Final = "sent"
NOT_SENT: Final = "not_sent"
RELEASED: Final = "released"
CONTACT_STATUSES: Final = (SENT, NOT_SENT, RELEASED)

# Decision actions; the first two imply a contact.
ACTION_OFFER: Final = "offer"
ACTION_MESSAGE: Final = "message"
ACTION_HOLDOUT: Final = "holdout"
ACTION_NONE: Final = "none"
ACTIONS: Final = (ACTION_OFFER, ACTION_MESSAGE, ACTION_HOLDOUT, ACTION_NONE)
CONTACT_ACTIONS: Final = (ACTION_OFFER, ACTION_MESSAGE)

ID = String(128)
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (needed by Alembic batch mode)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: Json, list[Any]: Json}


class Decision(Base):
    """One decision of the engine, as returned to the caller (append-only)."""

    __tablename__ = "decisions"

    decision_id: Mapped[str] = mapped_column(ID, primary_key=True)
    request_id: Mapped[str | None] = mapped_column(ID)  # no index since 0005
    customer_id: Mapped[str] = mapped_column(ID)
    ts: Mapped[datetime] = mapped_column(DateTime())
    action: Mapped[str] = mapped_column(String(16))
    offer_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[int | None] = mapped_column(Integer)
    propensity: Mapped[float | None] = mapped_column(Float)
    expected_value: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[Any]] = mapped_column(Json, default=list)
    scores: Mapped[dict[str, Any] | None] = mapped_column(Json)
    excluded: Mapped[list[Any] | None] = mapped_column(Json)
    model_version: Mapped[str | None] = mapped_column(String(128))
    policy_version: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str | None] = mapped_column(ID)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # The customer's segment when decided (snapshot state) and the model's P(convert) of the
    # chosen option (NULL in rules-only mode and for no-contact actions); added in 0002.
    value_tier: Mapped[str | None] = mapped_column(String(16))
    lapse_state: Mapped[str | None] = mapped_column(String(16))
    p_convert: Mapped[float | None] = mapped_column(Float)
    # A holdout row keeps the contact it replaced in offer_id, channel, expected_value and
    # p_convert; `propensity` stays the holdout share (the probability of the logged action)
    # and this is the replaced option's own propensity (added in 0004; NULL otherwise).
    replaced_propensity: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_decisions_customer_ts", "customer_id", "ts"),)


class Contact(Base):
    """A contact a decision implies; counts against the caps while `status` is `sent`."""

    __tablename__ = "contacts"

    contact_id: Mapped[str] = mapped_column(ID, primary_key=True)
    decision_id: Mapped[str | None] = mapped_column(ID, unique=True)
    customer_id: Mapped[str] = mapped_column(ID)
    ts: Mapped[datetime] = mapped_column(DateTime())
    channel: Mapped[str] = mapped_column(String(32))
    offer_id: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str | None] = mapped_column(ID)
    stage: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=SENT)
    status_ts: Mapped[datetime | None] = mapped_column(DateTime())

    __table_args__ = (Index("ix_contacts_customer_ts", "customer_id", "ts"),)


class Event(Base):
    """An event reported back for a customer; `event_id` makes reporting idempotent."""

    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ID)
    ts: Mapped[datetime] = mapped_column(DateTime())
    type: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(32))
    contact_id: Mapped[str | None] = mapped_column(ID)
    decision_id: Mapped[str | None] = mapped_column(ID)
    offer_id: Mapped[str | None] = mapped_column(String(64))
    revenue: Mapped[float | None] = mapped_column(Float)
    margin: Mapped[float | None] = mapped_column(Float)
    payload: Mapped[dict[str, Any] | None] = mapped_column(Json)
    received_ts: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (Index("ix_events_customer_ts", "customer_id", "ts"),)


class ConsentChange(Base):
    """One consent status of a customer on a channel, from `ts` on."""

    __tablename__ = "consent_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ID)
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(DateTime())
    source: Mapped[str] = mapped_column(String(64), default="api")

    __table_args__ = (Index("ix_consent_history_customer", "customer_id", "channel", "ts"),)


class PreferencesChange(Base):
    """The full preference state a customer chose at `ts` (not a patch)."""

    __tablename__ = "preferences_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ID)
    ts: Mapped[datetime] = mapped_column(DateTime())
    channels: Mapped[list[Any] | None] = mapped_column(Json)
    max_contacts: Mapped[int | None] = mapped_column(Integer)
    per_days: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(64), default="api")

    __table_args__ = (Index("ix_preferences_history_customer", "customer_id", "ts"),)


class BudgetUsage(Base):
    """Redemptions and cost of one offer on one day (UTC)."""

    __tablename__ = "budget_usage"

    offer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    redemptions: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)


class IdempotencyKey(Base):
    """A caller's `request_id` with the fingerprint of the request it first came with."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(ID, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime())
