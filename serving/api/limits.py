"""Request body size limit, as a pure ASGI middleware (before any JSON is parsed).

A declared `Content-Length` over the limit is answered 413 at once; a body sent without one
(chunked) is counted as it arrives and cut off with a 413 when it passes the limit, so no
request can make a worker buffer more than `max_body_bytes`.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(Exception):
    """Raised inside `receive` when a streamed body passes the limit."""


def _too_large_body(limit: int) -> bytes:
    message = f"body: at most {limit:,} bytes per request"
    return json.dumps(
        {"error": {"code": "too_large", "message": message, "field": "body"}}
    ).encode()


async def _send_413(send: Send, limit: int) -> None:
    body = _too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with the API's 413 error body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _send_413(send, self.max_bytes)
                    return
        seen = 0
        started = False
        cut = False  # the 413 was sent: whatever the app answers after it is dropped

        async def limited_receive() -> Message:
            nonlocal seen, cut, started
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answered here: FastAPI turns any error raised while it reads a body
                    # into its own 400 ("There was an error parsing the body").
                    if not started and not cut:
                        await _send_413(send, self.max_bytes)
                    cut = started = True
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if cut:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_413(send, self.max_bytes)
