"""LightGBM keeps one process-wide OpenMP thread count: concurrent calls must agree on it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightgbm as lgb
import numpy as np

from models import base


def tiny_booster(threads: int) -> Any:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(float)
    params = {"objective": "binary", "num_threads": threads, "verbosity": -1}
    return lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=3)


def test_booster_predict_uses_the_thread_count_the_booster_trained_with() -> None:
    # a bag trains on one thread; its out-of-bag prediction, in the same worker thread, must
    # not ask for every core while another bag trains (the SIGSEGV of the bagged learners)
    booster = tiny_booster(threads=1)
    seen: dict[str, Any] = {}
    original = booster.predict

    def recording(X: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(X, **kwargs)

    booster.predict = recording
    with ThreadPoolExecutor(max_workers=1) as pool:  # as the bags run
        p = pool.submit(base.booster_predict, booster, np.zeros((4, 3))).result()
    assert seen["num_threads"] == 1 and p.shape == (4,)
    seen.clear()  # the main thread waits while workers fit: it predicts on every core
    base.booster_predict(booster, np.zeros((4, 3)))
    assert "num_threads" not in seen


class _Probe:
    """A booster stand-in that records whether the prediction lock was held."""

    best_iteration = 0
    held: list[bool]

    def __init__(self) -> None:
        self.held = []

    def current_iteration(self) -> int:
        return 1

    def predict(self, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        self.held.append(base._PREDICT_LOCK.locked())
        return np.zeros(X.shape[0])


def test_serving_predictions_hold_the_process_lock_small_and_large() -> None:
    probe = _Probe()
    base.predict_numpy(probe, np.zeros((3, 2)))  # one customer: one thread
    base.predict_numpy(probe, np.zeros((5000, 2)))  # a batch: every core
    assert probe.held == [True, True]
    assert not base._PREDICT_LOCK.locked()
