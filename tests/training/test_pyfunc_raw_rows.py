"""The registered pyfunc takes the feature set's own rows: text categoricals as text.

A Hillstrom-like frame stores `zip_code` as text (a pandas categorical) and `recency` as int64.
Training codes `zip_code` into its sorted vocabulary; the pyfunc must accept the raw rows, not
only that float matrix.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.frames import Frame
from features.modeling_frame import FrameSpec
from features.settings import get_settings
from models.errors import FeatureMismatchError, InvalidInputError
from models.policy_model import PolicyModel
from models.uplift import TLearner
from tests.factories import catalog
from training.inputs import TrainingInputs
from training.pipeline import _input_example, log_policy_model
from training.tracking import configure_tracking, use_experiment

VOCAB = ["Rural", "Surburban", "Urban"]
COLUMNS = ("recency", "history", "zip_code")
OPTIONS = ("holdout", "pct10", "freeship")


def raw_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows as an import writes them: int64 recency, float history, categorical zip_code."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "recency": rng.integers(1, 13, n),
            "history": rng.gamma(2.0, 100.0, n),
            "zip_code": pd.Categorical(np.asarray(VOCAB)[rng.integers(0, 3, n)], categories=VOCAB),
        }
    )


def encoded(raw: pd.DataFrame) -> pd.DataFrame:
    """The float matrix training built (training/fit.py encode_features)."""
    out = raw.astype({"recency": float})
    codes = pd.Categorical(raw["zip_code"].astype("string"), categories=VOCAB).codes
    return out.assign(zip_code=np.where(codes < 0, np.nan, codes))


@pytest.fixture(scope="module")
def policy() -> PolicyModel:
    raw = raw_frame(1500, 0)
    X = encoded(raw)
    rng = np.random.default_rng(1)
    t = np.asarray(OPTIONS)[rng.integers(0, 3, len(X))]
    urban = (X["zip_code"] == 2).to_numpy()
    y = (rng.random(len(X)) < 0.1 + 0.15 * urban * (t == "pct10")).astype(int)
    learner = TLearner(n_bags=2, n_estimators=20, categorical_features=["zip_code"])
    learner.fit(X, t, y)
    feature_set = {
        "name": "hillstrom_like",
        "version": "1",
        "features": [
            {"name": "recency", "dtype": "float64", "vocabulary": []},
            {"name": "history", "dtype": "float64", "vocabulary": []},
            {"name": "zip_code", "dtype": "category", "vocabulary": VOCAB},
        ],
    }
    return PolicyModel(
        json.dumps(feature_set),
        COLUMNS,
        OPTIONS,
        "holdout",
        {},
        "test-1",
        response=learner,
        default_option="holdout",
        revenue_feature="history",
        fallback_margin_rate=0.3,
    )


def test_predict_frame_encodes_text_through_the_vocabulary(policy: PolicyModel) -> None:
    raw = raw_frame(40, 2)
    expected = policy.predict_frame(encoded(raw))  # numeric codes keep working
    pd.testing.assert_frame_equal(policy.predict_frame(raw), expected)
    as_text = raw.astype({"zip_code": object})
    pd.testing.assert_frame_equal(policy.predict_frame(as_text), expected)
    as_int32 = raw.astype({"recency": "int32"})
    pd.testing.assert_frame_equal(policy.predict_frame(as_int32), expected)


def test_unknown_and_missing_text_score_as_missing(policy: PolicyModel) -> None:
    raw = raw_frame(3, 3).astype({"zip_code": object})
    raw["zip_code"] = ["Mars", None, "Urban"]
    codes = encoded(raw_frame(3, 3)).assign(zip_code=[np.nan, np.nan, 2.0])
    pd.testing.assert_frame_equal(policy.predict_frame(raw), policy.predict_frame(codes))


def test_bad_input_names_the_column(policy: PolicyModel) -> None:
    raw = raw_frame(3, 4)
    with pytest.raises(FeatureMismatchError, match=r"\['zip_code'\]"):
        policy.predict_frame(raw.drop(columns="zip_code"))
    with pytest.raises(InvalidInputError, match="column recency: value 'soon' is not a number"):
        policy.predict_frame(raw.astype({"recency": object}).assign(recency=["soon", 1, 2]))


@pytest.mark.slow
def test_registered_pyfunc_accepts_raw_rows(
    policy: PolicyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    configure_tracking()
    use_experiment("pyfunc-raw-rows")
    raw = raw_frame(200, 5)
    spec = FrameSpec(
        kind="offer_response",
        feature_set="hillstrom_like@1",
        feature_columns=COLUMNS,
        categorical_columns=("zip_code",),
    )
    inputs = TrainingInputs(
        source=tmp_path, catalog=catalog(), offer_response=Frame(raw.assign(offer_id="x"), spec)
    )
    example = _input_example(policy, inputs)
    assert example["zip_code"].tolist() == raw["zip_code"].head(5).astype(str).tolist()
    with mlflow.start_run():
        uri, _ = log_policy_model(policy, example, tmp_path)

    loaded = mlflow.pyfunc.load_model(uri)
    rows = raw.head(20)  # int64 recency, categorical zip_code: the frame as written
    pd.testing.assert_frame_equal(
        loaded.predict(rows).reset_index(drop=True),
        policy.predict_frame(rows).reset_index(drop=True),
    )
    as_text = rows.astype({"zip_code": object}).reset_index(drop=True)  # as JSON would send
    pd.testing.assert_frame_equal(loaded.predict(as_text), policy.predict_frame(as_text))
    schema = str(loaded.metadata.get_input_schema())
    for column in ("'recency': long", "'history': double", "'zip_code': Any"):
        assert column in schema
