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
) -> None:
    """Generate a synthetic world (customers, orders, past campaigns) plus its ground truth."""
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
