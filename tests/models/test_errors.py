"""LightGBM's errors reach callers as ModelsError subclasses with a stable code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.base import lgb_params, train_booster
from models.errors import ModelsError, TrainingError


def test_lightgbm_failure_becomes_training_error() -> None:
    x = pd.DataFrame({"a": np.arange(50.0)})
    params = lgb_params(
        objective="no_such_objective",
        learning_rate=0.1,
        num_leaves=4,
        min_child_samples=5,
        seed=0,
        n_jobs=1,
    )
    with pytest.raises(TrainingError, match="reactivation classifier: LightGBM failed") as err:
        train_booster(
            params,
            x,
            np.zeros(50),
            weight=None,
            categorical=[],
            n_estimators=5,
            what="reactivation classifier",
        )
    assert isinstance(err.value, ModelsError)
    assert err.value.code == "training_failed"
