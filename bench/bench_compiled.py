"""Benchmark of compiled trees (lleaves) against plain LightGBM on the scoring path.

Usage::

    .venv/bin/python bench/bench_compiled.py [--train-customers 20000] [--rows 100000]
                                             [--n-bags 8] [--seed 7]

A policy model is trained in-process (`training.pipeline.fit_policy`) on a synthetic world from
`features.synthetic`, then compiled with `models.compiled.compile_policy_model` (timed, no
cache: a cold compile). Both models score the same rows with `PolicyModel.score`: 10 rows
(repeated, the API's case) and `--rows` rows resampled from the world's customers (a batch
chunk). Reported, all measured in this run: compile time, rows/s of each backend, the
speed-up, and the largest absolute difference between their scores.

A second part repeats the measure on one bare booster shaped like the issue's anchor
(300 trees, 40 features, 31 leaves) on random data, booster call only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from features.synthetic.generate import generate_world, write_world
from models.base import lgb_params, predict_numpy
from models.compiled import compile_booster, compile_policy_model
from models.policy_model import PolicyModel
from training.fit import encode_features
from training.inputs import load_training_inputs
from training.pipeline import fit_policy


def rows_per_second(
    fn: Callable[[np.ndarray], object], X: np.ndarray, min_seconds: float = 1.0
) -> float:
    """Rows/s of `fn(X)`, repeated until at least `min_seconds` have passed (after a warm-up)."""
    fn(X)
    n, t = 0, time.perf_counter()
    while True:
        fn(X)
        n += 1
        elapsed = time.perf_counter() - t
        if elapsed >= min_seconds:
            return n * len(X) / elapsed


def max_diff(a: PolicyModel, b: PolicyModel, X: np.ndarray) -> float:
    sa, sb = a.score(X), b.score(X)
    worst = 0.0
    for field in ("p", "value", "decision_value", "p_reactivation"):
        x, y = getattr(sa, field), getattr(sb, field)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        ok = ~np.isnan(x)
        worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]), initial=0.0)))
    return worst


def n_trees(model: PolicyModel) -> int:
    total = 0
    if model.reactivation is not None:
        total += model.reactivation.booster_.num_trees()
    if model.support is not None:
        total += model.support.booster_.num_trees()
    if model.response is not None:
        for bag in model.response.models_:
            for b in bag if isinstance(bag, list) else [bag]:
                total += b.num_trees()
    return total


def policy_part(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="winback-bench-") as tmp:
        t = time.perf_counter()
        write_world(generate_world(args.train_customers, args.seed), Path(tmp))
        inputs = load_training_inputs(Path(tmp))
        model, _ = fit_policy(inputs, args.seed, n_bags=args.n_bags)
        assert inputs.offer_response is not None
        world_X = encode_features(inputs.offer_response).X.to_numpy(dtype=float)
        print(f"trained on {args.train_customers:,} customers in {time.perf_counter() - t:.1f} s")
    learner = type(model.response).__name__ if model.response is not None else "none"
    print(
        f"model: {learner}, {args.n_bags} bags, {len(model.options)} options, "
        f"{len(model.feature_columns)} features, {n_trees(model)} trees in all boosters"
    )
    t = time.perf_counter()
    compiled = compile_policy_model(model)
    print(f"compile time (cold, no cache): {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(args.seed)
    big = np.ascontiguousarray(world_X[rng.integers(0, len(world_X), args.rows)])
    diff = max_diff(model, compiled, big)
    print(f"max |plain - compiled| over scores of {len(big):,} rows: {diff:.3g}")
    print(f"{'rows':>8} {'lightgbm rows/s':>16} {'lleaves rows/s':>16} {'speed-up':>9}")
    for X in (big[:10], big):
        plain = rows_per_second(model.score, X)
        fast = rows_per_second(compiled.score, X)
        print(f"{len(X):>8,} {plain:>16,.0f} {fast:>16,.0f} {fast / plain:>8.1f}x")


def anchor_part(args: argparse.Namespace) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(20_000, 40))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-X[:, :5].sum(axis=1)))).astype(float)
    params = lgb_params(
        objective="binary",
        learning_rate=0.05,
        num_leaves=31,
        min_child_samples=20,
        seed=args.seed,
        n_jobs=2,
    )
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=300)
    t = time.perf_counter()
    compiled = compile_booster(booster)
    print(f"\nanchor booster (300 trees, 40 features): compile {time.perf_counter() - t:.1f} s")
    big = rng.normal(size=(args.rows, 40))
    diff = np.max(np.abs(predict_numpy(booster, big) - predict_numpy(compiled, big)))
    print(f"max |plain - compiled| on {len(big):,} rows: {diff:.3g}")
    print(f"{'rows':>8} {'lightgbm rows/s':>16} {'lleaves rows/s':>16} {'speed-up':>9}")
    for rows in (big[:10], big):
        plain = rows_per_second(lambda a: predict_numpy(booster, a), rows)
        fast = rows_per_second(lambda a: predict_numpy(compiled, a), rows)
        print(f"{len(rows):>8,} {plain:>16,.0f} {fast:>16,.0f} {fast / plain:>8.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-customers", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--n-bags", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    policy_part(args)
    anchor_part(args)


if __name__ == "__main__":
    main()
