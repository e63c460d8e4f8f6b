"""Point-in-time features of every customer as of a time: the one function training, batch
scoring and the API share.

`build_features(data, as_of)` returns a numeric DataFrame indexed by customer_id whose columns
are the feature set's, in its order, computed only from rows strictly before `as_of`;
`build_customer_view` adds the decoded state the decision engine's guardrails read (lapse
state, value tier, consent per channel, contact fatigue, journey stage, last offer id).
Customers who signed up at or after `as_of` did not exist yet and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features import constants as c
from features.config import FeatureConfig
from features.dataset import DataSet
from features.engine import FeatureEngine
from features.errors import FeaturesError
from features.featureset import DEFAULT_FEATURE_SET, FeatureSet


@dataclass(frozen=True)
class CustomerView:
    """Features and guardrail state of customers as of one time, both indexed by customer_id."""

    as_of: pd.Timestamp
    feature_set: FeatureSet
    features: pd.DataFrame
    state: pd.DataFrame


def to_timestamp(value: pd.Timestamp | datetime | str, what: str = "as_of") -> pd.Timestamp:
    """A timezone-naive UTC timestamp (the contract's convention); bad input is a FeaturesError."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FeaturesError(f"{what}: not a timestamp: {value!r} ({exc})") from None
    if ts is pd.NaT or pd.isna(ts):
        raise FeaturesError(f"{what}: a timestamp is required, got {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns")


def resolve_feature_set(
    engine: FeatureEngine, as_of: pd.Timestamp, feature_set: FeatureSet | None = None
) -> FeatureSet:
    """`feature_set` (default `winback_v2`) with an empty favourite_category vocabulary frozen
    from the categories ordered before `as_of` (so a later order cannot change it)."""
    fs = feature_set or DEFAULT_FEATURE_SET
    if "favourite_category" not in fs.columns or fs.feature("favourite_category").vocabulary:
        return fs
    vocab = engine.category_vocabulary(as_of.value, engine.config.max_categories)
    return fs.with_vocabulary("favourite_category", vocab)


def engine_view(
    engine: FeatureEngine, as_of: pd.Timestamp, feature_set: FeatureSet | None = None
) -> CustomerView:
    """Every customer who exists at `as_of`, from an already indexed engine."""
    as_of = to_timestamp(as_of)
    fs = resolve_feature_set(engine, as_of, feature_set)
    codes = engine.customers_before(as_of.value)
    matrix, state = engine.compute(codes, np.full(len(codes), as_of.value, np.int64), fs)
    index = pd.Index(engine.customer_ids[codes], name=c.CUSTOMER_ID, dtype="string")
    features = pd.DataFrame(matrix, index=index, columns=list(fs.columns))
    state.index = index
    return CustomerView(as_of=as_of, feature_set=fs, features=features, state=state)


def build_customer_view(
    data: DataSet,
    as_of: pd.Timestamp | datetime | str,
    config: FeatureConfig | None = None,
    feature_set: FeatureSet | None = None,
) -> CustomerView:
    """Features and decoded guardrail state of every customer as of `as_of`."""
    return engine_view(FeatureEngine(data, config), to_timestamp(as_of), feature_set)


def build_features(
    data: DataSet,
    as_of: pd.Timestamp | datetime | str,
    config: FeatureConfig | None = None,
    feature_set: FeatureSet | None = None,
) -> pd.DataFrame:
    """The feature matrix as of `as_of`: one float64 row per customer, feature-set column order.

    Args:
        data: a validated data directory (`features.datadir.load_data_dir`).
        as_of: only rows strictly before this time are used.
        config: lapse-state and value-tier thresholds (default: `FeatureConfig()`).
        feature_set: the declarations to compute (default `winback_v2`, its category
            vocabulary frozen from orders before `as_of`); pass a model's stored set at serving.
    """
    return build_customer_view(data, as_of, config, feature_set).features
