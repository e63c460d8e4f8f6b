"""`DecisionAPI`: the FastAPI app, with the plain decision request answered in front of it.

An email service provider calls `POST /v1/recommendations` at send time, thousands of times a
second. Through FastAPI's whole stack (its error and telemetry middlewares, the API's body
limit and latency middlewares, the exception middleware, the exit-stack middleware, the
router's matching over every route, the route's request wrapper) that request cost about
as much CPU as the decision's engine call: a constant-JSON endpoint answers about 2.5x
faster as a bare ASGI app than as a FastAPI route on these machines (`bench/README.md`,
session s33).

So `DecisionAPI.__call__` answers the plain case of that one request itself and hands
everything else to FastAPI unchanged. The plain case, checked before anything is done:

- an HTTP `POST` to exactly `/v1/recommendations`, no root path, no `dependency_overrides`
  (tests that swap dependencies get FastAPI's path);
- the declared content type is exactly `application/json`, and the body, read whole, stays
  within `max_body_bytes` (a declared Content-Length over it is not read here at all);
- the body parses with `json.loads` and validates against `RecommendationRequest` with
  `model_validate` (what FastAPI's body field does: the same model instance comes out);
- the runtime is loaded and `X-API-Key` (its first value, as FastAPI's `APIKeyHeader`) is a
  client key (`deps.require_client`).

Then the route's own endpoint (`routes.recommendations.recommend`) decides and answers.
When any check fails, nothing has been decided and FastAPI's stack gets the request with
its body replayed, so every error answer (422, 401, 403, 413, 503) is exactly FastAPI's
and the API's handlers' as before.

What the stack would still have done for a plain request is done here the same way:

- the latency histogram (`LatencyMiddleware`) gets the request under its route template,
  method and status;
- an exception from the endpoint is answered by the app's exception handler for its
  class (as Starlette's `ExceptionMiddleware` looks it up, by the class's MRO); one with no
  handler gets the app's 500 handler and is raised again for the server to log, as
  Starlette's `ServerErrorMiddleware` does.

The route stays registered in FastAPI, with its OpenAPI operation and response model.
"""

from __future__ import annotations

import inspect
import json
import time
from collections import deque
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from serving.api.deps import require_client
from serving.api.errors import ApiError
from serving.api.routes.recommendations import PATH, recommend
from serving.api.runtime import Runtime
from serving.api.schemas import RecommendationRequest


class DecisionAPI(FastAPI):
    """FastAPI, with `POST /v1/recommendations` answered in front of its stack when the
    request is the plain case (module docstring).

    Attributes:
        max_body_bytes: the body limit (`ServingSettings.max_body_bytes`); a longer body
            goes to the stack, whose `BodyLimitMiddleware` answers 413.
    """

    max_body_bytes: int = 1 << 20

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.root_path
            and not self.dependency_overrides
        ):
            await self._front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _front(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        content_type: bytes | None = None
        key: bytes | None = None
        declared = 0
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = content_type if content_type is not None else value
            elif name == b"x-api-key":
                key = key if key is not None else value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        if content_type != b"application/json" or declared > self.max_body_bytes:
            await super().__call__(scope, receive, send)
            return
        read: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":  # the client went away
                await super().__call__(scope, _replay(read, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # the stack's body limit answers 413
                await super().__call__(scope, _replay(read, receive), send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        rt: Runtime | None = getattr(self.state, "runtime", None)
        body = _plain_body(b"".join(chunks))
        if rt is None or body is None or not await _is_client(rt, key):
            await super().__call__(scope, _replay(read, receive), send)
            return
        scope["app"] = self  # as Starlette's `__call__`: handlers read `request.app`
        status = 500
        try:
            try:
                response = await recommend(body=body, rt=rt)
            except Exception as exc:  # answered as the stack's middlewares answer it
                response, unhandled = await self._error_response(scope, receive, exc)
                status = response.status_code
                await response(scope, receive, send)
                if unhandled:
                    raise
                return
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self.state.metrics.observe_latency(
                PATH, "POST", str(status), time.perf_counter() - start
            )

    async def _error_response(
        self, scope: Scope, receive: Receive, exc: Exception
    ) -> tuple[Response, bool]:
        """The app's answer to `exc`, and whether no handler took it (then it is raised
        again after the 500, as Starlette's `ServerErrorMiddleware` does)."""
        request = Request(scope, receive)
        handler = _handler_for(self.exception_handlers, exc)
        if handler is not None:
            return await _call(handler, request, exc), False
        fallback = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        if fallback is None:
            return PlainTextResponse("Internal Server Error", status_code=500), True
        return await _call(fallback, request, exc), True


def _plain_body(raw: bytes) -> RecommendationRequest | None:
    """The validated body, or None (the stack answers with FastAPI's validation error)."""
    try:
        return RecommendationRequest.model_validate(json.loads(raw))
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        return None


async def _is_client(rt: Runtime, key: bytes | None) -> bool:
    """Whether `key` is a client key (else the stack answers 401 or 403)."""
    if key is None:
        return False
    try:
        await require_client(rt, key.decode("latin-1"))  # as Starlette decodes headers
    except ApiError:
        return False
    return True


def _replay(read: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives back the messages already read, then reads on."""
    pending = deque(read)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The handler Starlette's `ExceptionMiddleware` would pick: by status code for an
    `HTTPException`, else by the exception's class along its MRO (500 and `Exception`
    belong to `ServerErrorMiddleware`, not to it)."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


async def _call(handler: Any, request: Request, exc: Exception) -> Response:
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    return response
