"""Settings of the decision service, read from `WINBACK_*` environment variables.

Nothing is read at import time: call `get_serving_settings()` (cached; tests clear the cache)
or build `ServingSettings(...)` explicitly and hand it to `serving.api.create_app`.

Key lists (`WINBACK_API_KEYS`, `WINBACK_ADMIN_KEYS`) accept either a JSON list or a
comma-separated string. Keys are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_URI = "models:/winback-policy@champion"


def _split_keys(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [k.strip() for k in text.split(",") if k.strip()]
    return value


class ServingSettings(BaseSettings):
    """Where the service finds its store, policy, catalog, snapshot and model; who may call it."""

    model_config = SettingsConfigDict(env_prefix="WINBACK_", extra="ignore")

    database_url: str = "sqlite:///data/winback.db"
    """SQLAlchemy URL of the decision store (PostgreSQL: `postgresql+psycopg://...`)."""

    policy_path: Path = Path("policy.example.yaml")
    """The business policy (journey, caps, margin floor, holdout, exploration)."""

    catalog_path: Path = Path("data/demo/offers.yaml")
    """The offer catalog (`offers.yaml`) the options and display fields come from."""

    snapshot_dir: Path = Path("data/snapshot")
    """Serving snapshot directory written by `winback features materialize` (CURRENT + versions)."""

    model_uri: str = DEFAULT_MODEL_URI
    """MLflow URI of the policy model; empty means rules only."""

    model_backend: Literal["lightgbm", "lleaves"] = "lightgbm"
    """How boosters are evaluated: LightGBM itself (default) or trees compiled with lleaves
    (`pip install 'winback[compiled]'`; identical scores to 1e-9, about 4-5x faster)."""

    compiled_cache_dir: Path | None = Path("mlruns/compiled")
    """Where compiled trees are cached (keyed by the model's text), so a restart reuses them."""

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Client keys accepted on `/v1/*` (header `X-API-Key`)."""

    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Admin keys accepted on `/admin/*`."""

    next_offer_window_seconds: int = Field(900, ge=0)
    """Repeated next-offer calls for one customer and campaign within this window return the
    same decision and count once (template engines fetch HTML and text parts, and retry)."""

    clock_tolerance_seconds: int = Field(300, ge=0, le=86_400)
    """A recorded decision is made, and its caps and consent judged, at the server's clock;
    a caller's `context.timestamp` on one may differ from it by at most this much (else 409).
    Dry runs may ask about any time."""

    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest request body accepted (413 above it)."""

    batch_limit: int = Field(1000, ge=1, le=10_000)
    """Most customers accepted by `POST /v1/recommendations/batch`."""

    reload_state_path: Path = Path("data/winback.reload.json")
    """Where `POST /admin/reload` publishes the wanted model/policy/catalog, so that every
    worker process (not only the one that got the request) picks the change up."""

    refresh_interval_seconds: float = Field(5.0, ge=0)
    """How often each worker checks for a published reload and a new snapshot (0 = never)."""

    wal_checkpoint_interval_seconds: float = Field(0.1, ge=0)
    """SQLite store: how often each worker checkpoints the WAL in a background thread,
    off the request path (`serving.store.checkpoint`); 0 leaves it to SQLite's own
    autocheckpoint, run by whichever request commits when the WAL reaches 1,000 pages.
    Often, so that each checkpoint copies and syncs little: at 1,000 decisions/s the WAL
    grows about 50 MB/s, and a commit stuck behind a long sync holds every worker's write
    gate (0.5 s: p99 25-43 ms at 1,400 req/s; 0.1 s: 22-29 ms, `bench/README.md`).
    Ignored for PostgreSQL."""

    group_linger_ms: float = Field(3.0, ge=0, le=50)
    """How long a group of `POST /v1/recommendations` requests may wait for more requests
    to join it when they arrive faster than one per this many milliseconds (larger groups
    cost less CPU per request; `serving.api.microbatch`). 0: never wait."""

    group_fill: int = Field(8, ge=1, le=64)
    """A lingering group stops waiting once this many requests are queued."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    log_level: str = "info"

    worker_healthcheck_timeout: int = Field(30, ge=1)
    """Seconds uvicorn's supervisor waits for a worker process (with `workers` > 1) to answer
    its health check, from the worker's start on, before it kills and replaces the worker.
    uvicorn's own default of 5 s killed every worker in a loop on a loaded host."""

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return _split_keys(value)


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    """The process-wide serving settings (cached; `cache_clear()` re-reads the environment)."""
    return ServingSettings()
