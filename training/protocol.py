"""The reactivation protocol of `winback train DATA --cutoff DATE --horizon-days N`.

The user's question is "who buys within N days after DATE". Training must not see any of that:

- the test frame: every customer known at DATE, features as of DATE, labelled "orders in
  [DATE, DATE + N days)" when the data reaches DATE + N (otherwise nothing is tested, and the
  model still scores everyone as of DATE);
- training origins: the first `N_ORIGINS` monthly origins before DATE (DATE - 6 months ..
  DATE - 2 months), each labelled over a short horizon, `DATE - (DATE - 1 month)` days, so that
  even the last origin's labels end before DATE; the origin DATE - 1 month early-stops and
  calibrates. The N-day label cannot be observed before DATE; the short one can, and the
  booster's BTYD prior is told the question's horizon (`prior_horizon_days = N`).

This is the protocol `bench/bench_cdnow.py` uses for its CDNOW figure (DATE 1997-10-01,
N = 273 days: origins 1997-04-01 .. 08-01, validation 09-01, 30-day labels), and the default of
the command line. Without a DATE, the default is the latest date whose N-day labels the data
holds: data end + 1 day - N days, so no training label overlaps the evaluated period.

`protocol_frame` builds the protocol's reactivation frame, the same for a whole data directory
(`training.inputs`) and for one partition of it (`training.sampled_inputs`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features import modeling_frame as mf
from features.dataset import DataSet
from features.frames import POPULATION_MEANING, POPULATIONS, Frame, data_end, reactivation_frame
from training.errors import TrainingError

if TYPE_CHECKING:
    from features.engine import FeatureEngine
    from features.featureset import FeatureSet

N_ORIGINS = 5  # training origins; one more (DATE - 1 month) validates
POPULATION_DEFAULT = "all"


@dataclass(frozen=True)
class CutoffProtocol:
    """Where training ends and what it is evaluated on."""

    cutoff: str
    """DATE (ISO date): every training label ends before it; evaluated on its N-day labels."""
    horizon_days: int
    """N: the question's horizon (DATE's label, the BTYD prior's horizon)."""
    train_origins: tuple[str, ...]
    validation_origin: str
    train_horizon_days: int
    """The origins' label horizon: the validation origin's window ends on DATE - 1 day."""
    population: str
    labelled: bool
    """Whether the data reaches DATE + N, so DATE's labels can be observed and tested."""
    reason: str
    """How DATE and N were chosen, for the user (printed, and logged with the run)."""

    @property
    def cutoff_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.cutoff)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CutoffProtocol:
        raw = json.loads(text)
        raw["train_origins"] = tuple(raw["train_origins"])
        return cls(**raw)

    def describe(self) -> str:
        """One paragraph saying who is in each frame and why."""
        last = (self.cutoff_ts + pd.Timedelta(days=self.horizon_days - 1)).date()
        test = (
            f"tested on {self.cutoff}'s {self.horizon_days}-day labels ({self.cutoff} .. {last})"
            if self.labelled
            else f"not tested: the data does not reach {self.cutoff} + {self.horizon_days} days"
        )
        return (
            f"population '{self.population}': {POPULATION_MEANING[self.population]}. "
            f"Training origins {', '.join(self.train_origins)}, validation origin "
            f"{self.validation_origin}, each labelled 'orders within {self.train_horizon_days} "
            f"days' (every training label ends before {self.cutoff}); {test}."
        )


def choose_protocol(
    data: DataSet,
    horizon_days: int,
    cutoff: str | pd.Timestamp | None = None,
    population: str = POPULATION_DEFAULT,
) -> CutoffProtocol:
    """The protocol for `data`; without `cutoff`, the latest one whose labels the data holds."""
    end = data_end(data)
    first = pd.Timestamp(data.orders["order_ts"].min()) if len(data.orders) else None
    return protocol_between(end, first, horizon_days, cutoff, population)


def protocol_between(
    data_end_ts: pd.Timestamp,
    first_order: pd.Timestamp | None,
    horizon_days: int,
    cutoff: str | pd.Timestamp | None = None,
    population: str = POPULATION_DEFAULT,
) -> CutoffProtocol:
    """`choose_protocol` for data whose last record is `data_end_ts` and first order
    `first_order` (None: no order): what a partitioned directory's streaming pass gives."""
    if horizon_days <= 0:
        raise TrainingError(f"--horizon-days: must be positive, got {horizon_days}")
    if population not in POPULATIONS:
        raise TrainingError(f"--population: one of {', '.join(POPULATIONS)}, got {population!r}")
    end = data_end_ts.normalize()
    first = first_order if first_order is not None else end
    if cutoff is None:
        cut = end + pd.Timedelta(days=1) - pd.Timedelta(days=horizon_days)
        reason = (
            f"no --cutoff: {cut.date()} is the latest date whose {horizon_days}-day labels the "
            f"data holds (data ends {end.date()}), so the model is evaluated on labels no "
            f"training row has seen"
        )
    else:
        try:
            cut = pd.Timestamp(cutoff).normalize()
        except (ValueError, TypeError):
            raise TrainingError(f"--cutoff: not a date: {cutoff!r} (use YYYY-MM-DD)") from None
        reason = f"--cutoff {cut.date()}, --horizon-days {horizon_days}"
        if cut > end + pd.Timedelta(days=1):
            raise TrainingError(
                f"--cutoff {cut.date()}: after the data's end ({end.date()}); the latest "
                f"cutoff is {(end + pd.Timedelta(days=1)).date()}, the day after the last record"
            )
    validation = cut - pd.DateOffset(months=1)
    origins = [cut - pd.DateOffset(months=k) for k in range(N_ORIGINS + 1, 1, -1)]
    origins = [o for o in origins if o > first]
    if not origins or validation <= first:
        raise TrainingError(
            f"--cutoff {cut.date()}: too early for this data (first order {first.date()}); "
            f"training needs monthly origins before it, at least two months after the first "
            f"order: use a cutoff on or after {(first + pd.DateOffset(months=2)).date()}"
        )
    labelled = cut + pd.Timedelta(days=horizon_days) <= end + pd.Timedelta(days=1)
    return CutoffProtocol(
        cutoff=str(cut.date()),
        horizon_days=horizon_days,
        train_origins=tuple(str(o.date()) for o in origins),
        validation_origin=str(validation.date()),
        train_horizon_days=int((cut - validation).days),
        population=population,
        labelled=bool(labelled),
        reason=reason,
    )


def protocol_origins(protocol: CutoffProtocol) -> list[str]:
    """The origins whose rows a model learns from: the training ones and the validation one."""
    return [*protocol.train_origins, protocol.validation_origin]


def protocol_frame(
    engine: FeatureEngine,
    protocol: CutoffProtocol,
    feature_set: FeatureSet | None = None,
    end: pd.Timestamp | None = None,
    train_customers: np.ndarray | None = None,
) -> Frame:
    """The reactivation frame of `protocol`: its origins with the short labels, then (when the
    data reaches) the cutoff with the question's labels; one feature set, resolved at the
    cutoff, for all of them. The protocol is stored in the frame's notes (`reactivation_split`
    reads it). On one partition of the data, give the whole data's frozen `feature_set` and
    `end` (`training.sampled_inputs`). `train_customers`: a boolean mask over the engine's
    customers; the origins' rows are built for them only (the cutoff's for everyone)."""
    from features.build import resolve_feature_set

    cut = protocol.cutoff_ts
    fs = resolve_feature_set(engine, cut, feature_set)
    train = reactivation_frame(
        engine,
        protocol_origins(protocol),
        protocol.train_horizon_days,
        fs,
        population=protocol.population,
        end=end,
        customers=train_customers,
    )
    parts = [train.data]
    if protocol.labelled:
        test = reactivation_frame(
            engine, [cut], protocol.horizon_days, fs, population=protocol.population, end=end
        )
        parts.append(test.data)
    df = pd.concat(parts, ignore_index=True)
    notes = dict(train.spec.notes)
    notes.update(
        protocol=protocol.to_json(),
        horizon_days=str(protocol.horizon_days),
        cutoffs=",".join(str(x) for x in sorted(df[mf.CUTOFF].unique())),
    )
    return Frame(df, replace(train.spec, notes=notes))
