"""`GET /healthz` (the process is up), `GET /readyz` (it can decide) and `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from features.snapshot import Snapshot
from serving.api import schemas
from serving.api.deps import RuntimeDep
from serving.api.runtime import Runtime
from serving.precomputed import precomputed_scores

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests."""
    return {"status": "ok"}


def readiness(rt: Runtime) -> schemas.Readiness:
    """Ready when the store answers; degraded without a model or without a snapshot."""
    reasons: list[str] = []
    store_ok = rt.store.ping()
    if not store_ok:
        reasons.append("store_unreachable")
    if rt.scorer is None:
        reasons.append("model_unavailable")
    snap = rt.snapshot()
    if snap is None:
        reasons.append("snapshot_unavailable")
    degraded = rt.scorer is None or snap is None
    rt.metrics.set_degraded(degraded)
    return schemas.Readiness(
        ready=store_ok,
        degraded=degraded,
        reasons=reasons,
        model_version=rt.model_version,
        model_uri=rt.model_uri or None,
        policy_version=rt.policy.version,
        catalog_version=rt.catalog.version,
        snapshot_version=snap.version if snap is not None else None,
        store_reachable=store_ok,
        stored_scores=_stored_scores_serve(rt, snap),
    )


def _stored_scores_serve(rt: Runtime, snap: Snapshot | None) -> bool:
    stored = precomputed_scores(snap)
    return stored is not None and rt.scorer is not None and stored.serves(rt.scorer)


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness}},
)
def readyz(rt: RuntimeDep) -> JSONResponse:
    """200 when decisions can be made (possibly degraded: rules only), 503 when not."""
    body = readiness(rt)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition: every worker's metrics merged under `winback serve`."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
