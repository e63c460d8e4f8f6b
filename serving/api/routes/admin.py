"""`POST /admin/reload`: a new model alias, policy, catalog or snapshot without restart."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from serving.api import schemas
from serving.api.deps import AdminKey, RuntimeDep
from serving.api.routes.health import readiness
from serving.api.runtime import reloaded
from serving.api.sync import publish

router = APIRouter(prefix="/admin", tags=["admin"])
log = logging.getLogger("winback.api")


@router.post("/reload", response_model=schemas.Readiness)
def reload(
    request: Request, rt: RuntimeDep, _: AdminKey, body: schemas.ReloadRequest | None = None
) -> schemas.Readiness:
    """Reload and swap atomically; an invalid policy or catalog leaves the running one.

    Returns this worker's readiness after the swap (model and policy versions, degraded
    state); the other workers apply it within `refresh_interval_seconds`.
    """
    body = body or schemas.ReloadRequest()
    new, swapped = reloaded(
        rt,
        model_uri=body.model_uri,
        policy_path=body.policy_path,
        catalog_path=body.catalog_path,
        refresh_snapshot=body.snapshot,
    )
    request.app.state.runtime = new
    # Tell the other worker processes; this one already runs the new generation.
    request.app.state.generation = publish(new).generation
    log.info(
        "reloaded",
        extra={
            "model_uri": new.model_uri,
            "model_version": new.model_version,
            "model_error": new.model_error,
            "policy_version": new.policy.version,
            "catalog_version": new.catalog.version,
            "snapshot_swapped": swapped,
        },
    )
    return readiness(new)
