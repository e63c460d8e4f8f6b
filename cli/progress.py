"""Stage lines and progress bars for long commands.

Stage lines: what is being done, and how long since the start.

Library code reports its stages as INFO records of a named logger (`winback.training`); a
command shows them for its duration only, above its spinner, so nothing is configured at
import time and a library caller decides for itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.text import Text

JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs",
        min=1,
        help="worker processes over the partitions of a partitioned directory (each holds one "
        "partition in memory); same result for any number",
    ),
]


@contextmanager
def stage_lines(console: Console, logger: str, status: Status | None = None) -> Iterator[None]:
    """Print each INFO record of `logger` as `  12.3 s  message` while the block runs."""
    start = time.perf_counter()

    class _Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            elapsed = time.perf_counter() - start
            console.print(f"[dim]{elapsed:6.1f} s[/]  {message}", highlight=False)
            if status is not None:
                status.update(message)

    handler = _Lines(logging.INFO)
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def partitions_progress(console: Console) -> Progress:
    """A bar over rows (customers) with rows/s and partitions done (`parts` field)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RowsPerSecond(),
        TextColumn("{task.fields[parts]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def partition_bar(
    console: Console, description: str, total_rows: int | None, n_partitions: int
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for a partition-by-partition stage; yields `on_partition(k, rows)`."""
    with partitions_progress(console) as progress:
        task = progress.add_task(description, total=total_rows, parts=f"0/{n_partitions} parts")
        done = [0]

        def on_partition(_index: int, rows: int) -> None:
            done[0] += 1
            progress.update(task, advance=rows, parts=f"{done[0]}/{n_partitions} parts")

        yield on_partition
