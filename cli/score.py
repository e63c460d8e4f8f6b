"""`winback score`: decide for a whole customer base, write the file the e-mail platform takes."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.output import console, fail
from features.errors import FeaturesError
from serving.errors import ServingError

if TYPE_CHECKING:
    from features.snapshot import PartitionedCopy
    from serving.batch.local import BatchResult

app = typer.Typer(no_args_is_help=True)


class EngineName(StrEnum):
    local = "local"
    spark = "spark"


def _print_summary(result: BatchResult) -> None:
    s = result.summary
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    console.print(
        f"[green]decided[/] {result.rows:,} customers in {result.seconds:,.1f} s "
        f"({rate:,.0f} rows/s)",
        highlight=False,
    )
    for title, counter in (("action", s.by_action), ("reason", s.by_reason)):
        table = Table(title=f"decisions by {title}")
        table.add_column(title)
        table.add_column("decisions", justify="right")
        for key, n in counter.most_common():
            table.add_row(key, f"{n:,}")
        console.print(table)
    table = Table(title="decisions and expected incremental margin by offer")
    for col, justify in (("offer", "left"), ("decisions", "right"), ("margin", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for oid, n, margin in s.offer_rows():
        table.add_row(oid, f"{n:,}", f"{margin:,.2f}")
    table.add_row("[bold]total[/]", f"{s.rows:,}", f"[bold]{s.margin_total:,.2f}[/]")
    console.print(table)
    if result.recorded is not None:
        r = result.recorded
        console.print(
            f"recorded {r.recorded:,} decisions ({r.contacts:,} contacts); "
            f"{r.already_recorded:,} already recorded for this wave, "
            f"{r.blocked_by_cap:,} blocked by a cap since deciding",
            highlight=False,
        )


def _partitioned_copy(data: Path) -> PartitionedCopy | None:
    """The current version's partitioned copy when DATA is a snapshot directory that has one."""
    from features.snapshot import CURRENT_FILE, partitioned_copy

    if not (Path(data) / CURRENT_FILE).is_file():
        return None
    return partitioned_copy(Path(data))


@app.command()
def score(
    data: Annotated[Path, typer.Argument(help="snapshot directory, or a data directory")],
    out: Annotated[Path, typer.Option("--out", help="output file: .parquet or .csv")],
    channel: Annotated[str, typer.Option("--channel", help="email, another channel, or auto")] = (
        "email"
    ),
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="decision time (and feature time of a data dir); now"),
    ] = None,
    engine: Annotated[EngineName, typer.Option("--engine", help="local or spark")] = (
        EngineName.local
    ),
    record: Annotated[
        bool, typer.Option("--record", help="write the decisions to the store (idempotent)")
    ] = False,
    wave_id: Annotated[
        str | None,
        typer.Option("--wave-id", help="exploration key and decision-id root; default: date"),
    ] = None,
    customers: Annotated[
        Path | None, typer.Option("--customers", help="only these customer ids (CSV/Parquet)")
    ] = None,
) -> None:
    """Decide for every customer (as the API would) and write one row per customer to OUT."""
    from contextlib import ExitStack

    import pandas as pd

    from features.snapshot import Snapshot
    from serving.batch.job import load_decider, open_store, read_customers, snapshot_source
    from serving.batch.local import Wave, rows_progress, score_local
    from serving.batch.output import open_output, output_format
    from serving.batch.settings import BatchSettings
    from serving.decide import decision_key
    from serving.engine import EngineInputError
    from serving.model_scorer import mlflow_scorer_loader
    from serving.settings import get_serving_settings

    try:
        at = pd.Timestamp(as_of or pd.Timestamp.now(tz="UTC")).tz_localize(None)
    except (ValueError, TypeError):
        fail(f"--as-of: cannot parse {as_of!r} as a time")
        return
    when = at.to_pydatetime()
    try:
        output_format(out)
    except ServingError as exc:
        fail(str(exc))
    wave = Wave(wave_id or decision_key(when), when, channel)
    settings, batch = get_serving_settings(), BatchSettings()
    try:
        decider, model_error = load_decider(settings, mlflow_scorer_loader())
        if model_error:
            console.print(f"[yellow]model unavailable, rules only:[/] {model_error}")
        ids = read_customers(customers) if customers is not None else None
        store = open_store(settings.database_url, record)
        stream = engine is EngineName.local and ids is None
        parts = _partitioned_copy(data) if engine is EngineName.spark and ids is None else None
        if parts is not None:  # written by `features materialize --engine spark`
            from serving.batch.spark import run_spark_partitioned

            if record:
                fail("--record: use --engine local (Spark writes files, not the store)")
            with console.status(
                f"scoring {parts.n_customers:,} customers on Spark from the snapshot's "
                f"partitioned copy ({parts.path})"
            ):
                result = run_spark_partitioned(
                    parts,
                    decider,
                    out,
                    wave,
                    batch.spark_master,
                    settings.database_url if store is not None else None,
                )
        else:
            with ExitStack() as stack:
                with console.status("loading the snapshot"):
                    snapshot = stack.enter_context(snapshot_source(data, when, stream=stream))
                if engine is EngineName.spark:
                    from serving.batch.spark import run_spark

                    if record:
                        fail("--record: use --engine local (Spark writes files, not the store)")
                    assert isinstance(snapshot, Snapshot)
                    result = run_spark(
                        snapshot,
                        decider,
                        out,
                        wave,
                        batch.spark_master,
                        ids,
                        settings.database_url if store is not None else None,
                    )
                else:
                    with rows_progress(console) as progress, open_output(out) as sink:
                        task = progress.add_task("scoring", total=len(ids or snapshot))
                        result = score_local(
                            snapshot,
                            decider,
                            sink,
                            wave,
                            store,
                            record,
                            ids,
                            batch.batch_chunk_rows,
                            on_chunk=lambda n: progress.advance(task, n),
                        )
    except (ServingError, FeaturesError, EngineInputError) as exc:
        fail(str(exc))
        return
    _print_summary(result)
    console.print(f"[green]wrote[/] {out} (wave {wave.wave_id})", highlight=False)
