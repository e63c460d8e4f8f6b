"""HTTP request and response types of the decision API (families, not ML models)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)
from typing_extensions import TypeAliasType

from features.offers import Channel

ChannelOrAuto = Literal["email", "sms", "push", "in_app", "direct_mail", "auto"]
Action = Literal["offer", "message", "holdout", "none"]
EventType = Literal[
    "sent",
    "not_sent",
    "delivered",
    "open",
    "click",
    "order",
    "unsubscribe",
    "complaint",
    "bounce",
]

PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
"""Ids and names: no control characters (NUL above all: PostgreSQL cannot store it)."""
NO_NUL: Final = r"^[^\x00]*$"

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]
"""A caller-chosen id (customer, event, campaign, request): 1-128 printable characters."""
OfferId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)]

EARLIEST: Final = datetime(1970, 1, 1)
LATEST: Final = datetime(2100, 1, 1)
# A coarse check of the year in the schema itself, so generated clients see the bound.
_TS_PATTERN: Final = r"^(19[7-9][0-9]|20[0-9][0-9])-"


def utc_bounded(value: datetime) -> datetime:
    """Naive UTC (a naive input is taken as UTC) between 1970 and 2100."""
    if not EARLIEST.year <= value.year < LATEST.year:  # before converting: year 1 overflows
        raise ValueError(
            f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC), got year {value.year}"
        )
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC)")
    return value


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    """Only ISO 8601 text (pydantic alone also takes numbers and numeric strings as epochs)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2026-01-10T12:00:00Z")
    return value


def _json_int(value: Any) -> Any:
    """An integer as JSON Schema means it: 3 or 3.0, not "3" or true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_iso_text),
    AfterValidator(utc_bounded),
    Field(json_schema_extra={"pattern": _TS_PATTERN}),
]
"""ISO 8601; with an offset, or UTC when it has none; years 1970-2099."""


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcOut = Annotated[datetime, AfterValidator(_aware)]
"""A response time: always with its offset (UTC)."""

MAX_AMOUNT: Final = 1e9
Money = Annotated[float, Strict(), Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False)]
MAX_PAYLOAD_BYTES: Final = 16_384

PayloadValue = TypeAliasType(
    "PayloadValue",
    "Annotated[bool, Strict()] | Annotated[int, Strict()] "
    "| Annotated[float, Strict(), Field(allow_inf_nan=False)] "
    "| Annotated[str, Strict(), StringConstraints(max_length=4096, pattern=NO_NUL)] "
    "| list[PayloadValue] "
    "| dict[Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)], PayloadValue] "
    "| None",
)
"""Any JSON value without NUL characters or non-finite numbers, kept as sent (strict: a
string of digits stays a string)."""
MAX_PAYLOAD_DEPTH: Final = 16
MAX_PAYLOAD_TEXT: Final = 4096
MAX_PAYLOAD_KEY: Final = 128


def payload_problem(value: Any, path: str = "payload", depth: int = 0) -> str | None:
    """The first spot of a JSON value that cannot be stored, as 'path: problem', or None."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"{path}: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if isinstance(value, str):
        if len(value) > MAX_PAYLOAD_TEXT:
            return f"{path}: at most {MAX_PAYLOAD_TEXT:,} characters, got {len(value):,}"
        return f"{path}: contains a NUL character" if "\x00" in value else None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: must be a finite number"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or "\x00" in k or len(k) > MAX_PAYLOAD_KEY:
                return f"{path}: keys are at most {MAX_PAYLOAD_KEY} characters, without NUL"
            found = payload_problem(v, f"{path}.{k}", depth + 1)
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = payload_problem(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionContext(_In):
    """When and why the caller asks."""

    timestamp: Timestamp | None = Field(
        None,
        description=(
            "decision time; default: now. A recorded decision is always made at the server's "
            "clock (caps and consent are judged there), and this may differ from it by at "
            "most WINBACK_CLOCK_TOLERANCE_SECONDS (default 300 s); a dry run may ask about any "
            "time, and opt-outs already received apply to it whatever that time."
        ),
    )
    campaign_id: Id | None = None
    trigger: Id | None = Field(None, description="e.g. browsed_category")


class _DecisionRequest(_In):
    """What a single and a batch decision request share."""

    channel: ChannelOrAuto = "auto"
    # a factory, not a default instance: pydantic deep-copies a model default on every
    # validation (1% of a decision's CPU); the schema states the same default as before
    context: DecisionContext = Field(
        default_factory=DecisionContext, json_schema_extra={"default": {}}
    )
    candidate_offer_ids: list[OfferId] | None = Field(None, min_length=1, max_length=64)
    dry_run: StrictBool = False
    request_id: Id | None = Field(
        None,
        description=(
            "idempotency key: a repeat with the same body gets the decision(s) already "
            "recorded under it (`recorded: true`), recorded once; the same key with a "
            "different body is refused with 409 `idempotency_key_reused`. Dry runs record "
            "nothing and are not keyed."
        ),
    )


class RecommendationRequest(_DecisionRequest):
    """`POST /v1/recommendations`."""

    customer_id: Id


class BatchRecommendationRequest(_DecisionRequest):
    """`POST /v1/recommendations/batch`: one decision per customer, same channel and context."""

    customer_ids: list[Id] = Field(min_length=1, json_schema_extra={"uniqueItems": True})


class ExcludedOffer(BaseModel):
    """An option a guardrail blocked, with the code of the first rule that did."""

    offer_id: str
    reason: str


class OfferDisplay(BaseModel):
    """What a template needs to show the offer."""

    offer_id: str
    type: str
    value: float
    title: str
    description: str = ""


class Decision(BaseModel):
    """One decision as returned to the caller; `reasons` are stable codes."""

    decision_id: str
    request_id: str | None = None
    customer_id: str
    action: Action
    offer_id: str | None = None
    channel: str | None = None
    stage: int | None = None
    stage_name: str | None = None
    expected_value: float | None = None
    propensity: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    excluded: list[ExcludedOffer] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    model_version: str | None = None
    policy_version: str | None = None
    campaign_id: str | None = None
    dry_run: bool = False
    recorded: bool = Field(False, description="whether the decision is in the decision log")
    offer: OfferDisplay | None = None
    top_categories: list[str] = Field(default_factory=list)


class BatchResponse(BaseModel):
    decisions: list[Decision]


class NextOffer(BaseModel):
    """Flat decision for template engines (Liquid `{{ offer_title }}` and the like)."""

    decision_id: str
    customer_id: str
    campaign_id: str | None
    action: Action
    send: bool
    offer_id: str | None
    offer_type: str | None
    offer_value: float | None
    offer_title: str | None
    offer_description: str | None
    channel: str | None
    stage: int | None
    stage_name: str | None
    reason: str = Field(
        description=(
            "why: the choice's reason code, or for no contact the guardrail that stopped the "
            "option that got furthest (e.g. consent_unknown, stage_too_soon, cap_channel)"
        )
    )
    top_category: str | None
    top_categories: list[str]
    policy_version: str | None
    model_version: str | None


_OTHER_EVENTS: Final = [t for t in EventType.__args__ if t not in ("order", "not_sent")]  # type: ignore[attr-defined]


class EventIn(_In):
    """`POST /v1/events`; `event_id` (chosen by the sender) makes delivery idempotent."""

    # The cross-field rules of `_order_amounts`, stated in the schema too (clients and
    # schema-driven tests then know them): an order has amounts, not_sent names its decision.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"type": {"enum": _OTHER_EVENTS}}},
                {
                    "properties": {
                        "type": {"const": "order"},
                        "revenue": {"type": "number"},
                        "margin": {"type": "number"},
                    },
                    "required": ["type", "revenue", "margin"],
                },
                {
                    "properties": {
                        "type": {"const": "not_sent"},
                        "decision_id": {"type": "string"},
                    },
                    "required": ["type", "decision_id"],
                },
                {
                    "properties": {
                        "type": {"const": "not_sent"},
                        "contact_id": {"type": "string"},
                    },
                    "required": ["type", "contact_id"],
                },
            ]
        }
    )

    event_id: Id
    customer_id: Id
    type: EventType
    ts: Timestamp | None = Field(
        None,
        description=(
            "when it happened (kept as reported); default: now. An unsubscribe or complaint "
            "takes effect when it is received, whatever this says."
        ),
    )
    channel: Channel | None = None
    contact_id: Id | None = None
    decision_id: Id | None = None
    offer_id: OfferId | None = None
    revenue: Annotated[Money, Field(ge=0)] | None = None
    margin: Money | None = None
    payload: (
        dict[Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)], PayloadValue] | None
    ) = Field(None, description=f"free-form JSON (at most {MAX_PAYLOAD_BYTES:,} bytes serialised)")

    @field_validator("payload", mode="before")
    @classmethod
    def _payload_checks(cls, value: Any) -> Any:
        """One clear message naming the spot (the schema's union would list every branch)."""
        if isinstance(value, dict):
            problem = payload_problem(value)
            if problem is not None:
                raise ValueError(problem)
            size = len(json.dumps(value, separators=(",", ":")).encode())
            if size > MAX_PAYLOAD_BYTES:
                raise ValueError(f"at most {MAX_PAYLOAD_BYTES:,} bytes of JSON, got {size:,}")
        return value

    @model_validator(mode="after")
    def _order_amounts(self) -> EventIn:
        if self.type == "order" and (self.revenue is None or self.margin is None):
            missing = "revenue" if self.revenue is None else "margin"
            raise ValueError(f"{missing}: required for an order event")
        if self.type == "not_sent" and not (self.contact_id or self.decision_id):
            raise ValueError("decision_id: a not_sent event must name its decision or contact")
        return self


class EventResult(BaseModel):
    event_id: str
    duplicate: bool
    released_contact_id: str | None = None
    opted_out_channels: list[str] = Field(default_factory=list)


class PreferencesIn(_In):
    """`PUT /v1/customers/{customer_id}/preferences`: the full state, not a patch."""

    # `_frequency_pair` in the schema: both frequency fields, or neither.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"max_contacts": {"type": "null"}, "per_days": {"type": "null"}}},
                {
                    "properties": {
                        "max_contacts": {"type": "integer"},
                        "per_days": {"type": "integer"},
                    },
                    "required": ["max_contacts", "per_days"],
                },
            ]
        }
    )

    channels: list[Channel] | None = Field(None, description="allowed channels; null = any")
    max_contacts: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_json_int)] | None = None
    per_days: Annotated[int, Field(ge=1, le=3650), BeforeValidator(_json_int)] | None = None

    @model_validator(mode="after")
    def _frequency_pair(self) -> PreferencesIn:
        if (self.max_contacts is None) != (self.per_days is None):
            missing = "per_days" if self.per_days is None else "max_contacts"
            raise ValueError(f"{missing}: max_contacts and per_days go together")
        return self


class PreferencesOut(BaseModel):
    customer_id: str
    channels: list[str] | None
    max_contacts: int | None
    per_days: int | None
    ts: UtcOut


class ReloadRequest(_In):
    """`POST /admin/reload`: anything left out is reloaded from its current source."""

    model_uri: str | None = Field(None, description="e.g. models:/winback-policy@challenger")
    policy_path: str | None = None
    catalog_path: str | None = None
    snapshot: StrictBool = True


class Readiness(BaseModel):
    ready: bool
    degraded: bool
    reasons: list[str]
    model_version: str | None
    model_uri: str | None
    policy_version: str | None
    catalog_version: str | None
    snapshot_version: str | None
    store_reachable: bool
    stored_scores: bool = Field(
        description="the snapshot carries this model version's scores (looked up, not computed)"
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    error: ErrorBody


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: _error("the body could not be read (not UTF-8, or not JSON at all)"),
    401: _error("`X-API-Key` is missing or not valid"),
    403: _error("the key is valid but of the other scope (client vs admin)"),
    409: _error(
        "`request_id` reused with a different request (`idempotency_key_reused`), or a "
        "recorded decision's `context.timestamp` too far from the server's clock "
        "(`timestamp_out_of_tolerance`)"
    ),
    413: _error("the body is larger than WINBACK_MAX_BODY_BYTES, or too many customers"),
    422: _error("a field is invalid: `field` names it, `message` says why"),
    503: _error("the store or the service is not available; nothing was recorded"),
}
"""The answers every authenticated endpoint may give besides its own."""
