"""`GET /healthz` (the process is up), `GET /readyz` (it can decide) and `GET /metrics`.

Ready means decisions can be recorded: the store answers *and takes writes* (a rolled-back
write probe, at most once per second per worker: `serving.store.health`), so a read-only or
full store, or one that cannot be reached, is not ready (503) and says why. Without a model
or a snapshot the service is ready but degraded, and says why too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import Field

from features.snapshot import Snapshot
from serving.api import schemas
from serving.api.deps import RuntimeDep
from serving.api.runtime import Runtime, brief
from serving.precomputed import precomputed_scores

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests."""
    return {"status": "ok"}


class ReadinessReport(schemas.Readiness):
    """`schemas.Readiness` plus what is wrong, in words, for each reason code."""

    details: dict[str, str] = Field(
        default_factory=dict,
        description="for each code in `reasons`, what is wrong (for operators)",
    )


def readiness(rt: Runtime) -> ReadinessReport:
    """Ready when the store takes writes; degraded without a model or a fresh snapshot."""
    details: dict[str, str] = {}
    store = rt.store_probe.check()
    if store.problem is not None:
        details[store.problem] = store.message or store.problem
    if rt.scorer is None:
        details["model_unavailable"] = brief(rt.model_error or "no model loaded: rules only")
    snap = rt.snapshot()
    problem = rt.snapshot_problem()
    if snap is None:
        details["snapshot_unavailable"] = (
            f"{problem or 'no snapshot'}; every customer is unknown until a snapshot loads "
            f"(retried every {rt.settings.refresh_interval_seconds:g} s)"
        )
    elif problem is not None:
        details["snapshot_refresh_failed"] = f"serving {snap.version}; {problem}"
    degraded = rt.scorer is None or snap is None or problem is not None
    rt.metrics.set_degraded(degraded)
    return ReadinessReport(
        ready=store.writable,
        degraded=degraded,
        reasons=list(details),
        details=details,
        model_version=rt.model_version,
        model_uri=rt.model_uri or None,
        policy_version=rt.policy.version,
        catalog_version=rt.catalog.version,
        snapshot_version=snap.version if snap is not None else None,
        store_reachable=store.reachable,
        stored_scores=_stored_scores_serve(rt, snap),
    )


def _stored_scores_serve(rt: Runtime, snap: Snapshot | None) -> bool:
    stored = precomputed_scores(snap)
    return stored is not None and rt.scorer is not None and stored.serves(rt.scorer)


@router.get(
    "/readyz",
    response_model=ReadinessReport,
    responses={503: {"model": ReadinessReport}},
)
def readyz(rt: RuntimeDep) -> JSONResponse:
    """200 when decisions can be made (possibly degraded: rules only), 503 when not."""
    body = readiness(rt)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition: every worker's metrics merged under `winback serve`."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
