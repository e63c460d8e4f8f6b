"""Recording an event reported back: the one path `POST /v1/events` and world play share.

`record_event` stores the event once (`Store.append_event`: opt-outs and `not_sent` releases
happen in its transaction) and, for a first-seen `order` naming an incentive offer, adds one
redemption and the offer's expected cost for the order's revenue to the offer's budget usage
on the order's day. The HTTP route calls it; so does `winback world play`, so a played
world's outcomes reach the store exactly as a client's would.
"""

from __future__ import annotations

from datetime import datetime

from serving.engine import OptionSet
from serving.store import EventRecord, EventResult, Store

ORDER = "order"


def record_event(
    store: Store, options: OptionSet, event: EventRecord, received: datetime | None = None
) -> EventResult:
    """Store `event` once per `event_id` and count an incentive order against its budget.

    `received` dates an opt-out's consent change (see `Store.append_event`; default now): a
    played world passes its own clock.
    """
    res = store.append_event(event, received=received)
    offer = options.offers.get(event.offer_id) if event.offer_id else None
    if not res.duplicate and event.type == ORDER and offer is not None and offer.is_incentive:
        cost = offer.cost.expected_cost(event.revenue or 0.0)
        store.add_budget_usage(offer.offer_id, event.ts.date(), 1, cost)
    return res
