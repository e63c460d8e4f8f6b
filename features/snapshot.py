"""The serving snapshot: current features of every customer, versioned, swapped atomically.

Layout of a snapshot directory::

    <root>/CURRENT                  name of the live version (replaced with os.replace)
    <root>/versions/<version>/      written completely under a temporary name, then renamed
        manifest.json               feature set (JSON), as-of time, created, row count
        features.npy                float64 matrix, rows = customers, columns = feature set
        state.parquet               customer_id + decoded guardrail state, same row order
        <name>.<array>.npy          optional attachments: arrays with one row per customer,
                                    same row order, described in the manifest (e.g. the
                                    serving layer's precomputed model scores)
        parts/part=NNN/data.parquet optional partitioned copy (the Spark engine writes it):
                                    customer_id, the features, `state.*`, one folder per
                                    customer partition

`Snapshot` is one loaded version: `get(customer_id)` is a dict lookup plus a row view (well
under a microsecond). `SnapshotStore` holds the live `Snapshot` and, on `refresh()`, loads a
newer version completely before swapping one reference, so a request that took
`store.current()` keeps a consistent version to the end, and no request ever sees a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features import constants as c
from features.build import CustomerView
from features.config import FeatureConfig
from features.errors import FeaturesError
from features.featureset import FeatureSet

CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
MANIFEST = "manifest.json"
MATRIX = "features.npy"
STATE = "state.parquet"
PARTS_DIR = "parts"


class SnapshotError(FeaturesError):
    """No snapshot, or an unreadable one (names the path)."""

    code = "snapshot"


@dataclass(frozen=True)
class Attachment:
    """Arrays stored with a snapshot version, one row per customer in the snapshot's order.

    The snapshot does not interpret them: `meta` (JSON-serialisable) says what they are and
    what they were computed with, and the layer that wrote them decides whether they still
    apply (serving's precomputed scores check the model version recorded there).
    """

    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]


def _check_attachments(attachments: Mapping[str, Attachment], n_rows: int) -> None:
    for name, att in attachments.items():
        if not name.isidentifier():
            raise SnapshotError(f"attachment {name!r}: name must be an identifier")
        for key, arr in att.arrays.items():
            if not key.isidentifier():
                raise SnapshotError(f"attachment {name}.{key}: name must be an identifier")
            if arr.ndim == 0 or arr.shape[0] != n_rows:
                raise SnapshotError(
                    f"attachment {name}.{key}: expected {n_rows:,} rows (one per customer), "
                    f"got shape {arr.shape}"
                )


def write_snapshot(
    view: CustomerView,
    root: Path,
    config: FeatureConfig | None = None,
    keep: int = 3,
    attachments: Mapping[str, Attachment] | None = None,
) -> str:
    """Write `view` as a new version under `root`, make it current, prune old versions.

    Returns the version name. Readers never see a partial version: the directory is renamed
    into place only when complete, and CURRENT is replaced atomically afterwards.
    `attachments` are stored beside the features (see `Attachment`).
    """
    attachments = dict(attachments or {})
    _check_attachments(attachments, len(view.features))
    root = Path(root)
    created = pd.Timestamp.now(tz="UTC").tz_localize(None)
    version = f"{view.as_of:%Y%m%dT%H%M%S}-{created:%Y%m%dT%H%M%S%f}"
    versions = root / VERSIONS_DIR
    tmp = versions / f".tmp-{version}"
    tmp.mkdir(parents=True, exist_ok=False)
    np.save(tmp / MATRIX, np.ascontiguousarray(view.features.to_numpy(np.float64)))
    state = view.state.reset_index()
    state.to_parquet(tmp / STATE, index=False)
    for name, att in attachments.items():
        for key, arr in att.arrays.items():
            np.save(tmp / f"{name}.{key}.npy", np.ascontiguousarray(arr))
    manifest = {
        "version": version,
        "feature_set": view.feature_set.to_dict(),
        "feature_set_key": view.feature_set.key,
        "as_of": view.as_of.isoformat(),
        "created": created.isoformat(),
        "n_customers": len(view.features),
        "feature_config": (config or FeatureConfig()).model_dump(),
        "attachments": {
            name: {"arrays": list(att.arrays), "meta": dict(att.meta)}
            for name, att in attachments.items()
        },
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, versions / version)
    pointer = root / f"{CURRENT_FILE}.tmp"
    pointer.write_text(version + "\n", encoding="utf-8")
    os.replace(pointer, root / CURRENT_FILE)
    _prune(versions, version, keep)
    return version


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _created(name: str) -> str:
    """The creation stamp of a version name `<as_of>-<created>` (what "newest" means)."""
    return name.partition("-")[2] or name


STALE_TMP_SECONDS = 6 * 3600
"""A `.tmp-*` version directory untouched this long is a crashed writer's leftover."""


def _prune(versions: Path, current: str, keep: int) -> None:
    """Keep the `keep` most recently written versions (not the latest as-of times), and
    remove what writers that crashed mid-write left behind (a writer still at work keeps
    touching its directory, so only old ones go)."""
    now = time.time()
    for p in versions.glob(".tmp-*"):
        try:
            stale = now - p.stat().st_mtime > STALE_TMP_SECONDS
        except OSError:  # removed meanwhile
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
    names = sorted(
        (p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_created,
    )
    for name in names[: max(len(names) - keep, 0)]:
        if name != current:
            shutil.rmtree(versions / name, ignore_errors=True)


def current_version(root: Path) -> str:
    """The live version named by `root/CURRENT`."""
    try:
        return (Path(root) / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        raise SnapshotError(
            f"{root}: no snapshot (run `winback features materialize DIR --out {root}`)"
        ) from None


@dataclass(frozen=True)
class PartitionedCopy:
    """A version's partitioned copy (`parts/`): where it is and what its rows mean."""

    version: str
    path: Path
    as_of: pd.Timestamp
    feature_set: FeatureSet
    n_customers: int


def partitioned_copy(root: Path, version: str | None = None) -> PartitionedCopy | None:
    """The partitioned copy of `version` (default: the current one), None when it has none.

    Reads the manifest only: a Spark job reads the copy without loading the snapshot here.
    """
    version = version or current_version(root)
    path = Path(root) / VERSIONS_DIR / version
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: cannot read snapshot manifest: {exc}") from None
    folder = path / PARTS_DIR
    if not folder.is_dir():
        return None
    return PartitionedCopy(
        version=version,
        path=folder,
        as_of=pd.Timestamp(manifest["as_of"]),
        feature_set=FeatureSet.from_dict(manifest["feature_set"]),
        n_customers=int(manifest["n_customers"]),
    )


@dataclass(frozen=True)
class Snapshot:
    """One loaded snapshot version."""

    version: str
    as_of: pd.Timestamp
    feature_set: FeatureSet
    matrix: np.ndarray
    row_of: dict[str, int]
    state_columns: dict[str, np.ndarray]
    attachments: Mapping[str, Attachment] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, version: str | None = None) -> Snapshot:
        """Load `version` (default: the current one) from snapshot directory `root`."""
        version = version or current_version(root)
        path = Path(root) / VERSIONS_DIR / version
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            matrix = np.load(path / MATRIX)
            state = pd.read_parquet(path / STATE)
            attachments = {
                name: Attachment(
                    {key: _read_only(np.load(path / f"{name}.{key}.npy")) for key in a["arrays"]},
                    a.get("meta", {}),
                )
                for name, a in manifest.get("attachments", {}).items()
            }
            _check_attachments(attachments, len(matrix))
        except SnapshotError as exc:
            raise SnapshotError(f"{path}: {exc}") from None
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise SnapshotError(f"{path}: cannot read snapshot: {exc}") from None
        matrix.setflags(write=False)
        ids = state[c.CUSTOMER_ID].astype(object).to_numpy()
        columns = {
            name: state[name].astype(object).where(state[name].notna(), None).to_numpy()
            for name in state.columns
            if name != c.CUSTOMER_ID
        }
        return cls(
            version=version,
            as_of=pd.Timestamp(manifest["as_of"]),
            feature_set=FeatureSet.from_dict(manifest["feature_set"]),
            matrix=matrix,
            row_of={str(cid): i for i, cid in enumerate(ids)},
            state_columns=columns,
            attachments=attachments,
        )

    def __len__(self) -> int:
        return len(self.row_of)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.row_of

    def get(self, customer_id: str) -> np.ndarray | None:
        """The feature vector (read-only, feature-set column order), or None if unknown."""
        row = self.row_of.get(customer_id)
        return None if row is None else self.matrix[row]

    def state(self, customer_id: str) -> dict[str, Any] | None:
        """Decoded guardrail state (lapse_state, value_tier, consent_*, contacts_*d, ...)."""
        row = self.row_of.get(customer_id)
        if row is None:
            return None
        return {name: col[row] for name, col in self.state_columns.items()}


class SnapshotStore:
    """The live snapshot of a directory; `refresh()` swaps in a newer version in one step.

    A load that fails (no snapshot yet, a corrupt version) is remembered in `error`; until
    the next `refresh()` (the service calls it every `refresh_interval_seconds`), `current()`
    raises that error again without touching the disk, so a server started without a
    readable snapshot does not retry the load on every request. A failed refresh keeps the
    snapshot already loaded, if any.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._snapshot: Snapshot | None = None
        self._error: SnapshotError | None = None
        self._lock = threading.Lock()

    @property
    def error(self) -> SnapshotError | None:
        """Why the last load or refresh failed; None once one succeeds."""
        return self._error

    def current(self) -> Snapshot:
        """The live snapshot (loaded on first use). Take it once per request and keep it.

        Raises:
            SnapshotError: nothing is loaded; the last attempt's error (only the first call
                and `refresh()` read the disk).
        """
        snap = self._snapshot
        if snap is None:
            error = self._error
            if error is not None:
                raise SnapshotError(str(error))  # a new instance: no growing traceback
            self.refresh()
            snap = self._snapshot
        assert snap is not None
        return snap

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is new; True when a swap happened."""
        with self._lock:
            try:
                version = current_version(self.root)
                if self._snapshot is not None and self._snapshot.version == version:
                    self._error = None
                    return False
                loaded = Snapshot.load(self.root, version)  # fully built before it is visible
            except SnapshotError as exc:
                self._error = exc
                raise
            self._snapshot = loaded
            self._error = None
            return True
