"""`winback import ...`: turn public datasets into a data directory or a modeling frame."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.output import console, fail, print_validation
from features.errors import FeaturesError

app = typer.Typer()
import_app = typer.Typer(
    help="Import a retailer's transactions, or a public dataset (CDNOW, Hillstrom), into "
    "winback's data forms.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

DEFAULT_MARGIN_RATE = 0.25
"""`features.importers.DEFAULT_MARGIN_RATE`, repeated here so that `--help` need not import
the importers (pandas); tests/cli/test_lazy_imports.py checks that the two agree."""

Out = Annotated[Path, typer.Option("--out", help="output directory (created; must be empty)")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="replace the files a previous import wrote in --out")
]
Partitions = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        min=1,
        max=1000,
        help="split every table by customer into OUT/<table>/part=NNN/ (Parquet), for the "
        "partition-by-partition stages; `import transactions` then streams: one chunk of the "
        "source, then one partition, in memory",
    ),
]


@import_app.command("cdnow")
def cdnow(
    src: Annotated[Path, typer.Argument(help="CDNOW_master.txt (whitespace-separated)")],
    out: Out,
    margin_rate: Annotated[
        float,
        typer.Option(
            "--margin-rate",
            min=0.0,
            max=1.0,
            help="CDNOW has no cost data: margin = revenue x this rate",
        ),
    ] = DEFAULT_MARGIN_RATE,
    fmt: Annotated[str, typer.Option("--format", help="table format: parquet or csv")] = "parquet",
    overwrite: Overwrite = False,
    partitions: Partitions = None,
) -> None:
    """CDNOW purchase log -> a data directory (customers, orders, empty contacts, offers.yaml)."""
    from features.importers import import_cdnow

    try:
        result = import_cdnow(
            src, out, margin_rate=margin_rate, fmt=fmt, overwrite=overwrite, partitions=partitions
        )
    except FeaturesError as exc:
        fail(str(exc))
        return
    console.print(
        f"CDNOW: {result.customers:,} customers, {result.orders:,} orders, revenue "
        f"${result.revenue:,.2f}, {result.first_order.date()} to {result.last_order.date()}",
        highlight=False,
    )
    console.print(
        f"margin: assumed {result.margin_rate:g} x revenue (CDNOW has no cost data; "
        "set --margin-rate)",
        highlight=False,
    )
    console.print("contacts, events, consent: none in the source (written empty)")
    print_validation(result.report)


@import_app.command("hillstrom")
def hillstrom(
    src: Annotated[Path, typer.Argument(help="hillstrom.csv (MineThatData e-mail test)")],
    out: Out,
    overwrite: Overwrite = False,
) -> None:
    """Hillstrom e-mail test -> an offer_response modeling frame plus offers.yaml."""
    from features.importers import import_hillstrom

    try:
        result = import_hillstrom(src, out, overwrite=overwrite)
    except FeaturesError as exc:
        fail(str(exc))
        return
    table = Table(title=f"Hillstrom: {result.rows:,} customers -> {result.frame_path}")
    for col in ("offer_id", "customers", "visit", "conversion", "mean spend"):
        table.add_column(col, justify="left" if col == "offer_id" else "right")
    for offer_id, row in result.arms.iterrows():
        table.add_row(
            str(offer_id),
            f"{int(row['customers']):,}",
            f"{row['visit_rate']:.2%}",
            f"{row['conversion_rate']:.3%}",
            f"${row['mean_spend']:.3f}",
        )
    console.print(table)
    console.print(
        f"ts = {result.spec.notes['ts']}; outcome_margin unknown (NaN); propensity 1/3 per arm",
        highlight=False,
    )


@import_app.command("transactions")
def transactions(
    src: Annotated[
        str, typer.Argument(help="CSV or Parquet file, or a SQLAlchemy URL with --query")
    ],
    out: Out,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="FIELD=COLUMN, repeatable; fields: customer_id, ts, order_id, revenue (or "
            "quantity and unit_price), margin, category, channel, region",
        ),
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option("--mapping", help="YAML: columns: {field: column}, sep, ts_format, ..."),
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", help="SQL query (SRC is then a SQLAlchemy URL)")
    ] = None,
    sep: Annotated[
        str | None, typer.Option("--sep", help="CSV separator (default ','; '\\s+', 'tab', ';')")
    ] = None,
    ts_format: Annotated[
        str | None,
        typer.Option("--ts-format", help="strftime format of ts, e.g. %Y%m%d (default: inferred)"),
    ] = None,
    margin_rate: Annotated[
        float | None,
        typer.Option(
            "--margin-rate",
            min=0.0,
            max=1.0,
            help="without a margin column: margin = revenue x this rate, marked as assumed "
            "(default 0.25)",
        ),
    ] = None,
    cancel_prefix: Annotated[
        str | None,
        typer.Option("--cancel-prefix", help="order ids starting with this are cancellations"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table format: parquet or csv")] = "parquet",
    overwrite: Overwrite = False,
    partitions: Partitions = None,
) -> None:
    """A transaction log (one row per order or order line) -> a data directory."""
    from features.importers.transactions import (
        import_transactions,
        load_mapping_file,
        mapping_from,
        parse_map_options,
    )

    try:
        doc = load_mapping_file(mapping_file) if mapping_file else None
        mapping = mapping_from(
            parse_map_options(maps or []),
            doc,
            sep=sep,
            ts_format=ts_format,
            margin_rate=margin_rate,
            cancel_prefix=cancel_prefix,
        )
        with console.status("importing"):
            r = import_transactions(
                src, out, mapping, query=query, fmt=fmt, overwrite=overwrite, partitions=partitions
            )
    except FeaturesError as exc:
        fail(str(exc))
        return
    console.print(f"read {r.rows_read:,} rows", highlight=False)
    why = {
        "missing_customer_id": "no customer id",
        "bad_timestamp": "timestamp does not parse",
        "bad_amount": "amount does not parse",
        "missing_order_id": "no order id",
    }
    for key, n in r.dropped.items():
        console.print(f"  dropped {n:,} rows: {why[key]}", highlight=False)
    if r.return_lines:
        console.print(
            f"  dropped {r.return_lines:,} return/cancellation lines (value "
            f"{r.return_value:,.2f}): a return is not a purchase",
            highlight=False,
        )
    console.print(
        f"wrote {r.customers:,} customers, {r.orders:,} orders, revenue {r.revenue:,.2f}, "
        f"{r.first_order} to {r.last_order} -> {r.out}",
        highlight=False,
    )
    if r.margin_rate is not None:
        console.print(
            f"[yellow]margin: assumed[/] {r.margin_rate:g} x revenue (no margin column; "
            "recorded in dataset.json, flagged in every report; set --margin-rate)",
            highlight=False,
        )
    console.print("contacts, events, consent: none in the source (written empty)")
    print_validation(r.report)


Into = Annotated[
    Path, typer.Option("--into", help="data directory to add to (its customers must exist)")
]
Maps = Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, repeatable")]
Channel = Annotated[str, typer.Option("--channel", help="channel of every row, unless mapped")]
Sep = Annotated[str, typer.Option("--sep", help="CSV separator")]
Query = Annotated[
    str | None, typer.Option("--query", help="SQL query (SRC is then a SQLAlchemy URL)")
]
TsFormat = Annotated[str | None, typer.Option("--ts-format", help="strftime format of ts")]


def _print_esp(result: object, what: str) -> None:
    rows = getattr(result, "rows_read", 0)
    console.print(f"read {rows:,} {what} rows", highlight=False)
    for key, n in getattr(result, "dropped", {}).items():
        console.print(f"  dropped {n:,} rows: {key.replace('_', ' ')}", highlight=False)
    for table, n in getattr(result, "added", {}).items():
        console.print(f"  added {n:,} rows to {table}", highlight=False)
    print_validation(result.report)  # type: ignore[attr-defined]


@import_app.command("consent")
def consent(
    src: Annotated[str, typer.Argument(help="consent list: CSV, Parquet, or a URL with --query")],
    into: Into,
    maps: Maps = None,
    channel: Channel = "email",
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="when the list was exported, without a ts")
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="WORD=opted_in|opted_out, repeatable (beside the usual)"),
    ] = None,
    sep: Sep = ",",
    ts_format: TsFormat = None,
    query: Query = None,
) -> None:
    """An ESP's consent list (customer_id, status[, ts, channel]) -> the consent table."""
    from features.importers.esp import import_consent
    from features.importers.transactions import parse_map_options

    try:
        result = import_consent(
            src,
            into,
            parse_map_options(maps or []),
            channel=channel,
            as_of=as_of,
            status_words=parse_map_options(status or []),
            sep=sep,
            ts_format=ts_format,
            query=query,
        )
    except FeaturesError as exc:
        fail(str(exc))
        return
    _print_esp(result, "consent")


@import_app.command("esp-events")
def esp_events(
    src: Annotated[str, typer.Argument(help="event log: CSV, Parquet, or a URL with --query")],
    into: Into,
    maps: Maps = None,
    channel: Channel = "email",
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="WORD=send|open|click|delivery_issue|unsubscribe|complaint"),
    ] = None,
    sep: Sep = ",",
    ts_format: TsFormat = None,
    query: Query = None,
) -> None:
    """An ESP's sends/opens/clicks/bounces/unsubscribes -> contacts, events and consent."""
    from features.importers.esp import import_esp_events
    from features.importers.transactions import parse_map_options

    try:
        result = import_esp_events(
            src,
            into,
            parse_map_options(maps or []),
            channel=channel,
            event_words=parse_map_options(event or []),
            sep=sep,
            ts_format=ts_format,
            query=query,
        )
    except FeaturesError as exc:
        fail(str(exc))
        return
    _print_esp(result, "event")
