"""Keeping every worker process on the same model, policy, catalog and snapshot.

`POST /admin/reload` reaches one uvicorn worker. That worker reloads at once and publishes
the wanted sources with a new generation number to a small JSON file
(`settings.reload_state_path`, replaced atomically); every worker polls it (and the snapshot's
CURRENT pointer) every `refresh_interval_seconds` and applies what is new. A reload that fails
in a worker (a file it cannot read, a model it cannot load) is logged and retried at the next
generation, and the worker keeps serving with what it has. The snapshot is retried on every
poll (and only then: requests never read the disk for it); a failure is logged once per
distinct error, and `/readyz` reports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from features.errors import FeaturesError
from serving.api.heap import settle_heap
from serving.api.runtime import Runtime, reloaded
from serving.errors import ServingError

log = logging.getLogger("winback.api")


@dataclass(frozen=True)
class ReloadTarget:
    """The sources every worker should serve from, and a generation that orders requests."""

    generation: int
    model_uri: str
    policy_path: str
    catalog_path: str


def read_target(path: Path) -> ReloadTarget | None:
    """The published target, or None when nothing was published or the file is unreadable."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return ReloadTarget(
            int(raw["generation"]),
            str(raw["model_uri"]),
            str(raw["policy_path"]),
            str(raw["catalog_path"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def publish(rt: Runtime) -> ReloadTarget:
    """Write the runtime's sources as the next generation (atomic replace)."""
    path = Path(rt.settings.reload_state_path)
    previous = read_target(path)
    target = ReloadTarget(
        generation=max(previous.generation if previous else 0, time.time_ns()),
        model_uri=rt.model_uri,
        policy_path=str(rt.settings.policy_path),
        catalog_path=str(rt.settings.catalog_path),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(target)), encoding="utf-8")
    os.replace(tmp, path)
    return target


def apply_pending(app: FastAPI) -> bool:
    """Apply a newer published target and a newer snapshot; True if anything changed."""
    rt: Runtime | None = app.state.runtime
    if rt is None:
        return False
    changed = False
    target = read_target(Path(rt.settings.reload_state_path))
    if target is not None and target.generation > app.state.generation:
        app.state.generation = target.generation
        try:
            rt, _ = reloaded(
                rt,
                model_uri=target.model_uri,
                policy_path=target.policy_path,
                catalog_path=target.catalog_path,
                refresh_snapshot=False,
            )
            app.state.runtime = rt
            changed = True
            log.info("applied published reload", extra={"generation": target.generation})
        except (ServingError, FeaturesError) as exc:
            log.error("published reload %s failed here: %s", target.generation, exc)
    try:
        swapped = rt.snapshots.refresh()
        changed |= swapped
        if swapped:
            log.info("snapshot loaded", extra={"snapshot_version": rt.snapshots.current().version})
        app.state.snapshot_error = None
    except FeaturesError as exc:
        if str(exc) != getattr(app.state, "snapshot_error", None):
            log.warning("snapshot refresh failed, keeping the current one: %s", exc)
        app.state.snapshot_error = str(exc)
    if changed:
        settle_heap()  # the new runtime or snapshot out of the collector's full passes
    return changed


async def watch(app: FastAPI, interval: float) -> None:
    """Poll for published reloads and new snapshots until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(apply_pending, app)
        except Exception:  # the watcher must outlive any single failure
            log.exception("reload watcher failed; retrying")
