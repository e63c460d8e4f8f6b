"""Errors raised by the `training` package.

Hierarchy::

    TrainingError            base; `code` is stable, the message says what to do
    ├── NothingToTrainError  the data supports none of the models
    ├── TrackingError        MLflow could not record or find something (translated MlflowException)
    └── RegistryError        a registered model, version or alias is missing
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of the errors raised by `training`."""

    code = "training_error"


class NothingToTrainError(TrainingError):
    code = "nothing_to_train"


class TrackingError(TrainingError):
    code = "tracking"


class RegistryError(TrainingError):
    code = "registry"
