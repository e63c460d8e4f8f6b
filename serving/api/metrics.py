"""Prometheus metrics of the API: request latency, decisions by action/offer/reason, events.

Each app gets its own `CollectorRegistry` (so tests can build many apps in one process).
With several uvicorn workers each process counts for itself; scrape each worker, or run
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`).

`LatencyMiddleware` is a plain ASGI middleware (no `BaseHTTPMiddleware` overhead) that
observes every request's duration under its route template, so `/v1/customers/{customer_id}/
next-offer` is one series, not one per customer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2)


class Metrics:
    """The collectors of one app."""

    def __init__(self) -> None:
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
        self.degraded = Gauge(
            "winback_degraded",
            "1 while the service decides without a model (rules only) or without a snapshot",
            registry=self.registry,
        )

    def count_decision(self, action: str, offer_id: str | None, reasons: Iterable[str]) -> None:
        reason = next(iter(reasons), "") or "-"
        self.decisions.labels(action, offer_id or "-", reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
            route = _route_of(scope)
            self.metrics.latency.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - start
            )


def _route_of(scope: Scope) -> str:
    matched = scope.get("route")  # set by the router once it has matched
    if matched is not None and hasattr(matched, "path"):
        return str(matched.path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unknown"))
    return "unmatched"
