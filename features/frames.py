"""Training frames: the reactivation frame and the offer-response frame.

Both carry features computed with the same engine as serving, each row as of its own time
(a cutoff, or the contact's timestamp), and outcomes taken strictly from that time on:

- reactivation: per cutoff, every customer who is `at_risk` or `lapsed` then (population
  `lapsing`: no order for `at_risk_days`, 90 by default), or every customer known then
  (population `all`, the protocol of `winback train --cutoff`); label
  `reactivated` = ordered within [cutoff, cutoff + H days), with the revenue and margin of those
  orders; `contacted_in_window` flags customers we contacted in that window (holdouts are not
  contacts), so the trainer can keep our own contacts out of the baseline label.
- offer_response: per past contact or randomized holdout, its offer and logged propensity and,
  within the attribution window [ts, ts + A days): converted, outcome_revenue, outcome_margin,
  days_to_order (first order) and unsubscribed (an unsubscribe event, or an opt-out on the
  contacted channel). `window_complete` is False when the window runs past the data's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.asof_index import NS_PER_DAY, GroupedIndex, range_sum
from features.build import resolve_feature_set, to_timestamp
from features.config import FeatureConfig, FeatureConfigError
from features.dataset import DataSet
from features.engine import FeatureEngine
from features.featureset import FeatureSet

REACTIVATION_FILE = "reactivation.parquet"
OFFER_RESPONSE_FILE = "offer_response.parquet"
TARGET_STATES = (c.LAPSE_STATES.index("at_risk"), c.LAPSE_STATES.index("lapsed"))
POPULATIONS = ("all", "lapsing")
POPULATION_MEANING = {
    "all": "every customer who signed up or ordered before the cutoff",
    "lapsing": "customers at_risk or lapsed at the cutoff (no order for at_risk_days or more; "
    "customers active more recently are left out)",
}


@dataclass(frozen=True)
class Frame:
    """A built frame and its spec."""

    data: pd.DataFrame
    spec: mf.FrameSpec


def data_end(data: DataSet) -> pd.Timestamp:
    """The latest timestamp recorded anywhere in the data directory."""
    stamps = [
        s.max() for s in (data.orders[c.ORDER_TS], data.contacts[c.TS], data.events[c.TS]) if len(s)
    ]
    if not stamps:
        raise FeatureConfigError(f"{data.source}: no orders, contacts or events to frame")
    return pd.Timestamp(max(stamps))


def default_cutoffs(
    data: DataSet, horizon_days: int, n: int = 4, end: pd.Timestamp | None = None
) -> list[pd.Timestamp]:
    """`n` rolling origins, `horizon_days` apart, the last one a full horizon before the end
    (`end`, default: `data_end(data)`; a partition passes the whole data's)."""
    return cutoffs_before(data_end(data) if end is None else end, horizon_days, n)


def cutoffs_before(end: pd.Timestamp, horizon_days: int, n: int = 4) -> list[pd.Timestamp]:
    """`n` origins `horizon_days` apart, the last a full horizon before `end` (at midnight)."""
    last = (end - pd.Timedelta(days=horizon_days)).normalize()
    return [last - pd.Timedelta(days=horizon_days * k) for k in reversed(range(n))]


def _window_counts(
    index: GroupedIndex, g: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = index.before(g, start), index.before(g, end)
    return lo, hi


def _notes(fs: FeatureSet, cfg: FeatureConfig, **extra: str) -> dict[str, str]:
    return {"feature_set_json": fs.to_json(), "feature_config": cfg.model_dump_json(), **extra}


def _checked_cutoffs(
    engine: FeatureEngine,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None,
    horizon_days: int | None,
    population: str,
    end: pd.Timestamp | None,
) -> tuple[list[pd.Timestamp], int, pd.Timestamp]:
    """(sorted cutoffs, horizon, data end) of a reactivation frame, or FeatureConfigError."""
    if population not in POPULATIONS:
        raise FeatureConfigError(
            f"population must be one of {', '.join(POPULATIONS)}, got {population!r}"
        )
    h = horizon_days or engine.config.horizon_days
    if h <= 0:
        raise FeatureConfigError(f"horizon_days must be positive, got {h}")
    end = data_end(engine.data) if end is None else end
    cuts = sorted(
        to_timestamp(x, "cutoff") for x in (cutoffs or default_cutoffs(engine.data, h, end=end))
    )
    late = [x for x in cuts if x + pd.Timedelta(days=h) > end + pd.Timedelta(days=1)]
    if late:
        raise FeatureConfigError(
            f"cutoff {late[0]}: its {h}-day label window ends after the data's last record "
            f"({end}); use a cutoff at or before {(end - pd.Timedelta(days=h)).date()}"
        )
    return cuts, h, end


def reactivation_labels(
    engine: FeatureEngine,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None = None,
    horizon_days: int | None = None,
    population: str = "lapsing",
    end: pd.Timestamp | None = None,
    as_codes: bool = False,
) -> pd.DataFrame:
    """The rows of `reactivation_frame` (same arguments, same order) without their features:
    customer_id, cutoff, the label and `contacted_in_window`. Costs a few index look-ups per
    row, not the feature families (`training.sampled_inputs` draws its customer sample from
    these, `training.inputs` the training rows' cap sample). `as_codes`: customer_id holds the
    engine's customer codes (int64), not the ids (much cheaper to group)."""
    cuts, h, end = _checked_cutoffs(engine, cutoffs, horizon_days, population, end)
    parts = []
    for cut in cuts:
        codes = engine.customers_before(cut.value)
        t = np.full(len(codes), cut.value, np.int64)
        if population == "lapsing":
            keep = np.isin(engine.lapse_state(codes, t), TARGET_STATES)
            codes, t = codes[keep], t[keep]
        lo, hi = _window_counts(engine.orders, codes, t, t + h * NS_PER_DAY)
        klo, khi = _window_counts(engine.contacts, codes, t, t + h * NS_PER_DAY)
        parts.append(
            pd.DataFrame(
                {
                    c.CUSTOMER_ID: codes
                    if as_codes
                    else pd.array(engine.customer_ids[codes], dtype="string"),
                    mf.CUTOFF: pd.Series(np.full(len(codes), cut), dtype="datetime64[ns]"),
                    mf.LABEL: (hi > lo).astype(np.int8),
                    mf.CONTACTED_IN_WINDOW: khi > klo,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def reactivation_frame(
    engine: FeatureEngine,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet | None = None,
    population: str = "lapsing",
    end: pd.Timestamp | None = None,
    customers: np.ndarray | None = None,
) -> Frame:
    """One row per (cutoff, customer of the population at the cutoff), with the H-day label.

    `population`: `lapsing` (at_risk or lapsed at the cutoff) or `all` (`POPULATION_MEANING`).
    `end`: the data's last timestamp (default `data_end(engine.data)`); a partition of a
    larger data set passes the whole set's, with a `feature_set` frozen for the whole set.
    `customers`: a boolean mask over the engine's customers; only their rows are built (the
    full frame's rows of those customers, in the same order), the others' features are never
    computed.
    """
    cfg = engine.config
    cuts, h, end = _checked_cutoffs(engine, cutoffs, horizon_days, population, end)
    fs = resolve_feature_set(engine, cuts[-1], feature_set)
    parts = []
    for cut in cuts:
        codes = engine.customers_before(cut.value)
        if customers is not None:
            codes = codes[customers[codes]]
        t = np.full(len(codes), cut.value, np.int64)
        matrix, _ = engine.compute(codes, t, fs)
        if population == "lapsing":
            keep = np.isin(matrix[:, fs.columns.index("lapse_state")], TARGET_STATES)
            codes, t, matrix = codes[keep], t[keep], matrix[keep]
        t_end = t + h * NS_PER_DAY
        o = engine.orders
        lo, hi = _window_counts(o, codes, t, t_end)
        s0 = o.start(codes)
        k = engine.contacts
        klo, khi = _window_counts(k, codes, t, t_end)
        part = pd.DataFrame(matrix, columns=list(fs.columns))
        part.insert(0, mf.CUTOFF, pd.Series(np.full(len(codes), cut), dtype="datetime64[ns]"))
        part.insert(0, c.CUSTOMER_ID, pd.array(engine.customer_ids[codes], dtype="string"))
        part[mf.LABEL] = (hi > lo).astype(np.int8)
        part[mf.OUTCOME_REVENUE] = range_sum(engine.p_rev, np.maximum(lo, s0), hi, s0)
        part[mf.OUTCOME_MARGIN] = range_sum(engine.p_mar, np.maximum(lo, s0), hi, s0)
        part[mf.CONTACTED_IN_WINDOW] = khi > klo
        parts.append(part)
    df = pd.concat(parts, ignore_index=True)
    spec = mf.FrameSpec(
        kind="reactivation",
        feature_set=fs.key,
        feature_columns=fs.columns,
        categorical_columns=fs.categorical_columns,
        treatment_column="",
        control_value="",
        propensity_column="",
        outcome_columns=(mf.LABEL, mf.OUTCOME_REVENUE, mf.OUTCOME_MARGIN),
        time_column=mf.CUTOFF,
        source=engine.data.source,
        notes=_notes(
            fs,
            cfg,
            horizon_days=str(h),
            cutoffs=",".join(str(x) for x in cuts),
            population=population,
        ),
    )
    return Frame(df, spec)


def offer_response_frame(
    engine: FeatureEngine,
    attribution_days: int | None = None,
    feature_set: FeatureSet | None = None,
    end: pd.Timestamp | None = None,
    rows: np.ndarray | None = None,
) -> Frame:
    """One row per past contact or holdout, features as of its timestamp, outcomes after it.

    `end`: the data's last timestamp (see `reactivation_frame`). `rows`: a boolean mask over
    the contacts table; only those contacts' rows are built (in the table's order)."""
    cfg = engine.config
    a = attribution_days or cfg.attribution_days
    contacts = engine.data.contacts.reset_index(drop=True)
    t = contacts[c.TS].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    end = data_end(engine.data) if end is None else end
    last = pd.Timestamp(t.max()) if len(t) else end
    fs = resolve_feature_set(engine, last + pd.Timedelta(1, "ns"), feature_set)
    if rows is not None:
        contacts = contacts[rows].reset_index(drop=True)
        t = t[rows]
    codes = engine.customer_codes(contacts[c.CUSTOMER_ID])
    matrix, _ = engine.compute(codes, t, fs)
    t_end = t + a * NS_PER_DAY
    o = engine.orders
    lo, hi = _window_counts(o, codes, t, t_end)
    s0 = o.start(codes)
    first_ts = o.ts[np.minimum(lo, max(len(o) - 1, 0))] if len(o) else t
    unsub_g = codes * engine.n_types + c.EVENT_TYPES.index("unsubscribe")
    ulo, uhi = _window_counts(engine.events, unsub_g, t, t_end)
    ch = pd.Index(c.CHANNELS).get_indexer(pd.Index(contacts[c.CHANNEL].astype(object)))
    opt_out = np.zeros(len(t), dtype=bool)
    if len(engine.consent):
        s = engine.consent
        is_out = engine.consent_status[s.order] == c.CONSENT_STATUSES.index(c.OPTED_OUT)
        cum = np.concatenate([[0], np.cumsum(is_out)])
        g = codes * len(c.CHANNELS) + np.maximum(ch, 0)
        clo, chi = _window_counts(s, g, t, t_end)
        opt_out = (ch >= 0) & (cum[chi] - cum[clo] > 0)
    meta_cols = [c.CONTACT_ID, c.CUSTOMER_ID, c.TS, c.CHANNEL, c.CAMPAIGN_ID, c.OFFER_ID, c.STAGE]
    df = contacts[[*meta_cols, c.PROPENSITY]].copy()
    feats = pd.DataFrame(matrix, columns=list(fs.columns))
    df = pd.concat([df, feats], axis=1)
    converted = hi > lo
    df[mf.CONVERTED] = converted.astype(np.int8)
    df[mf.OUTCOME_REVENUE] = range_sum(engine.p_rev, np.maximum(lo, s0), hi, s0)
    df[mf.OUTCOME_MARGIN] = range_sum(engine.p_mar, np.maximum(lo, s0), hi, s0)
    df[mf.DAYS_TO_ORDER] = np.where(converted, (first_ts - t) / NS_PER_DAY, np.nan)
    df[mf.UNSUBSCRIBED] = ((uhi > ulo) | opt_out).astype(np.int8)
    df["window_complete"] = t_end <= end.value + NS_PER_DAY
    spec = mf.FrameSpec(
        kind="offer_response",
        feature_set=fs.key,
        feature_columns=fs.columns,
        categorical_columns=fs.categorical_columns,
        outcome_columns=(
            mf.CONVERTED,
            mf.OUTCOME_REVENUE,
            mf.OUTCOME_MARGIN,
            mf.DAYS_TO_ORDER,
            mf.UNSUBSCRIBED,
        ),
        time_column=c.TS,
        source=engine.data.source,
        notes=_notes(fs, cfg, attribution_days=str(a)),
    )
    return Frame(df, spec)


def contact_conversions(
    engine: FeatureEngine, attribution_days: int | None = None, codes: np.ndarray | None = None
) -> np.ndarray:
    """`converted` of every contact (the offer-response frame's outcome, contacts table order),
    without the features. `codes`: the contacts' customer codes, when the caller has them."""
    a = attribution_days or engine.config.attribution_days
    contacts = engine.data.contacts
    t = contacts[c.TS].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    if codes is None:
        codes = engine.customer_codes(contacts[c.CUSTOMER_ID])
    lo, hi = _window_counts(engine.orders, codes, t, t + a * NS_PER_DAY)
    return (hi > lo).astype(np.int8)


def write_frames(
    data: DataSet,
    out: Path,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None = None,
    horizon_days: int | None = None,
    config: FeatureConfig | None = None,
) -> dict[str, Frame]:
    """Build both frames from `data` and write them to `out` (Parquet with FrameSpec metadata)."""
    engine = FeatureEngine(data, config)
    frames = {
        REACTIVATION_FILE: reactivation_frame(engine, cutoffs, horizon_days),
        OFFER_RESPONSE_FILE: offer_response_frame(engine),
    }
    for name, frame in frames.items():
        mf.write_frame(frame.data, frame.spec, Path(out) / name)
    return frames


def summarize_reactivation(df: pd.DataFrame) -> pd.DataFrame:
    """Per cutoff: rows, label rate, contacted share, mean outcome margin."""
    g = df.groupby(mf.CUTOFF, sort=True)
    return pd.DataFrame(
        {
            "rows": g.size(),
            "reactivated_rate": g[mf.LABEL].mean(),
            "contacted_share": g[mf.CONTACTED_IN_WINDOW].mean(),
            "mean_margin": g[mf.OUTCOME_MARGIN].mean(),
        }
    )


def summarize_offer_response(df: pd.DataFrame) -> pd.DataFrame:
    """Per offer_id: rows, conversion rate, mean revenue and margin, unsubscribe rate."""
    g = df.groupby(c.OFFER_ID, sort=True)
    return pd.DataFrame(
        {
            "rows": g.size(),
            "conversion_rate": g[mf.CONVERTED].mean(),
            "mean_revenue": g[mf.OUTCOME_REVENUE].mean(),
            "mean_margin": g[mf.OUTCOME_MARGIN].mean(),
            "unsubscribe_rate": g[mf.UNSUBSCRIBED].mean(),
        }
    )
