"""Bagging on one binned Dataset: bags in threads, row subsets with their own labels/weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.base import binned_dataset, lgb_params, train_on_rows
from models.uplift import DRLearner, SLearner, TLearner
from tests.models.test_uplift import make_world


@pytest.mark.parametrize("cls", [SLearner, TLearner, DRLearner])
def test_bags_in_threads_give_the_same_model_as_one_by_one(cls: type) -> None:
    w = make_world(1500, 7)
    kw = dict(control="holdout", n_bags=3, n_estimators=60, categorical_features=["region"])
    serial = cls(n_jobs=1, **kw).fit(w["X"], w["t"], w["y"], propensity=w["e"])
    threaded = cls(n_jobs=3, **kw).fit(w["X"], w["t"], w["y"], propensity=w["e"])
    np.testing.assert_array_equal(
        serial.predict_proba_options_bags(w["X"]), threaded.predict_proba_options_bags(w["X"])
    )
    pd.testing.assert_frame_equal(serial.oob_proba_options_, threaded.oob_proba_options_)


def _data(n: int = 4000) -> tuple[np.ndarray, np.ndarray, Any, dict[str, Any]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    y = (rng.random(n) < 0.5).astype(float)  # the Dataset's own labels: noise
    params = lgb_params(
        objective="regression",
        learning_rate=0.1,
        num_leaves=7,
        min_child_samples=20,
        seed=0,
        n_jobs=1,
    )
    data = binned_dataset(X, y, feature_names=["a", "b"], categorical=[], params=params)
    return X, y, data, params


def test_a_subset_trains_on_its_rows_with_the_label_it_is_given() -> None:
    X, _, data, params = _data()
    rows = np.flatnonzero(X[:, 1] > 0)  # only half the rows
    booster = train_on_rows(
        params, data, rows, weight=np.ones(len(rows)), label=3 * X[rows, 0], n_estimators=80
    )
    pred = booster.predict(X)
    # it learned the label it was given (3a), not the Dataset's noise labels
    assert np.corrcoef(pred, 3 * X[:, 0])[0, 1] > 0.95


def test_subset_weights_are_the_ones_given_not_another_subsets() -> None:
    X, _, data, params = _data()
    rows = np.arange(len(X))
    label = np.where(X[:, 0] > 0, 1.0, 0.0)
    heavy_pos = np.where(X[:, 0] > 0, 50.0, 1.0)
    stump = dict(params, num_leaves=2, min_data_in_leaf=len(X))  # one leaf: the weighted mean
    first = train_on_rows(stump, data, rows, weight=heavy_pos, label=label, n_estimators=60)
    plain = train_on_rows(stump, data, rows, weight=np.ones(len(X)), label=label, n_estimators=60)
    share = (X[:, 0] > 0).mean()
    assert first.predict(X[:1])[0] == pytest.approx(50 * share / (50 * share + 1 - share), abs=0.02)
    assert plain.predict(X[:1])[0] == pytest.approx(share, abs=0.02)


def test_early_stopping_uses_the_validation_rows() -> None:
    _, _, data, params = _data()
    rows, val = np.arange(0, 2000), np.arange(2000, 4000)
    # labels are noise: the held-out loss gets worse from the first trees on
    booster = train_on_rows(
        dict(params, objective="binary"),
        data,
        rows,
        weight=np.ones(len(rows)),
        n_estimators=200,
        val_rows=val,
        val_weight=np.ones(len(val)),
        early_stopping_rounds=5,
    )
    assert 0 < booster.best_iteration < 50
