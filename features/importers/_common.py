"""Helpers shared by the importers: reading a source file and preparing the output folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from features import constants as c
from features.datadir import write_data_dir
from features.errors import DataSourceError
from features.offers import OfferCatalog
from features.partitioned import write_partitioned


def read_source_text(path: Path, what: str) -> str:
    """The text of a source file; a missing, unreadable or non-UTF-8 file is a DataSourceError.

    Line endings are left alone (callers split with `str.splitlines`, which accepts LF, CRLF
    and CR); a UTF-8 byte-order mark is dropped.
    """
    path = Path(path)
    if not path.exists():
        raise DataSourceError(f"{path}: {what} file not found")
    if not path.is_file():
        raise DataSourceError(f"{path}: expected the {what} file, found a directory")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); expected the {what} file"
        ) from None
    return text.removeprefix("\ufeff")


def prepare_out_dir(out: Path, managed: Iterable[str], overwrite: bool) -> Path:
    """Make sure `out` can receive an import.

    A missing folder is created. An existing, non-empty folder is refused unless `overwrite`;
    then the files named in `managed` are removed first (so that, say, an old `orders.csv`
    does not sit beside a new `orders.parquet`). Other files are left alone.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataSourceError(f"{out}: output path exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataSourceError(
                f"{out}: output directory is not empty; choose another or pass --overwrite"
            )
        for name in managed:
            target = out / name
            if target.is_file():
                target.unlink()
        _remove_partitioned(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _remove_partitioned(out: Path) -> None:
    """Remove a previous partitioned import's tables and manifest (`features.partitioned`)."""
    import shutil

    from features.partition_layout import PARTITIONS_FILE

    (out / PARTITIONS_FILE).unlink(missing_ok=True)
    for name in c.TABLES:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def write_tables(
    out: Path,
    tables: dict[str, pd.DataFrame],
    catalog: OfferCatalog,
    fmt: str,
    partitions: int | None,
) -> None:
    """Write an import's tables: one file per table, or split into `partitions` by customer
    (`features.partitioned`; Parquet only)."""
    if partitions is None:
        write_data_dir(out, tables, catalog, fmt=fmt)
        return
    if fmt != "parquet":
        raise DataSourceError(f"--partitions: partitioned tables are Parquet, not '{fmt}'")
    write_partitioned(out, tables, catalog, partitions)
