"""What a training source holds: frames, the offer catalog and, for synthetic worlds, the truth.

A source is one of:
- a data directory (customers, orders, ... and offers.yaml): both frames are built from it with
  the same feature engine serving uses;
- a frame directory: `reactivation.parquet` and/or `offer_response.parquet` (as written by
  `winback features frames` or `winback import hillstrom`) beside an `offers.yaml`;
- a single frame file (`*.parquet` with winback frame metadata), with `offers.yaml` beside it.
`ground_truth.parquet` beside the data is read only for evaluation, never for fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    reactivation_frame,
)
from features.offers import OfferCatalog, load_catalog
from training.errors import NothingToTrainError, TrainingError


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


def load_training_inputs(
    source: Path,
    horizon_days: int | None = None,
    n_cutoffs: int = 4,
    config: FeatureConfig | None = None,
) -> TrainingInputs:
    """Read or build the frames `source` supports. Raises NothingToTrainError if none."""
    from features.engine import FeatureEngine  # heavy; imported only when building frames
    from features.frames import default_cutoffs

    source = Path(source)
    if not source.exists():
        raise TrainingError(f"{source}: no such file or directory")
    skipped: dict[str, str] = {}
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
        elif find_table(source, c.CUSTOMERS) is not None:
            data = load_data_dir(source)
            engine = FeatureEngine(data, config)
            inputs = TrainingInputs(source, data.catalog)
            h = horizon_days or engine.config.horizon_days
            try:
                cuts = default_cutoffs(data, h, n_cutoffs)
                inputs.reactivation = _usable_reactivation(
                    reactivation_frame(engine, cuts, h), skipped
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
