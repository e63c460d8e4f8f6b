"""Checking tables against the contract, vectorized (no per-row Python).

`coerce_table` turns a raw table (CSV strings or Parquet types) into the contract's dtypes and
reports what could not be converted; `check_table` applies the per-table rules and
`check_relations` the cross-table ones. Each returns `Problem`s; nothing raises on bad data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

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


def _coerce(col: Column, raw: pd.Series) -> pd.Series:
    s = _blank_to_na(raw)
    if col.kind == "ts":
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out = s
        else:
            out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        return out.astype("datetime64[ns]")
    if col.kind in ("float", "int"):
        out = pd.to_numeric(s, errors="coerce").astype("float64")
        return out
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
            out[col.name] = _coerce(col, pd.Series([fill] * len(raw), index=raw.index))
            continue
        series = _coerce(col, raw[col.name])
        bad = series.isna() & _blank_to_na(raw[col.name]).notna()
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
    frame = pd.DataFrame(out, index=raw.index)
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
    if schema.key and all(k in df.columns for k in schema.key):
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


def _fk(table: str, column: str, values: pd.Series, known: pd.Series, target: str) -> list[Problem]:
    v = values.dropna()
    bad = ~v.isin(known)
    if not bad.any():
        return []
    return [
        Problem(
            table,
            column,
            "foreign_key",
            int(bad.sum()),
            _examples(v[bad].unique()[:MAX_EXAMPLES]),
            f"must refer to a known {target}",
        )
    ]


def _lookup(keys: pd.Series, mapping: pd.Series) -> pd.Series:
    """`keys.map(mapping)`, also when `mapping` is empty (pandas then casts it to float)."""
    return pd.Series(mapping.reindex(keys.to_numpy()).to_numpy(), index=keys.index)


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
    signup = customers.set_index(c.CUSTOMER_ID)[c.SIGNUP_TS]
    signup = signup[~signup.index.duplicated()]
    for name in (c.ORDERS, c.CONTACTS, c.EVENTS, c.CONSENT):
        df = tables[name]
        problems += _fk(name, c.CUSTOMER_ID, df[c.CUSTOMER_ID], known_customers, "customer")
    orders = tables[c.ORDERS]
    problems += _not_before(
        c.ORDERS,
        c.ORDER_TS,
        orders[c.ORDER_TS],
        _lookup(orders[c.CUSTOMER_ID], signup),
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
        _lookup(contacts[c.CUSTOMER_ID], signup),
        contacts[c.CONTACT_ID],
        "contact before the customer's signup_ts",
    )
    events = tables[c.EVENTS]
    problems += _fk(c.EVENTS, c.CONTACT_ID, events[c.CONTACT_ID], contacts[c.CONTACT_ID], "contact")
    contact_ts = contacts.set_index(c.CONTACT_ID)[c.TS]
    contact_ts = contact_ts[~contact_ts.index.duplicated()]
    with_contact = events[c.CONTACT_ID].notna()
    if with_contact.any():
        ev = events[with_contact]
        problems += _not_before(
            c.EVENTS,
            c.TS,
            ev[c.TS],
            _lookup(ev[c.CONTACT_ID], contact_ts),
            ev[c.EVENT_ID],
            "event before the contact it refers to",
        )
    return problems


def validate_tables(
    raw: dict[str, pd.DataFrame], offer_ids: Iterable[str]
) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    """Coerce and check every table, then the relations between them."""
    problems: list[Problem] = []
    tables: dict[str, pd.DataFrame] = {}
    for name, schema in SCHEMAS.items():
        frame, coerce_problems, unparseable = coerce_table(schema, raw[name])
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
