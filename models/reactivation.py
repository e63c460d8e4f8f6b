"""Reactivation propensity: LightGBM binary classifier with early stopping and calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

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
from models.calibration import BinaryCalibrator, choose_calibration
from models.errors import FeatureMismatchError, InvalidInputError

CalibrationChoice = Literal["auto", "isotonic", "sigmoid", "none"]


class ReactivationClassifier:
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
        categorical_features: names of columns holding integer category codes.
        random_state: seed of every random choice.
        n_jobs: LightGBM threads.

    Attributes:
        feature_names_in_: columns seen in fit, in order.
        booster_: the trained lightgbm.Booster.
        best_iteration_: number of boosting rounds kept.
        calibration_: method used ("isotonic", "sigmoid" or "none").
        calibrator_: the fitted BinaryCalibrator (None with "none").
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
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs

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
        X_val = check_features(X_val, "X_val")
        if [str(c) for c in X_val.columns] != [str(c) for c in X.columns]:
            raise FeatureMismatchError("X_val: columns differ from X")
        yv = check_binary(y_val, len(X_val), "y_val")
        if len(np.unique(y_arr)) < 2:
            raise InvalidInputError("y: contains a single class; cannot train a classifier")
        cats = check_categoricals(X, self.categorical_features)
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
            early_stopping_rounds=self.early_stopping_rounds,
            what="reactivation classifier",
        )
        self.best_iteration_ = int(
            self.booster_.best_iteration or self.booster_.current_iteration()
        )
        raw_val = booster_predict(self.booster_, X_val, "reactivation classifier")
        method = self.calibration
        if method == "auto":
            method = (
                choose_calibration(raw_val, yv, random_state=self.random_state)
                if len(np.unique(yv)) == 2
                else "none"
            )
        self.calibration_ = method
        self.calibrator_ = None if method == "none" else BinaryCalibrator(method).fit(raw_val, yv)
        self.feature_names_in_ = np.array([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.feature_importances_ = pd.Series(
            self.booster_.feature_importance(importance_type="gain"),
            index=list(self.feature_names_in_),
        )
        return self

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated booster probabilities."""
        X = check_columns(self, X)
        return booster_predict(self.booster_, X, "reactivation classifier")

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
        p = predict_numpy(self.booster_, arr)
        if self.calibrator_ is not None:
            p = self.calibrator_.transform(p)
        return p

    def predict(self, X: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(int)
