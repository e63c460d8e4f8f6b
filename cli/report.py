"""`winback report`: what the win-back contacts earned against the holdout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.output import console, fail
from serving.errors import ServingError

app = typer.Typer(no_args_is_help=True)
_SUFFIX_FORMATS = {".json": "json", ".csv": "csv"}


@app.command()
def report(
    out: Annotated[Path | None, typer.Option("--out", help="file to write (report.html)")] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="also write the summary as JSON here (headline keys "
            "incremental_margin_per_contact and incremental_conversion)",
        ),
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="first decision time included (UTC)")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="decisions before this time (UTC, exclusive)")
    ] = None,
    campaign: Annotated[str | None, typer.Option(help="only this campaign id")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="store URL; default WINBACK_DATABASE_URL")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="html, json or csv; default from --out, else html"),
    ] = None,
    window_days: Annotated[int, typer.Option(help="days an outcome is attributed")] = 30,
    min_group: Annotated[
        int, typer.Option(help="contacts and holdouts a group needs before concluding")
    ] = 100,
    bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="bootstrap intervals instead of normal")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
) -> None:
    """Report contacts, conversions, margin and incremental lift against the holdout."""
    from serving.reporting import FORMATS, ReportOptions, render, report_summary
    from serving.settings import get_serving_settings
    from serving.store import Store

    if out is None and json_out is None:
        fail("--out or --json: give at least one file to write")
        return
    chosen = fmt or (_SUFFIX_FORMATS.get(out.suffix.lower(), "html") if out else "json")
    if chosen not in FORMATS:
        fail(f"format: must be one of {', '.join(FORMATS)}, got {chosen!r}")
    url = database_url or get_serving_settings().database_url
    try:
        opts = ReportOptions(
            window_days=window_days,
            min_group=min_group,
            method="bootstrap" if bootstrap else "normal",
            seed=seed,
        )
        store = Store.from_url(url)
        try:
            summary = report_summary(store, since, until, campaign, opts)
        finally:
            store.dispose()
        files = [(out, chosen, render(summary, chosen))] if out is not None else []
        if json_out is not None:
            files.append((json_out, "json", render(summary, "json")))
    except ServingError as exc:
        fail(str(exc))
        return
    t = summary["totals"]
    for path, kind, text in files:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"out: cannot write {path}: {exc.strerror}")
        console.print(
            f"[green]wrote[/] {path} ({kind}): {t['contacts']:,} contacts, "
            f"{t['holdouts']:,} holdouts in the control",
            highlight=False,
        )
    console.print(f"compared: {summary['comparison']}", highlight=False, soft_wrap=True)
    console.print(summary["overall"]["statement"], highlight=False, soft_wrap=True)
