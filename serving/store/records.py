"""Plain values passed into and returned by `serving.store.repository.Store`.

They are frozen dataclasses rather than ORM objects, so callers never hold a session-bound
object and the engine can build them without touching SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from serving.store.models import CONTACT_ACTIONS


def utc_naive(ts: datetime) -> datetime:
    """`ts` as timezone-naive UTC (the store's convention); naive input is taken as UTC."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


@dataclass(frozen=True)
class DecisionRecord:
    """A decision to append to the log; `offer`/`message` decisions also imply a contact.

    `value_tier` and `lapse_state` are the customer's segment when decided (None when not in
    the snapshot); `p_convert` is the model's P(convert) of the chosen option (None in
    rules-only mode and for decisions that contact nobody). A `holdout` decision records the
    contact it replaced in `offer_id`, `channel`, `expected_value` and `p_convert`, the
    holdout share as `propensity` and the replaced option's as `replaced_propensity`.
    """

    decision_id: str
    customer_id: str
    ts: datetime
    action: str
    request_id: str | None = None
    offer_id: str | None = None
    channel: str | None = None
    stage: int | None = None
    propensity: float | None = None
    expected_value: float | None = None
    reasons: Sequence[Any] = ()
    scores: Mapping[str, Any] | None = None
    excluded: Sequence[Any] | None = None
    model_version: str | None = None
    policy_version: str | None = None
    campaign_id: str | None = None
    dry_run: bool = False
    value_tier: str | None = None
    lapse_state: str | None = None
    p_convert: float | None = None
    replaced_propensity: float | None = None

    @property
    def implies_contact(self) -> bool:
        """Whether recording this decision sends something (and so takes a cap)."""
        return self.action in CONTACT_ACTIONS and not self.dry_run


@dataclass(frozen=True)
class IdempotencyClaim:
    """An idempotency key to store in the transaction that records a request's first
    decision (`Store.record_decision`, `Store.try_record_contact`): the key and its
    decisions commit together, or neither does."""

    key: str
    fingerprint: str
    endpoint: str
    ts: datetime


@dataclass(frozen=True)
class RecordResult:
    """Outcome of recording a decision: recorded, or blocked by a cap (reason code + detail)."""

    recorded: bool
    decision_id: str
    contact_id: str | None = None
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class EventRecord:
    """An event reported back; `event_id` is chosen by the sender and makes it idempotent."""

    event_id: str
    customer_id: str
    ts: datetime
    type: str
    channel: str | None = None
    contact_id: str | None = None
    decision_id: str | None = None
    offer_id: str | None = None
    revenue: float | None = None
    margin: float | None = None
    payload: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EventResult:
    """`duplicate` is True when the event id was seen before (nothing was written)."""

    event_id: str
    duplicate: bool
    released_contact_id: str | None = None
    opted_out_channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsentEntry:
    """One consent status of a customer on a channel from `ts` on."""

    customer_id: str
    channel: str
    status: str
    ts: datetime
    source: str


@dataclass(frozen=True)
class PastContact:
    """What the cap check needs to know about a contact that still counts."""

    ts: datetime
    channel: str
    offer_id: str | None


@dataclass(frozen=True)
class Preferences:
    """What a customer chose: allowed channels (None = no restriction) and a frequency."""

    customer_id: str
    ts: datetime
    channels: tuple[str, ...] | None = None
    max_contacts: int | None = None
    per_days: int | None = None
    source: str = "api"


@dataclass(frozen=True)
class BudgetTotals:
    """Usage of one offer on a day and since the start."""

    offer_id: str
    day_redemptions: int = 0
    day_cost: float = 0.0
    total_redemptions: int = 0
    total_cost: float = 0.0


@dataclass(frozen=True)
class ContactRow(PastContact):
    """A contact that still counts against the caps, with what the journey needs."""

    contact_id: str = ""
    stage: int | None = None
    campaign_id: str | None = None


@dataclass(frozen=True)
class CustomerState:
    """What the guardrails read about one customer before deciding."""

    customer_id: str
    contacts: tuple[ContactRow, ...] = ()
    consent: Mapping[str, str] = field(default_factory=dict)
    preferences: Preferences | None = None
    last_order_ts: datetime | None = None
