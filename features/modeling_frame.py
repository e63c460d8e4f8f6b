"""Modeling frames: a training table that says what its columns are.

A modeling frame is one Parquet file whose schema metadata (key `winback.frame`) holds a
`FrameSpec`: which columns are features (and which of those are categorical), which column is
the treatment (the offer received) and its control value, the logged propensity, the outcomes,
and where the rows came from. Two kinds exist:

- `offer_response`: one row per past contact or randomized control; built by
  `winback features frames` from a data directory, or imported directly (Hillstrom has no raw
  history, only pre-campaign features per customer: its importer writes this form).
- `reactivation`: one row per (cutoff, lapsed or at-risk customer) with the label "ordered
  within the horizon".

The trainer accepts a data directory (and builds frames itself) or a frame file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import DataSourceError

METADATA_KEY = b"winback.frame"
FrameKind = Literal["offer_response", "reactivation"]

# Standard outcome columns of an offer-response frame.
CONVERTED = "converted"
OUTCOME_REVENUE = "outcome_revenue"
OUTCOME_MARGIN = "outcome_margin"
DAYS_TO_ORDER = "days_to_order"
UNSUBSCRIBED = "unsubscribed"
# Reactivation frame.
CUTOFF = "cutoff"
LABEL = "reactivated"
CONTACTED_IN_WINDOW = "contacted_in_window"


@dataclass(frozen=True)
class FrameSpec:
    """What the columns of a modeling frame mean."""

    kind: FrameKind
    feature_set: str
    feature_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...] = ()
    treatment_column: str = "offer_id"
    control_value: str = "holdout"
    propensity_column: str = "propensity"
    outcome_columns: tuple[str, ...] = ()
    time_column: str = "ts"
    id_column: str = "customer_id"
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FrameSpec:
        raw = json.loads(text)
        for key in ("feature_columns", "categorical_columns", "outcome_columns"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)


def write_frame(df: pd.DataFrame, spec: FrameSpec, path: Path) -> None:
    """Write `df` with `spec` in the Parquet metadata, atomically."""
    missing = [
        col
        for col in (*spec.feature_columns, *spec.outcome_columns, spec.id_column)
        if col not in df.columns
    ]
    if missing:
        raise DataSourceError(f"{path}: frame lacks the columns its spec names: {missing}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = spec.to_json().encode()
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def is_frame(path: Path) -> bool:
    """Whether `path` is a Parquet file carrying a frame spec."""
    if not (path.is_file() and path.suffix == ".parquet"):
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return METADATA_KEY in meta


def read_frame(path: Path) -> tuple[pd.DataFrame, FrameSpec]:
    """Read a modeling frame and its spec; a plain Parquet file is a DataSourceError."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataSourceError(f"{path}: cannot read modeling frame: {exc}") from None
    meta = table.schema.metadata or {}
    if METADATA_KEY not in meta:
        raise DataSourceError(
            f"{path}: not a winback modeling frame (no '{METADATA_KEY.decode()}' metadata)"
        )
    spec = FrameSpec.from_json(meta[METADATA_KEY].decode())
    return table.to_pandas(), spec
