"""Reading and writing data directories; every loader goes through validation.

A data directory holds `customers`, `orders`, `contacts`, `events` and `consent`, each as
`<name>.parquet` or `<name>.csv`, plus `offers.yaml`; or the same tables split by customer
(`features.partitioned`: `<name>/part=NNN/*.parquet` and `partitions.json`), which
`load_data_dir` reads whole and the streaming stages read one partition at a time.
`customers` and `orders` are required; the other tables may be absent, which means "no rows"
(CDNOW has no contacts at all). A loaded directory is a `features.dataset.DataSet`;
`partition_data_dir` splits a directory of either layout into customer partitions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.contract import SCHEMAS, Problem, ValidationReport
from features.dataset import DataSet, check_tables, read_dataset_meta
from features.errors import DataContractError, DataSourceError, OfferCatalogError
from features.offers import OfferCatalog, dump_catalog, load_catalog
from features.partition_layout import PartitionLayout, is_partitioned
from features.validation import empty_table


def find_table(directory: Path, name: str) -> Path | None:
    """The file holding table `name` in `directory`, or None. Two formats at once is an error."""
    found = [directory / f"{name}{suffix}" for suffix in c.TABLE_SUFFIXES]
    existing = [p for p in found if p.exists()]
    if len(existing) > 1:
        raise DataSourceError(
            f"{directory}: table '{name}' exists as both "
            + " and ".join(p.name for p in existing)
            + "; keep one"
        )
    return existing[0] if existing else None


def read_table(path: Path) -> pd.DataFrame:
    """Read a Parquet or CSV file as it is (CSV values as text); errors become DataSourceError."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise DataSourceError(f"{path}: cannot read table: {exc}") from None
    raise DataSourceError(f"{path}: unsupported format '{path.suffix}' (use .parquet or .csv)")


def _read_raw(directory: Path) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    raw: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    for name, schema in SCHEMAS.items():
        path = find_table(directory, name)
        if path is None:
            if schema.required:
                problems.append(
                    Problem(
                        name, "", "missing_table", 0, (), f"{name}.parquet or {name}.csv needed"
                    )
                )
            raw[name] = empty_table(schema)
            continue
        raw[name] = read_table(path)
    return raw, problems


def validate_data_dir(directory: Path) -> tuple[ValidationReport, DataSet | None]:
    """Validate a data directory; return the report and, when valid, the loaded data."""
    directory = Path(directory)
    report = ValidationReport(source=str(directory))
    if not directory.is_dir():
        raise DataSourceError(f"{directory}: not a directory")
    from features.partitioned import load_all_partitions

    if is_partitioned(directory):  # the whole data in memory: see features.partitioned
        return load_all_partitions(directory)
    catalog: OfferCatalog | None = None
    try:
        catalog = load_catalog(directory / c.OFFERS_FILE)
    except OfferCatalogError as exc:
        for line in str(exc).splitlines():
            report.problems.append(Problem(c.OFFERS_FILE, "", "offer_catalog", 1, (), line))
    raw, problems = _read_raw(directory)
    report.problems += problems
    return report, check_tables(raw, catalog, read_dataset_meta(directory), directory, report)


def load_data_dir(directory: Path) -> DataSet:
    """Load and validate a data directory; raise DataContractError listing every problem."""
    report, data = validate_data_dir(Path(directory))
    if data is None:
        raise DataContractError(report)
    return data


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write a table atomically (temporary file, then rename), Parquet or CSV by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    elif path.suffix == ".csv":
        df.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S")
    else:
        raise DataSourceError(f"{path}: unsupported format '{path.suffix}' (use .parquet or .csv)")
    tmp.replace(path)


def write_data_dir(
    directory: Path,
    tables: dict[str, pd.DataFrame],
    catalog: OfferCatalog,
    fmt: str = "parquet",
) -> None:
    """Write tables and offers.yaml; absent optional tables are written empty."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in SCHEMAS.items():
        df = tables.get(name)
        if df is None:
            df = empty_table(schema)
        write_table(df, directory / f"{name}.{fmt}")
    (directory / c.OFFERS_FILE).write_text(dump_catalog(catalog), encoding="utf-8")


def partition_data_dir(src: Path, out: Path, n_partitions: int) -> PartitionLayout:
    """Split a data directory (either layout) into `n_partitions` customer partitions in `out`.

    The source is loaded and validated in memory first (an invalid one raises
    `DataContractError`), so `out` holds the contract's dtypes; `dataset.json` is carried over.
    """
    from features.partitioned import write_partitioned

    if Path(src).resolve() == Path(out).resolve():
        raise DataSourceError(f"{out}: write the partitions to another directory than {src}")
    data = load_data_dir(Path(src))
    tables = {name: data.table(name) for name in c.TABLES}
    return write_partitioned(Path(out), tables, data.catalog, n_partitions, data.meta or None)
