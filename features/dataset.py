"""A validated data directory in memory (`DataSet`), and the checks that make one.

`check_tables` validates raw tables against the data contract into a report and returns the
`DataSet` when they are valid; both layouts of a data directory go through it: a whole
directory (`features.datadir`) and each partition of a partitioned one
(`features.partitioned`). `dataset.json` (`read_dataset_meta`) says how the data was imported
and which margin rate its orders without a margin assume (`margin_rate_of`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features import constants as c
from features.contract import Problem, ValidationReport
from features.errors import DataSourceError
from features.offers import OfferCatalog
from features.validation import validate_tables


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
