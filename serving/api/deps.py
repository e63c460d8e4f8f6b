"""FastAPI dependencies as `Annotated` aliases: the loaded runtime and the API-key scopes.

The dependencies are `async def` although they never wait: FastAPI runs a plain `def`
dependency in its thread pool, and that hand-off cost more than the check itself.

Keys come from settings and are compared with `hmac.compare_digest` against every configured
key (no early exit on the first match, so timing does not reveal which list matched).
A missing or unknown key is 401; a valid key of the other scope is 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from serving.api.errors import ApiError
from serving.api.runtime import Runtime

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_runtime(request: Request) -> Runtime:
    """The runtime the lifespan loaded (or a reload swapped in)."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None:
        raise ApiError(503, "not_ready", "the service is starting; retry shortly")
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _matches(key: str, keys: list[str]) -> bool:
    found = False
    for k in keys:
        found |= hmac.compare_digest(key.encode(), k.encode())
    return found


def _scope_of(rt: Runtime, key: str | None) -> str:
    if not key:
        raise ApiError(401, "missing_api_key", "X-API-Key: header is required", "X-API-Key")
    s = rt.settings
    if _matches(key, [k.get_secret_value() for k in s.admin_keys]):
        return "admin"
    if _matches(key, [k.get_secret_value() for k in s.api_keys]):
        return "client"
    raise ApiError(401, "invalid_api_key", "X-API-Key: key is not valid", "X-API-Key")


async def require_client(
    rt: RuntimeDep, key: Annotated[str | None, Security(_api_key_header)]
) -> str:
    """A client key (for `/v1/*`)."""
    if _scope_of(rt, key) != "client":
        raise ApiError(
            403, "wrong_scope", "X-API-Key: this endpoint needs a client key", "X-API-Key"
        )
    return "client"


async def require_admin(
    rt: RuntimeDep, key: Annotated[str | None, Security(_api_key_header)]
) -> str:
    """An admin key (for `/admin/*`)."""
    if _scope_of(rt, key) != "admin":
        raise ApiError(
            403, "wrong_scope", "X-API-Key: this endpoint needs an admin key", "X-API-Key"
        )
    return "admin"


async def client_runtime(
    request: Request, key: Annotated[str | None, Security(_api_key_header)]
) -> Runtime:
    """The runtime, for a request with a client key: `require_client` and `get_runtime` in
    one dependency, for the decision endpoints (each level of dependencies costs time)."""
    rt = await get_runtime(request)
    await require_client(rt, key)
    return rt


ClientKey = Annotated[str, Depends(require_client)]
ClientRuntime = Annotated[Runtime, Depends(client_runtime)]
AdminKey = Annotated[str, Depends(require_admin)]
