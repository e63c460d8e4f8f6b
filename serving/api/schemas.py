"""HTTP request and response types of the decision API (families, not ML models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
Id = Field(min_length=1, max_length=128)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionContext(_In):
    """When and why the caller asks."""

    timestamp: datetime | None = Field(None, description="decision time; default: now (UTC)")
    campaign_id: str | None = Field(None, min_length=1, max_length=128)
    trigger: str | None = Field(None, max_length=128, description="e.g. browsed_category")


class RecommendationRequest(_In):
    """`POST /v1/recommendations`."""

    customer_id: str = Id
    channel: ChannelOrAuto = "auto"
    context: DecisionContext = DecisionContext()
    candidate_offer_ids: list[str] | None = Field(None, min_length=1, max_length=64)
    dry_run: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=128)


class BatchRecommendationRequest(_In):
    """`POST /v1/recommendations/batch`: one decision per customer, same channel and context."""

    customer_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1)
    channel: ChannelOrAuto = "auto"
    context: DecisionContext = DecisionContext()
    candidate_offer_ids: list[str] | None = Field(None, min_length=1, max_length=64)
    dry_run: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=128)


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
    reason: str
    top_category: str | None
    top_categories: list[str]
    policy_version: str | None
    model_version: str | None


class EventIn(_In):
    """`POST /v1/events`; `event_id` (chosen by the sender) makes delivery idempotent."""

    event_id: str = Id
    customer_id: str = Id
    type: EventType
    ts: datetime | None = Field(None, description="when it happened; default: now (UTC)")
    channel: Channel | None = None
    contact_id: str | None = Field(None, max_length=128)
    decision_id: str | None = Field(None, max_length=128)
    offer_id: str | None = Field(None, max_length=64)
    revenue: float | None = Field(None, ge=0)
    margin: float | None = None
    payload: dict[str, Any] | None = None

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

    channels: list[Channel] | None = Field(None, description="allowed channels; null = any")
    max_contacts: int | None = Field(None, ge=1, le=1000)
    per_days: int | None = Field(None, ge=1, le=3650)

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
    ts: datetime


class ReloadRequest(_In):
    """`POST /admin/reload`: anything left out is reloaded from its current source."""

    model_uri: str | None = Field(None, description="e.g. models:/winback-policy@challenger")
    policy_path: str | None = None
    catalog_path: str | None = None
    snapshot: bool = True


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
