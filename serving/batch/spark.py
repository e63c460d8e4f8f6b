"""The Spark engine: the same decision step, applied to each partition of a Parquet input.

The snapshot is exported as Parquet (`customer_id`, `_known`, then the feature set's
columns), or, when the snapshot version has a partitioned copy (`features materialize
--engine spark` writes one), that copy is read as it is. Spark reads it, and each partition's
Arrow batches go through `serving.decide.decide_rows` and `columns.decision_table`, exactly
as a chunk of the local engine does; the decider (policy, options, scorer with its boosters)
travels to the executors pickled inside the function. Executors read the live overlay from
the store when they are given its URL. pyspark is imported only here (the `spark` extra).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from features.featureset import FeatureSet
from features.snapshot import PartitionedCopy, Snapshot
from serving.batch.columns import SCHEMA, decision_table, wave_decision_ids
from serving.batch.errors import BatchError
from serving.batch.local import BatchResult, Wave, chunks
from serving.batch.output import open_output
from serving.decide import Decider, decide_rows

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KNOWN = "_known"
EXPORT_CHUNK_ROWS = 200_000
_SPARK_TYPES = {pa.int64(): "bigint", pa.float64(): "double", pa.string(): "string"}
SPARK_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[f.type]}" for f in SCHEMA)


def spark_session(master: str = "local[*]", app_name: str = "winback-score") -> SparkSession:
    """A local (`local[*]`) or cluster session, the one `features.spark_features` starts.

    Raises:
        BatchError: pyspark is not installed.
    """
    from features.errors import FeaturesError
    from features.spark_features import spark_session as session

    try:
        return session(master, app_name, {"spark.sql.shuffle.partitions": "8"})
    except FeaturesError as exc:
        raise BatchError(str(exc)) from None


def export_snapshot(snapshot: Snapshot, path: Path, customers: Sequence[str] | None = None) -> None:
    """Write the snapshot's rows (or the listed customers') as Parquet for Spark to read."""
    names = ["customer_id", KNOWN, *snapshot.feature_set.columns]
    schema = pa.schema(
        [("customer_id", pa.string()), (KNOWN, pa.bool_())]
        + [(n, pa.float64()) for n in snapshot.feature_set.columns]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for ids, matrix, rows in chunks(snapshot, customers, EXPORT_CHUNK_ROWS):
            cols = [pa.array(ids.astype(str)), pa.array(rows >= 0)]
            cols += [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
            writer.write_table(pa.Table.from_arrays(cols, names=names))


def partition_scorer(
    decider: Decider,
    feature_set: FeatureSet,
    as_of: datetime,
    wave: Wave,
    database_url: str | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function Spark runs on each partition (Arrow batches in, decision batches out)."""
    columns = list(feature_set.columns)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from serving.store import Store

        store = Store.from_url(database_url) if database_url else None
        for rb in batches:
            if rb.num_rows == 0:
                continue
            ids = rb.column("customer_id").to_numpy(zero_copy_only=False).astype(object)
            known = rb.column(KNOWN).to_numpy(zero_copy_only=False).astype(bool)
            matrix = np.column_stack(
                [rb.column(c).to_numpy(zero_copy_only=False) for c in columns]
            ).astype(np.float64)
            decided = decide_rows(
                decider,
                matrix,
                known,
                ids,
                feature_set,
                as_of,
                wave.at,
                wave.channel,
                wave.key,
                store=store,
            )
            table = decision_table(
                decided.batch,
                wave_decision_ids(wave.wave_id, ids.tolist()),
                decided.value_tier,
                decided.lapse_state,
            )
            yield from table.to_batches()
        if store is not None:
            store.dispose()

    return run


def score_spark(
    spark: SparkSession,
    input_path: str,
    output_path: str,
    decider: Decider,
    feature_set: FeatureSet,
    as_of: datetime,
    wave: Wave,
    database_url: str | None = None,
) -> None:
    """Read `input_path` (exported snapshot Parquet), decide per partition, write Parquet.

    Works on any filesystem Spark can reach (HDFS, S3, ...); Spark's output committer makes
    the directory appear complete (`_SUCCESS`) or not at all.
    """
    frame = spark.read.parquet(input_path)
    fn = partition_scorer(decider, feature_set, as_of, wave, database_url)
    frame.mapInArrow(fn, SPARK_SCHEMA).write.mode("overwrite").parquet(output_path)


def run_spark(
    snapshot: Snapshot,
    decider: Decider,
    out: Path,
    wave: Wave,
    master: str = "local[*]",
    customers: Sequence[str] | None = None,
    database_url: str | None = None,
    spark: SparkSession | None = None,
) -> BatchResult:
    """`winback score --engine spark` for a local snapshot: export, score on Spark, then
    write the decisions to `out` (one file, atomically) and summarize them."""
    started = time.perf_counter()
    session = spark or spark_session(master)
    work = Path(tempfile.mkdtemp(prefix="winback-spark-", dir=Path(out).parent))
    try:
        export_snapshot(snapshot, work / "input.parquet", customers)
        score_spark(
            session,
            str(work / "input.parquet"),
            str(work / "decisions"),
            decider,
            snapshot.feature_set,
            snapshot.as_of.to_pydatetime(),
            wave,
            database_url,
        )
        result = _collect(work / "decisions", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if spark is None:
            session.stop()
    result.seconds = time.perf_counter() - started
    return result


def _collect(decisions: Path, out: Path) -> BatchResult:
    """Spark's decision files written to `out` (one file, atomically) and summarized."""
    result = BatchResult()
    with open_output(out) as sink:
        dataset = pads.dataset(decisions, format="parquet", schema=SCHEMA)
        for rb in dataset.to_batches():
            table = pa.Table.from_batches([rb], schema=SCHEMA)
            result.summary.add(table)
            sink.write(table)
            result.rows += table.num_rows
    return result


def run_spark_partitioned(
    parts: PartitionedCopy,
    decider: Decider,
    out: Path,
    wave: Wave,
    master: str = "local[*]",
    database_url: str | None = None,
    spark: SparkSession | None = None,
) -> BatchResult:
    """`winback score --engine spark` on a snapshot with a partitioned copy (written by
    `features materialize --engine spark`): Spark reads the copy's `part=NNN/` files as they
    are (every customer of the snapshot, so every row is known); nothing is exported or loaded
    on this machine but the manifest."""
    from pyspark.sql import functions

    started = time.perf_counter()
    session = spark or spark_session(master)
    work = Path(tempfile.mkdtemp(prefix="winback-spark-", dir=Path(out).parent))
    try:
        columns = [functions.col(f"`{name}`") for name in parts.feature_set.columns]
        frame = session.read.parquet(str(parts.path)).select(
            functions.col("customer_id"), functions.lit(True).alias(KNOWN), *columns
        )
        fn = partition_scorer(
            decider, parts.feature_set, parts.as_of.to_pydatetime(), wave, database_url
        )
        frame.mapInArrow(fn, SPARK_SCHEMA).write.mode("overwrite").parquet(str(work / "d"))
        result = _collect(work / "d", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if spark is None:
            session.stop()
    result.seconds = time.perf_counter() - started
    return result
