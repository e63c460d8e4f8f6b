"""The CLI's output layer: the one place that prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from features.contract import ValidationReport

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print an error without a traceback and exit with `code`."""
    import typer

    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_validation(report: ValidationReport) -> None:
    counts = ", ".join(f"{k}={v:,}" for k, v in report.row_counts.items())
    if report.ok:
        console.print(f"[green]valid[/] {report.source} ({counts})", highlight=False)
        return
    table = Table(title=f"{len(report.problems)} problem(s) in {report.source}", show_lines=False)
    for col in ("table", "column", "rule", "bad rows", "detail", "examples"):
        table.add_column(col, overflow="fold")
    for p in report.problems:
        table.add_row(p.table, p.column, p.rule, f"{p.n_bad:,}", p.detail, ", ".join(p.examples))
    console.print(table)
