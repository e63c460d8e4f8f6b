"""Where the history can speak: an estimate of how likely each option was to be sent to whom.

Past campaigns rarely send every option to every kind of customer (an expert consultation went
to high-value customers only, say). A response model still returns a number for the options a
customer never could have received, and that number is extrapolation. `AssignmentSupport`
learns P(option was sent | features) from the logged assignments (a multiclass LightGBM) so the
policy can refuse to recommend an option where its estimated sending probability is below a
floor: the data holds no evidence there, whatever the response model says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from models.base import (
    check_categoricals,
    check_features,
    lgb_params,
    predict_numpy,
    train_booster,
)
from models.errors import InvalidInputError


class AssignmentSupport(BaseEstimator):
    """P(option assigned | x), multiclass LightGBM with early stopping on a held-out fold.

    Args:
        n_estimators, learning_rate, num_leaves, min_child_samples: tree parameters.
        categorical_features: columns holding integer category codes.
        random_state: seed of the validation split and of LightGBM.
        n_jobs: LightGBM threads.

    Attributes:
        options_: the option labels, in the column order of `predict_proba_numpy`.
        booster_: the trained booster.
        feature_names_in_: columns seen in fit.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int = 200,
        categorical_features: Sequence[str] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # LightGBM routes missing values itself
        return tags

    def fit(self, X: pd.DataFrame, assigned: Any) -> AssignmentSupport:
        X = check_features(X)
        labels = np.asarray(assigned).astype(str).ravel()
        if labels.shape[0] != len(X):
            raise InvalidInputError(f"assigned: has {labels.shape[0]} values, X has {len(X)} rows")
        self.options_ = sorted(set(labels.tolist()))
        if len(self.options_) < 2:
            raise InvalidInputError("assigned: need at least two options")
        codes = np.searchsorted(np.asarray(self.options_), labels).astype(float)
        cats = check_categoricals(X, self.categorical_features)
        val = np.random.default_rng(self.random_state).random(len(X)) < 0.2
        params = lgb_params(
            objective="multiclass",
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            seed=self.random_state,
            n_jobs=self.n_jobs,
            extra={"num_class": len(self.options_)},
        )
        self.booster_ = train_booster(
            params,
            X[~val],
            codes[~val],
            weight=None,
            categorical=cats,
            n_estimators=self.n_estimators,
            X_val=X[val],
            y_val=codes[val],
            early_stopping_rounds=20,
            what="assignment support model",
        )
        self.feature_names_in_ = np.array([str(c) for c in X.columns], dtype=object)
        return self

    def predict_proba_numpy(self, X: np.ndarray) -> np.ndarray:
        """(n, len(options_)) estimated assignment probabilities."""
        arr = np.asarray(X, dtype=float)
        return predict_numpy(self.booster_, arr).reshape(arr.shape[0], len(self.options_))
