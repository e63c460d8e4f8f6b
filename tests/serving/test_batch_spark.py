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
