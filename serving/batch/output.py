"""Writing the decision file: Parquet or CSV by extension, atomically.

Rows are written to a hidden temporary file beside the target and renamed onto it only when
every chunk is written (`os.replace`, atomic on one filesystem), so a crash never leaves a
half-written file under the requested name; the temporary file is removed on failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serving.batch.columns import SCHEMA
from serving.batch.errors import BatchError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)


class TableSink(Protocol):
    """Where the scorer writes each chunk's table."""

    def write(self, table: pa.Table) -> None: ...


def output_format(path: Path) -> str:
    """`parquet` or `csv` from the file name; anything else is an error naming `--out`."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise BatchError(
        f"--out: {path}: unknown file type {suffix or '(none)'!r}; use .parquet, .pq or .csv"
    )


class _Writer:
    def __init__(self, tmp: Path, fmt: str) -> None:
        self.rows = 0
        self._w: pq.ParquetWriter | pacsv.CSVWriter = (
            pq.ParquetWriter(tmp, SCHEMA) if fmt == "parquet" else pacsv.CSVWriter(tmp, SCHEMA)
        )

    def write(self, table: pa.Table) -> None:
        self._w.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._w.close()


@contextlib.contextmanager
def open_output(path: Path) -> Iterator[_Writer]:
    """A sink writing to a temporary file that becomes `path` when the block ends cleanly."""
    path = Path(path)
    fmt = output_format(path)
    if not path.parent.is_dir():
        raise BatchError(f"--out: folder {path.parent} does not exist")
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        writer = _Writer(tmp, fmt)
    except OSError as exc:
        raise BatchError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
