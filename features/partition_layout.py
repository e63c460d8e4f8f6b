"""The manifest and the files of a partitioned data directory, read as they are stored.

A partitioned directory (`features.partitioned`: every table split by customer) holds
`partitions.json`, the manifest written last, and `<table>/part=NNN/*.parquet`. This module
reads and updates the manifest and reads a partition's files, without validating them; the
validation, the writer and the whole-data loader are in `features.partitioned`, and the
streaming first passes (`features.frozen`) need only what is here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import DataSourceError
from features.partitions import PARTITION_HASH, partition_dir_name

PARTITIONS_FILE = "partitions.json"
LAYOUT = "winback-partitioned-v1"
MAX_PARTITIONS = 1000  # partition_dir_name writes three digits


@dataclass(frozen=True)
class PartitionLayout:
    """`partitions.json`: how a directory is split."""

    n_partitions: int
    hash: str = PARTITION_HASH
    row_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "layout": LAYOUT,
                "n_partitions": self.n_partitions,
                "hash": self.hash,
                "row_counts": self.row_counts,
            },
            indent=2,
        )


def update_row_counts(directory: Path, added: dict[str, int]) -> PartitionLayout:
    """Add `added` rows per table to the manifest's row counts (after rows were appended)."""
    layout = read_layout(directory)
    counts = dict(layout.row_counts)
    for name, n in added.items():
        counts[name] = counts.get(name, 0) + n
    layout = PartitionLayout(layout.n_partitions, layout.hash, counts)
    tmp = Path(directory) / (PARTITIONS_FILE + ".tmp")
    tmp.write_text(layout.to_json() + "\n", encoding="utf-8")
    tmp.replace(Path(directory) / PARTITIONS_FILE)
    return layout


def check_n_partitions(n: object) -> int:
    """`n` as a partition count (1..1000); anything else is a DataSourceError naming it."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
        raise DataSourceError(f"partitions: must be an integer in 1..{MAX_PARTITIONS}, got {n!r}")
    return n


def is_partitioned(directory: Path) -> bool:
    """Whether `directory` is a partitioned data directory (it has `partitions.json`)."""
    return (Path(directory) / PARTITIONS_FILE).is_file()


def read_layout(directory: Path) -> PartitionLayout:
    """The manifest of a partitioned directory.

    Raises:
        DataSourceError: no readable manifest, another layout, or another hash scheme.
    """
    path = Path(directory) / PARTITIONS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"{path}: cannot read the partition manifest: {exc}") from None
    if not isinstance(raw, dict) or raw.get("layout") != LAYOUT:
        raise DataSourceError(f"{path}: not a winback partition manifest (layout {LAYOUT})")
    if raw.get("hash") != PARTITION_HASH:
        raise DataSourceError(
            f"{path}: split by hash scheme {raw.get('hash')!r}, this winback reads "
            f"{PARTITION_HASH!r}; re-split the data (`winback partition`)"
        )
    try:
        n = check_n_partitions(raw.get("n_partitions"))
    except DataSourceError as exc:
        raise DataSourceError(f"{path}: n_partitions: {exc}") from None
    counts = raw.get("row_counts") or {}
    return PartitionLayout(n, PARTITION_HASH, {str(k): int(v) for k, v in counts.items()})


def partition_files(directory: Path, table: str, part: int) -> list[Path]:
    """The Parquet files of `table` in partition `part`, sorted by name (may be empty)."""
    folder = Path(directory) / table / partition_dir_name(part)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def read_partition_table(
    directory: Path, table: str, part: int, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """One table of one partition as stored (all its files, in name order); None when it has
    no file. `columns` limits the columns read (absent ones are left out)."""
    files = partition_files(directory, table, part)
    if not files:
        return None
    frames = []
    for path in files:
        try:
            pf = pq.ParquetFile(path)
            cols = None if columns is None else [x for x in columns if x in pf.schema_arrow.names]
            frames.append(pf.read(columns=cols).to_pandas())
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataSourceError(f"{path}: cannot read table: {exc}") from None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def scan_column(
    directory: Path, table: str, columns: Sequence[str]
) -> Iterator[tuple[int, pd.DataFrame]]:
    """(partition, raw columns) of `table`, partition by partition, skipping empty ones: the
    cheap read behind the streaming first passes (`features.frozen`)."""
    layout = read_layout(directory)
    for part in range(layout.n_partitions):
        df = read_partition_table(directory, table, part, columns)
        if df is not None and len(df):
            yield part, df
