"""Stress check: the bagged learners fit bags in threads; LightGBM must not crash doing so.

LightGBM keeps its OpenMP thread count in one process-wide setting that every C API call resets
from its own parameters. Before `models.base.booster_predict` predicted with the booster's own
thread count, a bag's out-of-bag prediction (asking for every core) in one thread and another
bag's `LGBM_BoosterCreate` (one thread) in the other crashed the process with SIGSEGV: this
loop died within 30 s (2 cores; faulthandler showed exactly those two calls). A crash kills
the process (exit code 139); a clean run prints the number of fits.

Run: .venv/bin/python -X faulthandler bench/stress_bag_threads.py [--seconds 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from models.uplift import SLearner, TLearner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--rows", type=int, default=3000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(args.rows, 20)), columns=[f"f{i}" for i in range(20)])
    t = rng.choice(["holdout", "a", "b", "c"], args.rows)
    y = (rng.random(args.rows) < 0.1 + 0.05 * (t == "a")).astype(int)
    start, fits = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        for kind in (SLearner, TLearner):
            # many short bags: many booster creations and predictions overlapping in 2 threads
            kind(
                n_bags=16, n_jobs=2, random_state=fits, n_estimators=5, early_stopping_rounds=2
            ).fit(X, t, y)
            fits += 1
    elapsed = time.perf_counter() - start
    print(f"{fits} learner fits ({fits * 16} bags, 2 threads) in {elapsed:.0f} s: no crash")


if __name__ == "__main__":
    main()
