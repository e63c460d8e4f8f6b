"""Probability calibration.

- `BinaryCalibrator`: maps raw scores of a binary classifier to calibrated probabilities with
  isotonic regression or Platt scaling (a logistic fit on the logit of the score).
- `choose_calibration`: picks the method by K-fold cross-validated log loss on held-out
  predictions (the calibrator is always fitted on predictions the model was not trained on).
- `OptionCalibrator`: per option of a multi-treatment model, shifts the intercept in logit
  space so that the mean predicted P(convert | option) on the rows that were randomized to
  that option equals the observed conversion rate there (weighted by inverse propensity).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from models.base import inverse_propensity
from models.errors import InvalidInputError, NotFittedError, TrainingError

Method = Literal["isotonic", "sigmoid"]
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)))


def expit(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


class BinaryCalibrator:
    """Isotonic or Platt (sigmoid) calibration of scores in [0, 1].

    Attributes:
        mapping_: the fitted sklearn IsotonicRegression or LogisticRegression.
    """

    def __init__(self, method: Method = "isotonic") -> None:
        self.method = method

    def fit(self, p: Any, y: Any, sample_weight: Any = None) -> BinaryCalibrator:
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        p_arr = np.asarray(p, dtype=float).ravel()
        y_arr = np.asarray(y, dtype=float).ravel()
        if p_arr.shape != y_arr.shape:
            raise InvalidInputError("calibration: scores and labels differ in length")
        if len(np.unique(y_arr)) < 2:
            raise TrainingError("calibration: the held-out labels contain a single class")
        if self.method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(p_arr, y_arr, sample_weight=sample_weight)
            self.mapping_: Any = iso
        elif self.method == "sigmoid":
            lr = LogisticRegression(C=1e6)
            lr.fit(logit(p_arr)[:, None], y_arr.astype(int), sample_weight=sample_weight)
            self.mapping_ = lr
        else:
            raise InvalidInputError(
                f"calibration method: '{self.method}' is not 'isotonic' or 'sigmoid'"
            )
        return self

    def transform(self, p: Any) -> np.ndarray:
        if not hasattr(self, "mapping_"):
            raise NotFittedError("BinaryCalibrator is not fitted yet: call fit first")
        p_arr = np.asarray(p, dtype=float).ravel()
        if self.method == "isotonic":
            out = self.mapping_.predict(p_arr)
        else:
            out = self.mapping_.predict_proba(logit(p_arr)[:, None])[:, 1]
        return np.clip(np.asarray(out, dtype=float), _EPS, 1 - _EPS)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def choose_calibration(p: Any, y: Any, n_folds: int = 5, random_state: int = 0) -> Method:
    """The method with the lower cross-validated log loss on held-out predictions `p`."""
    p_arr = np.asarray(p, dtype=float).ravel()
    y_arr = np.asarray(y, dtype=float).ravel()
    rng = np.random.default_rng(random_state)
    fold = rng.permutation(len(p_arr)) % n_folds
    losses: dict[Method, float] = {}
    for method in ("isotonic", "sigmoid"):
        out = np.empty_like(p_arr)
        for k in range(n_folds):
            test = fold == k
            train = ~test
            if len(np.unique(y_arr[train])) < 2:
                out[test] = y_arr[train].mean()
                continue
            out[test] = (
                BinaryCalibrator(method).fit(p_arr[train], y_arr[train]).transform(p_arr[test])
            )
        losses[method] = _log_loss(y_arr, out)
    # Ties go to sigmoid: two parameters overfit less than a step function.
    return "isotonic" if losses["isotonic"] < losses["sigmoid"] else "sigmoid"


class OptionCalibrator:
    """Per-option intercept shift in logit space, fitted on randomized rows.

    For option o with rows R_o (treatment == o), finds delta_o such that
    sum_{i in R_o} w_i * expit(logit(p_io) + delta_o) = sum_{i in R_o} w_i * y_i,
    with w_i = 1 / max(propensity_i, PROPENSITY_FLOOR) (1 when not given). Options without rows
    keep delta 0.

    Attributes:
        options_: the option labels (columns of the probability frame).
        shift_: dict option -> delta_o.
    """

    def __init__(self, max_shift: float = 3.0) -> None:
        self.max_shift = max_shift

    def fit(
        self, p_options: pd.DataFrame, treatment: Any, y: Any, propensity: Any = None
    ) -> OptionCalibrator:
        t = np.asarray(treatment).astype(str)
        y_arr = np.asarray(y, dtype=float).ravel()
        n = len(p_options)
        if t.shape[0] != n or y_arr.shape[0] != n:
            raise InvalidInputError("OptionCalibrator: treatment, y and p_options differ in length")
        w = np.ones(n) if propensity is None else inverse_propensity(propensity, n)
        self.options_ = [str(c) for c in p_options.columns]
        self.shift_: dict[str, float] = {}
        for o in self.options_:
            rows = (t == o) & np.isfinite(p_options[o].to_numpy(dtype=float))
            if not rows.any():
                self.shift_[o] = 0.0
                continue
            z = logit(p_options[o].to_numpy(dtype=float)[rows])
            target = float(np.sum(w[rows] * y_arr[rows]))
            self.shift_[o] = _solve_shift(z, w[rows], target, self.max_shift)
        return self

    def transform(self, p_options: pd.DataFrame) -> pd.DataFrame:
        if not hasattr(self, "shift_"):
            raise NotFittedError("OptionCalibrator is not fitted yet: call fit first")
        cols = [str(c) for c in p_options.columns]
        if cols != self.options_:
            raise InvalidInputError(f"OptionCalibrator: options {cols} != fitted {self.options_}")
        out = {o: expit(logit(p_options[o].to_numpy(dtype=float)) + self.shift_[o]) for o in cols}
        return pd.DataFrame(out, index=p_options.index)


def _solve_shift(z: np.ndarray, w: np.ndarray, target: float, bound: float) -> float:
    """Root of f(d) = sum w expit(z + d) - target by bisection (f is increasing in d)."""
    lo, hi = -bound, bound
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(np.sum(w * expit(z + mid))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
