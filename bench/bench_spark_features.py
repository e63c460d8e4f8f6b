"""Spark feature engine vs the local engine: `features materialize` on one partitioned world.

Runs, in the same process and on the same data: the local engine (`load_data_dir` of the
partitioned directory, `build_customer_view`, `write_snapshot`: what `winback features
materialize DIR` does), then the Spark engine (`features.spark_features.materialize_spark` on
`--master`, default `local[2]`, what `--engine spark` does), and checks that both snapshots
are the same (features.npy byte-identical, state.parquet equal tables). Prints both wall
times, their ratio, the Spark session's start-up apart, and the slowest Spark task.

Run: .venv/bin/python bench/bench_spark_features.py DIR [--as-of T] [--master local[2]]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.partitioned import read_layout
from features.snapshot import VERSIONS_DIR, current_version, write_snapshot
from features.spark_features import materialize_spark, spark_session


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a partitioned data directory")
    ap.add_argument("--as-of", default=None, help="default: 30 days before the last order")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a tmp dir)")
    args = ap.parse_args()
    layout = read_layout(args.data)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-", dir=args.out))
    try:
        t0 = time.perf_counter()
        data = load_data_dir(args.data)
        t_load = time.perf_counter() - t0
        as_of = (
            pd.Timestamp(args.as_of)
            if args.as_of
            else pd.Timestamp(data.orders[c.ORDER_TS].max()).normalize() - pd.Timedelta(days=30)
        )
        t1 = time.perf_counter()
        view = build_customer_view(data, as_of)
        t_view = time.perf_counter() - t1
        del data
        write_snapshot(view, work / "local")
        t_local = time.perf_counter() - t0
        n = len(view.features)
        del view

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
        same_state = pq.read_table(a / "state.parquet").equals(
            pq.read_table(b / "state.parquet"), check_metadata=True
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slowest = max(run.task_seconds.values())
    print(f"data: {args.data} ({layout.n_partitions} partitions), as of {as_of}, {n:,} customers")
    print(
        f"local engine:  {t_local:8.1f} s  (load + validate {t_load:.1f} s, features "
        f"{t_view:.1f} s, write the rest)  {n / t_local:,.0f} rows/s"
    )
    print(
        f"spark {args.master}: {t_spark:8.1f} s  (+ session start {t_session:.1f} s; slowest "
        f"task {slowest:.1f} s)  {run.rows / t_spark:,.0f} rows/s"
    )
    print(f"spark / local: {t_spark / t_local:.2f}x")
    print(f"same snapshot: features.npy identical={same_matrix}, state.parquet equal={same_state}")


if __name__ == "__main__":
    main()
