"""Every estimator in models/ keeps the scikit-learn contract: clone, get/set_params, pickling."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from models.btyd import BetaGeoModel, BTYDPrior, ParetoNBDModel
from models.reactivation import ReactivationClassifier
from models.support import AssignmentSupport
from models.uplift import DRLearner, SLearner, TLearner

OPTIONS = np.array(["holdout", "pct10", "freeship"])


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n), "region": rng.integers(0, 3, n)})
    t = OPTIONS[rng.integers(0, 3, n)]
    y = (rng.random(n) < 0.2 + 0.2 * (X["x"] > 0) * (t == "pct10")).astype(int)
    return X, t, y


def _history(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """orders, days since first and last order for n customers; y = ordered again."""
    rng = np.random.default_rng(seed)
    orders = 1.0 + rng.poisson(2.0, n)
    first = rng.uniform(100.0, 400.0, n)
    last = first * rng.uniform(0.0, 1.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(0.01 * last - 0.3 * orders))).astype(int)
    return (
        np.column_stack([orders, first, last]),
        y,
        ["orders_lifetime", "days_since_first_order", "days_since_last_order"],
    )


Predict = Callable[[Any], np.ndarray]


def _fit_reactivation(est: Any) -> Predict:
    X, _, y = _frame(600, 0)
    Xv, _, yv = _frame(300, 1)
    est.fit(X, y, X_val=Xv, y_val=yv)
    return lambda m: np.asarray(m.predict_proba(Xv))


def _fit_learner(est: Any) -> Predict:
    X, t, y = _frame(900, 2)
    est.fit(X, t, y)
    return lambda m: m.predict_proba_options(X).to_numpy()


def _fit_support(est: Any) -> Predict:
    X, t, _ = _frame(900, 3)
    est.fit(X, t)
    return lambda m: np.asarray(m.predict_proba_numpy(X.to_numpy(dtype=float)))


def _fit_btyd(est: Any) -> Predict:
    H, _, _ = _history(400, 4)
    x, t_x, T = H[:, 0] - 1.0, H[:, 1] - H[:, 2], H[:, 1]
    est.fit(x, t_x, T)
    return lambda m: np.asarray(m.p_alive(x, t_x, T))


def _fit_prior(est: Any) -> Predict:
    H, y, cols = _history(400, 5)
    est.fit(H, y, cols)
    return lambda m: np.asarray(m.decision_function(H))


# (estimator with non-default hyperparameters, how to fit it and return its predictions)
CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], Predict]]] = {
    "ReactivationClassifier": (
        lambda: ReactivationClassifier(
            n_estimators=30, prior="none", categorical_features=["region"], random_state=3
        ),
        _fit_reactivation,
    ),
    "SLearner": (
        lambda: SLearner(n_bags=2, n_estimators=20, categorical_features=["region"]),
        _fit_learner,
    ),
    "TLearner": (
        lambda: TLearner(n_bags=2, n_estimators=20, categorical_features=["region"]),
        _fit_learner,
    ),
    "DRLearner": (
        lambda: DRLearner(n_bags=2, n_estimators=20, categorical_features=["region"]),
        _fit_learner,
    ),
    "AssignmentSupport": (
        lambda: AssignmentSupport(n_estimators=20, categorical_features=["region"]),
        _fit_support,
    ),
    "BetaGeoModel": (lambda: BetaGeoModel(penalizer=0.01, max_iter=200), _fit_btyd),
    "ParetoNBDModel": (lambda: ParetoNBDModel(penalizer=0.01, max_iter=200), _fit_btyd),
    "BTYDPrior": (lambda: BTYDPrior(horizon_days=60.0, C=0.5, random_state=2), _fit_prior),
}


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[Any, Predict]]:
    """Each estimator fitted once on tiny data, with how to get its predictions."""
    out = {}
    for name, (make, fit) in CASES.items():
        est = make()
        out[name] = (est, fit(est))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_clone_copies_hyperparameters(name: str) -> None:
    est = CASES[name][0]()
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est
    assert copy.get_params() == est.get_params()
    assert type(est).__name__ in repr(est)


@pytest.mark.parametrize(
    "name", ["ReactivationClassifier", "SLearner", "TLearner", "DRLearner", "AssignmentSupport"]
)
def test_boosted_estimators_declare_that_they_accept_missing_values(name: str) -> None:
    assert get_tags(CASES[name][0]()).input_tags.allow_nan


@pytest.mark.parametrize("name", list(CASES))
def test_get_params_round_trips_through_set_params(name: str) -> None:
    est = CASES[name][0]()
    params = est.get_params()
    fresh = type(est)()
    assert fresh.get_params() != params  # the cases use non-default values
    assert fresh.set_params(**params) is fresh
    assert fresh.get_params() == params


@pytest.mark.parametrize("name", list(CASES))
def test_a_clone_of_a_fitted_estimator_is_unfitted(name: str, fitted: dict) -> None:
    est, _ = fitted[name]
    check_is_fitted(est)
    copy = clone(est)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(copy)
    assert copy.get_params() == est.get_params()


@pytest.mark.parametrize("name", list(CASES))
def test_joblib_round_trip_predicts_identically(name: str, fitted: dict) -> None:
    est, predict = fitted[name]
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    assert "_sklearn_version" not in vars(loaded)  # our classes are not sklearn's own
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(predict(loaded), predict(est))


def test_reactivation_classifier_is_a_classifier(fitted: dict) -> None:
    est, _ = fitted["ReactivationClassifier"]
    assert is_classifier(est)
    np.testing.assert_array_equal(est.classes_, [0, 1])
    Xv, _, yv = _frame(300, 1)
    assert est.score(Xv, yv) == pytest.approx(float(np.mean(est.predict(Xv) == yv)))
