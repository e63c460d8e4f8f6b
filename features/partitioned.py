"""Partitioned data directories: every table split by customer, read one partition at a time.

Layout (hive style; `offers.yaml` and `dataset.json` as in an unpartitioned directory)::

    DIR/partitions.json                 the manifest: {"layout": "winback-partitioned-v1",
                                        "n_partitions": N, "hash": PARTITION_HASH,
                                        "row_counts": {table: rows}}
    DIR/offers.yaml
    DIR/dataset.json                    optional, as today
    DIR/<table>/part=NNN/*.parquet      table in customers, orders, contacts, events, consent;
                                        NNN = partition_of(customer_id, N), three digits

The contract:

- Every row of every table sits in the partition of its `customer_id`
  (`features.partitions.partition_of`, the scheme named `PARTITION_HASH`), so everything a
  customer's features need is in one partition. A partition directory may hold any number of
  Parquet files (a writer appends one per chunk); a missing directory means "no rows".
- `partitions.json` is written last: a directory without it is not partitioned (a writer that
  crashed leaves no half-valid partitioned directory behind). A reader refuses a manifest of
  another layout or hash scheme.
- `iter_partitions` yields each partition as a validated `DataSet` (the same contract as
  `features.datadir.load_data_dir`, applied to that partition's rows, plus a check that every
  row is in its customer's partition). Values that must be the same for the whole feature set
  (the favourite_category vocabulary, the data's last timestamp) come from a streaming first
  pass over a few columns (`features.frozen`), never from one partition.
- Unpartitioned directories (`DIR/<table>.parquet|csv`) keep working everywhere;
  `is_partitioned` tells them apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.contract import SCHEMAS, Problem, ValidationReport
from features.errors import DataContractError, DataSourceError, OfferCatalogError
from features.offers import OfferCatalog, dump_catalog, load_catalog
from features.partitions import PARTITION_HASH, partition_dir_name, partition_of

T = TypeVar("T")

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


def _misplaced(tables: dict[str, pd.DataFrame], part: int, n: int) -> list[Problem]:
    """Rows whose customer_id hashes to another partition (they would be missed by its own
    customer's features, and by the referential checks)."""
    problems = []
    for name, df in tables.items():
        if c.CUSTOMER_ID not in df.columns or not len(df):
            continue
        ids = df[c.CUSTOMER_ID]
        present = ids.notna().to_numpy()
        wrong = present & (partition_of(ids.astype(str), n) != part)
        if wrong.any():
            examples = tuple(repr(x) for x in ids[wrong].unique()[:5])
            problems.append(
                Problem(
                    name,
                    c.CUSTOMER_ID,
                    "partition",
                    int(wrong.sum()),
                    examples,
                    f"row stored in {partition_dir_name(part)} but its customer belongs to "
                    f"another partition ({PARTITION_HASH}, {n} partitions)",
                )
            )
    return problems


@dataclass(frozen=True)
class Partition:
    """One partition: its number, its validation report and, when valid, its data."""

    index: int
    report: ValidationReport
    data: Any  # features.datadir.DataSet | None (typed loosely: datadir imports this module)


def _catalog_problems(directory: Path) -> tuple[OfferCatalog | None, list[Problem]]:
    try:
        return load_catalog(Path(directory) / c.OFFERS_FILE), []
    except OfferCatalogError as exc:
        return None, [
            Problem(c.OFFERS_FILE, "", "offer_catalog", 1, (), line)
            for line in str(exc).splitlines()
        ]


def validate_partition(
    directory: Path,
    part: int,
    layout: PartitionLayout | None = None,
    catalog: OfferCatalog | None = None,
    meta: dict[str, Any] | None = None,
) -> Partition:
    """Read and validate partition `part` of a partitioned directory.

    The same rules as an unpartitioned directory (types, keys, references between tables,
    time order), applied to the partition's rows: since every table is split by the customer
    hash, a customer's orders, contacts, events and consent must be in the customer's
    partition, so the referential checks are complete; an event must refer to a contact of
    the same partition (of its own customer). Keys other than customer_id (order_id, ...)
    are checked within the partition here; `features.frozen.check_unique_keys` checks them
    across partitions.
    """
    from features.datadir import check_tables, read_dataset_meta
    from features.validation import empty_table

    directory = Path(directory)
    layout = layout or read_layout(directory)
    if not 0 <= part < layout.n_partitions:
        raise DataSourceError(f"partition {part}: not in 0..{layout.n_partitions - 1}")
    report = ValidationReport(source=f"{directory}/*/{partition_dir_name(part)}")
    catalog_problems: list[Problem] = []
    if catalog is None:
        catalog, catalog_problems = _catalog_problems(directory)
    report.problems += catalog_problems
    meta = read_dataset_meta(directory) if meta is None else meta
    raw: dict[str, pd.DataFrame] = {}
    for name, schema in SCHEMAS.items():
        df = read_partition_table(directory, name, part)
        raw[name] = empty_table(schema) if df is None else df
    if not _has_any_customers(directory, layout):
        report.problems.append(
            Problem(c.CUSTOMERS, "", "missing_table", 0, (), "customers/part=NNN/ needed")
        )
    data = check_tables(
        raw,
        catalog,
        meta,
        directory,
        report,
        more_problems=lambda tables: _misplaced(tables, part, layout.n_partitions),
    )
    return Partition(part, report, data)


def _has_any_customers(directory: Path, layout: PartitionLayout) -> bool:
    return (Path(directory) / c.CUSTOMERS).is_dir() or layout.row_counts.get(c.CUSTOMERS) == 0


def iter_partitions(
    directory: Path, parts: Sequence[int] | None = None, strict: bool = True
) -> Iterator[Partition]:
    """Each partition of a partitioned directory, read and validated, one at a time.

    Peak memory is one partition. With `strict` (the default), an invalid partition raises
    `DataContractError` with its report; otherwise it is yielded with `data` None (what
    `winback validate` uses to report every partition).
    """
    directory = Path(directory)
    layout = read_layout(directory)
    from features.datadir import read_dataset_meta

    meta = read_dataset_meta(directory)
    catalog, _ = _catalog_problems(directory)
    for part in range(layout.n_partitions) if parts is None else parts:
        p = validate_partition(directory, part, layout, catalog, meta)
        if strict and p.data is None:
            raise DataContractError(p.report)
        yield p


def map_partitions(fn: Callable[[int], T], parts: Sequence[int], jobs: int = 1) -> Iterator[T]:
    """`fn(part)` for each of `parts`, yielded in order.

    With `jobs` > 1 the calls run in that many worker processes (joblib's loky backend, so a
    worker never inherits the caller's threads), at most 2 x `jobs` partitions dispatched
    ahead of the one being consumed: peak memory is a few partitions, never the data. `fn`
    must be picklable (a module-level function, or a `functools.partial` of one), and so
    must what it returns; an exception in a worker is raised here with its own type.

    Raises:
        ValueError: `jobs` is not a positive integer.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: must be a positive integer, got {jobs!r}")
    if jobs == 1 or len(parts) <= 1:
        for part in parts:
            yield fn(part)
        return
    from joblib import Parallel, delayed

    run = Parallel(n_jobs=min(jobs, len(parts)), return_as="generator", pre_dispatch="2*n_jobs")
    yield from run(delayed(fn)(part) for part in parts)


class PartitionWriter:
    """Writes a partitioned directory chunk by chunk: `write(tables, chunk)` splits each
    table by the customer hash and adds one file per (table, partition); `close(catalog)`
    writes offers.yaml, then the manifest last.

    Chunk names must differ between calls (they name the files); a chunk's rows of one
    partition land in `<table>/part=NNN/<chunk>.parquet`.
    """

    def __init__(self, directory: Path, n_partitions: int) -> None:
        self.directory = Path(directory)
        self.n = check_n_partitions(n_partitions)
        self.row_counts = {name: 0 for name in c.TABLES}
        self.directory.mkdir(parents=True, exist_ok=True)
        stale = self.directory / PARTITIONS_FILE
        if stale.exists():  # rewriting: the directory is not a valid partitioned one meanwhile
            stale.unlink()

    def clear(self) -> None:
        """Remove the tables a previous writer left (both layouts)."""
        import shutil

        for name in (*c.TABLES, Path(c.GROUND_TRUTH_FILE).stem):
            shutil.rmtree(self.directory / name, ignore_errors=True)
            for suffix in c.TABLE_SUFFIXES:
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def write(self, tables: dict[str, pd.DataFrame], chunk: str) -> None:
        """Split every table of `tables` by customer and write this chunk's files."""
        for name, df in tables.items():
            if name in self.row_counts:
                self.row_counts[name] += len(df)
            self.write_table(name, df, chunk)

    def write_table(self, name: str, df: pd.DataFrame, chunk: str) -> None:
        """Split one table (it must have customer_id) and write this chunk's files of it."""
        if c.CUSTOMER_ID not in df.columns:
            raise DataSourceError(f"{name}: cannot partition a table without {c.CUSTOMER_ID}")
        if not len(df):
            return
        # hashed as validation reads them back: text, surrounding blanks stripped
        part = partition_of(df[c.CUSTOMER_ID].astype("string").str.strip().astype(str), self.n)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.n + 1))
        table = pa.Table.from_pandas(df, preserve_index=False)
        for k in range(self.n):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            rows = table.take(pa.array(order[lo:hi]))
            folder = self.directory / name / partition_dir_name(k)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{chunk}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            pq.write_table(rows, tmp)
            tmp.replace(path)

    def close(self, catalog: OfferCatalog, meta: dict[str, Any] | None = None) -> PartitionLayout:
        """Write offers.yaml (and dataset.json when `meta`), then the manifest."""
        (self.directory / c.OFFERS_FILE).write_text(dump_catalog(catalog), encoding="utf-8")
        if meta is not None:
            (self.directory / c.DATASET_FILE).write_text(
                json.dumps(meta, indent=2) + "\n", encoding="utf-8"
            )
        layout = PartitionLayout(self.n, PARTITION_HASH, dict(self.row_counts))
        tmp = self.directory / (PARTITIONS_FILE + ".tmp")
        tmp.write_text(layout.to_json() + "\n", encoding="utf-8")
        tmp.replace(self.directory / PARTITIONS_FILE)
        return layout


def write_partitioned(
    directory: Path,
    tables: dict[str, pd.DataFrame],
    catalog: OfferCatalog,
    n_partitions: int,
    meta: dict[str, Any] | None = None,
) -> PartitionLayout:
    """Write in-memory tables as a partitioned directory (absent tables: no rows)."""
    writer = PartitionWriter(directory, n_partitions)
    writer.clear()
    writer.write({k: v for k, v in tables.items() if k in c.TABLES}, "part-00000")
    return writer.close(catalog, meta)


def load_all_partitions(directory: Path) -> tuple[ValidationReport, Any]:
    """Every partition validated and concatenated in memory (for stages that need the whole
    data set, such as training): (report, DataSet or None). Peak memory is the whole data."""
    from features.datadir import DataSet

    report = ValidationReport(source=str(directory))
    parts: list[Any] = []
    for p in iter_partitions(directory, strict=False):
        report.problems += p.report.problems
        for name, n in p.report.row_counts.items():
            report.row_counts[name] = report.row_counts.get(name, 0) + n
        if p.data is not None:
            parts.append(p.data)
    from features.frozen import check_unique_keys

    seen = {(q.table, q.column, q.rule) for q in report.problems}
    report.problems += [
        q for q in check_unique_keys(directory) if (q.table, q.column, q.rule) not in seen
    ]
    if not report.ok or not parts:
        return report, None
    first = parts[0]
    tables = {
        name: pd.concat([p.table(name) for p in parts], ignore_index=True) for name in c.TABLES
    }
    rates = [p.assumed_margin_rate for p in parts if p.assumed_margin_rate is not None]
    data = DataSet(
        **tables,
        catalog=first.catalog,
        source=str(directory),
        meta=first.meta,
        assumed_margin_rate=rates[0] if rates else None,
    )
    return report, data


def partition_data_dir(src: Path, out: Path, n_partitions: int) -> PartitionLayout:
    """Split a data directory (either layout) into `n_partitions` customer partitions in `out`.

    The source is loaded and validated in memory first (an invalid one raises
    `DataContractError`), so `out` holds the contract's dtypes; `dataset.json` is carried over.
    """
    from features.datadir import load_data_dir

    if Path(src).resolve() == Path(out).resolve():
        raise DataSourceError(f"{out}: write the partitions to another directory than {src}")
    data = load_data_dir(Path(src))
    tables = {name: data.table(name) for name in c.TABLES}
    return write_partitioned(Path(out), tables, data.catalog, n_partitions, data.meta or None)
