"""The FastAPI application: `create_app(settings)`.

The lifespan does the heavy work once per process: it opens the store's engine, runs the
migrations, starts the SQLite store's WAL checkpointer (`serving.store.checkpoint`) and the
worker's decision thread (`serving.api.decision_thread`), loads policy, catalog, snapshot
handle and scorer into one `Runtime`, and keeps it on `app.state.runtime` (swapped whole by
`POST /admin/reload`, and by the watcher of `serving.api.sync` in the other worker
processes); at shutdown it stops the thread and the checkpointer. Tests pass fakes for the
scorer loader, the snapshot handle and the clock instead of patching anything.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from serving.api import schemas
from serving.api.decision_thread import DecisionThread
from serving.api.errors import install_error_handlers
from serving.api.front import DecisionAPI
from serving.api.heap import settle_heap
from serving.api.limits import BodyLimitMiddleware
from serving.api.logs import configure_logging
from serving.api.metrics import LatencyMiddleware, Metrics
from serving.api.routes import admin, customers, events, health, recommendations, reports
from serving.api.runtime import Clock, Runtime, SnapshotSource, build_runtime, utc_now
from serving.api.sync import read_target, watch
from serving.scoring import ScorerLoader
from serving.settings import ServingSettings, get_serving_settings
from serving.store import Store, upgrade_database
from serving.store.checkpoint import BACKSTOP_PAGES, WalCheckpointer, start_checkpointer

log = logging.getLogger("winback.api")


def create_app(
    settings: ServingSettings | None = None,
    *,
    scorer_loader: ScorerLoader | None = None,
    snapshots: SnapshotSource | None = None,
    clock: Clock = utc_now,
) -> FastAPI:
    """The decision API.

    Args:
        settings: defaults to `get_serving_settings()` (the `WINBACK_*` environment).
        scorer_loader: turns `settings.model_uri` into a `Scorer`; None means no model
            (rules only, `/readyz` reports degraded).
        snapshots: the snapshot handle; default `SnapshotStore(settings.snapshot_dir)`.
        clock: timezone-naive UTC now (tests pin it).
    """
    cfg = settings or get_serving_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = cfg.wal_checkpoint_interval_seconds > 0
        # with the background checkpointer, SQLite's own only as a backstop (ignored by PG)
        store = Store.from_url(
            cfg.database_url, wal_autocheckpoint=BACKSTOP_PAGES if background else None
        )
        watcher: asyncio.Task[None] | None = None
        checkpointer: WalCheckpointer | None = None
        thread = DecisionThread()  # the worker's one deciding thread (`decision_thread`)
        try:
            upgrade_database(store.engine)
            checkpointer = start_checkpointer(store.engine, cfg.wal_checkpoint_interval_seconds)
            app.state.checkpointer = checkpointer
            app.state.runtime = build_runtime(
                cfg,
                store,
                metrics,
                scorer_loader,
                snapshots=snapshots,
                clock=clock,
                decision_thread=thread,
            )
            # Load the snapshot now: loaded by the first request instead, a 1M-customer
            # snapshot held that request and those queued behind it for seconds (in each
            # worker). A missing or corrupt one is not fatal: the service starts degraded
            # (customers unknown, `/readyz` says why) and the watcher retries the load.
            if app.state.runtime.snapshot() is None:
                app.state.snapshot_error = app.state.runtime.snapshot_problem()
                log.warning(
                    "starting degraded, no serving snapshot (retried every %s s): %s",
                    cfg.refresh_interval_seconds,
                    app.state.snapshot_error,
                )
            settle_heap()  # the loaded runtime out of the collector's full passes
            # Settings win at start; only reloads published from now on are applied.
            published = read_target(cfg.reload_state_path)
            app.state.generation = published.generation if published else 0
            if cfg.refresh_interval_seconds > 0:
                watcher = asyncio.create_task(watch(app, cfg.refresh_interval_seconds))
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            app.state.runtime = None
            thread.close()
            if checkpointer is not None:
                checkpointer.stop()
            store.dispose()

    app = DecisionAPI(
        title="winback",
        summary="Win-back offer decisions: guardrail rules plus ML scores",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry bridge, off: the service has its own Prometheus metrics and
        # JSON logs, and the bridge's per-request check that no OpenTelemetry provider is
        # configured cost about 2.5% of a decision's CPU (`bench/bench_api.py --profile`)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.max_body_bytes = cfg.max_body_bytes
    app.state.metrics = metrics
    app.state.runtime = None
    app.state.checkpointer = None
    app.state.generation = 0
    install_error_handlers(app)
    for module in (recommendations, customers, events, reports, admin):
        app.include_router(module.router, responses=schemas.ERROR_RESPONSES)
    app.include_router(health.router)
    documented = app.openapi  # FastAPI's, cached after the first call

    def openapi() -> dict[str, Any]:
        spec = documented()
        if not spec.get("x-winback-keys-fixed"):
            _key_patterns_as_property_names(spec)
            spec["x-winback-keys-fixed"] = True
        return with_offer_ids(spec, getattr(app.state, "runtime", None))

    app.openapi = openapi  # type: ignore[method-assign]
    # the last added is the outermost: the latency histogram also counts the 413s
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


def _key_patterns_as_property_names(node: Any) -> None:
    """Pydantic states a constrained dict key as `patternProperties`, which lets keys that do
    not match through; as `propertyNames` the schema forbids them, as the API does."""
    if isinstance(node, dict):
        pattern_props = node.get("patternProperties")
        if isinstance(pattern_props, dict) and len(pattern_props) == 1:
            [(pattern, value)] = pattern_props.items()
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
            node["additionalProperties"] = value
            del node["patternProperties"]
        for v in node.values():
            _key_patterns_as_property_names(v)
    elif isinstance(node, list):
        for v in node:
            _key_patterns_as_property_names(v)


def with_offer_ids(spec: dict[str, Any], rt: Runtime | None) -> dict[str, Any]:
    """The OpenAPI document with `candidate_offer_ids` limited to the loaded catalog's ids
    (the catalog is data, reloadable: a copy is patched per call, the cached one is kept)."""
    if rt is None:
        return spec
    out = copy.deepcopy(spec)
    for name in ("RecommendationRequest", "BatchRecommendationRequest"):
        prop = out.get("components", {}).get("schemas", {}).get(name, {})
        field = prop.get("properties", {}).get("candidate_offer_ids", {})
        for branch in field.get("anyOf", [field]):
            if branch.get("type") == "array":
                branch["items"] = {"type": "string", "enum": list(rt.options.offer_ids)}
    return out


def app_from_env() -> FastAPI:
    """Uvicorn factory (`serving.api.app:app_from_env`): JSON logs, settings from env."""
    from serving.model_scorer import mlflow_scorer_loader

    settings = get_serving_settings()
    configure_logging(settings.log_level)
    loader = mlflow_scorer_loader() if settings.model_uri else None
    return create_app(settings, scorer_loader=loader)
