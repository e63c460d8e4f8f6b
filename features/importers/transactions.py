"""A retailer's transaction log (CSV, Parquet or a SQL query) -> a winback data directory.

The source has one row per order or per order line; a mapping names the source column of each
field (`TransactionMapping`). What happens to the rows, in order:

1. rows without a customer id are dropped (counted: `missing_customer_id`);
2. rows whose timestamp does not parse are dropped (`bad_timestamp`), likewise amounts
   (`bad_amount`);
3. return and cancellation lines (negative revenue or quantity, or an order id starting with
   `cancel_prefix`, e.g. `C` in an invoice export) are counted with their value and dropped:
   a return is not a purchase, and the export rarely says which order it takes back;
4. the remaining lines are summed into orders (`order_id` absent: every row is an order):
   revenue and margin are sums, the timestamp is the first line's, the category that of the
   order's largest line; an order of zero revenue is kept (a free order is still a visit);
5. customers: one per customer id with a kept order, `signup_ts` = first order, `region` and
   `acquisition_channel` from their first order's `region` and `channel`.

Margin: mapped, or revenue x `margin_rate`, written as empty margins plus `assumed_margin_rate`
in `dataset.json`, so the loader fills them and flags them `margin_assumed`
(`features.validation.fill_assumed_margin`) and reports say so. Category: mapped, or `unknown`.

The source is read in chunks and reduced to partial orders per chunk, so memory follows the
number of orders, not the number of lines (bench/bench_import.py: 5,000,000 lines). With
`partitions`, each chunk's partial orders are set aside by customer partition and each
partition is then finished and written on its own, so memory follows one chunk and one
partition, not the source (`_write_streamed`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import yaml

from features import constants as c
from features.contract import ValidationReport
from features.datadir import validate_data_dir
from features.errors import DataContractError, DataSourceError
from features.importers._common import prepare_out_dir, write_tables
from features.offers import OfferCatalog, parse_catalog
from features.partitioned import PartitionWriter
from features.partitions import partition_dir_name, partition_of

FIELDS: Final = (
    "customer_id",
    "ts",
    "order_id",
    "revenue",
    "quantity",
    "unit_price",
    "margin",
    "category",
    "channel",
    "region",
)
CHUNK_ROWS: Final = 1_000_000
ORDER_ID_PREFIX: Final = "row-"

DEFAULT_CATALOG_YAML: Final = """\
version: import-default-1
offers:
  - offer_id: pct10
    type: percent_discount
    value: 10
    cost: {revenue_fraction: 0.10}
    channels: [email]
    title: 10% off your next order
    description: Default offer written by `winback import transactions`; edit to taste.
  - offer_id: picked_for_you
    type: content
    channels: [email]
    title: Picked for you
    description: A content e-mail without incentive (costs no margin).
"""


@dataclass(frozen=True)
class TransactionMapping:
    """Which source column holds each field, and how to read the source.

    `customer_id` and `ts` are required, and either `revenue` or both `quantity` and
    `unit_price`; the other fields are optional.
    """

    columns: dict[str, str]
    sep: str = ","
    ts_format: str | None = None
    margin_rate: float = c.DEFAULT_MARGIN_RATE
    cancel_prefix: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise DataSourceError(
                f"mapping: unknown field(s) {', '.join(unknown)}; fields are {', '.join(FIELDS)}"
            )
        for need in ("customer_id", "ts"):
            if need not in self.columns:
                raise DataSourceError(f"mapping: field '{need}' is required (--map {need}=COLUMN)")
        if "revenue" not in self.columns and not {"quantity", "unit_price"} <= set(self.columns):
            raise DataSourceError(
                "mapping: map 'revenue', or both 'quantity' and 'unit_price' "
                "(revenue = quantity x unit_price)"
            )
        if not 0.0 <= self.margin_rate <= 1.0:
            raise DataSourceError(f"margin_rate: must be in [0, 1], got {self.margin_rate}")

    @property
    def margin_assumed(self) -> bool:
        return "margin" not in self.columns

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns),
            "sep": self.sep,
            "ts_format": self.ts_format,
            "cancel_prefix": self.cancel_prefix,
            **({"margin_rate": self.margin_rate} if self.margin_assumed else {}),
        }


def parse_map_options(pairs: list[str]) -> dict[str, str]:
    """`FIELD=COLUMN` pairs (from repeated `--map`) as a dict; a malformed pair is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise DataSourceError(f"--map {pair!r}: expected FIELD=COLUMN, e.g. customer_id=CustID")
        out[name.strip()] = column.strip()
    return out


def load_mapping_file(path: Path) -> dict[str, Any]:
    """A YAML mapping file: `columns: {field: column}` plus optional `sep`, `ts_format`,
    `margin_rate` and `cancel_prefix`."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataSourceError(f"{path}: cannot read the mapping: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), dict):
        raise DataSourceError(f"{path}: expected a YAML mapping with 'columns: {{field: column}}'")
    allowed = {"columns", "sep", "ts_format", "margin_rate", "cancel_prefix"}
    extra = sorted(set(doc) - allowed)
    if extra:
        raise DataSourceError(f"{path}: unknown key(s) {', '.join(extra)}")
    doc["columns"] = {str(k): str(v) for k, v in doc["columns"].items()}
    return doc


@dataclass
class TransactionImport:
    """What `import_transactions` read, dropped and wrote."""

    out: Path
    rows_read: int
    dropped: dict[str, int]
    return_lines: int
    return_value: float
    customers: int
    orders: int
    revenue: float
    first_order: pd.Timestamp
    last_order: pd.Timestamp
    margin_rate: float | None
    report: ValidationReport


# -- reading ------------------------------------------------------------------------------------


def _is_url(src: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src) is not None


def read_chunks(
    src: str, columns: Iterable[str], sep: str, query: str | None
) -> Iterator[pd.DataFrame]:
    """The source's `columns`, `CHUNK_ROWS` rows at a time, as read (CSV text stays text).

    `src` is a CSV file (separator `sep`), a Parquet file, or a SQLAlchemy URL with `query`.
    """
    wanted = sorted(set(columns))
    if query is not None:
        yield from _sql_chunks(src, query, wanted)
        return
    path = Path(src)
    if not path.is_file():
        raise DataSourceError(f"{path}: source file not found")
    if path.suffix.lower() == ".parquet":
        yield from _parquet_chunks(path, wanted)
        return
    try:
        reader = pd.read_csv(
            path,
            sep=sep,
            usecols=lambda name: str(name).strip() in wanted,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            chunksize=CHUNK_ROWS,
            encoding_errors="replace",
        )
        with reader:
            for chunk in reader:
                chunk.columns = [str(x).strip() for x in chunk.columns]
                _check_columns(chunk.columns, wanted, str(path), sep)
                yield chunk
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise DataSourceError(f"{path}: cannot read as CSV (sep {sep!r}): {exc}") from None


def _check_columns(have: pd.Index | list[str], wanted: list[str], where: str, sep: str) -> None:
    missing = [w for w in wanted if w not in set(have)]
    if missing:
        hint = f"; is the separator {sep!r} right (--sep)?" if len(have) <= 1 else ""
        raise DataSourceError(
            f"{where}: mapped column(s) {', '.join(missing)} not in the source "
            f"(it has: {', '.join(map(str, have))}){hint}"
        )


def _parquet_chunks(path: Path, wanted: list[str]) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        _check_columns(pf.schema_arrow.names, wanted, str(path), "")
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=wanted):
            yield batch.to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise DataSourceError(f"{path}: cannot read as Parquet: {exc}") from None


def _sql_chunks(url: str, query: str, wanted: list[str]) -> Iterator[pd.DataFrame]:
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = sa.create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise DataSourceError(f"source URL: cannot connect: {exc}") from None
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(sa.text(query))
            columns = list(result.keys())
            _check_columns(columns, wanted, "query", "")
            while rows := result.fetchmany(CHUNK_ROWS):
                yield pd.DataFrame(rows, columns=columns)[wanted]
    except SQLAlchemyError as exc:
        msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DataSourceError(f"query failed: {msg}") from None
    finally:
        engine.dispose()


# -- reducing lines to orders ---------------------------------------------------------------


def text_column(s: pd.Series) -> pd.Series:
    """Stripped text; empty strings are missing."""
    out = s.astype("string").str.strip()
    return out.mask(out == "")


def _number(s: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    return pd.to_numeric(text_column(s), errors="coerce").astype("float64")


def timestamp_column(s: pd.Series, fmt: str | None) -> pd.Series:
    """Naive-UTC timestamps (`fmt`, or inferred); what does not parse is NaT."""
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = pd.Series(s)
    else:
        text = text_column(s)
        ts = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.astype("datetime64[ns]")


def _reduce_chunk(
    raw: pd.DataFrame, m: TransactionMapping, first_row: int, counts: Counter[str]
) -> pd.DataFrame:
    """One chunk's kept lines as partial orders (one row per order id in the chunk)."""
    col = m.columns
    n = len(raw)
    counts["rows_read"] += n
    cid = text_column(raw[col["customer_id"]])
    ok = cid.notna().to_numpy(dtype=bool, copy=True)
    counts["missing_customer_id"] += int((~ok).sum())
    ts = timestamp_column(raw[col["ts"]], m.ts_format)
    bad_ts = ok & ts.isna().to_numpy()
    counts["bad_timestamp"] += int(bad_ts.sum())
    ok &= ~bad_ts
    if "revenue" in col:
        revenue = _number(raw[col["revenue"]])
        quantity = _number(raw[col["quantity"]]) if "quantity" in col else None
    else:
        quantity = _number(raw[col["quantity"]])
        revenue = quantity * _number(raw[col["unit_price"]])
    bad_amount = ok & ~np.isfinite(revenue.to_numpy())
    margin = _number(raw[col["margin"]]) if "margin" in col else None
    if margin is not None:
        bad_amount |= ok & ~np.isfinite(margin.to_numpy())
    counts["bad_amount"] += int(bad_amount.sum())
    ok &= ~bad_amount
    if "order_id" in col:
        oid = text_column(raw[col["order_id"]])
        no_oid = ok & oid.isna().to_numpy()
        counts["missing_order_id"] += int(no_oid.sum())
        ok &= ~no_oid
    else:
        numbers = pd.Series(np.arange(first_row + 1, first_row + n + 1)).astype(str)
        oid = (ORDER_ID_PREFIX + numbers).astype("string")
    is_return = revenue.to_numpy() < 0
    if quantity is not None:
        is_return |= np.nan_to_num(quantity.to_numpy(), nan=0.0) < 0
    if m.cancel_prefix:
        is_return |= oid.str.startswith(m.cancel_prefix).fillna(False).to_numpy(dtype=bool)
    is_return &= ok
    counts["return_lines"] += int(is_return.sum())
    counts["return_value_cents"] += round(float(-revenue[is_return].sum()) * 100)
    ok &= ~is_return
    lines = pd.DataFrame(
        {
            c.ORDER_ID: oid[ok].to_numpy(),
            c.CUSTOMER_ID: cid[ok].to_numpy(),
            c.ORDER_TS: ts[ok].to_numpy(),
            c.REVENUE: revenue[ok].to_numpy(),
        }
    )
    if margin is not None:
        lines[c.MARGIN] = margin[ok].to_numpy()
    for name, target in (("category", c.CATEGORY), ("channel", "channel"), ("region", "region")):
        if name in col:
            lines[target] = text_column(raw[col[name]])[ok].to_numpy()
    if "order_id" not in col:  # every row is an order already
        return lines.assign(_top=lines[c.REVENUE])
    return _orders_of(lines)


def _orders_of(lines: pd.DataFrame) -> pd.DataFrame:
    """Lines (or partial orders) -> one row per (order id, customer id)."""
    sums = [x for x in (c.REVENUE, c.MARGIN) if x in lines.columns]
    keys = [c.ORDER_ID, c.CUSTOMER_ID]
    if "_top" not in lines.columns:  # the largest line's revenue, kept across chunks
        lines = lines.assign(_top=lines[c.REVENUE])
    g = lines.groupby(keys, sort=False, observed=True)
    out = g[sums].sum()
    out[c.ORDER_TS] = g[c.ORDER_TS].min()
    out["_top"] = g["_top"].max()
    extra = [x for x in (c.CATEGORY, "channel", "region") if x in lines.columns]
    if extra:
        # the category of an order's largest line; channel and region alike
        top = lines.sort_values("_top", ascending=False, kind="stable").drop_duplicates(keys)
        out = out.join(top.set_index(keys)[extra])
    return out.reset_index()


# -- the import ---------------------------------------------------------------------------------


def default_catalog() -> OfferCatalog:
    return parse_catalog(DEFAULT_CATALOG_YAML, source="features/importers/transactions.py")


def transaction_tables(
    src: str, mapping: TransactionMapping, query: str | None = None
) -> tuple[dict[str, pd.DataFrame], Counter[str]]:
    """Read the source and build the contract's customers and orders; and the counts."""
    counts: Counter[str] = Counter()
    parts = []
    for chunk in read_chunks(src, mapping.columns.values(), mapping.sep, query):
        parts.append(_reduce_chunk(chunk, mapping, counts["rows_read"], counts))
    if not counts["rows_read"]:
        raise DataSourceError(f"{src}: no rows in the source")
    orders = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    tables = _contract_tables(src, orders, mapping, len(parts) > 1)
    if not len(tables[c.ORDERS]):
        raise DataSourceError(f"{src}: no order left after dropping the rows counted above")
    return tables, counts


def _contract_tables(
    src: str, orders: pd.DataFrame, mapping: TransactionMapping, several_chunks: bool
) -> dict[str, pd.DataFrame]:
    """Partial orders (`_reduce_chunk`'s rows, of every chunk) -> customers and orders."""
    if several_chunks and "order_id" in mapping.columns:  # an order may span two chunks
        orders = _orders_of(orders)
    shared = orders[c.ORDER_ID].duplicated(keep=False)
    if shared.any():
        ex = ", ".join(orders.loc[shared, c.ORDER_ID].astype(str).unique()[:5])
        raise DataSourceError(
            f"{src}: {int(orders.loc[shared, c.ORDER_ID].nunique())} order id(s) belong to "
            f"more than one customer (e.g. {ex}); map order_id to a column unique per order"
        )
    orders = orders.drop(columns="_top")
    orders = orders.sort_values([c.ORDER_TS, c.ORDER_ID], kind="stable").reset_index(drop=True)
    if c.MARGIN not in orders.columns:
        orders[c.MARGIN] = np.nan  # filled and flagged on load from dataset.json's rate
    if c.CATEGORY not in orders.columns:
        orders[c.CATEGORY] = c.UNKNOWN_CATEGORY
    orders[c.CATEGORY] = orders[c.CATEGORY].fillna(c.UNKNOWN_CATEGORY)
    orders[c.DISCOUNT_AMOUNT] = 0.0
    first = orders.drop_duplicates(c.CUSTOMER_ID)  # sorted by time: each customer's first order
    customers = pd.DataFrame(
        {
            c.CUSTOMER_ID: first[c.CUSTOMER_ID].to_numpy(),
            c.SIGNUP_TS: first[c.ORDER_TS].to_numpy(),
        }
    )
    for name, target in (("region", c.REGION), ("channel", c.ACQUISITION_CHANNEL)):
        if name in orders.columns:
            customers[target] = first[name].to_numpy()
            orders = orders.drop(columns=name)
    customers = customers.sort_values(c.CUSTOMER_ID).reset_index(drop=True)
    order_cols = [c.ORDER_ID, c.CUSTOMER_ID, c.ORDER_TS, c.REVENUE, c.MARGIN, c.CATEGORY]
    orders = orders[[*order_cols, c.DISCOUNT_AMOUNT]]
    return {c.CUSTOMERS: customers, c.ORDERS: orders}


@dataclass
class _Written:
    """What was written, for the import's summary."""

    customers: int = 0
    orders: int = 0
    revenue: float = 0.0
    first_order: pd.Timestamp | None = None
    last_order: pd.Timestamp | None = None

    def add(self, tables: dict[str, pd.DataFrame]) -> None:
        orders = tables[c.ORDERS]
        self.customers += len(tables[c.CUSTOMERS])
        self.orders += len(orders)
        if not len(orders):
            return
        self.revenue += float(orders[c.REVENUE].sum())
        lo, hi = orders[c.ORDER_TS].min(), orders[c.ORDER_TS].max()
        self.first_order = lo if self.first_order is None else min(self.first_order, lo)
        self.last_order = hi if self.last_order is None else max(self.last_order, hi)


def _write_streamed(
    src: str, out: Path, mapping: TransactionMapping, query: str | None, n_partitions: int
) -> tuple[_Written, Counter[str]]:
    """The import into `n_partitions` customer partitions, never holding the whole source.

    Each chunk's partial orders go to a scratch file of their customers' partition; then each
    partition's partial orders are combined (an order, like its customer, lies in one
    partition) and shaped by the same `_contract_tables` as the in-memory import, and written.
    Peak memory: one chunk, then one partition's orders. An order id shared by customers of
    two partitions is found by the validation that follows (the `unique` rule).
    """
    counts: Counter[str] = Counter()
    scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=out))
    written = _Written()
    try:
        n_chunks = 0
        for k, chunk in enumerate(read_chunks(src, mapping.columns.values(), mapping.sep, query)):
            orders = _reduce_chunk(chunk, mapping, counts["rows_read"], counts)
            part = partition_of(orders[c.CUSTOMER_ID], n_partitions)
            for p in np.unique(part):
                folder = scratch / partition_dir_name(int(p))
                folder.mkdir(exist_ok=True)
                rows = orders[part == p].reset_index(drop=True)
                rows.to_parquet(folder / f"chunk-{k:06d}.parquet", index=False)
            n_chunks = k + 1
        if not counts["rows_read"]:
            raise DataSourceError(f"{src}: no rows in the source")
        writer = PartitionWriter(out, n_partitions)
        writer.clear()
        for p in range(n_partitions):
            files = sorted((scratch / partition_dir_name(p)).glob("*.parquet"))
            if not files:
                continue
            orders = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            tables = _contract_tables(src, orders, mapping, n_chunks > 1)
            writer.write(tables, f"import-{p:03d}")
            written.add(tables)
        if not written.orders:
            raise DataSourceError(f"{src}: no order left after dropping the rows counted above")
        writer.close(default_catalog())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written, counts


def import_transactions(
    src: str | Path,
    out: Path,
    mapping: TransactionMapping,
    query: str | None = None,
    fmt: str = "parquet",
    overwrite: bool = False,
    partitions: int | None = None,
) -> TransactionImport:
    """Import a transaction log into the data directory `out` and validate it.

    Args:
        src: a CSV or Parquet file, or a SQLAlchemy URL when `query` is given.
        out: the data directory to write (created; must be empty unless `overwrite`).
        mapping: the source column of each field and how to read the source.
        query: a SQL query returning the mapped columns (with a URL as `src`).
        fmt: table format, `parquet` or `csv`.
        overwrite: replace the data-directory files of a non-empty `out`.
        partitions: split every table into this many customer partitions
            (`features.partitioned`; Parquet only); None writes one file per table.

    Raises:
        DataSourceError: the source or mapping is unusable, or `out` is not usable.
        DataContractError: the written directory fails validation.
    """
    if fmt not in ("parquet", "csv"):
        raise DataSourceError(f"unsupported table format '{fmt}' (use parquet or csv)")
    src = str(src)
    if query is None and _is_url(src):
        raise DataSourceError(f"{src}: a database URL needs --query 'SELECT ...'")
    if query is not None and not _is_url(src):
        raise DataSourceError(f"{src}: --query needs a SQLAlchemy URL as the source")
    if partitions is not None and fmt != "parquet":
        raise DataSourceError(f"--partitions: partitioned tables are Parquet, not '{fmt}'")
    managed = [f"{t}{s}" for t in c.TABLES for s in c.TABLE_SUFFIXES]
    extra = [c.OFFERS_FILE, c.GROUND_TRUTH_FILE, c.DATASET_FILE]
    if partitions is None:
        tables, counts = transaction_tables(src, mapping, query)
        out = prepare_out_dir(Path(out), [*managed, *extra], overwrite)
        write_tables(out, tables, default_catalog(), fmt, partitions)
        written = _Written()
        written.add(tables)
    else:
        out = prepare_out_dir(Path(out), [*managed, *extra], overwrite)
        written, counts = _write_streamed(src, out, mapping, query, partitions)
    dropped = {
        k: counts[k]
        for k in ("missing_customer_id", "bad_timestamp", "bad_amount", "missing_order_id")
        if counts[k]
    }
    return_value = counts["return_value_cents"] / 100
    meta: dict[str, Any] = {
        "source": src if query is None else _redacted(src),
        "query": query,
        "importer": "winback import transactions",
        "mapping": mapping.to_dict(),
        "rows_read": counts["rows_read"],
        "dropped_rows": dropped,
        "return_lines": counts["return_lines"],
        "return_value": return_value,
    }
    if mapping.margin_assumed:
        meta["assumed_margin_rate"] = mapping.margin_rate
    (out / c.DATASET_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if partitions is None:
        report, _ = validate_data_dir(out)
    else:  # partition by partition, never the whole data in memory
        from features.streaming import validate_partitioned

        report = validate_partitioned(out)
    if not report.ok:
        raise DataContractError(report)
    assert written.first_order is not None and written.last_order is not None
    return TransactionImport(
        out=out,
        rows_read=counts["rows_read"],
        dropped=dropped,
        return_lines=counts["return_lines"],
        return_value=return_value,
        customers=written.customers,
        orders=written.orders,
        revenue=round(written.revenue, 2),
        first_order=written.first_order,
        last_order=written.last_order,
        margin_rate=mapping.margin_rate if mapping.margin_assumed else None,
        report=report,
    )


def _redacted(url: str) -> str:
    """The URL without its password (dataset.json is a plain file)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def mapping_from(
    pairs: Mapping[str, str],
    file_doc: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> TransactionMapping:
    """A mapping from a file's document and `--map` pairs; options given explicitly win."""
    doc = dict(file_doc or {})
    columns = {**doc.pop("columns", {}), **pairs}
    doc.update({k: v for k, v in overrides.items() if v is not None})
    if doc.get("sep") in ("\\t", "tab"):
        doc["sep"] = "\t"
    return TransactionMapping(columns=columns, **doc)
