"""Commands that check, generate, import and partition data directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.output import console, fail, print_validation
from cli.progress import JobsOption
from features.errors import FeaturesError

app = typer.Typer(no_args_is_help=True)


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="data directory to check")],
    jobs: JobsOption = 1,
) -> None:
    """Check a data directory against the data contract; exit 1 if anything is wrong.

    A partitioned directory is checked one partition at a time (its customers' rows,
    references between its tables, each row in its customer's partition), then the ids that
    must be unique across partitions."""
    from features.datadir import validate_data_dir
    from features.partition_layout import is_partitioned, read_layout

    try:
        if is_partitioned(directory):
            from cli.progress import partition_bar
            from features.streaming import validate_partitioned

            layout = read_layout(directory)
            total = layout.row_counts.get("customers")
            with partition_bar(console, "validating", total, layout.n_partitions) as on_part:
                report = validate_partitioned(directory, on_part, jobs)
        else:
            report, _ = validate_data_dir(directory)
    except FeaturesError as exc:
        fail(str(exc))
        return
    print_validation(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def partition(
    directory: Annotated[Path, typer.Argument(help="data directory to split (either layout)")],
    out: Annotated[Path, typer.Option("--out", help="partitioned data directory to write")],
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, max=1000, help="number of customer partitions")
    ],
) -> None:
    """Split a data directory by a stable hash of the customer id into OUT/<table>/part=NNN/
    (loads it whole: for data that fits in memory; `generate` and `import` write partitions
    directly)."""
    from features.datadir import partition_data_dir

    try:
        with console.status(f"splitting {directory} into {partitions} partitions"):
            layout = partition_data_dir(directory, out, partitions)
    except (FeaturesError, OSError) as exc:
        fail(str(exc))
        return
    counts = ", ".join(f"{k}={v:,}" for k, v in layout.row_counts.items())
    console.print(
        f"[green]wrote[/] {out}: {layout.n_partitions} partitions ({counts})", highlight=False
    )
