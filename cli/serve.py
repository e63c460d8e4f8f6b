"""`winback serve`: the decision API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from cli.output import console, fail
from features.errors import FeaturesError
from features.offers import format_pydantic_error, load_catalog
from serving.errors import ServingError
from serving.policy import load_policy
from serving.settings import ServingSettings, get_serving_settings

app = typer.Typer(no_args_is_help=True)


def _settings() -> ServingSettings:
    try:
        return get_serving_settings()
    except ValidationError as exc:
        fail(format_pydantic_error("WINBACK_*", exc))
        raise


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [WINBACK_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [WINBACK_PORT]")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes [WINBACK_WORKERS]")
    ] = None,
) -> None:
    """Start the recommendation API (settings from WINBACK_* variables)."""
    import uvicorn

    settings = _settings()
    try:  # fail here with a clear message rather than in every worker's start-up
        policy = load_policy(settings.policy_path)
        catalog = load_catalog(settings.catalog_path)
    except (ServingError, FeaturesError) as exc:
        fail(str(exc))
        return
    if not settings.api_keys:
        console.print("[yellow]warning:[/] no WINBACK_API_KEYS set: every /v1 call gets 401")
    console.print(
        f"policy {policy.version}, catalog {catalog.version}, store {settings.database_url}, "
        f"model {settings.model_uri or '(none: rules only)'}",
        highlight=False,
    )
    uvicorn.run(
        "serving.api.app:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level=settings.log_level,
        access_log=False,
    )
