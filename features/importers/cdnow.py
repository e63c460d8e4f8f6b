"""CDNOW purchase log (1997-1998) -> a winback data directory.

The source has one whitespace-separated row per purchase record: `customer_id date
number_of_cds dollar_value` (see ../shared/data/cdnow/README.md, relative to the repository
root). The mapping:

- `customers`: one row per customer id, exactly as written in the file (e.g. `00001`);
  `signup_ts` is the customer's first purchase date (the cohort is defined by first purchase).
- `orders`: one row per data row (duplicates included: the source cannot tell a repeated record
  from two identical orders). `order_id` is `cdnow-<n>`, `n` being the 1-based number of the
  data row (the header, if any, and blank lines are not counted), so the id is the same
  whether or not a copy of the file has a header. `order_ts` = date at midnight,
  `revenue` = `dollar_value`, `category` = `music`, `discount_amount` = 0, and
  `number_of_cds` is kept as an extra column.
- `margin`: CDNOW has no cost data, so margin = revenue x `margin_rate` (default 0.25), rounded
  to the cent; an assumption the command states in its output.
- `contacts`, `events`, `consent`: none in the source; written empty.
- `offers.yaml`: a small default catalog (10% off and a content e-mail) so the directory is
  complete; replace it with your own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from features import constants as c
from features.contract import ValidationReport
from features.datadir import validate_data_dir
from features.errors import DataContractError, DataSourceError
from features.importers._common import prepare_out_dir, read_source_text, write_tables
from features.offers import OfferCatalog, parse_catalog

SOURCE_COLUMNS: Final = ("customer_id", "date", "number_of_cds", "dollar_value")
NUMBER_OF_CDS: Final = "number_of_cds"
DEFAULT_MARGIN_RATE: Final = 0.25
CATEGORY_MUSIC: Final = "music"
ORDER_ID_PREFIX: Final = "cdnow-"

DEFAULT_CATALOG_YAML: Final = """\
version: cdnow-default-1
offers:
  - offer_id: pct10
    type: percent_discount
    value: 10
    cost: {revenue_fraction: 0.10}
    channels: [email]
    title: 10% off your next CD order
    description: Default offer written by `winback import cdnow`; edit to taste.
  - offer_id: new_releases
    type: content
    channels: [email]
    title: New releases picked for you
    description: A content e-mail without incentive (costs no margin).
"""


@dataclass(frozen=True)
class CdnowImport:
    """What `import_cdnow` wrote."""

    out: Path
    customers: int
    orders: int
    revenue: float
    margin_rate: float
    first_order: pd.Timestamp
    last_order: pd.Timestamp
    report: ValidationReport


def default_catalog() -> OfferCatalog:
    """The small catalog written next to the imported tables."""
    return parse_catalog(DEFAULT_CATALOG_YAML, source="features/importers/cdnow.py")


def _split_rows(path: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Fields of every data row (n x 4 strings) and each row's 1-based line number."""
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    first = True
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if first:
            first = False
            # a header is a first line whose first field is not a number (copies differ)
            if not fields[0].isdigit():
                if len(fields) != len(SOURCE_COLUMNS):
                    raise DataSourceError(
                        f"{path}: line {number}: header has {len(fields)} field(s), expected "
                        f"{len(SOURCE_COLUMNS)} ({' '.join(SOURCE_COLUMNS)}); is this the "
                        "CDNOW purchase log?"
                    )
                continue
        if len(fields) != len(SOURCE_COLUMNS):
            raise DataSourceError(
                f"{path}: line {number}: expected {len(SOURCE_COLUMNS)} whitespace-separated "
                f"fields ({' '.join(SOURCE_COLUMNS)}), found {len(fields)}"
            )
        rows.append(fields)
        line_numbers.append(number)
    if not rows:
        raise DataSourceError(f"{path}: no data rows in the CDNOW file")
    return np.array(rows, dtype=object), np.array(line_numbers)


def _fail_on(path: Path, bad: np.ndarray, lines: np.ndarray, values: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataSourceError(
            f"{path}: line {lines[i]}: {what} (value {values[i]!r}); {int(bad.sum())} such row(s)"
        )


def read_cdnow(path: Path) -> pd.DataFrame:
    """Parse a CDNOW purchase log into typed columns, one row per data row.

    Accepts LF or CRLF endings, leading and repeated spaces or tabs, and a header line or none.
    Raises DataSourceError naming the file, line and problem for anything else.

    Returns:
        Columns `customer_id` (str), `date` (datetime64), `number_of_cds` (int64),
        `dollar_value` (float64), in file order.
    """
    path = Path(path)
    fields, lines = _split_rows(path, read_source_text(path, "CDNOW"))
    ids, dates, cds, dollars = (pd.Series(fields[:, i], dtype="string") for i in range(4))

    well_formed = dates.str.fullmatch(r"\d{8}").to_numpy(dtype=bool)
    parsed = pd.to_datetime(dates.where(well_formed), format="%Y%m%d", errors="coerce")
    _fail_on(path, parsed.isna().to_numpy(), lines, fields[:, 1], "date is not a YYYYMMDD date")

    n_cds = pd.to_numeric(cds, errors="coerce").astype("float64").to_numpy()
    bad_cds = ~np.isfinite(n_cds) | (n_cds < 0) | (n_cds != np.floor(n_cds))
    _fail_on(path, bad_cds, lines, fields[:, 2], "number_of_cds is not a whole number >= 0")

    value = pd.to_numeric(dollars, errors="coerce").astype("float64").to_numpy()
    bad_value = ~np.isfinite(value) | (value < 0)
    _fail_on(path, bad_value, lines, fields[:, 3], "dollar_value is not an amount >= 0")

    return pd.DataFrame(
        {
            "customer_id": ids.astype(str),
            "date": parsed.astype("datetime64[ns]"),
            NUMBER_OF_CDS: n_cds.astype("int64"),
            "dollar_value": value,
        }
    )


def cdnow_tables(raw: pd.DataFrame, margin_rate: float) -> dict[str, pd.DataFrame]:
    """Map parsed CDNOW rows (from `read_cdnow`) to the contract's customers and orders."""
    if not 0.0 <= margin_rate <= 1.0:
        raise ValueError(f"margin_rate must be between 0 and 1, got {margin_rate}")
    n = len(raw)
    orders = pd.DataFrame(
        {
            c.ORDER_ID: [f"{ORDER_ID_PREFIX}{i}" for i in range(1, n + 1)],
            c.CUSTOMER_ID: raw["customer_id"].to_numpy(),
            c.ORDER_TS: raw["date"].to_numpy(),
            c.REVENUE: raw["dollar_value"].to_numpy(),
            c.MARGIN: np.round(raw["dollar_value"].to_numpy() * margin_rate, 2),
            c.CATEGORY: CATEGORY_MUSIC,
            c.DISCOUNT_AMOUNT: 0.0,
            NUMBER_OF_CDS: raw[NUMBER_OF_CDS].to_numpy(),
        }
    )
    customers = (
        orders.groupby(c.CUSTOMER_ID, sort=True)[c.ORDER_TS].min().rename(c.SIGNUP_TS).reset_index()
    )
    return {c.CUSTOMERS: customers, c.ORDERS: orders}


def import_cdnow(
    src: Path,
    out: Path,
    margin_rate: float = DEFAULT_MARGIN_RATE,
    fmt: str = "parquet",
    overwrite: bool = False,
    partitions: int | None = None,
) -> CdnowImport:
    """Import the CDNOW purchase log into the data directory `out` and validate it.

    Args:
        src: the `CDNOW_master.txt` file.
        out: the data directory to write (created; must be empty unless `overwrite`).
        margin_rate: share of revenue taken as margin (CDNOW has no cost data).
        fmt: table format, `parquet` or `csv`.
        overwrite: replace the data-directory files of a non-empty `out`.
        partitions: split every table into this many customer partitions
            (`features.partitioned`; Parquet only); None writes one file per table.

    Raises:
        DataSourceError: the source is missing or malformed, or `out` is not usable.
        DataContractError: the written directory fails validation (a bug, not bad input).
    """
    if fmt not in ("parquet", "csv"):
        raise DataSourceError(f"unsupported table format '{fmt}' (use parquet or csv)")
    raw = read_cdnow(Path(src))
    tables = cdnow_tables(raw, margin_rate)
    managed = [f"{t}{s}" for t in c.TABLES for s in c.TABLE_SUFFIXES]
    out = prepare_out_dir(Path(out), [*managed, c.OFFERS_FILE, c.GROUND_TRUTH_FILE], overwrite)
    write_tables(out, tables, default_catalog(), fmt, partitions)
    report, _ = validate_data_dir(out)
    if not report.ok:
        raise DataContractError(report)
    orders = tables[c.ORDERS]
    return CdnowImport(
        out=out,
        customers=len(tables[c.CUSTOMERS]),
        orders=len(orders),
        revenue=round(float(orders[c.REVENUE].sum()), 2),
        margin_rate=margin_rate,
        first_order=orders[c.ORDER_TS].min(),
        last_order=orders[c.ORDER_TS].max(),
        report=report,
    )
