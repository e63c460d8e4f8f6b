"""An e-mail service provider's exports -> the `consent`, `contacts` and `events` of a data dir.

Added to a data directory that already holds the customers (`winback import transactions`):

- consent lists (`import_consent`): one row per contact and channel with a subscription status
  (`subscribed`, `unsubscribed`, `cleaned`, ...) and when it was recorded; statuses are
  mapped to `opted_in` / `opted_out` (`STATUS_WORDS`, or the caller's own words);
- event logs (`import_esp_events`): one row per send, open, click, bounce, unsubscribe or
  complaint. Sends become `contacts` (a message without incentive, offer `none`, stage 1,
  unless the export names an offer); the others become `events` (`EVENT_WORDS`); an
  unsubscribe is also recorded as an opt-out of that channel, so consent follows it.

Rows are counted and dropped, never guessed: without a customer id, of a customer the data
directory does not know, with a timestamp or status/event that does not parse. Existing rows
of the directory are kept; re-importing the same export adds nothing twice (the tables' keys).

Into a partitioned directory (`features.partitioned`) the export is streamed: rows are set aside
by their customer's partition, then each partition's new rows are added as one more file per
table and partition (`_import_partitioned`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.contract import SCHEMAS, ValidationReport
from features.datadir import find_table, read_table, validate_data_dir, write_table
from features.errors import DataContractError, DataSourceError
from features.importers.transactions import read_chunks, text_column, timestamp_column

STATUS_WORDS: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("opted_in", "subscribed", "subscribe", "opt-in", "opt_in", "yes", "true", "1"),
        c.OPTED_IN,
    ),
    **dict.fromkeys(
        (
            "opted_out",
            "unsubscribed",
            "unsubscribe",
            "opt-out",
            "opt_out",
            "no",
            "false",
            "0",
            "cleaned",
            "complained",
        ),
        c.OPTED_OUT,
    ),
}
SEND: Final = "send"
EVENT_WORDS: Final[dict[str, str]] = {
    **dict.fromkeys(("send", "sent", "delivered", "delivery"), SEND),
    **dict.fromkeys(("open", "opened", "opens"), "open"),
    **dict.fromkeys(("click", "clicked", "clicks"), "click"),
    **dict.fromkeys(("bounce", "bounced", "hard_bounce", "soft_bounce"), "delivery_issue"),
    **dict.fromkeys(("unsubscribe", "unsubscribed"), "unsubscribe"),
    **dict.fromkeys(("complaint", "spam", "spamreport", "abuse"), "complaint"),
}
CONSENT_FIELDS: Final = ("customer_id", "status", "ts", "channel")
EVENT_FIELDS: Final = ("customer_id", "event", "ts", "channel", "campaign_id", "offer_id")


@dataclass(frozen=True)
class EspImport:
    """What an ESP import read, dropped and added."""

    out: Path
    rows_read: int
    dropped: dict[str, int]
    added: dict[str, int]
    report: ValidationReport


def _check_mapping(columns: Mapping[str, str], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise DataSourceError(
            f"mapping: unknown field(s) {', '.join(unknown)}; fields are {', '.join(fields)}"
        )
    for need in ("customer_id", fields[1]):
        if need not in columns:
            raise DataSourceError(f"mapping: field '{need}' is required (--map {need}=COLUMN)")


def _read(
    src: str, columns: Mapping[str, str], fields: tuple[str, ...], sep: str, query: str | None
) -> pd.DataFrame:
    parts = list(read_chunks(src, columns.values(), sep, query))
    if not parts:
        raise DataSourceError(f"{src}: no rows in the source")
    raw = pd.concat(parts, ignore_index=True)
    return pd.DataFrame({f: raw[col] for f, col in columns.items()})


def _words(series: pd.Series, words: Mapping[str, str]) -> pd.Series:
    return text_column(series).str.lower().map(dict(words))


def _channel(df: pd.DataFrame, default: str) -> pd.Series:
    """The mapped channel in lower case, or `default` for every row."""
    if "channel" in df:
        return text_column(df["channel"]).str.lower()
    return pd.Series(default, index=df.index, dtype="string")


def _known(data_dir: Path) -> pd.Series:
    path = find_table(data_dir, c.CUSTOMERS)
    if path is None:
        raise DataSourceError(
            f"{data_dir}: no customers table; import the transactions first "
            "(`winback import transactions SRC --out DIR`)"
        )
    return text_column(read_table(path)[c.CUSTOMER_ID])


def _keep(
    df: pd.DataFrame, known: pd.Series, ts_format: str | None, counts: Counter[str]
) -> pd.DataFrame:
    cid = text_column(df["customer_id"])
    ts = timestamp_column(df["ts"], ts_format) if "ts" in df else None
    ok = cid.notna().to_numpy(dtype=bool, copy=True)
    counts["missing_customer_id"] += int((~ok).sum())
    unknown = ok & ~cid.isin(set(known.dropna())).to_numpy(dtype=bool)
    counts["unknown_customer"] += int(unknown.sum())
    ok &= ~unknown
    if ts is not None:
        bad = ok & ts.isna().to_numpy(dtype=bool)
        counts["bad_timestamp"] += int(bad.sum())
        ok &= ~bad
    out = df.assign(customer_id=cid)
    if ts is not None:
        out["ts"] = ts
    return out[ok].reset_index(drop=True)


def _append(data_dir: Path, table: str, new: pd.DataFrame) -> int:
    """Add `new` rows to `table` (kept in its existing format); rows already there are kept,
    duplicates of the table's key are not added again. Returns the rows added."""
    schema = SCHEMAS[table]
    path = find_table(data_dir, table) or data_dir / f"{table}.parquet"
    old = read_table(path) if path.exists() else pd.DataFrame(columns=list(schema.names))
    new = new[list(schema.names)]
    as_text = dict.fromkeys(schema.key, "string")
    both = pd.concat([old.astype(as_text), new.astype(as_text)], ignore_index=True)
    both = both.drop_duplicates(list(schema.key), keep="first").reset_index(drop=True)
    added = len(both) - len(old)
    if path.suffix == ".csv":
        for col in both.columns:
            if pd.api.types.is_datetime64_any_dtype(both[col]):
                both[col] = both[col].dt.strftime("%Y-%m-%dT%H:%M:%S")
        both = both.astype(str).replace({"<NA>": "", "nan": "", "NaT": "", "None": ""})
    else:
        for col in both.columns:
            if both[col].dtype == object:
                both[col] = both[col].astype("string")
    write_table(both, path)
    return added


def _finish(out: Path, rows: int, counts: Counter[str], added: dict[str, int]) -> EspImport:
    from features.partition_layout import is_partitioned

    if is_partitioned(out):  # partition by partition, never the whole data in memory
        from features.streaming import validate_partitioned

        report = validate_partitioned(out)
    else:
        report, _ = validate_data_dir(out)
    if not report.ok:
        raise DataContractError(report)
    dropped = {k: v for k, v in counts.items() if v}
    return EspImport(out, rows, dropped, added, report)


def import_consent(
    src: str | Path,
    data_dir: Path,
    columns: Mapping[str, str],
    channel: str = "email",
    as_of: str | None = None,
    status_words: Mapping[str, str] | None = None,
    sep: str = ",",
    ts_format: str | None = None,
    query: str | None = None,
) -> EspImport:
    """Add a consent list to `data_dir`'s `consent` table.

    Args:
        columns: source column of `customer_id`, `status` and optionally `ts` and `channel`.
        channel: the channel of every row when `channel` is not mapped.
        as_of: when the statuses were recorded, when `ts` is not mapped (the export's date).
        status_words: extra status words (`word -> opted_in|opted_out`) beside `STATUS_WORDS`.
    """
    data_dir = Path(data_dir)
    if "ts" not in columns and as_of is None:
        raise DataSourceError("consent: map 'ts' or give --as-of (when the list was exported)")
    words = {**STATUS_WORDS, **{k.lower(): v for k, v in (status_words or {}).items()}}
    bad_words = sorted({v for v in words.values()} - set(c.CONSENT_STATUSES))
    if bad_words:
        raise DataSourceError(f"--status: statuses are opted_in or opted_out, got {bad_words}")
    fill = {} if "ts" in columns else {"ts": as_of}
    shape = partial(_consent_rows, words=words, channel=channel)
    return _import(str(src), data_dir, columns, CONSENT_FIELDS, sep, query, ts_format, shape, fill)


def _consent_rows(
    df: pd.DataFrame, counts: Counter[str], words: Mapping[str, str], channel: str
) -> dict[str, pd.DataFrame]:
    """Kept consent-list rows -> new `consent` rows."""
    status = _words(df["status"], words)
    chan = _channel(df, channel)
    ok = status.notna() & chan.isin(c.CHANNELS)
    counts["unrecognised_status"] += int(status.isna().sum())
    counts["unknown_channel"] += int((status.notna() & ~chan.isin(c.CHANNELS)).sum())
    consent = pd.DataFrame(
        {
            c.CUSTOMER_ID: df[c.CUSTOMER_ID],
            c.CHANNEL: chan,
            c.STATUS: status,
            c.UPDATED_TS: df["ts"],
        }
    )[ok.to_numpy()]
    return {c.CONSENT: consent}


def import_esp_events(
    src: str | Path,
    data_dir: Path,
    columns: Mapping[str, str],
    channel: str = "email",
    event_words: Mapping[str, str] | None = None,
    sep: str = ",",
    ts_format: str | None = None,
    query: str | None = None,
) -> EspImport:
    """Add an ESP event log to `data_dir`: sends -> `contacts`, the rest -> `events`, and
    unsubscribes also -> `consent` (opted_out on the channel)."""
    data_dir = Path(data_dir)
    if "ts" not in columns:
        raise DataSourceError("mapping: field 'ts' is required (--map ts=COLUMN)")
    words = {**EVENT_WORDS, **{k.lower(): v for k, v in (event_words or {}).items()}}
    shape = partial(_event_rows, words=words, channel=channel)
    return _import(str(src), data_dir, columns, EVENT_FIELDS, sep, query, ts_format, shape, {})


def _event_rows(
    df: pd.DataFrame, counts: Counter[str], words: Mapping[str, str], channel: str
) -> dict[str, pd.DataFrame]:
    """Kept event-log rows -> new `contacts` (sends), `events` and `consent` (opt-outs)."""
    kind = _words(df["event"], words)
    counts["unrecognised_event"] += int(kind.isna().sum())
    chan = _channel(df, channel)
    bad_chan = kind.notna() & ~chan.isin(c.CHANNELS)
    counts["unknown_channel"] += int(bad_chan.sum())
    df, kind, chan = df[~bad_chan], kind[~bad_chan], chan[~bad_chan]
    campaign = text_column(df["campaign_id"]).fillna("esp") if "campaign_id" in df else "esp"
    offer = (
        text_column(df["offer_id"]).fillna(c.NO_INCENTIVE) if "offer_id" in df else c.NO_INCENTIVE
    )
    # stable ids from the row's content: re-importing the same export adds nothing
    key = df[c.CUSTOMER_ID] + "|" + df["ts"].astype(str) + "|" + kind.fillna("") + "|" + chan
    ids = pd.util.hash_pandas_object(key, index=False).astype(str)
    base = pd.DataFrame(
        {c.CUSTOMER_ID: df[c.CUSTOMER_ID], c.TS: df["ts"], c.CHANNEL: chan, "_id": ids}
    ).assign(_campaign=campaign, _offer=offer)
    sends = base[kind == SEND]
    contacts = pd.DataFrame(
        {
            c.CONTACT_ID: "esp-" + sends["_id"],
            c.CUSTOMER_ID: sends[c.CUSTOMER_ID],
            c.TS: sends[c.TS],
            c.CHANNEL: sends[c.CHANNEL],
            c.CAMPAIGN_ID: sends["_campaign"],
            c.OFFER_ID: sends["_offer"],
            c.STAGE: 1,
            c.PROPENSITY: pd.NA,
        }
    )
    other = kind.notna() & (kind != SEND)
    ev = base[other]
    events = pd.DataFrame(
        {
            c.EVENT_ID: "esp-" + ev["_id"],
            c.CUSTOMER_ID: ev[c.CUSTOMER_ID],
            c.TS: ev[c.TS],
            c.EVENT_TYPE: kind[other],
            c.CONTACT_ID: pd.NA,
        }
    )
    unsub = base[kind == "unsubscribe"]
    consent = pd.DataFrame(
        {
            c.CUSTOMER_ID: unsub[c.CUSTOMER_ID],
            c.CHANNEL: unsub[c.CHANNEL],
            c.STATUS: c.OPTED_OUT,
            c.UPDATED_TS: unsub[c.TS],
        }
    )
    return {c.CONTACTS: contacts, c.EVENTS: events, c.CONSENT: consent}


Shape = Callable[[pd.DataFrame, Counter[str]], dict[str, pd.DataFrame]]


def _import(
    src: str,
    data_dir: Path,
    columns: Mapping[str, str],
    fields: tuple[str, ...],
    sep: str,
    query: str | None,
    ts_format: str | None,
    shape: Shape,
    fill: Mapping[str, str | None],
) -> EspImport:
    """Read, keep the rows of known customers, shape them and add them to the directory."""
    _check_mapping(columns, fields)
    from features.partition_layout import is_partitioned

    counts: Counter[str]
    if is_partitioned(data_dir):
        n, counts, added = _import_partitioned(
            src, data_dir, columns, sep, query, ts_format, shape, fill
        )
    else:
        df = _read(src, columns, fields, sep, query).assign(**fill)
        counts = Counter()
        n = len(df)
        df = _keep(df, _known(data_dir), ts_format, counts)
        added = {table: _append(data_dir, table, rows) for table, rows in shape(df, counts).items()}
    return _finish(data_dir, n, counts, added)


def _import_partitioned(
    src: str,
    data_dir: Path,
    columns: Mapping[str, str],
    sep: str,
    query: str | None,
    ts_format: str | None,
    shape: Shape,
    fill: Mapping[str, str | None],
) -> tuple[int, Counter[str], dict[str, int]]:
    """The import into a partitioned directory, never holding the source or the data whole.

    Each chunk's rows are set aside by their customer's partition in a scratch folder; then
    each partition's rows are checked against that partition's customers (a customer's rows
    all lie in its partition), shaped, and added as one more file per table and partition,
    without the rows whose key the partition already holds. Peak memory: one chunk, then
    one partition's new rows and keys.
    """
    from features.partition_layout import read_layout, read_partition_table, update_row_counts
    from features.partitions import partition_dir_name, partition_of

    layout = read_layout(data_dir)
    counts: Counter[str] = Counter()
    added: Counter[str] = Counter()
    n = 0
    scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=data_dir))
    # unique per import: two imports within a second must not write (and replace) one file
    stamp = f"esp-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
    try:
        for k, raw in enumerate(read_chunks(src, columns.values(), sep, query)):
            df = pd.DataFrame({f: raw[col] for f, col in columns.items()}).assign(**fill)
            n += len(df)
            cid = text_column(df["customer_id"])
            present = cid.notna().to_numpy(dtype=bool)
            counts["missing_customer_id"] += int((~present).sum())
            df, cid = df[present].reset_index(drop=True), cid[present].reset_index(drop=True)
            part = partition_of(cid.astype(str), layout.n_partitions)
            for p in np.unique(part):
                folder = scratch / partition_dir_name(int(p))
                folder.mkdir(exist_ok=True)
                df[part == p].to_parquet(folder / f"chunk-{k:06d}.parquet", index=False)
        if not n:
            raise DataSourceError(f"{src}: no rows in the source")
        for p in range(layout.n_partitions):
            files = sorted((scratch / partition_dir_name(p)).glob("*.parquet"))
            if not files:
                continue
            df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            customers = read_partition_table(data_dir, c.CUSTOMERS, p, [c.CUSTOMER_ID])
            known = text_column(
                customers[c.CUSTOMER_ID] if customers is not None else pd.Series([], dtype=str)
            )
            kept = _keep(df, known, ts_format, counts)
            for table, rows in shape(kept, counts).items():
                added[table] += _append_partition(data_dir, table, p, rows, stamp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    update_row_counts(data_dir, dict(added))
    return n, counts, dict(added)


def _append_partition(data_dir: Path, table: str, part: int, new: pd.DataFrame, name: str) -> int:
    """Add `new` rows of partition `part` to `table` as one more file (`name`.parquet): rows
    whose key the partition already holds, or that repeat within `new`, are left out. The file
    takes the column types of the table's existing files. Returns the rows added."""
    from features.partition_layout import read_partition_table
    from features.partitions import partition_dir_name

    schema = SCHEMAS[table]
    key = list(schema.key)
    as_text = dict.fromkeys(key, "string")
    new = new[list(schema.names)].astype(as_text).drop_duplicates(key)
    old = read_partition_table(data_dir, table, part, key)
    if old is not None and len(old) and len(new):
        held = pd.MultiIndex.from_frame(old[key].astype(as_text))
        new = new[~pd.MultiIndex.from_frame(new[key]).isin(held)]
    if not len(new):
        return 0
    arrow = pa.Table.from_pandas(new.reset_index(drop=True), preserve_index=False)
    ref = _reference_schema(data_dir, table)
    if ref is not None:
        arrow = arrow.select(ref.names).cast(ref)
    else:  # no file of this table anywhere yet: all-missing columns stored as text
        arrow = arrow.cast(
            pa.schema(
                [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in arrow.schema]
            )
        )
    folder = data_dir / table / partition_dir_name(part)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow, folder / f"{name}.parquet")
    return len(new)


def _reference_schema(data_dir: Path, table: str) -> pa.Schema | None:
    """The column types of `table`'s first existing file (any partition), or None."""
    for folder in sorted((data_dir / table).glob("part=*")):
        for path in sorted(folder.glob("*.parquet")):
            return pq.read_schema(path).remove_metadata()
    return None
