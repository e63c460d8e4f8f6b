"""`POST /v1/events`: delivery, engagement, orders and opt-outs reported back."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api import schemas
from serving.api.deps import ClientKey, RuntimeDep
from serving.events import record_event
from serving.store import EventRecord
from serving.store.records import utc_naive

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", response_model=schemas.EventResult)
def post_event(body: schemas.EventIn, rt: RuntimeDep, _: ClientKey) -> schemas.EventResult:
    """Store an event once per `event_id`.

    `unsubscribe` and `complaint` opt the customer out (of the event's channel, else the
    contact's, else every channel) from the moment they are received, whatever their `ts`:
    no contact is recorded after this call has answered; `not_sent` releases the cap the
    named decision took; an `order` naming an offer adds one redemption and its expected cost
    to the offer's budget usage. A repeated `event_id` changes nothing (`duplicate: true`).
    """
    received = rt.clock()
    ts = utc_naive(body.ts) if body.ts is not None else received
    res = record_event(
        rt.store,
        rt.options,
        EventRecord(
            event_id=body.event_id,
            customer_id=body.customer_id,
            ts=ts,
            type=body.type,
            channel=body.channel,
            contact_id=body.contact_id,
            decision_id=body.decision_id,
            offer_id=body.offer_id,
            revenue=body.revenue,
            margin=body.margin,
            payload=body.payload,
        ),
        received=received,
    )
    rt.metrics.events.labels(body.type, str(res.duplicate).lower()).inc()
    return schemas.EventResult(
        event_id=res.event_id,
        duplicate=res.duplicate,
        released_contact_id=res.released_contact_id,
        opted_out_channels=list(res.opted_out_channels),
    )
