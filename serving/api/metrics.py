"""Prometheus metrics of the API: request latency, decisions by action/offer/reason, events,
and the decision groups (size, time in the decision thread, time waited for company,
fallbacks to deciding alone).

Two modes, chosen by the environment when a `Metrics` is built:

- without `PROMETHEUS_MULTIPROC_DIR` each app gets its own `CollectorRegistry` (so tests can
  build many apps in one process) and `/metrics` shows that app's counts;
- with it (set by `winback serve` to a fresh directory before uvicorn starts its workers),
  every worker writes its samples to files in that directory and `/metrics` merges the files
  of all workers: counters and histograms are summed, the `winback_degraded` gauge is the
  maximum over the live workers (`livemax`).

The variable must be set before prometheus_client is imported (it picks its value class at
import), which is why `winback serve` sets it before uvicorn imports the app.

`LatencyMiddleware` is a plain ASGI middleware (no `BaseHTTPMiddleware` overhead) that
observes every request's duration under its route template, so `/v1/customers/{customer_id}/
next-offer` is one series, not one per customer.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")
_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2)
_GROUP_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_LINGER_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05)


class Metrics:
    """The collectors of one app, and the exposition of all workers' metrics.

    Attributes:
        registry: the registry the collectors are registered in.
        multiprocess_dir: the directory shared by the workers (`PROMETHEUS_MULTIPROC_DIR`
            when the app was built), or None: this app's registry alone is exposed.

    Raises:
        RuntimeError: `PROMETHEUS_MULTIPROC_DIR` is set but prometheus_client was imported
            before it was (its value class is chosen at import), so this process would
            count in memory where no scrape sees it.
    """

    def __init__(self) -> None:
        path = os.environ.get(MULTIPROC_ENV) or None
        if path is not None and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"{MULTIPROC_ENV}={path} was set after prometheus_client was imported; "
                "set it before the process starts"
            )
        self.multiprocess_dir = path
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "winback_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ("route", "method", "status"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "winback_decisions_total",
            "Decisions by action, offer and main reason (dry runs included)",
            ("action", "offer", "reason"),
            registry=self.registry,
        )
        self.events = Counter(
            "winback_events_total",
            "Events received, by type and whether the event id was a duplicate",
            ("type", "duplicate"),
            registry=self.registry,
        )
        self.group_size = Histogram(
            "winback_decision_group_size",
            "Requests per group decided together (one engine call, one store transaction)",
            buckets=_GROUP_SIZES,
            registry=self.registry,
        )
        self.group_seconds = Histogram(
            "winback_decision_group_seconds",
            "Time a group takes in the worker's decision thread: engine, live-state read and "
            "the store's one transaction",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.group_linger = Histogram(
            "winback_decision_group_linger_seconds",
            "Time a group waited for more requests to join it before it was decided (only "
            "groups that waited; WINBACK_GROUP_LINGER_MS)",
            buckets=_LINGER_BUCKETS,
            registry=self.registry,
        )
        self.group_fallbacks = Counter(
            "winback_decision_group_fallbacks_total",
            "Groups whose transaction failed, so that each request was decided alone",
            registry=self.registry,
        )
        self.degraded = Gauge(
            "winback_degraded",
            "1 while the service decides without a model (rules only) or without a snapshot",
            registry=self.registry,
            multiprocess_mode="livemax",  # 1 while any live worker is degraded
        )
        self._degraded: bool | None = None
        # Labelled children by label values: `labels()` validates and locks on every call
        # (about 2% of a decision's CPU); the children themselves are what it returns.
        self._latency_of: dict[tuple[str, str, str], Histogram] = {}
        self._decisions_of: dict[tuple[str, str, str], Counter] = {}
        self._exposed = self.registry
        if path is not None:
            # The collectors above write to files; this registry reads every worker's files.
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed, path=path)

    def set_degraded(self, degraded: bool) -> None:
        """Set the degraded gauge (written only when it changes: it is set per request)."""
        if degraded is not self._degraded:
            self.degraded.set(1 if degraded else 0)
            self._degraded = degraded

    def count_decision(self, action: str, offer_id: str | None, reasons: Iterable[str]) -> None:
        key = (action, offer_id or "-", next(iter(reasons), "") or "-")
        child = self._decisions_of.get(key)
        if child is None:
            child = self._decisions_of.setdefault(key, self.decisions.labels(*key))
        child.inc()

    def observe_group(self, size: int, seconds: float) -> None:
        """One group decided together: its requests and its time in the decision thread."""
        self.group_size.observe(size)
        self.group_seconds.observe(seconds)

    def observe_latency(self, route: str, method: str, status: str, seconds: float) -> None:
        """One request's latency under its route template, method and status."""
        key = (route, method, status)
        child = self._latency_of.get(key)
        if child is None:
            child = self._latency_of.setdefault(key, self.latency.labels(*key))
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition: this app's, or all workers' merged."""
        if self.multiprocess_dir is not None:
            forget_dead_workers(self.multiprocess_dir)
        return generate_latest(self._exposed)


def forget_dead_workers(path: str) -> list[int]:
    """Drop the live-gauge files of workers that are gone; returns their pids.

    uvicorn restarts a crashed worker without telling the app, so instead of a shutdown hook
    each scrape checks the pids behind the `gauge_live*` files. Counter and histogram files of
    dead workers stay: their counts are part of the server's totals.
    """
    dead = set()
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence and permission check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LatencyMiddleware:
    """Observe each HTTP request's latency under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.observe_latency(
                _route_of(scope), scope["method"], str(status), time.perf_counter() - start
            )


def _route_of(scope: Scope) -> str:
    matched = scope.get("route")  # set by the router once it has matched
    if matched is not None and hasattr(matched, "path"):
        return str(matched.path)
    # answered before the router ran (a 413 of the body limit): match it as the router would,
    # through the included routers (`iter_route_contexts` gives each route its full path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in iter_route_contexts(getattr(router, "routes", ())):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path or "unknown")
    return "unmatched"
