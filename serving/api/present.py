"""Turning engine decisions into the API's response types."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Response
from pydantic import BaseModel

from serving.api import schemas
from serving.api.runtime import Runtime
from serving.api.service import Outcome
from serving.engine import Decision
from serving.engine.reasons import CODE, MODEL_UNAVAILABLE, NO_ALLOWED_OPTION


def json_response(body: BaseModel) -> Response:
    """`body` as a JSON response, serialised once (the route's `response_model` still
    documents it; FastAPI does not re-validate a returned Response)."""
    return Response(content=body.model_dump_json(), media_type="application/json")


def offer_display(rt: Runtime, offer_id: str | None) -> schemas.OfferDisplay | None:
    """Display fields of a catalog offer (None for no offer or the plain message `none`)."""
    offer = rt.options.offers.get(offer_id) if offer_id else None
    if offer is None:
        return None
    return schemas.OfferDisplay(
        offer_id=offer.offer_id,
        type=offer.type,
        value=offer.value,
        title=offer.title,
        description=offer.description,
    )


def main_reason(reasons: Sequence[str]) -> str:
    """The reason that explains the choice (`model_unavailable` only when it is the sole one)."""
    for code in reasons:
        if code != MODEL_UNAVAILABLE:
            return code
    return reasons[0] if reasons else ""


def next_offer_reason(d: Decision) -> str:
    """The one reason a template shows: the choice's reason, except that "no allowed option"
    names the guardrail that stopped the option which got furthest through the pipeline
    (consent before caps before margin floors: the last one hit is the one to act on)."""
    reason = main_reason(d.reasons)
    if reason == NO_ALLOWED_OPTION and d.excluded:
        return max((e.reason for e in d.excluded), key=lambda r: CODE.get(r, 0))
    return reason


def decision_out(rt: Runtime, o: Outcome) -> schemas.Decision:
    d = o.decision
    return schemas.Decision(
        decision_id=o.decision_id,
        request_id=o.request_id,
        customer_id=d.customer_id,
        action=d.action,
        offer_id=d.offer_id,
        channel=d.channel,
        stage=d.stage,
        stage_name=d.stage_name,
        expected_value=d.value,
        propensity=d.propensity,
        scores=dict(d.scores),
        excluded=[schemas.ExcludedOffer(offer_id=e.offer_id, reason=e.reason) for e in d.excluded],
        reasons=list(d.reasons),
        model_version=d.model_version,
        policy_version=d.policy_version,
        campaign_id=o.campaign_id,
        dry_run=o.dry_run,
        recorded=o.recorded,
        offer=offer_display(rt, d.offer_id),
        top_categories=list(o.top_categories),
    )


def next_offer_out(rt: Runtime, o: Outcome) -> schemas.NextOffer:
    d = o.decision
    shown = offer_display(rt, d.offer_id)
    return schemas.NextOffer(
        decision_id=o.decision_id,
        customer_id=d.customer_id,
        campaign_id=o.campaign_id,
        action=d.action,
        send=d.is_contact,
        offer_id=d.offer_id,
        offer_type=shown.type if shown else None,
        offer_value=shown.value if shown else None,
        offer_title=shown.title if shown else None,
        offer_description=shown.description if shown else None,
        channel=d.channel,
        stage=d.stage,
        stage_name=d.stage_name,
        reason=next_offer_reason(d),
        top_category=o.top_categories[0] if o.top_categories else None,
        top_categories=list(o.top_categories),
        policy_version=d.policy_version or None,
        model_version=d.model_version or None,
    )
