"""`GET /v1/customers/{customer_id}/next-offer` and `PUT .../preferences`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from serving.api import schemas
from serving.api.decision_log import (
    decision_from_row,
    get_decision,
    next_offer_decision_id,
    next_offer_request_id,
    recent_next_offer,
)
from serving.api.deps import ClientKey, ClientRuntime, RuntimeDep
from serving.api.errors import ApiError
from serving.api.present import json_response, next_offer_out
from serving.api.runtime import Runtime
from serving.api.service import Outcome, decide_and_record, new_decision_id, top_categories
from serving.engine.timeutil import to_days
from serving.store import Preferences
from serving.store.models import Decision as DecisionRow

router = APIRouter(prefix="/v1/customers", tags=["customers"])
CustomerId = Annotated[str, Path(min_length=1, max_length=128)]


def _from_log(rt: Runtime, row: DecisionRow, campaign_id: str | None) -> Outcome:
    snap = rt.snapshot()
    cats = top_categories(snap, snap.get(row.customer_id) if snap is not None else None)
    return Outcome(
        decision_id=row.decision_id,
        decision=decision_from_row(row, rt.policy),
        request_id=row.request_id,
        campaign_id=campaign_id,
        dry_run=False,
        recorded=True,
        top_categories=cats,
        duplicate_of=True,
    )


@router.get("/{customer_id}/next-offer", response_model=schemas.NextOffer)
async def next_offer(
    customer_id: CustomerId,
    rt: ClientRuntime,
    channel: Annotated[schemas.ChannelOrAuto, Query()] = "auto",
    campaign: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> Response:
    """The decision as flat JSON for template engines; repeated calls within the window for
    the same customer and campaign return the same decision and count once."""
    # on the event loop, serialised once: see `recommendations.recommend`
    now = rt.clock()
    window = rt.settings.next_offer_window_seconds
    if window > 0:
        row = recent_next_offer(rt.store, customer_id, campaign, now, window)
        if row is not None:
            return json_response(next_offer_out(rt, _from_log(rt, row, campaign)))
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
        outcome = _from_log(rt, row, campaign)
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
