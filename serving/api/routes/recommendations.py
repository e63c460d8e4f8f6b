"""`POST /v1/recommendations` and `POST /v1/recommendations/batch`."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.api import schemas
from serving.api.deps import ClientKey, ClientRuntime, RuntimeDep
from serving.api.errors import ApiError
from serving.api.microbatch import decide_request
from serving.api.present import decision_out, json_response
from serving.api.service import decide_body

PATH = "/v1/recommendations"
"""The decision endpoint's path (`serving.api.front` answers its plain requests)."""

router = APIRouter(prefix=PATH, tags=["recommendations"])


async def recommend(body: schemas.RecommendationRequest, rt: ClientRuntime) -> Response:
    """Decide offer, channel and stage (or no contact) for one customer, and log it."""
    # An `async def`: not one thread-pool hand-off per request. Requests that arrive while
    # the worker is busy are decided together, each group in the worker's one decision
    # thread while the loop reads the next requests (`serving.api.microbatch`). The
    # response is serialised once here instead of validated again by FastAPI. Plain
    # requests reach this function from `serving.api.front`, before FastAPI's stack.
    outcome = await decide_request(rt, body)
    return json_response(decision_out(rt, outcome))


router.add_api_route("", recommend, methods=["POST"], response_model=schemas.Decision)


@router.post(
    "/batch",
    response_model=schemas.BatchResponse,
)
def recommend_batch(
    body: schemas.BatchRecommendationRequest, rt: RuntimeDep, _: ClientKey
) -> schemas.BatchResponse:
    """Decide for up to `batch_limit` (default 1,000) customers in one engine call."""
    limit = rt.settings.batch_limit
    if len(body.customer_ids) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"customer_ids: at most {limit:,} customers per batch, got "
            f"{len(body.customer_ids):,}; split the request",
            "customer_ids",
        )
    seen: set[str] = set()
    for cid in body.customer_ids:
        if cid in seen:
            raise ApiError(
                422, "duplicate_customer", f"customer_ids: '{cid}' appears twice", "customer_ids"
            )
        seen.add(cid)
    outcomes = decide_body(rt, "recommendations/batch", body, body.customer_ids)
    return schemas.BatchResponse(decisions=[decision_out(rt, o) for o in outcomes])
