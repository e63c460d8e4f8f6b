"""`winback serve`: the decision API under uvicorn."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from cli.output import console, fail
from features.errors import FeaturesError
from serving.errors import ServingError

if TYPE_CHECKING:
    from serving.settings import ServingSettings

app = typer.Typer(no_args_is_help=True)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def metrics_dir() -> Iterator[Path]:
    """A fresh private directory exported as `PROMETHEUS_MULTIPROC_DIR` inside the block.

    The workers uvicorn starts inside the block (spawned: they inherit the environment and
    import prometheus_client afresh; with one worker the app is imported here, after the
    variable is set) write their metrics there, and `/metrics` merges them all
    (`serving.api.metrics`). A new directory per server keeps an earlier server's counts out.
    On exit the variable is restored and the directory removed. prometheus_client must not
    be imported in this process before the block: it picks its value class at import.
    """
    path = Path(tempfile.mkdtemp(prefix="winback-metrics-"))  # empty, mode 0700
    previous = os.environ.get(METRICS_DIR_ENV)
    os.environ[METRICS_DIR_ENV] = str(path)
    # SIGTERM's default action ends the process without unwinding; uvicorn re-raises the
    # signal after its graceful shutdown (one worker), so turn it into SystemExit here.
    on_term = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield path
    finally:
        if on_term is not None:  # None: a handler installed outside Python, left as it is
            signal.signal(signal.SIGTERM, on_term)
        if previous is None:
            os.environ.pop(METRICS_DIR_ENV, None)
        else:
            os.environ[METRICS_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _settings() -> ServingSettings:
    from pydantic import ValidationError

    from features.offers import format_pydantic_error
    from serving.settings import get_serving_settings

    try:
        return get_serving_settings()
    except ValidationError as exc:
        fail(format_pydantic_error("WINBACK_*", exc))
        raise


def _create_tracking_store_once() -> None:
    """A new SQLite MLflow store is created here, before the workers start: workers that
    each create its tables at the same moment fail MLflow's own migration ("Online migration
    expected to match one row") and start rules only for a reason that is not the model's."""
    from features.settings import get_settings

    uri = get_settings().resolved_tracking_uri()
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.tracking import MlflowClient

    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [WINBACK_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [WINBACK_PORT]")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes [WINBACK_WORKERS]")
    ] = None,
) -> None:
    """Start the recommendation API (settings from WINBACK_* variables)."""
    from features.offers import load_catalog
    from serving.policy import load_policy
    from serving.store import upgrade_database
    from serving.supervisor import run_server

    settings = _settings()
    try:  # fail here with a clear message rather than in every worker's start-up
        policy = load_policy(settings.policy_path)
        catalog = load_catalog(settings.catalog_path)
        # migrate once here: the workers then find the schema at head (and a new SQLite file
        # already in WAL mode) instead of all creating it at the same moment
        upgrade_database(settings.database_url)
    except (ServingError, FeaturesError) as exc:
        fail(str(exc))
        return
    if settings.model_uri:
        _create_tracking_store_once()
    if not settings.api_keys:
        console.print("[yellow]warning:[/] no WINBACK_API_KEYS set: every /v1 call gets 401")
    console.print(
        f"policy {policy.version}, catalog {catalog.version}, store {settings.database_url}, "
        f"model {settings.model_uri or '(none: rules only)'}",
        highlight=False,
    )
    with metrics_dir():
        run_server(settings, host=host, port=port, workers=workers)
