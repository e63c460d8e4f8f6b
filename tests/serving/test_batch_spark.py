"""The Spark engine (`local[2]`) decides exactly as the local engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from serving.batch.columns import COLUMNS
from serving.settings import ServingSettings
from tests.serving import test_batch
from tests.serving.test_batch import AT, decider_of, make_snapshot, run

pyspark = pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark import cloudpickle

    from serving.batch.spark import spark_session

    # the test scorer lives in a test module the Python workers cannot import: ship it whole
    cloudpickle.register_pickle_by_value(test_batch)
    session = spark_session("local[2]", "winback-test")
    yield session
    session.stop()
    cloudpickle.unregister_pickle_by_value(test_batch)


def test_spark_decides_exactly_as_the_local_engine(
    tmp_path: Path,
    settings: ServingSettings,
    spark: object,
) -> None:
    from serving.batch.local import Wave
    from serving.batch.spark import run_spark

    snapshot = make_snapshot(n=500, seed=11)
    local, _ = run(tmp_path, settings, snapshot=snapshot)
    result = run_spark(
        snapshot,
        decider_of(settings),
        tmp_path / "spark.parquet",
        Wave("wave-1", AT, "auto"),
        spark=spark,  # type: ignore[arg-type]
    )
    remote = pd.read_parquet(tmp_path / "spark.parquet")
    remote = remote.astype(object).where(remote.notna(), None)
    assert result.rows == 500 and result.summary.rows == 500
    merged = local.merge(remote, on="customer_id", suffixes=("", "_spark"), validate="1:1")
    assert len(merged) == 500
    for col in COLUMNS[1:]:
        assert merged[col].tolist() == merged[f"{col}_spark"].tolist(), col
    assert local.reasons.str.contains("exploration").any()


def test_spark_scores_a_snapshot_from_its_partitioned_copy(
    tmp_path: Path,
    settings: ServingSettings,
    spark: object,
) -> None:
    """`features materialize --engine spark` keeps the snapshot's partitions (`parts/`);
    `score --engine spark` reads them as they are and decides as from the exported snapshot."""
    from features import constants as c
    from features.datadir import load_data_dir
    from features.featureset import WINBACK_V1
    from features.partitioned import write_partitioned
    from features.snapshot import Snapshot, partitioned_copy
    from features.spark_features import materialize_spark
    from features.synthetic.generate import generate_world, write_world
    from serving.batch.local import Wave
    from serving.batch.spark import run_spark, run_spark_partitioned

    write_world(generate_world(400, 9), tmp_path / "flat")
    data = load_data_dir(tmp_path / "flat")
    raw = {name: pd.read_parquet(tmp_path / "flat" / f"{name}.parquet") for name in c.TABLES}
    write_partitioned(tmp_path / "part", raw, data.catalog, 2)
    as_of = pd.Timestamp(data.orders[c.ORDER_TS].max()).normalize()
    materialize_spark(spark, tmp_path / "part", as_of, tmp_path / "snap", feature_set=WINBACK_V1)  # type: ignore[arg-type]
    copy = partitioned_copy(tmp_path / "snap")
    assert copy is not None and copy.n_customers > 300
    wave = Wave("wave-1", AT, "auto")
    from_parts = run_spark_partitioned(
        copy,
        decider_of(settings),
        tmp_path / "parts.parquet",
        wave,
        spark=spark,  # type: ignore[arg-type]
    )
    exported = run_spark(
        Snapshot.load(tmp_path / "snap"),
        decider_of(settings),
        tmp_path / "export.parquet",
        wave,
        spark=spark,  # type: ignore[arg-type]
    )
    assert from_parts.rows == exported.rows == copy.n_customers
    a = pd.read_parquet(tmp_path / "parts.parquet").sort_values("customer_id", ignore_index=True)
    b = pd.read_parquet(tmp_path / "export.parquet").sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
