"""The feature engine on Spark: one task per customer partition, the same `FeatureEngine`.

`features materialize --engine spark` and `features frames --engine spark` read a partitioned
data directory (`features.partitioned`). The values frozen for the whole run (the
favourite_category vocabulary, the data's last timestamp, the cutoffs) are computed first on
the driver by a streaming pass (`features.frozen`) and travel to every task inside the
function Spark runs. Each task takes partition numbers (`spark.range(n)`, one per task),
validates its partition with the in-memory contract (`validate_partition`), runs the same
code the local path runs on it (`features.partition_view.view_table`, or the frames of
`features.frames`), and writes the result as `STAGING/part=NNN/data.parquet` itself
(pyarrow, temporary name then rename), returning one small row (partition, rows, seconds).
Features are never re-expressed in Spark SQL, and no value passes through Spark's row format
(which rewrites NaN payloads), so the numbers written are the numbers the engine computed.

The driver then assembles the staged partitions in partition order: the snapshot version
(`features.snapshot.write_snapshot`, the same writer as the local path; the staged directory
is kept in the version as its partitioned copy `parts/`, which `winback score --engine
spark` reads without exporting), or the two frame files. The driver holds the assembled
snapshot or frame (as the local path does); a task holds one partition.

The staging directory, like the input, must be on a filesystem every executor and the driver
see (a local path with `local[*]`, a shared mount on a cluster). pyspark is imported only
inside functions (the `spark` extra).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import modeling_frame as mf
from features.build import to_timestamp
from features.config import FeatureConfig
from features.errors import DataSourceError, FeaturesError
from features.featureset import FeatureSet
from features.partitions import partition_dir_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from features.build import CustomerView

PART_FILE = "data.parquet"
TASK_SCHEMA = "part int, rows bigint, seconds double"
Progress = Callable[[int, int], None]
"""`on_progress(partitions_done, partitions_total)`, called from a polling thread."""


@dataclass(frozen=True)
class SparkRun:
    """What a Spark feature job did: rows and seconds per partition, and in all."""

    rows: int
    n_partitions: int
    seconds: float
    task_seconds: dict[int, float]
    out: str = ""
    """The snapshot version written, or the frame folder."""


def spark_session(
    master: str = "local[*]",
    app_name: str = "winback-features",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A local or cluster session for winback's Spark jobs (features here, batch scoring in
    `serving.batch.spark`), with Arrow transfers on and Spark's UI and console bar off.

    Python workers run this interpreter unless `PYSPARK_PYTHON` says otherwise (on a cluster,
    point it at an environment with winback installed).

    Raises:
        FeaturesError: pyspark is not installed.
    """
    import os
    import sys

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise FeaturesError(
            "--engine spark: pyspark is not installed (pip install 'winback[spark]')"
        ) from None
    # pyspark starts its local Python workers with PYSPARK_PYTHON (default `python3`, which
    # may lack winback's dependencies): default it to this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")  # our own bar shows partitions done
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _write_part(table: pa.Table, staging: str, part: int) -> None:
    folder = Path(staging) / partition_dir_name(part)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (PART_FILE + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(folder / PART_FILE)


def _task(
    directory: str, staging: str, work: Callable[[Any], dict[str, pa.Table]]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function each Spark task runs on its partition numbers."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from features.partition_layout import read_layout
        from features.partitioned import validate_partition

        layout = read_layout(Path(directory))
        for rb in batches:
            for part in rb.column("id").to_pylist():
                started = time.perf_counter()
                p = validate_partition(Path(directory), int(part), layout)
                if p.data is None:
                    raise DataSourceError(
                        f"partition {part} is invalid:\n" + "\n".join(map(str, p.report.problems))
                    )
                rows = 0
                for sub, table in work(p.data).items():
                    _write_part(table, str(Path(staging) / sub) if sub else staging, int(part))
                    rows += table.num_rows
                yield pa.RecordBatch.from_pydict(
                    {
                        "part": pa.array([int(part)], pa.int32()),
                        "rows": pa.array([rows], pa.int64()),
                        "seconds": pa.array([time.perf_counter() - started]),
                    }
                )

    return run


def _spark_error(exc: Exception) -> FeaturesError:
    """The Python error a task raised, from the Java exception Spark wraps it in (its
    traceback's last `SomeError: message` lines)."""
    import re

    text = str(exc)
    found = list(re.finditer(r"^(\w+(?:Error|Exception)): (.*?)(?: SQLSTATE: \w+\))?$", text, re.M))
    python = [m for m in found if not m.group(1).startswith(("Py4J", "Spark"))]
    if python:
        m = python[-1]
        start = m.start()
        tail = text[start:].split("\n\tat ")[0].split(" SQLSTATE:")[0].strip()
        return FeaturesError(f"Spark task failed: {tail}")
    first = text.splitlines()[0] if text else repr(exc)
    return FeaturesError(f"Spark task failed: {first}")


def _poll(spark: SparkSession, total: int, on_progress: Progress, stop: threading.Event) -> None:
    tracker = spark.sparkContext.statusTracker()
    done = 0  # the job has one stage: its completed tasks only grow
    while not stop.wait(0.5):
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                done = max(done, info.numCompletedTasks)
        on_progress(min(done, total), total)


def run_partitions(
    spark: SparkSession,
    directory: Path,
    staging: Path,
    work: Callable[[Any], dict[str, pa.Table]],
    on_progress: Progress | None = None,
) -> dict[int, tuple[int, float]]:
    """Run `work(partition DataSet) -> {subfolder: table}` on every partition as Spark tasks
    (one partition per task); each table lands in `staging/<subfolder>/part=NNN/data.parquet`.
    Returns {partition: (rows, seconds)}."""
    from features.partition_layout import read_layout

    n = read_layout(directory).n_partitions
    staging.mkdir(parents=True, exist_ok=True)
    fn = _task(str(Path(directory).resolve()), str(staging.resolve()), work)
    stop = threading.Event()
    poller = None
    if on_progress is not None:
        on_progress(0, n)
        poller = threading.Thread(target=_poll, args=(spark, n, on_progress, stop), daemon=True)
        poller.start()
    try:
        rows = spark.range(0, n, numPartitions=n).mapInArrow(fn, TASK_SCHEMA).collect()
    except Exception as exc:  # py4j / pyspark errors carry the task's Python error as text
        if isinstance(exc, FeaturesError):
            raise
        raise _spark_error(exc) from None
    finally:
        stop.set()
        if poller is not None:
            poller.join()
    if on_progress is not None:
        on_progress(n, n)
    return {int(r["part"]): (int(r["rows"]), float(r["seconds"])) for r in rows}


def read_staged(staging: Path, part: int) -> pa.Table | None:
    """The table a task staged for partition `part` (None when the partition had no file)."""
    path = Path(staging) / partition_dir_name(part) / PART_FILE
    return pq.read_table(path) if path.exists() else None


def _require_partitioned(directory: Path) -> int:
    from features.partition_layout import is_partitioned, read_layout

    if not is_partitioned(directory):
        raise DataSourceError(
            f"{directory}: --engine spark reads a partitioned data directory (partitions.json "
            "and <table>/part=NNN/); partition it first, or use --engine local"
        )
    return read_layout(directory).n_partitions


def materialize_spark(
    spark: SparkSession,
    directory: Path,
    as_of: pd.Timestamp | str,
    root: Path,
    config: FeatureConfig | None = None,
    feature_set: FeatureSet | None = None,
    attach: Callable[[CustomerView], Mapping[str, Mapping[str, np.ndarray]]] | None = None,
    attachment_meta: Mapping[str, Mapping[str, Any]] | None = None,
    on_progress: Progress | None = None,
) -> SparkRun:
    """`features materialize --engine spark`: the snapshot of a partitioned directory, the
    same files as the local engine's (`features.streaming.materialize_partitioned`: the staged
    partitions go through the same `SnapshotWriter`, in partition order, one at a time), plus
    the staged partitions kept as the version's partitioned copy `parts/`.

    `attach(view)` returns one partition's attachment arrays (e.g. the model's scores), stored
    with `attachment_meta`."""
    from features.partition_view import frozen_feature_set, view_from_tables, view_table
    from features.snapshot import PARTS_DIR
    from features.snapshot_stream import SnapshotWriter

    started = time.perf_counter()
    directory = Path(directory)
    n = _require_partitioned(directory)
    cfg = config or FeatureConfig()
    when = to_timestamp(as_of)
    fs = frozen_feature_set(directory, when, feature_set, cfg)
    _catalog(directory)  # a broken catalog fails here, not in n tasks
    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spark-", dir=root))
    try:
        done = run_partitions(
            spark,
            directory,
            staging,
            lambda data: {"": view_table(data, when, fs, cfg)},
            on_progress,
        )
        rows = sum(r for r, _ in done.values())
        writer = SnapshotWriter(Path(root), fs, when, rows, cfg)
        try:
            for k in range(n):
                table = read_staged(staging, k)
                if table is None:
                    continue
                view = view_from_tables([table], when, fs)
                writer.add(view, attach(view) if attach is not None else {})
                del view, table
            os.replace(staging, writer.tmp / PARTS_DIR)
            version = writer.commit(attachment_meta)
        except BaseException:
            shutil.rmtree(writer.tmp, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SparkRun(
        rows=rows,
        n_partitions=n,
        seconds=time.perf_counter() - started,
        task_seconds={k: s for k, (_, s) in done.items()},
        out=version,
    )


def _catalog(directory: Path) -> Any:
    from features.offers import load_catalog

    return load_catalog(Path(directory) / "offers.yaml")


def frames_spark(
    spark: SparkSession,
    directory: Path,
    out: Path,
    cutoffs: list[str] | None = None,
    horizon_days: int | None = None,
    config: FeatureConfig | None = None,
    on_progress: Progress | None = None,
) -> tuple[SparkRun, dict[str, tuple[mf.FrameSpec, int]]]:
    """`features frames --engine spark`: both training frames of a partitioned directory,
    the same files as the local engine's (`features.streaming.write_frames_partitioned`):
    each task builds its partition's frames with the local code and the run's frozen values
    (cutoffs, horizon, the data's end, the vocabularies frozen at the last cutoff and after
    the last contact); the driver appends the staged parts in partition order.

    Returns the run and {file name: (spec, rows)}."""
    from features.engine import FeatureEngine
    from features.partition_view import _empty_data
    from features.streaming import _append_parts, frame_plan

    started = time.perf_counter()
    directory = Path(directory)
    n = _require_partitioned(directory)
    cfg = config or FeatureConfig()
    plan = frame_plan(directory, cutoffs, horizon_days, cfg)

    def work(data: Any) -> dict[str, pa.Table]:
        return {
            name: pa.Table.from_pandas(frame.data, preserve_index=False)
            for name, frame in plan.frames(FeatureEngine(data, cfg)).items()
        }

    # the specs as a partition's frames carry them (the same for every partition)
    empty = FeatureEngine(_empty_data(_catalog(directory)), cfg)
    specs = {k: replace(f.spec, source=str(directory)) for k, f in plan.frames(empty).items()}
    staging = Path(tempfile.mkdtemp(prefix=".spark-", dir=Path(out).parent))
    written: dict[str, tuple[mf.FrameSpec, int]] = {}
    try:
        done = run_partitions(spark, directory, staging, work, on_progress)
        for name, spec in specs.items():
            parts = [
                p
                for k in range(n)
                if (p := staging / name / partition_dir_name(k) / PART_FILE).exists()
            ]
            written[name] = (spec, _append_parts(parts, spec, Path(out) / name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = sum(r for _, r in written.values())
    run = SparkRun(
        rows, n, time.perf_counter() - started, {k: s for k, (_, s) in done.items()}, str(out)
    )
    return run, written
