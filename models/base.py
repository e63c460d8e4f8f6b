"""Input checks and LightGBM plumbing shared by the estimators.

Estimators take pandas DataFrames of numeric feature columns; some columns may be declared
categorical (non-negative integer codes), which LightGBM then splits on as categories.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.errors import (
    FeatureMismatchError,
    InvalidInputError,
    NotFittedError,
    translate_lightgbm_errors,
)


def check_features(X: Any, name: str = "X") -> pd.DataFrame:
    """Check `X` is a non-empty DataFrame of numeric (or boolean) columns with unique names."""
    if not isinstance(X, pd.DataFrame):
        raise InvalidInputError(f"{name}: expected a pandas DataFrame, got {type(X).__name__}")
    if len(X) == 0:
        raise InvalidInputError(f"{name}: has no rows")
    if X.columns.has_duplicates:
        dup = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise InvalidInputError(f"{name}: duplicated column names {dup}")
    bad = [
        str(c)
        for c in X.columns
        if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
    ]
    if bad:
        raise InvalidInputError(
            f"{name}: columns {bad} are not numeric; encode categories as integer codes and "
            "declare them in categorical_features"
        )
    return X


def check_categoricals(X: pd.DataFrame, categorical: Sequence[str] | None) -> list[str]:
    """The declared categorical columns, checked to exist and hold non-negative integer codes."""
    cats = list(categorical or [])
    missing = [c for c in cats if c not in X.columns]
    if missing:
        raise InvalidInputError(f"categorical_features: {missing} are not columns of X")
    for c in cats:
        values = X[c].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        if finite.size and (finite.min() < 0 or not np.all(finite == np.round(finite))):
            raise InvalidInputError(
                f"categorical feature '{c}': values must be non-negative integer codes"
            )
    return cats


def check_binary(y: Any, n: int, name: str = "y") -> np.ndarray:
    """A 0/1 float vector of length n."""
    arr = np.asarray(y, dtype=float).ravel()
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name}: has {arr.shape[0]} values, X has {n} rows")
    if not np.all((arr == 0) | (arr == 1)):
        raise InvalidInputError(f"{name}: must contain only 0 and 1")
    return arr


def check_weights(w: Any, n: int, name: str = "sample_weight") -> np.ndarray:
    """Positive finite weights of length n (ones when None)."""
    if w is None:
        return np.ones(n)
    arr = np.asarray(w, dtype=float).ravel()
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name}: has {arr.shape[0]} values, X has {n} rows")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidInputError(f"{name}: must be finite and > 0")
    return arr


# The smallest logged propensity an inverse-propensity weight divides by. An exploration floor
# spread over every allowed option logs propensities of 0.002-0.005; unclipped, eleven such
# rows of one wave outweighed its 361 holdout rows, and the next model made that option its
# default. Every learner and the option calibrator clip here, as the DR pseudo-outcome does.
PROPENSITY_FLOOR = 0.01


def inverse_propensity(propensity: Any, n: int, name: str = "propensity") -> np.ndarray:
    """1 / max(propensity, PROPENSITY_FLOOR) for n logged propensities, each in (0, 1]."""
    e = np.asarray(propensity, dtype=float).ravel()
    if e.shape[0] != n or not np.all((e > 0) & (e <= 1)):
        raise InvalidInputError(f"{name}: need one value in (0, 1] per row")
    return 1.0 / np.maximum(e, PROPENSITY_FLOOR)


def check_fitted(est: Any, attr: str = "feature_names_in_") -> None:
    if not hasattr(est, attr):
        raise NotFittedError(f"{type(est).__name__} is not fitted yet: call fit first")


def check_columns(est: Any, X: Any) -> pd.DataFrame:
    """Check X for predict: fitted estimator, same columns in the same order as in fit."""
    check_fitted(est)
    X = check_features(X)
    expected = list(est.feature_names_in_)
    got = [str(c) for c in X.columns]
    if got != expected:
        missing = [c for c in expected if c not in got]
        extra = [c for c in got if c not in expected]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "wrong order"
        raise FeatureMismatchError(
            f"{type(est).__name__}: X columns differ from those seen in fit ({detail}); "
            f"expected {expected}"
        )
    return X


def lgb_params(
    *,
    objective: str,
    learning_rate: float,
    num_leaves: int,
    min_child_samples: int,
    seed: int,
    n_jobs: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """LightGBM parameters with deterministic training (fixed seeds, `deterministic=True`)."""
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_child_samples,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": n_jobs,
        "verbosity": -1,
    }
    params.update(extra or {})
    return params


def train_booster(
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    weight: np.ndarray | None,
    categorical: list[str],
    n_estimators: int,
    X_val: pd.DataFrame | None = None,
    y_val: np.ndarray | None = None,
    w_val: np.ndarray | None = None,
    init_score: np.ndarray | None = None,
    init_score_val: np.ndarray | None = None,
    early_stopping_rounds: int = 50,
    what: str = "model",
) -> Any:
    """Train one booster; with a validation set, stop early on its loss.

    `init_score`/`init_score_val` (raw scores, e.g. a prior's log-odds) make the booster
    learn a correction to them instead of starting from a constant.
    """
    import lightgbm as lgb

    with translate_lightgbm_errors(what):
        train = lgb.Dataset(
            X,
            label=y,
            weight=weight,
            init_score=init_score,
            categorical_feature=categorical or "auto",
            free_raw_data=True,
        )
        valid = None
        if X_val is not None and y_val is not None and len(X_val) > 0:
            valid = lgb.Dataset(
                X_val, label=y_val, weight=w_val, init_score=init_score_val, reference=train
            )
        return _train(params, train, valid, n_estimators, early_stopping_rounds)


def _train(
    params: dict[str, Any], train: Any, valid: Any, n_estimators: int, early_stopping_rounds: int
) -> Any:
    """`lgb.train`, stopping early on `valid` when there is one."""
    import lightgbm as lgb

    return lgb.train(
        params,
        train,
        num_boost_round=n_estimators,
        valid_sets=[valid] if valid is not None else None,
        callbacks=(
            [lgb.early_stopping(early_stopping_rounds, verbose=False)]
            if valid is not None
            else None
        ),
    )


def binned_dataset(
    X: np.ndarray,
    y: np.ndarray,
    *,
    feature_names: Sequence[str],
    categorical: Sequence[str],
    params: dict[str, Any],
    what: str = "model",
) -> Any:
    """A LightGBM Dataset binned once, to train many boosters on row subsets of it.

    Binning (finding bin edges and mapping every value to its bin) is the costly part of
    building a Dataset; `train_on_rows` takes subsets that reuse these bins instead of binning
    each resample again. The Dataset holds no weights: each subset gets its own.
    """
    import lightgbm as lgb

    with translate_lightgbm_errors(what):
        return lgb.Dataset(
            X,
            label=y,
            feature_name=list(feature_names),
            categorical_feature=list(categorical) or "auto",
            params=params,
            free_raw_data=True,
        ).construct()


def _rows_of(data: Any, rows: np.ndarray, weight: np.ndarray, label: np.ndarray | None) -> Any:
    """The constructed subset of `data` on the sorted row indices `rows`, with its own weights."""
    sub = data.subset(rows).construct()
    if label is not None:
        sub.set_label(label)
    # set_weight ignores all-ones weights; the parent holds none, so the subset then has none.
    sub.set_weight(weight)
    return sub


def train_on_rows(
    params: dict[str, Any],
    data: Any,
    rows: np.ndarray,
    *,
    weight: np.ndarray,
    n_estimators: int,
    label: np.ndarray | None = None,
    val_rows: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    val_label: np.ndarray | None = None,
    early_stopping_rounds: int = 50,
    what: str = "model",
) -> Any:
    """Train one booster on rows of a `binned_dataset`; with `val_rows`, stop early on them.

    `rows`/`val_rows` are sorted row indices into `data`; `weight`/`val_weight` (and, to replace
    the Dataset's, `label`/`val_label`) give one value per selected row.
    """
    with translate_lightgbm_errors(what):
        train = _rows_of(data, rows, weight, label)
        valid = None
        if val_rows is not None and len(val_rows) > 0:
            assert val_weight is not None
            valid = _rows_of(data, val_rows, val_weight, val_label)
        return _train(params, train, valid, n_estimators, early_stopping_rounds)


def booster_predict(booster: Any, X: pd.DataFrame | np.ndarray, what: str = "model") -> np.ndarray:
    """Prediction with the booster's best iteration, on the booster's own thread count.

    LightGBM keeps its OpenMP thread count in one process-wide setting that every call resets
    from its own parameters, and sizes per-thread buffers from it. A prediction without
    `num_threads` (meaning: every core) in one thread while a one-thread booster trains or
    predicts in another can size buffers for one count and run with the other: the bagged
    learners' threads crashed with SIGSEGV within a minute of a stress loop (LGBM_BoosterCreate
    in one thread, LGBM_BoosterPredictForMat in the other). In a worker thread, where another
    thread's boosters may be training, the prediction uses the thread count the booster was
    trained with, which keeps concurrent calls in agreement. The main thread, which waits while
    the workers fit, predicts on every core (1M rows: 2.6 s against 5.0 s on one thread).
    """
    with translate_lightgbm_errors(what):
        best = booster.best_iteration if booster.best_iteration > 0 else None
        kwargs: dict[str, int] = {}
        if threading.current_thread() is not threading.main_thread():
            params = getattr(booster, "params", None)
            threads = params.get("num_threads") if isinstance(params, dict) else None
            if threads:
                kwargs["num_threads"] = int(threads)
        return np.asarray(booster.predict(X, num_iteration=best, **kwargs), dtype=float)


# Below this many rows one thread is faster: waking an OpenMP team costs more than it saves,
# and API workers already use every core between them.
_SINGLE_THREAD_ROWS = 2_000
# One prediction at a time per process: predictions of different sizes ask LightGBM for
# different thread counts, which it keeps in one process-wide setting (see `booster_predict`).
# An API worker predicts on its event loop (one customer, one thread) and in its thread pool
# (a batch, every core) at once; unserialised, the two could interleave and corrupt memory.
# Uncontended, the lock costs well under a microsecond per call.
_PREDICT_LOCK = threading.Lock()


def predict_numpy(booster: Any, X: np.ndarray) -> np.ndarray:
    """Booster prediction on a numpy matrix, tuned for the serving path.

    Small inputs run on one thread (measured on 2 loaded cores: 9 rows took 12 ms with the
    default OpenMP team, 0.03 ms on one thread), and `num_iteration` is passed only when early
    stopping kept fewer trees than the booster holds (passing it re-parses the predictor's
    parameters on every call, about 3x the cost of a small prediction).
    """
    best = booster.best_iteration
    n_iter = best if 0 < best < booster.current_iteration() else None
    threads = 1 if X.shape[0] < _SINGLE_THREAD_ROWS else 0
    with _PREDICT_LOCK:
        out = booster.predict(X, num_iteration=n_iter, num_threads=threads)
    return np.asarray(out, dtype=float)
