"""Stage lines: a command shows its library's INFO stages while it runs, and only then."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from cli.progress import stage_lines


def test_stage_lines_print_while_the_block_runs_and_not_after() -> None:
    console = Console(width=80, file=io.StringIO(), color_system=None)
    log = logging.getLogger("winback.test-stages")
    with stage_lines(console, "winback.test-stages"):
        log.info("fitting %s", "things")
        log.debug("not shown")
    log.info("after the block")
    out = console.file.getvalue()  # type: ignore[attr-defined]
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].endswith(" s  fitting things"), out
    assert log.handlers == [] and log.level == logging.NOTSET
