"""Stage lines for long commands: what is being done, and how long since the start.

Library code reports its stages as INFO records of a named logger (`winback.training`); a
command shows them for its duration only, above its spinner, so nothing is configured at
import time and a library caller decides for itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress
from rich.status import Status


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


def partitions_progress(console: Console) -> Progress:
    """A bar of partitions done (`N/M`) and the elapsed time, for partition-by-partition work;
    the command prints rows and rows/s when it is over."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("partitions"),
        TimeElapsedColumn(),
        console=console,
    )
