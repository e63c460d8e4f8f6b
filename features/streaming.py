"""The feature stages over a partitioned data directory, one partition at a time.

Each stage first freezes what must be the same for every customer (`features.frozen`: the
category vocabulary, the data's end, the row count), then runs the in-memory code of
`features.build` / `features.frames` on each partition with those values and writes its
part of the result before reading the next partition. So the results equal the in-memory
path's on the same data, row for row (rows come partition by partition, not in the input
order), and peak memory is one partition plus the block being written.

`on_partition(index, customers)` is called after each partition (progress bars).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import frozen
from features import modeling_frame as mf
from features.build import CustomerView, engine_view, to_timestamp
from features.config import FeatureConfig, FeatureConfigError
from features.contract import ValidationReport
from features.engine import FeatureEngine
from features.errors import DataContractError
from features.featureset import FeatureSet
from features.frames import (
    OFFER_RESPONSE_FILE,
    REACTIVATION_FILE,
    Frame,
    cutoffs_before,
    offer_response_frame,
    reactivation_frame,
)
from features.partition_layout import read_layout
from features.partitioned import Partition, iter_partitions, map_partitions, validate_partition
from features.snapshot_stream import SnapshotWriter

OnPartition = Callable[[int, int], None]
Attach = Callable[[CustomerView], Mapping[str, Mapping[str, np.ndarray]]]


def validate_partitioned(
    directory: Path, on_partition: OnPartition | None = None, jobs: int = 1
) -> ValidationReport:
    """Validate every partition (types, keys, references, placement), then the keys that
    must be unique across partitions. Memory: one partition per job (`jobs` processes)."""
    report = ValidationReport(source=str(directory))
    parts = range(read_layout(directory).n_partitions)
    for p in map_partitions(partial(_partition_report, Path(directory)), parts, jobs):
        report.problems += p.report.problems
        for name, n in p.report.row_counts.items():
            report.row_counts[name] = report.row_counts.get(name, 0) + n
        if on_partition is not None:
            on_partition(p.index, p.report.row_counts.get("customers", 0))
    seen = {(q.table, q.column, q.rule) for q in report.problems}
    report.problems += [
        q for q in frozen.check_unique_keys(directory) if (q.table, q.column, q.rule) not in seen
    ]
    return report


def _partition_report(directory: Path, part: int) -> Partition:
    """One partition's validation report, without its data (run in a worker process)."""
    p = validate_partition(directory, part)
    return Partition(p.index, p.report, None)


def _partition_view(
    directory: Path, config: FeatureConfig, when: pd.Timestamp, fs: FeatureSet, part: int
) -> CustomerView:
    """One valid partition's features as of `when` (run in a worker process).

    Raises:
        DataContractError: the partition is not valid (its report).
    """
    p = validate_partition(directory, part)
    if p.data is None:
        raise DataContractError(p.report)
    return engine_view(FeatureEngine(p.data, config), when, fs)


@dataclass(frozen=True)
class MaterializeResult:
    version: str
    feature_set: FeatureSet
    as_of: pd.Timestamp
    n_customers: int


def materialize_partitioned(
    directory: Path,
    as_of: pd.Timestamp | datetime | str,
    root: Path,
    config: FeatureConfig | None = None,
    feature_set: FeatureSet | None = None,
    attach: Attach | None = None,
    attachment_meta: Mapping[str, Mapping[str, Any]] | None = None,
    on_partition: OnPartition | None = None,
    jobs: int = 1,
) -> MaterializeResult:
    """Write a snapshot version of every customer's features as of `as_of`, partition by
    partition (`features.snapshot_stream.SnapshotWriter`).

    `attach(view)` returns the attachment arrays of one partition's view (e.g. the model's
    scores), stored with `attachment_meta`; it runs in this process, while with `jobs` > 1
    the partitions' features are computed in that many worker processes (the snapshot is
    the same: partitions are written in order).
    """
    directory = Path(directory)
    cfg = config or FeatureConfig()
    when = to_timestamp(as_of)
    fs = frozen.resolve_feature_set(directory, when, feature_set, cfg)
    n_rows = frozen.customers_before(directory, when)
    writer = SnapshotWriter(Path(root), fs, when, n_rows, cfg)
    parts = range(read_layout(directory).n_partitions)
    views = map_partitions(partial(_partition_view, directory, cfg, when, fs), parts, jobs)
    try:
        for part, view in zip(parts, views, strict=True):
            writer.add(view, attach(view) if attach is not None else {})
            if on_partition is not None:
                on_partition(part, len(view.features))
            del view
        version = writer.commit(attachment_meta)
    except BaseException:
        shutil.rmtree(writer.tmp, ignore_errors=True)
        raise
    return MaterializeResult(version, fs, when, n_rows)


def view_partitioned(
    directory: Path,
    as_of: pd.Timestamp | datetime | str,
    config: FeatureConfig | None = None,
    feature_set: FeatureSet | None = None,
) -> CustomerView:
    """Every partition's view concatenated in memory (for callers that need all of it)."""
    cfg = config or FeatureConfig()
    when = to_timestamp(as_of)
    fs = frozen.resolve_feature_set(Path(directory), when, feature_set, cfg)
    views = []
    for p in iter_partitions(directory):
        assert p.data is not None  # strict: an invalid partition raised
        views.append(engine_view(FeatureEngine(p.data, cfg), when, fs))
    return CustomerView(
        when,
        fs,
        pd.concat([v.features for v in views]),
        pd.concat([v.state for v in views]),
    )


def _append_parts(parts: list[Path], spec: mf.FrameSpec, path: Path) -> int:
    """Concatenate per-partition frame files into one frame file (one row group per part)."""
    schemas = [pq.read_schema(p) for p in parts]
    schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    meta = dict(schemas[0].metadata or {}) if schemas else {}
    meta[mf.METADATA_KEY] = spec.to_json().encode()
    schema = schema.with_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    with pq.ParquetWriter(tmp, schema) as out:
        for p in parts:
            table = pq.read_table(p)
            table = table.select(schema.names).cast(schema)
            out.write_table(table)
            rows += table.num_rows
    tmp.replace(path)
    return rows


@dataclass(frozen=True)
class FramePlan:
    """The values frozen for a partitioned directory's training frames before any partition
    is built: horizon, the data's end, the cutoffs, and the vocabularies frozen at the last
    cutoff (reactivation) and after the last contact (offer response). The local and the
    Spark engine (`features.spark_features`) build every partition's frames from one plan."""

    horizon_days: int
    end: pd.Timestamp
    cutoffs: list[pd.Timestamp]
    fs_react: FeatureSet | None
    fs_offer: FeatureSet

    def frames(self, engine: FeatureEngine) -> dict[str, Frame]:
        """Both frames of the customers `engine` holds, keyed by file name."""
        h, end = self.horizon_days, self.end
        return {
            REACTIVATION_FILE: reactivation_frame(engine, self.cutoffs, h, self.fs_react, end=end),
            OFFER_RESPONSE_FILE: offer_response_frame(engine, None, self.fs_offer, end=end),
        }


def frame_plan(
    directory: Path,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None,
    horizon_days: int | None,
    config: FeatureConfig,
) -> FramePlan:
    """The frozen values of `directory`'s frames, from one streaming pass over a few columns.

    Raises:
        FeatureConfigError: the horizon is not positive.
    """
    h = horizon_days or config.horizon_days
    if h <= 0:
        raise FeatureConfigError(f"horizon_days must be positive, got {h}")
    end = frozen.data_end(directory)
    cuts = sorted(to_timestamp(x, "cutoff") for x in (cutoffs or cutoffs_before(end, h)))
    fs_react = frozen.resolve_feature_set(directory, cuts[-1], None, config) if cuts else None
    last = frozen.last_contact_ts(directory)
    fs_offer = frozen.resolve_feature_set(
        directory, (last if last is not None else end) + pd.Timedelta(1, "ns"), None, config
    )
    return FramePlan(h, end, cuts, fs_react, fs_offer)


def write_frames_partitioned(
    directory: Path,
    out: Path,
    cutoffs: Sequence[pd.Timestamp | datetime | str] | None = None,
    horizon_days: int | None = None,
    config: FeatureConfig | None = None,
    on_partition: OnPartition | None = None,
    jobs: int = 1,
) -> dict[str, tuple[mf.FrameSpec, int]]:
    """Both training frames of a partitioned directory, partition by partition: the same
    rows as `features.frames.write_frames` on the whole data (grouped by partition).

    With `jobs` > 1 the partitions' frames are built in that many worker processes, each
    writing its partition's part files; the parts are joined in partition order, so the
    frames are the same for any number of jobs.

    Returns {file name: (spec, rows)}.
    """
    directory = Path(directory)
    cfg = config or FeatureConfig()
    plan = frame_plan(directory, cutoffs, horizon_days, cfg)
    specs: dict[str, mf.FrameSpec] = {}
    files: dict[str, list[Path]] = {REACTIVATION_FILE: [], OFFER_RESPONSE_FILE: []}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".frames-", dir=Path(out).parent) as tmp:
        parts = range(read_layout(directory).n_partitions)
        build = partial(_partition_frames, directory, cfg, plan, Path(tmp))
        for built in map_partitions(build, parts, jobs):
            for name, (spec, part) in built.parts.items():
                specs[name] = spec
                files[name].append(part)
            if on_partition is not None:
                on_partition(built.index, built.customers)
        return {
            name: (specs[name], _append_parts(files[name], specs[name], Path(out) / name))
            for name in files
            if name in specs
        }


@dataclass(frozen=True)
class _FrameParts:
    """One partition's frames as written by `_partition_frames`: {file name: (spec, part
    file)}, and the partition's index and customer count (for progress)."""

    index: int
    customers: int
    parts: dict[str, tuple[mf.FrameSpec, Path]]


def _partition_frames(
    directory: Path, config: FeatureConfig, plan: FramePlan, tmp: Path, part: int
) -> _FrameParts:
    """One valid partition's frames, each written to a part file in `tmp` (run in a worker
    process with `jobs` > 1).

    Raises:
        DataContractError: the partition is not valid (its report).
    """
    p = validate_partition(directory, part)
    if p.data is None:
        raise DataContractError(p.report)
    written: dict[str, tuple[mf.FrameSpec, Path]] = {}
    for name, frame in plan.frames(FeatureEngine(p.data, config)).items():
        path = tmp / f"{name}.{p.index:03d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame.data, preserve_index=False), path)
        written[name] = (frame.spec, path)
    return _FrameParts(p.index, len(p.data.customers), written)
