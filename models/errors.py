"""Errors raised by the `models` package.

Hierarchy::

    ModelsError                   base of everything this package raises
    ├── NotFittedError            predict/transform called before fit
    ├── FeatureMismatchError      predict got columns that differ from `feature_names_in_`
    ├── InvalidInputError         fit/predict got bad input (names the field and the problem)
    └── TrainingError             LightGBM (or the maths around it) failed while fitting

LightGBM raises `lightgbm.basic.LightGBMError` (and sometimes ValueError/TypeError) with
messages from its C++ core; `translate_lightgbm_errors` turns them into `TrainingError` at the
boundary, so callers (training, the CLI, the API) never see a library traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ModelsError(Exception):
    """Base class of the errors raised by `models`."""

    code = "models_error"


class NotFittedError(ModelsError):
    """The estimator is used before `fit` was called."""

    code = "not_fitted"


class FeatureMismatchError(ModelsError):
    """The columns given to predict differ from the columns seen in fit."""

    code = "feature_mismatch"


class InvalidInputError(ModelsError):
    """An argument of fit or predict is malformed (wrong length, dtype, values)."""

    code = "invalid_input"


class TrainingError(ModelsError):
    """Fitting failed inside LightGBM or a calibrator."""

    code = "training_failed"


@contextmanager
def translate_lightgbm_errors(what: str) -> Iterator[None]:
    """Re-raise LightGBM's errors as `TrainingError` naming `what` was being fitted."""
    import lightgbm as lgb

    try:
        yield
    except lgb.basic.LightGBMError as exc:
        raise TrainingError(f"{what}: LightGBM failed: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{what}: {exc}") from None
