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
  another layout or hash scheme (`features.partition_layout` reads the manifest and the files).
- `iter_partitions` yields each partition as a validated `DataSet` (the same contract as
  `features.datadir.load_data_dir`, applied to that partition's rows, plus a check that every
  row is in its customer's partition). Values that must be the same for the whole feature set
  (the favourite_category vocabulary, the data's last timestamp) come from a streaming first
  pass over a few columns (`features.frozen`), never from one partition.
- Unpartitioned directories (`DIR/<table>.parquet|csv`) keep working everywhere;
  `features.partition_layout.is_partitioned` tells them apart; `features.datadir`
  `partition_data_dir` splits either layout into partitions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.contract import SCHEMAS, Problem, ValidationReport
from features.dataset import DataSet, check_tables, read_dataset_meta
from features.errors import DataContractError, DataSourceError, OfferCatalogError
from features.offers import OfferCatalog, dump_catalog, load_catalog
from features.partition_layout import (
    PARTITIONS_FILE,
    PartitionLayout,
    check_n_partitions,
    read_layout,
    read_partition_table,
)
from features.partitions import PARTITION_HASH, partition_dir_name, partition_of

T = TypeVar("T")


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
    data: DataSet | None


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


def load_all_partitions(directory: Path) -> tuple[ValidationReport, DataSet | None]:
    """Every partition validated and concatenated in memory (for stages that need the whole
    data set, such as training): (report, DataSet or None). Peak memory is the whole data."""
    report = ValidationReport(source=str(directory))
    parts: list[DataSet] = []
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
