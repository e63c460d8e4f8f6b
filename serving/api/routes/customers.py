"""`GET /v1/customers/{customer_id}/next-offer` and `PUT .../preferences`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from serving.api import schemas
from serving.api.decision_log import (
    get_decision,
    next_offer_decision_id,
    next_offer_request_id,
    recent_next_offer,
)
from serving.api.deps import ClientKey, ClientRuntime, RuntimeDep
from serving.api.errors import ApiError
from serving.api.present import json_response, next_offer_out
from serving.api.service import decide_and_record, new_decision_id, outcome_from_log
from serving.engine.timeutil import to_days
from serving.store import Preferences

router = APIRouter(prefix="/v1/customers", tags=["customers"])
CustomerId = Annotated[str, Path(min_length=1, max_length=128, pattern=schemas.PRINTABLE)]


@router.get("/{customer_id}/next-offer", response_model=schemas.NextOffer)
async def next_offer(
    customer_id: CustomerId,
    rt: ClientRuntime,
    channel: Annotated[schemas.ChannelOrAuto, Query()] = "auto",
    campaign: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=schemas.PRINTABLE)
    ] = None,
) -> Response:
    """The decision as flat JSON for template engines; repeated calls within the window for
    the same customer and campaign return the same decision and count once."""
    # on the event loop, serialised once: see `recommendations.recommend`
    now = rt.clock()
    window = rt.settings.next_offer_window_seconds
    if window > 0:
        row = recent_next_offer(rt.store, customer_id, campaign, now, window)
        if row is not None:
            # the same decision, but re-checked: never "send" after an opt-out
            return json_response(next_offer_out(rt, outcome_from_log(rt, row, now)))
        bucket = int(to_days(now) * 86400 // window)
        did = next_offer_decision_id(customer_id, campaign, bucket)
    else:
        did = new_decision_id()
    [outcome] = decide_and_record(
        rt,
        [customer_id],
        channel,
        now=now,
        campaign_id=campaign,
        request_id=next_offer_request_id(campaign),
        decision_ids=[did],
    )
    if outcome.duplicate_of:  # a concurrent call recorded this id first: return its decision
        row = get_decision(rt.store, did)
        if row is None:
            raise ApiError(503, "store_unavailable", "decision log: concurrent write not visible")
        outcome = outcome_from_log(rt, row, now)
    return json_response(next_offer_out(rt, outcome))


@router.put("/{customer_id}/preferences", response_model=schemas.PreferencesOut)
def put_preferences(
    customer_id: CustomerId, body: schemas.PreferencesIn, rt: RuntimeDep, _: ClientKey
) -> schemas.PreferencesOut:
    """Replace the customer's channel and frequency choices (kept with their history)."""
    prefs = Preferences(
        customer_id=customer_id,
        ts=rt.clock(),
        channels=tuple(body.channels) if body.channels is not None else None,
        max_contacts=body.max_contacts,
        per_days=body.per_days,
        source="api",
    )
    rt.store.set_preferences(prefs)
    return schemas.PreferencesOut(
        customer_id=customer_id,
        channels=list(prefs.channels) if prefs.channels is not None else None,
        max_contacts=prefs.max_contacts,
        per_days=prefs.per_days,
        ts=prefs.ts,
    )
