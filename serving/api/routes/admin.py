"""`POST /admin/reload`: a new model alias, policy, catalog or snapshot without restart."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from serving.api import schemas
from serving.api.deps import AdminKey, RuntimeDep
from serving.api.errors import ApiError
from serving.api.heap import settle_heap
from serving.api.routes.health import ReadinessReport, readiness
from serving.api.runtime import ReloadRefusedError, reloaded
from serving.api.sync import publish

router = APIRouter(prefix="/admin", tags=["admin"])
log = logging.getLogger("winback.api")


@router.post(
    "/reload",
    response_model=ReadinessReport,
    responses={422: {"model": schemas.ErrorResponse}},
)
def reload(
    request: Request, rt: RuntimeDep, _: AdminKey, body: schemas.ReloadRequest | None = None
) -> ReadinessReport:
    """Reload and swap atomically, all or nothing.

    A policy or catalog that does not load (422 `policy_invalid` / `offer_catalog`), a model
    URI that cannot be loaded or a snapshot refresh that fails (422 `reload_refused`, `field`
    `model_uri` or `snapshot`) leave the running service exactly as it was. Returns this
    worker's readiness after the swap; the other workers apply it within
    `refresh_interval_seconds`.
    """
    body = body or schemas.ReloadRequest()
    try:
        new, swapped = reloaded(
            rt,
            model_uri=body.model_uri,
            policy_path=body.policy_path,
            catalog_path=body.catalog_path,
            refresh_snapshot=body.snapshot,
        )
    except ReloadRefusedError as exc:
        log.warning("reload refused: %s", exc)
        raise ApiError(422, exc.code, str(exc), exc.field) from None
    request.app.state.runtime = new
    settle_heap()  # the new runtime out of the collector's full passes (`serving.api.heap`)
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
