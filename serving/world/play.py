"""`winback world play`: run the service on a synthetic world that answers.

For each wave (`days_between` days apart, from the day after the world's history ends):

1. the world's tables as of the wave (its history plus every played wave) become features
   (`build_customer_view`, in the model's feature set) and a snapshot;
2. every customer is decided for and the decisions recorded through the batch path the API
   shares (`score_local` with `record=True`: `decide_rows`, the store's cap check inside the
   recording transaction, holdouts drawn among would-be contacts);
3. outcomes are drawn from the world's TRUE model given the decision actually recorded and
   recorded like `POST /v1/events` (`serving.world.outcomes`); the drawn orders, contacts and
   engagement join the world's tables, so journeys, caps and consent evolve.

`truth.json` holds, per wave and overall (per contact over all waves), the TRUE expected
incremental margin per contact and conversion lift of the contacts the service made, from the
truth's expected values (not the draws), under the report's key names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.dataset import DataSet
from features.errors import FeaturesError
from features.featureset import DEFAULT_FEATURE_SET, FeatureSet
from features.snapshot import Snapshot, write_snapshot
from features.synthetic.generate import SyntheticWorld, load_world
from features.synthetic.state import true_state
from serving.batch.local import Wave, score_local
from serving.decide import Decider
from serving.store import Store
from serving.world.outcomes import draw_and_record, taken_options

TRUTH_FILE = "truth.json"
DECISION_HOUR = 9


@dataclass
class WaveTruth:
    """One played wave: what was decided and its TRUE expected effect per contact."""

    wave_id: str
    at: datetime
    decided: int
    contacts: int
    holdouts: int
    incremental_margin_per_contact: float | None
    incremental_conversion: float | None
    posted: dict[str, int] = field(default_factory=dict)
    margins: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    lifts: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wave_id": self.wave_id,
            "at": self.at.isoformat(),
            "decided": self.decided,
            "contacts": self.contacts,
            "holdouts": self.holdouts,
            "incremental_margin_per_contact": self.incremental_margin_per_contact,
            "incremental_conversion": self.incremental_conversion,
            "events_posted": dict(self.posted),
        }


@dataclass
class PlayResult:
    """Every wave's truth, and the overall figures (per contact over all waves)."""

    waves: list[WaveTruth]
    overall: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "waves": [w.as_dict() for w in self.waves]}


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def model_feature_set(decider: Decider) -> FeatureSet:
    """The feature set the decider's model reads (the default one in rules-only mode)."""
    model = getattr(decider.scorer, "model", None)
    text = getattr(model, "feature_set", None)
    return FeatureSet.from_json(text) if isinstance(text, str) else DEFAULT_FEATURE_SET


class _Sink:
    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        self.tables.append(table)


def _append(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return frame
    rows = rows.copy()
    for col in frame.columns.difference(rows.columns):  # e.g. a flag: false for drawn rows
        rows[col] = False if frame[col].dtype == bool else None
    rows = rows[list(frame.columns)].astype(frame.dtypes.to_dict())
    return pd.concat([frame, rows], ignore_index=True)


def _played_contacts(decisions: pd.DataFrame, at: datetime, wave_id: str) -> pd.DataFrame:
    """The wave's contacts and holdouts as contract `contacts` rows (holdout: no channel)."""
    d = decisions[decisions["action"].isin(("offer", "message", "holdout"))]
    hold = (d["action"] == "holdout").to_numpy()
    return pd.DataFrame(
        {
            c.CONTACT_ID: d["decision_id"].astype(str).to_numpy(),
            c.CUSTOMER_ID: d[c.CUSTOMER_ID].astype(str).to_numpy(),
            c.TS: np.full(len(d), np.datetime64(at, "ns")),
            c.CHANNEL: np.where(hold, np.array(None, dtype=object), d[c.CHANNEL].to_numpy(object)),
            c.CAMPAIGN_ID: wave_id,
            c.OFFER_ID: np.where(hold, c.HOLDOUT, d[c.OFFER_ID].fillna(c.NO_INCENTIVE)),
            c.STAGE: d[c.STAGE].fillna(1).to_numpy(dtype=float),
            c.PROPENSITY: d["propensity"].to_numpy(dtype=float),
        }
    )


def play_wave(
    world: SyntheticWorld,
    data: DataSet,
    decider: Decider,
    store: Store,
    wave: Wave,
    until: datetime,
    snapshot_dir: Path,
    rng: np.random.Generator,
) -> tuple[WaveTruth, DataSet]:
    """Decide, record, draw and record outcomes for one wave; return its truth and the data
    grown by what happened."""
    fs = model_feature_set(decider)
    view = build_customer_view(data, pd.Timestamp(wave.at), feature_set=fs)
    write_snapshot(view, snapshot_dir, keep=1)
    snap = Snapshot.load(snapshot_dir)
    state = true_state(world, data, wave.at)
    sink = _Sink()
    score_local(snap, decider, sink, wave, store=store, record=True)
    decisions = pa.concat_tables(sink.tables).to_pandas()
    col, _, _, contacted = taken_options(world, decisions)
    hold = world.model.option_ids.index(c.HOLDOUT)
    rows = np.flatnonzero(contacted)
    im = world.model.incremental_margin(state)[rows, col[rows]]
    p = world.model.probabilities(state)
    lift = p[rows, col[rows]] - p[rows, hold]
    drawn = draw_and_record(
        store, decider.options, world, state, decisions, wave.at, until, wave.wave_id, rng
    )
    grown = replace(
        data,
        orders=_append(data.orders, drawn.orders),
        contacts=_append(data.contacts, _played_contacts(decisions, wave.at, wave.wave_id)),
        events=_append(data.events, drawn.events),
    )
    truth = WaveTruth(
        wave_id=wave.wave_id,
        at=wave.at,
        decided=len(decisions),
        contacts=len(rows),
        holdouts=int((decisions["action"] == "holdout").sum()),
        incremental_margin_per_contact=_mean(im),
        incremental_conversion=_mean(lift),
        posted=drawn.posted,
        margins=im,
        lifts=lift,
    )
    return truth, grown


def play_world(
    data_dir: Path,
    out: Path,
    decider: Decider,
    store: Store,
    waves: int,
    days_between: int,
    seed: int,
    channel: str = "auto",
    on_wave: Callable[[WaveTruth], None] | None = None,
) -> PlayResult:
    """Play `waves` waves on the generated world in `data_dir`; write `out/truth.json`.

    Raises:
        FeaturesError: not a generated world (no `world.json`), or its tables disagree with it.
        ServingError: the store or the decider failed.
    """
    if waves < 1 or days_between < 1:
        raise FeaturesError("waves and days-between: must be at least 1")
    world = load_world(data_dir)
    data = load_data_dir(data_dir)
    if len(data.customers) != world.config.n_customers:
        raise FeaturesError(
            f"{data_dir}: world.json says {world.config.n_customers} customers but the data "
            f"directory has {len(data.customers)}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first = pd.Timestamp(world.config.end).to_pydatetime() + timedelta(days=1, hours=DECISION_HOUR)
    played: list[WaveTruth] = []
    for w in range(waves):
        at = first + timedelta(days=w * days_between)
        wave = Wave(f"play-{seed}-w{w + 1}", at, channel)
        until = at + timedelta(days=days_between)
        truth, data = play_wave(world, data, decider, store, wave, until, out / "snapshot", rng)
        played.append(truth)
        if on_wave is not None:
            on_wave(truth)
    margins = np.concatenate([w.margins for w in played])
    lifts = np.concatenate([w.lifts for w in played])
    result = PlayResult(
        played,
        {
            "incremental_margin_per_contact": _mean(margins),
            "incremental_conversion": _mean(lifts),
            "contacts": len(margins),
        },
    )
    (out / TRUTH_FILE).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    return result
