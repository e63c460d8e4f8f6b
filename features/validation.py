"""Checking tables against the contract, vectorized (no per-row Python).

`coerce_table` turns a raw table (CSV strings or Parquet types) into the contract's dtypes and
reports what could not be converted; `check_table` applies the per-table rules and
`check_relations` the cross-table ones. Each returns `Problem`s; nothing raises on bad data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import constants as c
from features.contract import SCHEMAS, Column, Problem, TableSchema

MAX_EXAMPLES = 5


def _examples(values: Iterable[object]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        out.append("<empty>" if v is None or (isinstance(v, float) and np.isnan(v)) else repr(v))
        if len(out) == MAX_EXAMPLES:
            break
    return tuple(out)


def _blank_to_na(s: pd.Series) -> pd.Series:
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        stripped = s.astype("string").str.strip()
        return stripped.mask(stripped == "")
    return s


def _coerce(col: Column, s: pd.Series) -> pd.Series:
    """Convert `s` (blanks already made NA by `_blank_to_na`) to the dtype of `col`."""
    if col.kind == "ts":
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out = s
        else:
            out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        return out.astype("datetime64[ns]")
    if col.kind in ("float", "int"):
        if pd.api.types.is_numeric_dtype(s.dtype):  # to_numeric would only return a copy
            return s.astype("float64")
        return pd.to_numeric(s, errors="coerce").astype("float64")
    # ids, text and enumerations are strings
    if pd.api.types.is_float_dtype(s.dtype):
        # integral ids read as float (because of NaN) must not become "12.0"
        as_int = s.dropna()
        if (as_int == np.floor(as_int)).all():
            return s.astype("Int64").astype("string")
    return s.astype("string")


def coerce_table(
    schema: TableSchema, raw: pd.DataFrame
) -> tuple[pd.DataFrame, list[Problem], dict[str, pd.Series]]:
    """Convert `raw` to the contract's dtypes; report missing columns and unparseable values.

    Returns the converted frame, the problems, and per column the mask of values that could not
    be converted (they are empty in the frame, and must not be reported again as missing).
    """
    problems: list[Problem] = []
    unparseable: dict[str, pd.Series] = {}
    out: dict[str, pd.Series] = {}
    for col in schema.columns:
        if col.name not in raw.columns:
            if col.required:
                detail = f"required column is missing ({col.meaning})"
                problems.append(
                    Problem(schema.name, col.name, "missing_column", len(raw), (), detail)
                )
                continue
            fill = col.default
            filled = pd.Series([fill] * len(raw), index=raw.index)
            out[col.name] = _coerce(col, _blank_to_na(filled))
            continue
        given = _blank_to_na(raw[col.name])
        series = _coerce(col, given)
        bad = series.isna() & given.notna()
        if bad.any():
            unparseable[col.name] = bad.reset_index(drop=True)
            expected = {"ts": "an ISO 8601 timestamp", "float": "a number", "int": "an integer"}
            problems.append(
                Problem(
                    schema.name,
                    col.name,
                    "type",
                    int(bad.sum()),
                    _examples(raw.loc[bad, col.name].head(MAX_EXAMPLES)),
                    f"expected {expected.get(col.kind, 'text')}",
                )
            )
        out[col.name] = series
    extra = [name for name in raw.columns if name not in schema.names]
    # concat keeps each column's own array; DataFrame(dict) would copy same-dtype columns into
    # one 2-D block (hundreds of MB for a large orders table)
    frame = (
        pd.concat(list(out.values()), axis=1, keys=list(out))
        if out
        else pd.DataFrame(index=raw.index)
    )
    for name in extra:  # unknown columns are kept: importers may carry extra attributes
        frame[name] = raw[name]
    return frame.reset_index(drop=True), problems, unparseable


def check_table(
    schema: TableSchema, df: pd.DataFrame, unparseable: dict[str, pd.Series] | None = None
) -> list[Problem]:
    """Per-table rules: nulls, allowed values, ranges, integers, unique key."""
    problems: list[Problem] = []
    unparseable = unparseable or {}
    for col in schema.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        null = s.isna()
        if col.name in unparseable:
            null &= ~unparseable[col.name].to_numpy()
        if not col.nullable and null.any() and col.default is None:
            problems.append(
                Problem(schema.name, col.name, "not_null", int(null.sum()), (), "value required")
            )
        present = s[~null]
        if col.allowed is not None:
            bad = ~present.isin(col.allowed)
            if bad.any():
                problems.append(
                    Problem(
                        schema.name,
                        col.name,
                        "allowed_values",
                        int(bad.sum()),
                        _examples(present[bad].unique()[:MAX_EXAMPLES]),
                        "must be one of " + ", ".join(col.allowed),
                    )
                )
        if col.kind in ("float", "int"):
            problems += _check_range(schema.name, col, present)
    if (
        schema.key
        and all(k in df.columns for k in schema.key)
        and not _surely_unique(df, schema.key)
    ):
        dup = df.duplicated(list(schema.key), keep=False)
        if dup.any():
            keys = df.loc[dup, list(schema.key)].drop_duplicates().head(MAX_EXAMPLES)
            ex = tuple(
                repr(row[0]) if len(row) == 1 else repr("/".join(str(v) for v in row))
                for row in keys.itertuples(index=False)
            )
            problems.append(
                Problem(
                    schema.name,
                    ",".join(schema.key),
                    "unique",
                    int(dup.sum()),
                    ex,
                    "key must be unique",
                )
            )
    return problems


def _arrow(s: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    """The Arrow data behind a string column (no copy when Arrow-backed); None for other dtypes."""
    if not isinstance(s.dtype, pd.StringDtype):
        return None
    return s.array.__arrow_array__()


def _surely_unique(df: pd.DataFrame, key: tuple[str, ...]) -> bool:
    """True when a one-column string key has no repeated value (missing values count as equal).

    Done in Arrow, much cheaper than `duplicated`: ids that are already strictly increasing
    (byte order) are distinct, else a hash count; False means "look with pandas".
    """
    if len(key) != 1:
        return False
    arr = _arrow(df[key[0]])
    if arr is None:
        return False
    if len(arr) < 2:
        return True
    if arr.null_count == 0 and pc.all(pc.greater(arr[1:], arr[:-1])).as_py():
        return True
    return len(pc.unique(arr)) == len(arr)


def _check_range(table: str, col: Column, s: pd.Series) -> list[Problem]:
    problems: list[Problem] = []
    bad = pd.Series(False, index=s.index)
    bounds = []
    if col.min is not None:
        bad |= (s <= col.min) if col.min_exclusive else (s < col.min)
        bounds.append(f"{'>' if col.min_exclusive else '>='} {col.min:g}")
    if col.max is not None:
        bad |= s > col.max
        bounds.append(f"<= {col.max:g}")
    if bad.any():
        problems.append(
            Problem(
                table, col.name, "range", int(bad.sum()), _examples(s[bad]), " and ".join(bounds)
            )
        )
    if col.kind == "int":
        frac = s != np.floor(s)
        if frac.any():
            problems.append(
                Problem(
                    table,
                    col.name,
                    "type",
                    int(frac.sum()),
                    _examples(s[frac]),
                    "expected an integer",
                )
            )
    return problems


def _isin(values: pd.Series, known: pd.Series) -> np.ndarray:
    """`values.isin(known)` as a boolean array; hashed in Arrow for string columns.

    pandas' `isin` on Arrow strings first turns every element of `known` into a Python object.
    """
    arr, known_arr = _arrow(values), _arrow(known)
    if arr is None or known_arr is None:
        return values.isin(known).to_numpy()
    if isinstance(known_arr, pa.ChunkedArray):
        known_arr = known_arr.combine_chunks()
    found = pc.is_in(arr, value_set=known_arr.cast(arr.type))
    return np.asarray(pc.fill_null(found, False))


def _fk(table: str, column: str, values: pd.Series, known: pd.Series, target: str) -> list[Problem]:
    bad = values.notna().to_numpy() & ~_isin(values, known)
    if not bad.any():
        return []
    return [
        Problem(
            table,
            column,
            "foreign_key",
            int(bad.sum()),
            _examples(values[bad].unique()[:MAX_EXAMPLES]),
            f"must refer to a known {target}",
        )
    ]


def _lookup(keys: pd.Series, index: pd.Series, values: pd.Series) -> pd.Series:
    """For each key, `values` at the first row where `index` equals it (missing when none).

    `keys.map(...)` of a de-duplicated mapping, without building a pandas index of strings.
    """
    keys_arr, index_arr = _arrow(keys), _arrow(index)
    if keys_arr is None or index_arr is None:
        mapping = pd.Series(values.to_numpy(), index=index)
        mapping = mapping[~mapping.index.duplicated()]
        return pd.Series(mapping.reindex(keys.to_numpy()).to_numpy(), index=keys.index)
    if isinstance(index_arr, pa.ChunkedArray):
        index_arr = index_arr.combine_chunks()
    pos = pc.index_in(keys_arr, value_set=index_arr.cast(keys_arr.type))
    taken = values.array.take(np.asarray(pc.fill_null(pos, -1)), allow_fill=True)
    return pd.Series(taken, index=keys.index)


def _not_before(
    table: str, column: str, ts: pd.Series, ref: pd.Series, ids: pd.Series, what: str
) -> list[Problem]:
    bad = ts < ref  # NaT compares False: unknown references are reported by the FK rule
    if not bad.any():
        return []
    return [
        Problem(table, column, "timestamp_order", int(bad.sum()), _examples(ids[bad].head()), what)
    ]


def check_relations(tables: dict[str, pd.DataFrame], offer_ids: Iterable[str]) -> list[Problem]:
    """Cross-table rules: foreign keys, offers known, controls without a channel, time order."""
    problems: list[Problem] = []
    customers = tables[c.CUSTOMERS]
    known_customers = customers[c.CUSTOMER_ID]
    signup = customers[c.SIGNUP_TS]
    for name in (c.ORDERS, c.CONTACTS, c.EVENTS, c.CONSENT):
        df = tables[name]
        problems += _fk(name, c.CUSTOMER_ID, df[c.CUSTOMER_ID], known_customers, "customer")
    orders = tables[c.ORDERS]
    problems += _not_before(
        c.ORDERS,
        c.ORDER_TS,
        orders[c.ORDER_TS],
        _lookup(orders[c.CUSTOMER_ID], known_customers, signup),
        orders[c.ORDER_ID],
        "order placed before the customer's signup_ts",
    )
    bad_margin = orders[c.MARGIN] > orders[c.REVENUE]
    if bad_margin.any():
        problems.append(
            Problem(
                c.ORDERS,
                c.MARGIN,
                "range",
                int(bad_margin.sum()),
                _examples(orders.loc[bad_margin, c.ORDER_ID].head()),
                "margin must not exceed revenue",
            )
        )
    contacts = tables[c.CONTACTS]
    valid_offers = pd.Series([*offer_ids, *c.RESERVED_OFFER_IDS])
    problems += _fk(
        c.CONTACTS, c.OFFER_ID, contacts[c.OFFER_ID], valid_offers, "offer of offers.yaml"
    )
    is_holdout = contacts[c.OFFER_ID] == c.HOLDOUT
    no_channel = contacts[c.CHANNEL].isna()
    bad_ctrl = (is_holdout & ~no_channel) | (~is_holdout & no_channel)
    if bad_ctrl.any():
        problems.append(
            Problem(
                c.CONTACTS,
                c.CHANNEL,
                "control_channel",
                int(bad_ctrl.sum()),
                _examples(contacts.loc[bad_ctrl, c.CONTACT_ID].head()),
                "channel must be empty exactly when offer_id is 'holdout'",
            )
        )
    problems += _not_before(
        c.CONTACTS,
        c.TS,
        contacts[c.TS],
        _lookup(contacts[c.CUSTOMER_ID], known_customers, signup),
        contacts[c.CONTACT_ID],
        "contact before the customer's signup_ts",
    )
    events = tables[c.EVENTS]
    problems += _fk(c.EVENTS, c.CONTACT_ID, events[c.CONTACT_ID], contacts[c.CONTACT_ID], "contact")
    contact_ts = _lookup(events[c.CONTACT_ID], contacts[c.CONTACT_ID], contacts[c.TS])
    # events without a contact_id are not compared (an empty contact_id may also exist there)
    contact_ts = contact_ts.where(events[c.CONTACT_ID].notna())
    problems += _not_before(
        c.EVENTS,
        c.TS,
        events[c.TS],
        contact_ts,
        events[c.EVENT_ID],
        "event before the contact it refers to",
    )
    return problems


def fill_assumed_margin(orders: pd.DataFrame, margin_rate: float) -> pd.DataFrame:
    """Fill absent or empty margins with revenue x `margin_rate`, flagged in `margin_assumed`.

    A retailer's export rarely carries cost data. The rate is the data's own (`dataset.json`,
    written by `winback import transactions --margin-rate`) or the documented default
    (`WINBACK_ASSUMED_MARGIN_RATE`, 0.25); every report built on these margins says so.
    A `margin_assumed` column already in the data (a re-export) is kept: once assumed, a
    margin stays assumed.
    """
    if c.MARGIN not in orders.columns or c.REVENUE not in orders.columns:
        return orders
    missing = orders[c.MARGIN].isna().to_numpy()
    if c.MARGIN_ASSUMED in orders.columns:
        given = orders[c.MARGIN_ASSUMED].astype("string").str.lower().isin(["true", "1"])
        missing = missing | given.to_numpy(dtype=bool)
    if missing.any():
        filled = orders[c.REVENUE].to_numpy(np.float64) * margin_rate
        orders[c.MARGIN] = np.where(missing, filled, orders[c.MARGIN].to_numpy(np.float64))
    orders[c.MARGIN_ASSUMED] = missing
    return orders


def validate_tables(
    raw: dict[str, pd.DataFrame],
    offer_ids: Iterable[str],
    margin_rate: float = c.DEFAULT_MARGIN_RATE,
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    """Coerce and check every table, then the relations between them.

    Orders without a margin get revenue x `margin_rate` (`fill_assumed_margin`).
    """
    problems: list[Problem] = []
    tables: dict[str, pd.DataFrame] = {}
    for name, schema in SCHEMAS.items():
        frame, coerce_problems, unparseable = coerce_table(schema, raw[name])
        if name == c.ORDERS:
            frame = fill_assumed_margin(frame, margin_rate)
            if c.CATEGORY in frame.columns:  # optional: an order without one is "unknown"
                frame[c.CATEGORY] = frame[c.CATEGORY].fillna(c.UNKNOWN_CATEGORY)
        problems += coerce_problems
        problems += check_table(schema, frame, unparseable)  # skips missing columns
        missing = [p.column for p in coerce_problems if p.rule == "missing_column"]
        tables[name] = _with_all_columns(schema, frame) if missing else frame
    if not any(p.rule == "missing_column" for p in problems):
        problems += check_relations(tables, offer_ids)
    return tables, problems


def _with_all_columns(schema: TableSchema, frame: pd.DataFrame) -> pd.DataFrame:
    for col in schema.columns:
        if col.name not in frame.columns:
            frame[col.name] = pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame


def empty_table(schema: TableSchema) -> pd.DataFrame:
    """A table of the schema with no rows (for optional tables that are absent)."""
    return pd.DataFrame({col.name: pd.Series([], dtype="string") for col in schema.columns})
