"""Loading what a batch run needs: the snapshot (or features from a data directory), the
decider (policy, catalog, model as the API loads them), the store and a customer list."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from features import constants as c
from features.build import build_customer_view
from features.config import FeatureConfig
from features.datadir import load_data_dir
from features.offers import load_catalog
from features.partition_layout import is_partitioned
from features.snapshot import CURRENT_FILE, Snapshot, write_snapshot
from features.snapshot_stream import SnapshotStream
from serving.batch.errors import BatchError
from serving.decide import Decider
from serving.engine import OptionSet
from serving.policy import load_policy
from serving.scoring import Scorer, load_scorer
from serving.settings import ServingSettings
from serving.store import ContactCaps, Store, upgrade_database

log = logging.getLogger("winback.batch")


def load_snapshot(data: Path, at: datetime, config: FeatureConfig | None = None) -> Snapshot:
    """DATA as a snapshot: a snapshot directory as is, or a data directory's features as of `at`.

    Raises:
        BatchError: DATA is neither.
        FeaturesError: the data directory breaks its contract (lists the problems).
    """
    data = Path(data)
    if (data / CURRENT_FILE).is_file():
        return Snapshot.load(data)
    if not data.is_dir():
        raise BatchError(f"DATA: {data} is neither a snapshot directory nor a data directory")
    view = build_customer_view(load_data_dir(data), at, config)
    with tempfile.TemporaryDirectory(prefix="winback-score-") as tmp:
        write_snapshot(view, Path(tmp), config)
        return Snapshot.load(Path(tmp))


@contextmanager
def snapshot_source(
    data: Path, at: datetime, config: FeatureConfig | None = None, stream: bool = False
) -> Iterator[Snapshot | SnapshotStream]:
    """DATA as what the scorer reads, for the duration of the block.

    `stream` opens a snapshot as a `SnapshotStream` (read chunk by chunk: the memory of a
    chunk, for a pass over every customer) instead of loading it. A partitioned data
    directory is materialised partition by partition into a temporary snapshot first
    (`features.streaming`); an unpartitioned one as `load_snapshot` does.
    """
    data = Path(data)
    if (data / CURRENT_FILE).is_file():
        yield SnapshotStream.open(data) if stream else Snapshot.load(data)
        return
    if not is_partitioned(data):
        yield load_snapshot(data, at, config)
        return
    from features.streaming import materialize_partitioned

    with tempfile.TemporaryDirectory(prefix="winback-score-") as tmp:
        log.info("materialising the features of %s as of %s", data, at)
        materialize_partitioned(data, at, Path(tmp), config)
        yield SnapshotStream.open(Path(tmp)) if stream else Snapshot.load(Path(tmp))


def load_decider(
    settings: ServingSettings, scorer_loader: Callable[[str], Scorer]
) -> tuple[Decider, str | None]:
    """(decider, why the model is unavailable or None), loaded as the API loads them."""
    policy = load_policy(settings.policy_path)
    catalog = load_catalog(Path(settings.catalog_path))
    scorer, error = load_scorer(scorer_loader, settings.model_uri)
    options = OptionSet.from_catalog(catalog, policy.offer_budget_defaults)
    return Decider(options, policy, scorer, ContactCaps.from_policy(policy.frequency)), error


def open_store(url: str, record: bool) -> Store | None:
    """The store for the live overlay (and recording); None when a SQLite file is absent and
    nothing is to be recorded (decisions then come from the snapshot alone)."""
    if record:
        upgrade_database(url)
        return Store.from_url(url)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        log.warning("no store at %s: deciding from the snapshot alone", url)
        return None
    return Store.from_url(url)


def read_customers(path: Path) -> list[str]:
    """Customer ids from a CSV/Parquet file with a `customer_id` column, or one id a line."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path, columns=[c.CUSTOMER_ID])
        elif path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            return list(dict.fromkeys(s.strip() for s in lines if s.strip()))
    except (OSError, ValueError) as exc:
        raise BatchError(f"--customers: cannot read {path}: {exc}") from None
    if c.CUSTOMER_ID not in frame.columns:
        raise BatchError(f"--customers: {path} has no '{c.CUSTOMER_ID}' column")
    ids = frame[c.CUSTOMER_ID].dropna().astype(str).tolist()
    return list(dict.fromkeys(ids))
