"""One error shape for the whole API: `{"error": {"code", "message", "field"}}`.

`ApiError` is what routes raise for HTTP-level problems (401, 403, 404, 413, ...). Errors of
the `serving` and `features` trees are mapped to a status by their class; FastAPI's validation
errors name the offending field (`body.context.timestamp` becomes `context.timestamp`).
Anything unexpected becomes a 500 with code `internal_error`, logged with its traceback but
never echoed to the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.errors import FeaturesError
from serving.engine.errors import EngineInputError
from serving.errors import (
    ModelUnavailableError,
    PolicyError,
    ServingError,
    StoreError,
    StoreUnavailableError,
)

log = logging.getLogger("winback.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "validation_error",
    503: "unavailable",
}
_FIELD_PREFIX = re.compile(r"^(?:Value error, )?([A-Za-z_][\w.\[\]]*): (.*)$", re.S)


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message naming the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _respond(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "X-API-Key"
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


STORE_UNAVAILABLE_MESSAGE = "the decision store is unavailable; nothing was recorded, retry shortly"


def _loc_to_field(loc: tuple[Any, ...]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_payload(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, field) of the first validation problem, plus a count of the others."""
    errors = list(exc.errors())
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":  # loc is ("body", <character offset>)
        loc = tuple(first.get("loc", ()))
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        why = (first.get("ctx") or {}).get("error", "")
        detail = f" ({why})" if why else ""
        return f"body: not valid JSON{at}{detail}", "body"
    field = _loc_to_field(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    m = _FIELD_PREFIX.match(msg)
    if m:  # a model-level check that names its field in the message
        inner, msg = m.group(1), m.group(2)
        if field and (inner == field or inner.startswith((f"{field}.", f"{field}["))):
            field = inner  # the check already names the full path
        else:
            field = f"{field}.{inner}" if field else inner
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    text = f"{field}: {msg}" if field else msg
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem(s))"
    return text, field


def _status_of(exc: Exception) -> int:
    if isinstance(exc, ModelUnavailableError | StoreUnavailableError):
        return 503
    if isinstance(exc, PolicyError | EngineInputError | FeaturesError):
        return 422
    if isinstance(exc, StoreError):
        return 503
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return _respond(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = validation_payload(exc)
        return _respond(422, "validation_error", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        # keep the exception's headers: a 405 must say what is allowed (`Allow`)
        return _respond(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ServingError)
    async def _serving(request: Request, exc: ServingError) -> JSONResponse:
        if isinstance(exc, StoreError):
            # The driver's message can carry SQL, parameters, host, port and database
            # names: it goes to the log, the caller gets the code and a fixed message.
            log.error("store error on %s %s: %s", request.method, request.url.path, exc)
            return _respond(503, "store_unavailable", STORE_UNAVAILABLE_MESSAGE)
        return _respond(_status_of(exc), exc.code, str(exc))

    @app.exception_handler(FeaturesError)
    async def _features(_: Request, exc: FeaturesError) -> JSONResponse:
        status = 503 if exc.code == "snapshot" else 422
        return _respond(status, exc.code, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(500, "internal_error", "internal error; see the service log")
