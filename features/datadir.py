"""Reading and writing data directories; every loader goes through validation.

A data directory holds `customers`, `orders`, `contacts`, `events` and `consent`, each as
`<name>.parquet` or `<name>.csv`, plus `offers.yaml`; or the same tables split by customer
(`features.partitioned`: `<name>/part=NNN/*.parquet` and `partitions.json`), which
`load_data_dir` reads whole and the streaming stages read one partition at a time.
`customers` and `orders` are required; the other tables may be absent, which means "no rows"
(CDNOW has no contacts at all).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.contract import SCHEMAS, Problem, ValidationReport
from features.errors import DataContractError, DataSourceError, OfferCatalogError
from features.offers import OfferCatalog, dump_catalog, load_catalog
from features.validation import empty_table, validate_tables


@dataclass(frozen=True)
class DataSet:
    """A validated data directory in memory, in the contract's dtypes."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    contacts: pd.DataFrame
    events: pd.DataFrame
    consent: pd.DataFrame
    catalog: OfferCatalog
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    """`dataset.json`: how the data was imported (source, mapping, assumed margin rate)."""
    assumed_margin_rate: float | None = None
    """The rate behind every assumed margin, None when every order carries its own margin."""

    @property
    def orders_margin_assumed(self) -> int:
        """How many orders carry an assumed margin (revenue x `assumed_margin_rate`)."""
        if c.MARGIN_ASSUMED not in self.orders.columns:
            return 0
        return int(self.orders[c.MARGIN_ASSUMED].sum())

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame


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


def read_dataset_meta(directory: Path) -> dict[str, Any]:
    """`dataset.json` of a data directory ({} when absent); a malformed file is an error."""
    path = Path(directory) / c.DATASET_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"{path}: cannot read the data set's description: {exc}") from None
    if not isinstance(meta, dict):
        raise DataSourceError(f"{path}: expected a JSON object")
    return meta


def margin_rate_of(meta: dict[str, Any]) -> float:
    """The margin rate assumed for orders without a margin: the data's own
    (`dataset.json` `assumed_margin_rate`) or `WINBACK_ASSUMED_MARGIN_RATE` (default 0.25)."""
    from features.settings import get_settings

    rate = meta.get("assumed_margin_rate")
    if rate is None:
        return get_settings().assumed_margin_rate
    if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise DataSourceError(
            f"{c.DATASET_FILE}: assumed_margin_rate must be a number in [0, 1], got {rate!r}"
        )
    return float(rate)


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
    from features.partitioned import is_partitioned, load_all_partitions

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


def check_tables(
    raw: dict[str, pd.DataFrame],
    catalog: OfferCatalog | None,
    meta: dict[str, Any],
    directory: Path,
    report: ValidationReport,
    more_problems: Callable[[dict[str, pd.DataFrame]], list[Problem]] | None = None,
) -> DataSet | None:
    """Validate raw tables into `report` (every problem, the row counts); the `DataSet` when
    they and the catalog are valid, else None. `more_problems` adds checks on the validated
    tables (a partition's placement rule)."""
    rate = margin_rate_of(meta)
    offer_ids = catalog.offer_ids if catalog else ()
    tables, problems = validate_tables(raw, offer_ids, margin_rate=rate)
    if catalog is None:  # contacts cannot be checked against a catalog we could not read
        problems = [p for p in problems if not (p.table == c.CONTACTS and p.column == c.OFFER_ID)]
    report.problems += problems
    if more_problems is not None:
        report.problems += more_problems(tables)
    report.row_counts = {name: len(df) for name, df in tables.items()}
    if not report.ok or catalog is None:
        return None
    assumed = bool(tables[c.ORDERS][c.MARGIN_ASSUMED].any())
    return DataSet(
        **tables,
        catalog=catalog,
        source=str(directory),
        meta=meta,
        assumed_margin_rate=rate if assumed else None,
    )


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
