"""Commands that check, generate and import data directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.output import fail, print_validation
from features.errors import FeaturesError

app = typer.Typer(no_args_is_help=True)


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="data directory to check")],
) -> None:
    """Check a data directory against the data contract; exit 1 if anything is wrong."""
    from features.datadir import validate_data_dir

    try:
        report, _ = validate_data_dir(directory)
    except FeaturesError as exc:
        fail(str(exc))
        return
    print_validation(report)
    if not report.ok:
        raise typer.Exit(1)
