"""ReactivationClassifier: sklearn contract, determinism, calibration, behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.errors import FeatureMismatchError, InvalidInputError, NotFittedError
from models.reactivation import ReactivationClassifier
from training.metrics import expected_calibration_error, roc_auc


def make_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days_since_last_order": rng.integers(1, 400, n).astype(float),
            "orders_365d": rng.poisson(2, n).astype(float),
            "region": rng.integers(0, 4, n),
        }
    )
    z = -0.01 * X["days_since_last_order"] + 0.4 * X["orders_365d"] + 0.3 * (X["region"] == 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-(z + 1.0)))).astype(int)
    return X, y.to_numpy()


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    X, y = make_frame(3000, 0)
    Xv, yv = make_frame(1500, 1)
    return {"X": X, "y": y, "Xv": Xv, "yv": yv}


def fitted(data: dict, **kw: object) -> ReactivationClassifier:
    clf = ReactivationClassifier(n_estimators=200, categorical_features=["region"], **kw)  # type: ignore[arg-type]
    return clf.fit(data["X"], data["y"], X_val=data["Xv"], y_val=data["yv"])


def test_fit_returns_self_and_sets_learned_attributes(data: dict) -> None:
    clf = ReactivationClassifier(n_estimators=50)
    assert clf.fit(data["X"], data["y"], X_val=data["Xv"], y_val=data["yv"]) is clf
    assert list(clf.feature_names_in_) == list(data["X"].columns)
    assert clf.calibration_ in ("isotonic", "sigmoid")
    assert 1 <= clf.best_iteration_ <= 50


def test_init_only_stores_hyperparameters() -> None:
    clf = ReactivationClassifier(calibration="bogus")  # type: ignore[arg-type]
    assert clf.calibration == "bogus"
    assert not hasattr(clf, "feature_names_in_")


def test_predict_before_fit_is_a_clear_error(data: dict) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        ReactivationClassifier().predict_proba(data["X"])


def test_wrong_columns_are_rejected_with_their_names(data: dict) -> None:
    clf = fitted(data)
    with pytest.raises(FeatureMismatchError, match=r"missing \['region'\]"):
        clf.predict_proba(data["X"].drop(columns="region"))
    with pytest.raises(FeatureMismatchError, match="wrong order"):
        clf.predict_proba(data["X"][list(reversed(data["X"].columns))])


def test_bad_inputs_name_the_field(data: dict) -> None:
    with pytest.raises(InvalidInputError, match="X_val"):
        ReactivationClassifier().fit(data["X"], data["y"])
    with pytest.raises(InvalidInputError, match="y: must contain only 0 and 1"):
        ReactivationClassifier().fit(data["X"], data["y"] * 2, X_val=data["Xv"], y_val=data["yv"])
    bad = data["X"].assign(region="north")
    with pytest.raises(InvalidInputError, match=r"\['region'\] are not numeric"):
        ReactivationClassifier().fit(bad, data["y"], X_val=data["Xv"], y_val=data["yv"])
    with pytest.raises(InvalidInputError, match="prior_horizon_days: must be a positive"):
        fitted(data, prior_horizon_days=0)
    with pytest.raises(InvalidInputError, match="calibration"):
        ReactivationClassifier(calibration="bogus").fit(  # type: ignore[arg-type]
            data["X"], data["y"], X_val=data["Xv"], y_val=data["yv"]
        )


def test_same_seed_same_predictions(data: dict) -> None:
    a = fitted(data, random_state=7).predict_proba(data["Xv"])
    b = fitted(data, random_state=7).predict_proba(data["Xv"])
    np.testing.assert_array_equal(a, b)


def test_probabilities_are_calibrated_and_discriminative(data: dict) -> None:
    clf = fitted(data)
    X_test, y_test = make_frame(3000, 2)
    p = clf.predict_proba(X_test)[:, 1]
    assert np.allclose(clf.predict_proba(X_test).sum(axis=1), 1.0)
    assert roc_auc(y_test, p) > 0.7
    assert expected_calibration_error(y_test, p) < 0.05


def test_more_recent_purchase_does_not_lower_propensity(data: dict) -> None:
    clf = fitted(data, calibration="sigmoid")
    X_test, _ = make_frame(500, 3)
    recent = X_test.assign(days_since_last_order=X_test["days_since_last_order"] // 4)
    gain = clf.predict_proba(recent)[:, 1] - clf.predict_proba(X_test)[:, 1]
    assert gain.mean() > 0
    assert (gain >= -0.02).mean() > 0.95


def history_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Order-history columns of winback_v1 (the BTYD prior's inputs) plus a category."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(30, 400, n)
    orders = 1 + rng.poisson(first / 60)
    last = np.where(orders > 1, rng.uniform(0, 1, n) * first, first)
    X = pd.DataFrame(
        {
            "orders_lifetime": orders.astype(float),
            "days_since_first_order": first,
            "days_since_last_order": last,
            "aov_lifetime": rng.gamma(2.0, 20.0, n),
            "region": rng.integers(0, 4, n),
        }
    )
    z = -0.012 * last + 0.5 * np.log(orders / first * 60) + 0.3 * (X["region"] == 2) - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-np.asarray(z, dtype=float)))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def history() -> dict[str, object]:
    X, y = history_frame(3000, 10)
    Xv, yv = history_frame(1500, 11)
    return {"X": X, "y": y, "Xv": Xv, "yv": yv}


def test_prior_is_used_only_when_the_order_history_columns_exist(data: dict, history: dict) -> None:
    assert fitted(data).prior_ is None  # the frame has no order-history columns
    assert fitted(history).prior_ is not None
    assert fitted(history, prior="none").prior_ is None
    with pytest.raises(InvalidInputError, match="needs columns"):
        fitted(data, prior="btyd")
    with pytest.raises(InvalidInputError, match="prior: 'bogus'"):
        fitted(data, prior="bogus")


def test_prior_model_serving_path_matches_and_ranks(history: dict) -> None:
    clf = fitted(history)
    X_test, y_test = history_frame(2000, 12)
    X_test.iloc[:50, :4] = np.nan  # customers who never ordered
    p = clf.predict_proba(X_test)[:, 1]
    np.testing.assert_allclose(clf.predict_proba_numpy(X_test.to_numpy(dtype=float)), p)
    assert np.isfinite(p).all()
    assert roc_auc(y_test, p) > 0.7
    recent = X_test.assign(days_since_last_order=X_test["days_since_last_order"] // 4)
    gain = clf.predict_proba(recent)[:, 1] - p
    assert gain[50:].mean() > 0
    assert (gain[50:] >= -0.02).mean() > 0.95


def test_prior_uses_order_days_when_present_and_the_given_horizon(history: dict) -> None:
    assert fitted(history).prior_.orders_column == "orders_lifetime"
    assert fitted(history).prior_.horizon_days == 90.0
    # winback_v2's distinct order days (same-day orders are one purchase) take precedence
    with_days = {
        **history,
        "X": history["X"].assign(order_days_lifetime=history["X"]["orders_lifetime"]),
        "Xv": history["Xv"].assign(order_days_lifetime=history["Xv"]["orders_lifetime"]),
    }
    clf = fitted(with_days, prior_horizon_days=273)
    assert clf.prior_.orders_column == "order_days_lifetime"
    assert clf.prior_.horizon_days == 273
