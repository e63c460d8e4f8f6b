"""`winback export-log`: the store's decision log and events as a data directory to train on."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.output import console, fail, print_validation
from features.errors import FeaturesError
from serving.errors import ServingError

app = typer.Typer(no_args_is_help=True)


@app.command("export-log")
def export_log_command(
    out: Annotated[Path, typer.Option("--out", help="data directory to write")],
    base: Annotated[
        Path | None,
        typer.Option(help="data directory whose customers, orders and history are kept"),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="offers.yaml; default: the one in --base, else the configured catalog "
            "(WINBACK_CATALOG_PATH)"
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="store URL; default WINBACK_DATABASE_URL")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="first decision/event time included (UTC)")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="decisions/events before this time (UTC)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
) -> None:
    """Export decisions (with their logged propensities), contacts, orders and events so that
    `winback train OUT` learns from what the service decided."""
    from serving.learning import export_log
    from serving.settings import get_serving_settings
    from serving.store import Store

    if fmt not in ("parquet", "csv"):
        fail(f"format: must be 'parquet' or 'csv', got {fmt!r}")
    settings = get_serving_settings()
    url = database_url or settings.database_url
    if base is None and catalog is None:
        # the catalog the API and `winback score` use
        catalog = settings.catalog_path
        console.print(
            f"catalog: {catalog} (WINBACK_CATALOG_PATH; --base or --catalog to choose another)",
            highlight=False,
            soft_wrap=True,
        )
    try:
        store = Store.from_url(url)
        try:
            counts = export_log(store, out, base, catalog, since, until, fmt)
        finally:
            store.dispose()
    except (ServingError, FeaturesError) as exc:
        fail(str(exc))
        return
    console.print(
        f"[green]wrote[/] {out}: {counts.contacts:,} contacts, {counts.holdouts:,} holdouts, "
        f"{counts.orders:,} orders, {counts.events:,} events from the log",
        highlight=False,
        soft_wrap=True,
    )
    if counts.dropped_events:
        left = ", ".join(f"{k}={v:,}" for k, v in sorted(counts.dropped_events.items()))
        console.print(f"events left out: {left}", highlight=False, soft_wrap=True)
    if counts.report is not None and not counts.report.ok:
        print_validation(counts.report)
        raise typer.Exit(1)
