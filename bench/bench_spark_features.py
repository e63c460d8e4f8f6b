"""Spark feature engine vs the local engine: `features materialize` on one partitioned world.

Runs, in the same process and on the same data: the local engine
(`features.streaming.materialize_partitioned`: partition by partition, what `winback features
materialize DIR` does on a partitioned directory), then the Spark engine
(`features.spark_features.materialize_spark` on `--master`, default `local[2]`, what
`--engine spark` does), and checks that both snapshots are the same (features.npy and
state.parquet byte-identical). Prints both wall times, their ratio, the Spark session's
start-up apart, and the slowest Spark task.

Run: .venv/bin/python bench/bench_spark_features.py DIR [--as-of T] [--master local[2]]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from features import frozen
from features.partition_layout import read_layout
from features.snapshot import VERSIONS_DIR, current_version
from features.spark_features import materialize_spark, spark_session
from features.streaming import materialize_partitioned


def _default_as_of(directory: Path) -> pd.Timestamp:
    """30 days before the data's last timestamp, at midnight."""
    return frozen.data_end(directory).normalize() - pd.Timedelta(days=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a partitioned data directory")
    ap.add_argument("--as-of", default=None, help="default: 30 days before the data's end")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a tmp dir)")
    args = ap.parse_args()
    layout = read_layout(args.data)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-", dir=args.out))
    try:
        as_of = pd.Timestamp(args.as_of) if args.as_of else _default_as_of(args.data)
        t0 = time.perf_counter()
        local = materialize_partitioned(args.data, as_of, work / "local")
        t_local = time.perf_counter() - t0
        n = local.n_customers

        t2 = time.perf_counter()
        spark = spark_session(args.master, "bench-spark-features")
        t_session = time.perf_counter() - t2
        try:
            t3 = time.perf_counter()
            run = materialize_spark(spark, args.data, as_of, work / "spark")
            t_spark = time.perf_counter() - t3
        finally:
            spark.stop()

        a = work / "local" / VERSIONS_DIR / current_version(work / "local")
        b = work / "spark" / VERSIONS_DIR / current_version(work / "spark")
        same_matrix = (a / "features.npy").read_bytes() == (b / "features.npy").read_bytes()
        same_state = (a / "state.parquet").read_bytes() == (b / "state.parquet").read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slowest = max(run.task_seconds.values())
    print(f"data: {args.data} ({layout.n_partitions} partitions), as of {as_of}, {n:,} customers")
    print(f"local engine:  {t_local:8.1f} s  (partition by partition)  {n / t_local:,.0f} rows/s")
    print(
        f"spark {args.master}: {t_spark:8.1f} s  (+ session start {t_session:.1f} s; slowest "
        f"task {slowest:.1f} s)  {run.rows / t_spark:,.0f} rows/s"
    )
    print(f"spark / local: {t_spark / t_local:.2f}x")
    print(
        f"same snapshot: features.npy identical={same_matrix}, state.parquet identical={same_state}"
    )


if __name__ == "__main__":
    main()
