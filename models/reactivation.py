"""Reactivation propensity: LightGBM binary classifier with early stopping and calibration.

With the order-history columns of `winback_v1` present, the booster does not start from a
constant but from a BTYD prior (`models.btyd.BTYDPrior`): a logistic model on the Pareto/NBD
expected purchases and P(alive) and on log recency, frequency, age and order value, fitted on
the training rows. The trees then learn corrections to it, and early stopping on the
validation rows decides how many. The prior is smooth in the history and keeps its slope
beyond the training range, so it ranks customers older than any training row, where trees
alone stay flat (on CDNOW, whose customers all joined in one quarter, the scored customers are
older than every training row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from models.base import (
    booster_predict,
    check_binary,
    check_categoricals,
    check_columns,
    check_features,
    check_fitted,
    check_weights,
    lgb_params,
    predict_numpy,
    train_booster,
)
from models.btyd import ORDER_DAYS_COLUMN, ORDERS_COLUMN, BTYDPrior
from models.calibration import BinaryCalibrator, choose_calibration
from models.errors import (
    FeatureMismatchError,
    InvalidInputError,
    TrainingError,
)

CalibrationChoice = Literal["auto", "isotonic", "sigmoid", "none"]
PriorChoice = Literal["auto", "btyd", "none"]
_EPS = 1e-12


class ReactivationClassifier(ClassifierMixin, BaseEstimator):
    """P(customer orders again within the horizon), calibrated.

    The caller provides a validation set that comes *after* the training rows in time. The
    booster is trained on (X, y), stops early on the validation log loss, and the calibrator is
    fitted on the booster's predictions for the validation rows, which it never trained on.
    With `calibration="auto"` the method (isotonic or sigmoid) is the one with the lower 5-fold
    cross-validated log loss on those validation predictions.

    Args:
        n_estimators: maximum number of boosting rounds.
        learning_rate, num_leaves, min_child_samples: LightGBM tree parameters.
        early_stopping_rounds: rounds without validation improvement before stopping.
        calibration: "auto", "isotonic", "sigmoid" or "none".
        prior: "btyd" boosts from a `BTYDPrior` (Pareto/NBD based; needs orders_lifetime,
            days_since_first_order and days_since_last_order), "none" from a constant, "auto"
            uses the prior when those columns are present and it can be fitted.
        prior_horizon_days: the horizon of the prior's expected-purchases input; the horizon
            of the question the scores answer (90 days: winback's default label horizon).
        categorical_features: names of columns holding integer category codes.
        random_state: seed of every random choice.
        n_jobs: LightGBM threads.

    Attributes:
        classes_: the labels, array([0, 1]).
        feature_names_in_: columns seen in fit, in order.
        booster_: the trained lightgbm.Booster.
        best_iteration_: number of boosting rounds kept.
        calibration_: method used ("isotonic", "sigmoid" or "none").
        calibrator_: the fitted BinaryCalibrator (None with "none").
        prior_: the fitted BTYDPrior, or None. The booster's own output is the correction to
            the prior's log-odds; `predict_numpy(booster_, X)` alone is not the prediction.
        feature_importances_: gain importance per feature (Series).
    """

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        early_stopping_rounds: int = 50,
        calibration: CalibrationChoice = "auto",
        prior: PriorChoice = "auto",
        prior_horizon_days: float = 90.0,
        categorical_features: Sequence[str] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.prior = prior
        self.prior_horizon_days = prior_horizon_days
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # LightGBM routes missing values itself
        return tags

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        X_val: pd.DataFrame | None = None,
        y_val: Any = None,
        sample_weight: Any = None,
    ) -> ReactivationClassifier:
        X = check_features(X)
        y_arr = check_binary(y, len(X))
        w = check_weights(sample_weight, len(X))
        if self.calibration not in ("auto", "isotonic", "sigmoid", "none"):
            raise InvalidInputError(
                f"calibration: '{self.calibration}' is not auto, isotonic, sigmoid or none"
            )
        if X_val is None or y_val is None:
            raise InvalidInputError(
                "X_val/y_val: a validation set (later in time than X) is required for early "
                "stopping and calibration"
            )
        if self.prior not in ("auto", "btyd", "none"):
            raise InvalidInputError(f"prior: '{self.prior}' is not auto, btyd or none")
        if not self.prior_horizon_days > 0:
            raise InvalidInputError(
                f"prior_horizon_days: must be a positive number of days, "
                f"got {self.prior_horizon_days}"
            )
        X_val = check_features(X_val, "X_val")
        if [str(c) for c in X_val.columns] != [str(c) for c in X.columns]:
            raise FeatureMismatchError("X_val: columns differ from X")
        yv = check_binary(y_val, len(X_val), "y_val")
        if len(np.unique(y_arr)) < 2:
            raise InvalidInputError("y: contains a single class; cannot train a classifier")
        cats = check_categoricals(X, self.categorical_features)
        columns = [str(c) for c in X.columns]
        self.prior_ = self._fit_prior(X, y_arr, w, columns)
        init = init_val = None
        if self.prior_ is not None:
            init = self.prior_.decision_function(X.to_numpy(dtype=float))
            init_val = self.prior_.decision_function(X_val.to_numpy(dtype=float))
        params = lgb_params(
            objective="binary",
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            seed=self.random_state,
            n_jobs=self.n_jobs,
        )
        self.booster_ = train_booster(
            params,
            X,
            y_arr,
            weight=w,
            categorical=cats,
            n_estimators=self.n_estimators,
            X_val=X_val,
            y_val=yv,
            init_score=init,
            init_score_val=init_val,
            early_stopping_rounds=self.early_stopping_rounds,
            what="reactivation classifier",
        )
        self.best_iteration_ = int(
            self.booster_.best_iteration or self.booster_.current_iteration()
        )
        raw_val = self._combine(
            booster_predict(self.booster_, X_val, "reactivation classifier"), init_val
        )
        method = self.calibration
        if method == "auto":
            method = (
                choose_calibration(raw_val, yv, random_state=self.random_state)
                if len(np.unique(yv)) == 2
                else "none"
            )
        self.calibration_ = method
        self.calibrator_ = None if method == "none" else BinaryCalibrator(method).fit(raw_val, yv)
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.feature_importances_ = pd.Series(
            self.booster_.feature_importance(importance_type="gain"),
            index=list(self.feature_names_in_),
        )
        return self

    def _fit_prior(
        self, X: pd.DataFrame, y: np.ndarray, w: np.ndarray, columns: list[str]
    ) -> BTYDPrior | None:
        orders = ORDER_DAYS_COLUMN if ORDER_DAYS_COLUMN in columns else ORDERS_COLUMN
        prior = BTYDPrior(
            horizon_days=self.prior_horizon_days,
            orders_column=orders,
            random_state=self.random_state,
        )
        if self.prior == "none" or (
            self.prior == "auto" and any(c not in columns for c in prior.required_columns())
        ):
            return None
        try:
            return prior.fit(X.to_numpy(dtype=float), y, columns, sample_weight=w)
        except TrainingError:
            if self.prior == "auto":  # e.g. no training row has an order: boost from 0
                return None
            raise

    def _combine(self, p_booster: np.ndarray, prior_logit: np.ndarray | None) -> np.ndarray:
        """The booster's probability, moved by the prior's log-odds when there is a prior."""
        if prior_logit is None:
            return p_booster
        q = np.clip(p_booster, _EPS, 1 - _EPS)
        z = np.log(q) - np.log1p(-q) + prior_logit
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def _prior_logit(self, arr: np.ndarray) -> np.ndarray | None:
        prior = getattr(self, "prior_", None)
        return None if prior is None else prior.decision_function(arr)

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probabilities (booster plus prior)."""
        X = check_columns(self, X)
        p = booster_predict(self.booster_, X, "reactivation classifier")
        return self._combine(p, self._prior_logit(X.to_numpy(dtype=float)))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Array (n, 2): columns P(y=0), P(y=1), calibrated."""
        p = self.predict_raw(X)
        if self.calibrator_ is not None:
            p = self.calibrator_.transform(p)
        return np.column_stack([1.0 - p, p])

    def predict_proba_numpy(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(y=1) for a numpy matrix in `feature_names_in_` order (serving path)."""
        check_fitted(self, "booster_")
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise FeatureMismatchError(
                f"X: expected {self.n_features_in_} columns in feature_names_in_ order, "
                f"got shape {arr.shape}"
            )
        p = self._combine(predict_numpy(self.booster_, arr), self._prior_logit(arr))
        if self.calibrator_ is not None:
            p = self.calibrator_.transform(p)
        return p

    def predict(self, X: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(int)
