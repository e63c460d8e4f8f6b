"""What a training source holds: frames, the offer catalog and, for synthetic worlds, the truth.

A source is one of:
- a data directory (customers, orders, ... and offers.yaml): both frames are built from it with
  the same feature engine serving uses; the reactivation frame follows a `CutoffProtocol`
  (`training.protocol`: monthly origins whose labels end before the cutoff, tested on the
  cutoff's own labels);
- a frame directory: `reactivation.parquet` and/or `offer_response.parquet` (as written by
  `winback features frames` or `winback import hillstrom`) beside an `offers.yaml`;
- a single frame file (`*.parquet` with winback frame metadata), with `offers.yaml` beside it.
`ground_truth.parquet` beside the data is read only for evaluation, never for fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.config import FeatureConfig
from features.datadir import find_table, load_data_dir
from features.errors import FeaturesError
from features.frames import (
    OFFER_RESPONSE_FILE,
    REACTIVATION_FILE,
    Frame,
    offer_response_frame,
)
from features.offers import OfferCatalog, load_catalog
from training.errors import NothingToTrainError, TrainingError
from training.protocol import (
    POPULATION_DEFAULT,
    CutoffProtocol,
    choose_protocol,
    protocol_frame,
    protocol_origins,
)

if TYPE_CHECKING:
    from features.engine import FeatureEngine
    from training.sampled_inputs import HeldOut, SampleReport


@dataclass
class TrainingInputs:
    """The frames a source supports, and why the others are absent."""

    source: Path
    catalog: OfferCatalog
    reactivation: Frame | None = None
    offer_response: Frame | None = None
    ground_truth: pd.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    protocol: CutoffProtocol | None = None
    """How the reactivation frame of a data directory was built (None for frame files)."""
    data_notes: dict[str, str] = field(default_factory=dict)
    """What every report built on this data must say (e.g. the assumed margin rate)."""
    sample: SampleReport | None = None
    """The customer sample the frames hold (`--sample-customers`), None for every customer."""
    held_out: HeldOut | None = None
    """With a sample: every held-out row, spilled to disk (the frames hold learnable rows of
    the sampled customers only); the caller removes it (`HeldOut.remove`)."""

    def file_for(self, name: str) -> Path:
        """The file (or directory) a frame came from, for lineage."""
        return self.files.get(name, self.source)


_IMPORT_HINT = (
    "raw Hillstrom or CDNOW files are imported first: "
    "`winback import hillstrom|cdnow FILE --out DIR`, then train on DIR"
)


def _frame_file(path: Path) -> Frame:
    df, spec = mf.read_frame(path)
    return Frame(df, spec)


def _catalog_beside(path: Path) -> OfferCatalog:
    folder = path if path.is_dir() else path.parent
    return load_catalog(folder / c.OFFERS_FILE)


def _usable_offer_response(frame: Frame, skipped: dict[str, str]) -> Frame | None:
    df, spec = frame.data, frame.spec
    if len(df) == 0:
        skipped["offer_response"] = "the data holds no past contacts or holdouts"
        return None
    arms = df[spec.treatment_column].astype(str)
    if spec.control_value not in set(arms):
        skipped["offer_response"] = (
            f"no randomized '{spec.control_value}' rows: incremental response cannot be measured"
        )
        return None
    if arms.nunique() < 2:
        skipped["offer_response"] = "only one option was ever assigned"
        return None
    return frame


def _usable_reactivation(frame: Frame, skipped: dict[str, str]) -> Frame | None:
    df = frame.data
    if len(df) == 0:
        skipped["reactivation"] = "no customer is at risk or lapsed at any cutoff"
        return None
    if df[mf.LABEL].nunique() < 2:
        skipped["reactivation"] = "the label has a single class at every cutoff"
        return None
    if df[mf.CUTOFF].nunique() < 2:
        skipped["reactivation"] = "a time-based split needs at least two cutoffs"
        return None
    return frame


def _capped_protocol_frame(engine: FeatureEngine, protocol: CutoffProtocol, seed: int) -> Frame:
    """`protocol_frame` whose origin rows are built only for the customers the training split
    keeps under its row caps (`training.fit.protocol_cap`, decided from labels before any
    feature); the cutoff's rows for everyone. On the 1M world this is about 500k of the 6M
    origin rows: building all of them and discarding the rest peaked at 13 GB."""
    from features.frames import reactivation_labels
    from training.fit import protocol_cap

    labels = reactivation_labels(
        engine,
        protocol_origins(protocol),
        protocol.train_horizon_days,
        population=protocol.population,
    )
    keep, notes = protocol_cap(
        labels, list(protocol.train_origins), protocol.validation_origin, seed
    )
    if keep is None:
        return protocol_frame(engine, protocol)
    mask = np.asarray(pd.Index(engine.customer_ids.astype(str)).isin(list(keep)))
    frame = protocol_frame(engine, protocol, train_customers=mask)
    return Frame(frame.data, replace(frame.spec, notes={**frame.spec.notes, **notes}))


def protocol_args(metadata: dict[str, str]) -> dict[str, object]:
    """The `load_training_inputs` arguments that rebuild a model's own reactivation frame
    (its cutoff, horizon and population), from the model's metadata; {} for older models."""
    raw = metadata.get("protocol")
    if not raw:
        return {}
    p = CutoffProtocol.from_json(raw)
    return {"cutoff": p.cutoff, "horizon_days": p.horizon_days, "population": p.population}


def load_training_inputs(
    source: Path,
    horizon_days: int | None = None,
    config: FeatureConfig | None = None,
    cutoff: str | pd.Timestamp | None = None,
    population: str = POPULATION_DEFAULT,
    sample_customers: int | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> TrainingInputs:
    """Read or build the frames `source` supports. Raises NothingToTrainError if none.

    For a data directory the reactivation frame follows `choose_protocol(data, horizon,
    cutoff, population)` (the horizon defaults to the feature config's, 90 days).
    `sample_customers`: a data directory's frames are built partition by partition and hold
    the learnable rows of a seeded (`seed`), stratified sample of that many customers, and
    every held-out row is kept apart (`training.sampled_inputs`), with `n_jobs` worker
    processes building partitions side by side.
    """
    from features.engine import FeatureEngine  # heavy; imported only when building frames
    from features.partition_layout import is_partitioned

    source = Path(source)
    if not source.exists():
        raise TrainingError(f"{source}: no such file or directory")
    skipped: dict[str, str] = {}
    is_data_dir = source.is_dir() and (
        is_partitioned(source) or find_table(source, c.CUSTOMERS) is not None
    )
    if sample_customers is not None:
        if not is_data_dir:
            raise TrainingError(
                f"{source}: --sample-customers needs a data directory (frames are built from "
                "it partition by partition)"
            )
        try:
            return _sampled_inputs(
                source, sample_customers, seed, horizon_days, config, cutoff, population, n_jobs
            )
        except FeaturesError as exc:
            raise TrainingError(str(exc)) from None
    try:
        if source.is_file():
            if source.suffix.lower() in (".csv", ".txt"):
                raise TrainingError(f"{source}: a raw file, not a modeling frame; {_IMPORT_HINT}")
            frame = _frame_file(source)
            inputs = TrainingInputs(source, _catalog_beside(source))
            inputs.files[frame.spec.kind] = source
            if frame.spec.kind == "reactivation":
                inputs.reactivation = _usable_reactivation(frame, skipped)
                skipped.setdefault("offer_response", f"{source.name} is a reactivation frame")
            else:
                inputs.offer_response = _usable_offer_response(frame, skipped)
                skipped.setdefault("reactivation", f"{source.name} is an offer-response frame")
        elif is_data_dir:
            data = load_data_dir(source)
            engine = FeatureEngine(data, config)
            inputs = TrainingInputs(source, data.catalog)
            h = horizon_days or engine.config.horizon_days
            try:
                inputs.protocol = choose_protocol(data, h, cutoff, population)
            except TrainingError as exc:
                if cutoff is not None:
                    raise
                skipped["reactivation"] = str(exc)
            if data.assumed_margin_rate is not None:
                inputs.data_notes["margin_assumed"] = (
                    f"{data.orders_margin_assumed:,} of {len(data.orders):,} orders carry an "
                    f"assumed margin of {data.assumed_margin_rate:g} x revenue (no margin in "
                    "the data)"
                )
            try:
                if inputs.protocol is not None:
                    inputs.reactivation = _usable_reactivation(
                        _capped_protocol_frame(engine, inputs.protocol, seed), skipped
                    )
            except FeaturesError as exc:
                skipped["reactivation"] = str(exc)
            if len(data.contacts):
                inputs.offer_response = _usable_offer_response(
                    offer_response_frame(engine), skipped
                )
            else:
                skipped["offer_response"] = "the data holds no past contacts (e.g. CDNOW)"
            truth = source / c.GROUND_TRUTH_FILE
            if truth.exists():
                try:
                    inputs.ground_truth = pd.read_parquet(truth)
                except (OSError, ValueError) as exc:  # pyarrow errors subclass these
                    raise TrainingError(f"{truth}: cannot read ground truth: {exc}") from None
        else:
            if not any(
                (source / name).exists() for name in (REACTIVATION_FILE, OFFER_RESPONSE_FILE)
            ):
                raise NothingToTrainError(
                    f"{source}: nothing to train: neither a data directory (no {c.CUSTOMERS} "
                    f"table) nor a frame "
                    f"directory (no {REACTIVATION_FILE} or {OFFER_RESPONSE_FILE}); {_IMPORT_HINT}"
                )
            inputs = TrainingInputs(source, _catalog_beside(source))
            pairs = ((REACTIVATION_FILE, "reactivation"), (OFFER_RESPONSE_FILE, "offer_response"))
            for name, attr in pairs:
                path = source / name
                if not path.exists():
                    skipped[attr] = f"{source} has no {name}"
                    continue
                inputs.files[attr] = path
                check = _usable_reactivation if attr == "reactivation" else _usable_offer_response
                setattr(inputs, attr, check(_frame_file(path), skipped))
    except FeaturesError as exc:
        raise TrainingError(str(exc)) from None
    inputs.skipped = skipped
    if inputs.reactivation is None and inputs.offer_response is None:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise NothingToTrainError(f"{source}: nothing to train ({reasons})")
    return inputs


def _sampled_inputs(
    source: Path,
    n: int,
    seed: int,
    horizon_days: int | None,
    config: FeatureConfig | None,
    cutoff: str | pd.Timestamp | None,
    population: str,
    n_jobs: int = 1,
) -> TrainingInputs:
    from training.sampled_inputs import build_sampled_inputs, read_ground_truth

    react, resp, held, report, protocol, notes = build_sampled_inputs(
        source, n, seed, horizon_days, config, cutoff, population, n_jobs
    )
    try:
        skipped: dict[str, str] = {}
        catalog = load_catalog(source / c.OFFERS_FILE)
        inputs = TrainingInputs(source, catalog, protocol=protocol, data_notes=notes)
        inputs.sample, inputs.held_out = report, held
        if protocol is None:
            skipped["reactivation"] = "no cutoff protocol fits the data"
        elif react is not None:
            inputs.reactivation = _usable_reactivation(react, skipped)
        if resp is not None:
            inputs.offer_response = _usable_offer_response(resp, skipped)
        else:
            skipped["offer_response"] = "the data holds no past contacts (e.g. CDNOW)"
        if held.offer_response_files:
            ids = pd.concat(
                [pd.read_parquet(p, columns=[c.CONTACT_ID]) for p in held.offer_response_files]
            )[c.CONTACT_ID]
            inputs.ground_truth = read_ground_truth(source, ids)
        inputs.skipped = skipped
        if inputs.reactivation is None and inputs.offer_response is None:
            reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            raise NothingToTrainError(f"{source}: nothing to train ({reasons})")
    except BaseException:
        held.remove()
        raise
    return inputs
