"""Which rows offline evaluation scores a model on: the ones its training held out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features import modeling_frame as mf
from features.frames import Frame
from models.errors import FeatureMismatchError
from models.policy_model import PolicyModel
from training.evaluate import matrix_for, response_test_mask
from training.fit import response_split

FEATURE_SET = json.dumps({"name": "tiny", "version": "1", "features": []})


def model(seed: str | None, columns: tuple[str, ...] = ("x",)) -> PolicyModel:
    meta = {} if seed is None else {"seed": seed}
    return PolicyModel(FEATURE_SET, columns, ("holdout", "a"), "holdout", {}, "v1", metadata=meta)


def experiment(n: int = 2000) -> Frame:
    """One randomized experiment: every contact has the same timestamp (as Hillstrom)."""
    spec = mf.FrameSpec(kind="offer_response", feature_set="other@1", feature_columns=("x",))
    df = pd.DataFrame({"x": np.arange(n, dtype=float), "ts": pd.Timestamp("2024-01-01")})
    return Frame(df, spec)


def test_held_out_rows_are_the_models_own_split_whatever_seed_is_asked() -> None:
    frame = experiment()
    trained_with_5 = model("5")
    own = response_split(frame, 5)
    for asked in (0, 5, 123):
        np.testing.assert_array_equal(response_test_mask(trained_with_5, frame, asked), own)
    # drawn from another seed most "held-out" rows would be training rows of the model
    assert (response_split(frame, 0) & ~own).sum() > 0.6 * response_split(frame, 0).sum()
    # a model without a recorded seed falls back to the one given
    np.testing.assert_array_equal(
        response_test_mask(model(None), frame, 7), response_split(frame, 7)
    )


def test_a_frame_without_the_models_features_is_a_clear_error() -> None:
    frame = experiment(10)
    with pytest.raises(
        FeatureMismatchError,
        match=r"lacks 2 of the tiny@1 feature-set columns: \['recency', 'zip_code'\]",
    ):
        matrix_for(model("0", ("x", "recency", "zip_code")), frame)
