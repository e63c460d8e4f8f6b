"""`winback generate`: write a synthetic win-back world as a data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from cli.output import console, fail
from features.errors import FeaturesError

app = typer.Typer(no_args_is_help=True)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="data directory to write")],
    customers: Annotated[
        int, typer.Option("--customers", min=1, help="number of customers")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same files)")] = 7,
    fmt: Annotated[
        Literal["parquet", "csv"], typer.Option("--format", help="table file format")
    ] = "parquet",
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            max=1000,
            help="write OUT/<table>/part=NNN/ (Parquet), generating block by block: memory "
            "of one block, for worlds larger than memory",
        ),
    ] = None,
    block_customers: Annotated[
        int,
        typer.Option(
            "--block-customers",
            min=1,
            help="with --partitions: customers per block; a world of at most one block is "
            "the same world as without --partitions",
        ),
    ] = 250_000,
) -> None:
    """Generate a synthetic world (customers, orders, past campaigns) plus its ground truth."""
    if partitions is not None:
        _generate_partitioned(out, customers, seed, fmt, partitions, block_customers)
        return
    from features.synthetic.generate import generate_world, world_summary, write_world

    try:
        with console.status(f"generating {customers:,} customers"):
            world = generate_world(customers, seed)
            write_world(world, out, fmt)
    except (FeaturesError, OSError) as exc:
        fail(str(exc))
        return
    table = Table(title=f"synthetic world in {out} (seed {seed})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in world_summary(world).items():
        table.add_row(name, f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}")
    console.print(table)


def _generate_partitioned(
    out: Path, customers: int, seed: int, fmt: str, partitions: int, block: int
) -> None:
    from cli.progress import partitions_progress
    from features.synthetic.blocks import generate_partitioned

    if fmt != "parquet":
        fail("--partitions: partitioned tables are Parquet (drop --format csv)")
        return
    n_blocks = -(-customers // block)
    try:
        with partitions_progress(console) as progress:
            task = progress.add_task("generating", total=customers, parts=f"0/{n_blocks} blocks")
            done = [0]

            def on_block(size: int, _world: object) -> None:
                done[0] += 1
                progress.update(task, advance=size, parts=f"{done[0]}/{n_blocks} blocks")

            layout = generate_partitioned(customers, seed, out, partitions, block, on_block)
    except (FeaturesError, OSError) as exc:
        fail(str(exc))
        return
    table = Table(title=f"synthetic world in {out} (seed {seed}, {partitions} partitions)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in layout.row_counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
