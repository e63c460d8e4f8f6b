"""Hillstrom e-mail test (MineThatData, 2008) -> an `offer_response` modeling frame.

The source is a randomized experiment with pre-campaign features per customer and two-week
outcomes, but no raw order or contact history, so it maps onto a modeling frame (the form that
`winback features frames` builds from a data directory), not onto a data directory. The
mapping (see ../shared/data/hillstrom/README.md, relative to the repository root, for the
source):

- one row per source row; `customer_id` is synthesized `h00001`, `h00002`, ... in file order.
- `ts` = 2008-03-01, a *chosen* campaign date: the source gives none (it was published on
  2008-03-20; the outcomes cover the two weeks after the e-mail).
- features: `recency`, `history`, `mens`, `womens`, `newbie` (numbers) and `zip_code`,
  `purchase_channel` (categorical: pandas `category` dtype with sorted levels). The source's
  `channel` (where the customer bought in the past year) is renamed `purchase_channel`
  because `channel` in winback means the contact channel. `history_segment` is kept as a
  column but is *not* a feature: it is a fixed binning of `history` (cuts at 100, 200, 350,
  500, 750, 1,000 dollars), so it adds nothing to a model that sees `history`.
- treatment `offer_id` from `segment`: `mens_email`, `womens_email`, or `holdout` (No E-Mail);
  `propensity` = 1/3, the design's equal randomization.
- outcomes: `converted` (= conversion), `outcome_revenue` (= spend), `visit`, and
  `outcome_margin` = NaN (the source has no cost data, so margin is unknown).

The import writes `offer_response.parquet` and an `offers.yaml` with the two e-mails.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from features import constants as c
from features.errors import DataSourceError
from features.importers._common import prepare_out_dir, read_source_text
from features.modeling_frame import (
    CONVERTED,
    OUTCOME_MARGIN,
    OUTCOME_REVENUE,
    FrameSpec,
    write_frame,
)
from features.offers import OfferCatalog, dump_catalog, parse_catalog

SOURCE_COLUMNS: Final = (
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
)
SEGMENT_TO_OFFER: Final = {
    "Mens E-Mail": "mens_email",
    "Womens E-Mail": "womens_email",
    "No E-Mail": c.HOLDOUT,
}
CAMPAIGN_TS: Final = pd.Timestamp("2008-03-01")
FEATURE_SET: Final = "hillstrom_v1"
FRAME_FILE: Final = "offer_response.parquet"
PROPENSITY: Final = 1.0 / 3.0

VISIT: Final = "visit"
PURCHASE_CHANNEL: Final = "purchase_channel"
HISTORY_SEGMENT: Final = "history_segment"
NUMERIC_FEATURES: Final = ("recency", "history", "mens", "womens", "newbie")
CATEGORICAL_FEATURES: Final = ("zip_code", PURCHASE_CHANNEL)
_BINARY: Final = ("mens", "womens", "newbie", "visit", "conversion")

CATALOG_YAML: Final = """\
version: hillstrom-2008
offers:
  - offer_id: mens_email
    type: content
    channels: [email]
    title: Men's merchandise e-mail
    description: Hillstrom (2008) test arm "Mens E-Mail".
  - offer_id: womens_email
    type: content
    channels: [email]
    title: Women's merchandise e-mail
    description: Hillstrom (2008) test arm "Womens E-Mail".
"""


@dataclass(frozen=True)
class HillstromImport:
    """What `import_hillstrom` wrote, with per-arm figures for the report."""

    out: Path
    frame_path: Path
    rows: int
    arms: pd.DataFrame  # index offer_id; customers, visit_rate, conversion_rate, mean_spend
    spec: FrameSpec


def catalog() -> OfferCatalog:
    """The two e-mail arms as catalog offers (the control is the built-in `holdout`)."""
    return parse_catalog(CATALOG_YAML, source="features/importers/hillstrom.py")


def _bad(path: Path, column: str, mask: pd.Series, values: pd.Series, what: str) -> None:
    if mask.any():
        first = mask.to_numpy().nonzero()[0][0]
        raise DataSourceError(
            f"{path}: line {first + 2}: column '{column}' {what} (value {values.iloc[first]!r}); "
            f"{int(mask.sum())} such row(s)"
        )


def read_hillstrom(path: Path) -> pd.DataFrame:
    """Parse and check the Hillstrom CSV; return it with numeric columns as numbers.

    Accepts LF or CRLF endings, quoted fields with commas, spaces around values, and extra
    columns (ignored). Raises DataSourceError naming the file, line, column and problem.
    """
    path = Path(path)
    text = read_source_text(path, "Hillstrom CSV")
    if not text.strip():
        raise DataSourceError(f"{path}: the Hillstrom CSV file is empty")
    try:
        raw = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            quoting=csv.QUOTE_MINIMAL,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataSourceError(f"{path}: not a well-formed CSV file: {exc}") from None
    raw.columns = [str(col).strip() for col in raw.columns]
    missing = [col for col in SOURCE_COLUMNS if col not in raw.columns]
    if missing:
        found = ", ".join(repr(col) for col in list(raw.columns)[:6])
        raise DataSourceError(
            f"{path}: missing column(s) {', '.join(missing)}; the header has {found}; "
            "is this the Hillstrom e-mail test file?"
        )
    if raw.empty:
        raise DataSourceError(f"{path}: no data rows in the Hillstrom file")
    df = raw[list(SOURCE_COLUMNS)].apply(lambda s: s.str.strip())
    for col in SOURCE_COLUMNS:
        _bad(path, col, df[col] == "", df[col], "is empty")
    out = pd.DataFrame(index=df.index)
    for col in ("recency", "history", "spend", *_BINARY):
        num = pd.to_numeric(df[col], errors="coerce").astype("float64")
        _bad(path, col, ~np.isfinite(num), df[col], "is not a number")
        _bad(path, col, num < 0, df[col], "is negative")
        out[col] = num
    for col in _BINARY:
        _bad(path, col, ~out[col].isin((0.0, 1.0)), df[col], "must be 0 or 1")
    _bad(path, "recency", out["recency"] != np.floor(out["recency"]), df["recency"], "is not whole")
    bad_segment = ~df["segment"].isin(list(SEGMENT_TO_OFFER))
    _bad(
        path, "segment", bad_segment, df["segment"], "is not one of " + ", ".join(SEGMENT_TO_OFFER)
    )
    for col in ("recency", *_BINARY):
        out[col] = out[col].astype("int64")
    for col in ("history_segment", "zip_code", "channel", "segment"):
        out[col] = df[col].astype(str)
    return out[list(SOURCE_COLUMNS)]


def _categorical(values: pd.Series, ordered: bool = False) -> pd.Series:
    # sorted levels stored with the frame: the vocabulary travels in the Parquet file; the
    # history_segment labels start with "1)".."7)", so sorting them orders the buckets
    levels = sorted(values.unique())
    return values.astype(pd.CategoricalDtype(levels, ordered=ordered))


def hillstrom_frame(raw: pd.DataFrame, source: str = "") -> tuple[pd.DataFrame, FrameSpec]:
    """Map parsed Hillstrom rows (from `read_hillstrom`) to an offer-response frame and spec."""
    n = len(raw)
    width = max(5, len(str(n)))
    frame = pd.DataFrame(
        {
            c.CUSTOMER_ID: [f"h{i:0{width}d}" for i in range(1, n + 1)],
            c.TS: pd.Series(CAMPAIGN_TS, index=raw.index).astype("datetime64[ns]"),
            **{col: raw[col] for col in NUMERIC_FEATURES},
            "zip_code": _categorical(raw["zip_code"]),
            PURCHASE_CHANNEL: _categorical(raw["channel"]),
            HISTORY_SEGMENT: _categorical(raw["history_segment"], ordered=True),
            c.OFFER_ID: raw["segment"].map(SEGMENT_TO_OFFER),
            c.PROPENSITY: PROPENSITY,
            CONVERTED: raw["conversion"],
            OUTCOME_REVENUE: raw["spend"],
            OUTCOME_MARGIN: np.nan,
            VISIT: raw["visit"],
        }
    ).reset_index(drop=True)
    spec = FrameSpec(
        kind="offer_response",
        feature_set=FEATURE_SET,
        feature_columns=(*NUMERIC_FEATURES, *CATEGORICAL_FEATURES),
        categorical_columns=CATEGORICAL_FEATURES,
        treatment_column=c.OFFER_ID,
        control_value=c.HOLDOUT,
        propensity_column=c.PROPENSITY,
        outcome_columns=(CONVERTED, OUTCOME_REVENUE, OUTCOME_MARGIN, VISIT),
        time_column=c.TS,
        id_column=c.CUSTOMER_ID,
        source=source,
        notes={
            "dataset": "Hillstrom (2008) MineThatData e-mail test; outcomes over two weeks",
            "ts": f"{CAMPAIGN_TS.date()} is a chosen campaign date; the source gives none",
            "customer_id": "synthesized h00001... in file order; the source has no id",
            "propensity": "1/3: equal randomization across the three arms",
            PURCHASE_CHANNEL: "source column 'channel' (past-year purchase channel), renamed",
            HISTORY_SEGMENT: "kept but not a feature: a fixed binning of history",
            OUTCOME_MARGIN: "unknown (NaN): the source has no cost data",
        },
    )
    return frame, spec


def arm_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers, visit and conversion rate and mean spend per offer_id."""
    grouped = frame.groupby(c.OFFER_ID, sort=True)
    return pd.DataFrame(
        {
            "customers": grouped.size(),
            "visit_rate": grouped[VISIT].mean(),
            "conversion_rate": grouped[CONVERTED].mean(),
            "mean_spend": grouped[OUTCOME_REVENUE].mean(),
        }
    )


def import_hillstrom(src: Path, out: Path, overwrite: bool = False) -> HillstromImport:
    """Import the Hillstrom CSV into `out` as `offer_response.parquet` plus `offers.yaml`.

    Raises:
        DataSourceError: the source is missing or malformed, or `out` is not usable.
    """
    src = Path(src)
    frame, spec = hillstrom_frame(read_hillstrom(src), source=f"hillstrom:{src.name}")
    out = prepare_out_dir(Path(out), (FRAME_FILE, c.OFFERS_FILE), overwrite)
    frame_path = out / FRAME_FILE
    write_frame(frame, spec, frame_path)
    (out / c.OFFERS_FILE).write_text(dump_catalog(catalog()), encoding="utf-8")
    return HillstromImport(
        out=out, frame_path=frame_path, rows=len(frame), arms=arm_summary(frame), spec=spec
    )
