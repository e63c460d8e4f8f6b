"""Benchmark of batch scoring with the local engine: 1,000,000 customers x 8 options.

Usage::

    .venv/bin/python bench/bench_batch.py [--customers 1000000] [--train-customers 20000]

A policy model is trained in-process (`training.pipeline.fit_policy`) on a synthetic world
from `features.synthetic`; the wave's snapshot is that world's features as of its end,
resampled with replacement to `--customers` rows (realistic feature distributions without
generating a million-customer history). The decision options are the generated catalog's
offers plus `none`; the policy is `policy.example.yaml`.

Reported, all measured in this run: wall time and rows/s of `score_local` (features ->
scores -> guardrails -> choice -> columns -> Parquet file), peak resident memory while it ran,
and the time of the bare model predictions the scorer makes (the same LightGBM boosters:
reactivation, assignment support and response bags, plus the reactivation model's BTYD prior;
the same rows, the same chunking), so `ratio` = engine time / bare prediction time.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.featureset import FeatureSet
from features.snapshot import Snapshot
from features.synthetic.generate import generate_world, write_world
from models.base import predict_numpy
from models.policy_model import PolicyModel
from models.uplift import SLearner
from serving.batch.local import DEFAULT_CHUNK_ROWS, Wave, score_local
from serving.batch.output import open_output
from serving.decide import Decider
from serving.engine import OptionSet
from serving.model_scorer import PolicyScorer
from serving.policy import load_policy
from serving.store import ContactCaps
from training.inputs import load_training_inputs
from training.pipeline import fit_policy


def _status(key: str) -> float:
    """A /proc/self/status memory figure (VmHWM, VmRSS) in GB; 0 where unavailable."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def reset_peak() -> None:
    """Start a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def train(world_dir: Path, n: int, seed: int) -> tuple[PolicyModel, Snapshot]:
    """Train a policy model on a generated world; return it with the world's features."""
    t = time.perf_counter()
    write_world(generate_world(n, seed), world_dir)
    inputs = load_training_inputs(world_dir)
    model, _ = fit_policy(inputs, seed)
    data = load_data_dir(world_dir)
    end = pd.Timestamp(data.orders[c.ORDER_TS].max())
    view = build_customer_view(data, end, None, FeatureSet.from_json(model.feature_set))
    print(f"trained on {n:,} generated customers in {time.perf_counter() - t:,.1f} s")
    snap = Snapshot(
        version="bench",
        as_of=view.as_of,
        feature_set=view.feature_set,
        matrix=view.features.to_numpy(np.float64),
        row_of={str(c): i for i, c in enumerate(view.features.index)},
        state_columns={},
    )
    return model, snap


def resample(snap: Snapshot, n: int, seed: int) -> Snapshot:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(snap.row_of), n)
    matrix = np.ascontiguousarray(snap.matrix[rows])
    return Snapshot(
        "bench", snap.as_of, snap.feature_set, matrix, {f"b{i:08d}": i for i in range(n)}, {}
    )


def bare_predictions(model: PolicyModel, matrix: np.ndarray, chunk: int) -> float:
    """Seconds the scorer's model calls take alone on `matrix`, chunk by chunk: every LightGBM
    booster it runs (reactivation, assignment support, response bags) and the reactivation
    model's BTYD prior (numpy and scipy arithmetic on the rows, part of that model)."""
    t = time.perf_counter()
    for start in range(0, len(matrix), chunk):
        X = matrix[start : start + chunk]
        if model.reactivation is not None:
            cols = [model.feature_columns.index(c) for c in model.reactivation.feature_names_in_]
            b = model.reactivation.booster_
            b.predict(X[:, cols], num_iteration=b.best_iteration if b.best_iteration > 0 else None)
            if model.reactivation.prior_ is not None:
                model.reactivation.prior_.decision_function(X[:, cols])
        if model.support is not None:
            predict_numpy(model.support.booster_, X)
        learner = model.response
        if learner is None:
            continue
        k = len(learner.options_)
        if isinstance(learner, SLearner):  # every row once per option code, for all bags
            design = np.column_stack([np.tile(X, (k, 1)), np.repeat(np.arange(k), len(X))])
        for bag in learner.models_:
            if isinstance(learner, SLearner):
                predict_numpy(bag, design)
            else:
                for m in bag:
                    predict_numpy(m, X)
    return time.perf_counter() - t


class NullSink:
    def write(self, table: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--train-customers", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_ROWS)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="winback-bench-") as tmp:
        model, small = train(Path(tmp) / "world", args.train_customers, args.seed)
        world_catalog = load_data_dir(Path(tmp) / "world").catalog
        snap = resample(small, args.customers, args.seed)
        policy = load_policy(Path(__file__).resolve().parents[1] / "policy.example.yaml")
        options = OptionSet.from_catalog(world_catalog, policy.offer_budget_defaults)
        scorer = PolicyScorer(model, "bench/1")
        decider = Decider(options, policy, scorer, ContactCaps.from_policy(policy.frequency))
        learner = type(model.response).__name__ if model.response is not None else "none"
        print(
            f"{args.customers:,} customers x {len(options)} options; model options "
            f"{len(model.options)}, response learner {learner}, "
            f"{len(model.feature_columns)} features"
        )
        wave = Wave("bench-wave", pd.Timestamp(snap.as_of).to_pydatetime(), "auto")
        # warm-up on a small slice (first-call costs of LightGBM and numpy)
        score_local(resample(small, 2_000, 1), decider, NullSink(), wave, chunk_rows=args.chunk)

        bare = bare_predictions(model, snap.matrix, args.chunk)
        base_rss = _status("VmRSS")
        reset_peak()
        out = Path(tmp) / "wave.parquet"
        with open_output(out) as sink:
            res = score_local(snap, decider, sink, wave, chunk_rows=args.chunk)
        peak = _status("VmHWM")
        scoring_only = time.perf_counter()
        for start in range(0, len(snap.matrix), args.chunk):
            scorer.score(snap.matrix[start : start + args.chunk])
        scoring_only = time.perf_counter() - scoring_only
    rate = res.rows / res.seconds
    print(f"engine wall time      {res.seconds:8.2f} s  ({rate:,.0f} rows/s)")
    print(f"bare model predict    {bare:8.2f} s  ({res.rows / bare:,.0f} rows/s)")
    print(f"PolicyModel.score     {scoring_only:8.2f} s  (boosters + bagging/value math)")
    print(f"ratio engine / bare   {res.seconds / bare:8.2f} x   (target < 1.5)")
    print(f"peak memory           {peak:8.2f} GB (before run {base_rss:.2f} GB; target < 4)")
    print("actions:", dict(res.summary.by_action.most_common()))


if __name__ == "__main__":
    main()
