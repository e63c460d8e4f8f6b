"""`DecisionRoute`: FastAPI's route, with a short path for the common decision request.

FastAPI's request handler is general: it parses the content type with `email.message`, solves
a dependency graph (the API-key `Security` scheme, the runtime), validates the body through a
`ModelField` wrapper, tracks endpoint contexts and telemetry. For `POST /v1/recommendations`
that machinery cost as much CPU as the decision's store transaction (`bench/bench_api.py
--profile api`). This route class keeps FastAPI's handler and puts a short path in front of
it, taken only when the request is the plain case:

- the declared content type is exactly `application/json`;
- the body parses with `json.loads` (what FastAPI's `Request.json` uses) and validates
  against the endpoint's body model with `model_validate` (what FastAPI's body field does
  in Python mode; the same model instance comes out);
- the app has no `dependency_overrides` (tests that swap dependencies take FastAPI's path).

Then it checks the API key with the same dependency function (`deps.client_runtime`, fed the
`X-API-Key` header as FastAPI's `APIKeyHeader(auto_error=False)` would: the value, or None)
and calls the endpoint. Anything else (another or a missing content type, bad JSON, a body
that fails validation) goes to FastAPI's own handler on the same `Request`, whose body is
cached, so every error answer is FastAPI's (and the API's handlers') exactly as before. The
route, its OpenAPI operation and its response model are FastAPI's unchanged.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from serving.api.deps import client_runtime

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _body_model(endpoint: Callable[..., Any]) -> type[BaseModel]:
    hints = get_type_hints(endpoint, include_extras=False)
    params = list(inspect.signature(endpoint).parameters)
    if params != ["body", "rt"] or not issubclass(hints["body"], BaseModel):
        raise TypeError(
            f"DecisionRoute: {endpoint.__name__} must take (body: <model>, rt: ClientRuntime)"
        )
    return hints["body"]


class DecisionRoute(APIRoute):
    """An `APIRoute` for endpoints `async def f(body: Model, rt: ClientRuntime) -> Response`
    with a short path for plain JSON requests (see the module docstring)."""

    def get_route_handler(self) -> Handler:
        slow = super().get_route_handler()
        model = _body_model(self.endpoint)
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            if request.app.dependency_overrides:
                return await slow(request)
            headers = request.headers
            if headers.get("content-type") != "application/json":
                return await slow(request)
            raw = await request.body()
            try:
                body = model.model_validate(json.loads(raw))
            except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
                return await slow(request)
            rt = await client_runtime(request, headers.get("x-api-key") or None)
            response = await endpoint(body=body, rt=rt)
            if not isinstance(response, Response):
                raise TypeError(f"DecisionRoute: {endpoint.__name__} must return a Response")
            return response

        return handler
