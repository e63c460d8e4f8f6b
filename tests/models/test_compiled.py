"""Compiled trees (lleaves) score exactly like plain LightGBM."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.synthetic.generate import generate_world, write_world
from models.base import lgb_params, predict_numpy
from models.compiled import (
    CompiledBooster,
    CompileError,
    compile_booster,
    compile_policy_model,
    lleaves_available,
)
from models.policy_model import PolicyModel
from models.uplift import SLearner, TLearner
from training.fit import encode_features
from training.inputs import load_training_inputs
from training.pipeline import fit_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not lleaves_available(),
        reason="lleaves is not importable: pip install -e '.[compiled]' to test compiled trees",
    ),
]

TOL = 1e-9


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[PolicyModel, np.ndarray]:
    """A policy model (n_bags=2) trained on 3,000 generated customers, and matrices to score."""
    world = tmp_path_factory.mktemp("world")
    write_world(generate_world(3000, seed=3), world)
    inputs = load_training_inputs(world)
    assert inputs.offer_response is not None
    model, _ = fit_policy(inputs, seed=1, n_bags=2)
    X = encode_features(inputs.offer_response).X.to_numpy(dtype=float)
    return model, X


@pytest.fixture(scope="module")
def both_learners(trained: tuple[PolicyModel, np.ndarray]) -> dict[str, PolicyModel]:
    """The trained model with an S-learner and with a T-learner (the other one refitted)."""
    model, _ = trained
    assert model.response is not None
    world_learner = type(model.response)
    other_cls = TLearner if world_learner is SLearner else SLearner
    # refit the learner the selection did not keep, on the same features
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        rng.normal(size=(2000, len(model.feature_columns))), columns=list(model.feature_columns)
    )
    t = rng.choice(list(model.response.options_), size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-X.iloc[:, 0].to_numpy()))).astype(int)
    other = other_cls(
        control=model.response.control_, n_bags=2, n_estimators=60, random_state=1
    ).fit(X, t, y)
    return {
        world_learner.__name__: model,
        other_cls.__name__: dataclasses.replace(model, response=other),
    }


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in different places"
    finite = ~np.isnan(a)
    return float(np.max(np.abs(a[finite] - b[finite]), initial=0.0))


@pytest.mark.parametrize("learner", ["SLearner", "TLearner"])
def test_compiled_scores_equal_lightgbm(
    both_learners: dict[str, PolicyModel],
    trained: tuple[PolicyModel, np.ndarray],
    tmp_path: Path,
    learner: str,
) -> None:
    model = both_learners[learner]
    _, X = trained
    assert np.isnan(X).any()  # missing values take LightGBM's default directions too
    compiled = compile_policy_model(model, cache_dir=tmp_path)
    for rows in (X[:1], X[:10], X):  # one thread below 2,000 rows, threads above
        plain, fast = model.score(rows), compiled.score(rows)
        for field in ("p", "value", "decision_value", "p_reactivation"):
            assert _max_diff(getattr(plain, field), getattr(fast, field)) <= TOL, field
    assert compiled.support is not None and model.support is not None
    assert (
        _max_diff(model.support.predict_proba_numpy(X), compiled.support.predict_proba_numpy(X))
        <= TOL
    )


def test_boosters_compiled_side_by_side_score_as_compiled_one_by_one(
    trained: tuple[PolicyModel, np.ndarray], tmp_path: Path
) -> None:
    model, X = trained
    assert model.response is not None and model.reactivation is not None
    n_boosters = sum(len(b) if isinstance(b, list | tuple) else 1 for b in model.response.models_)
    n_boosters += 1 + (model.support is not None)
    side = compile_policy_model(model, cache_dir=tmp_path / "side", jobs=2)
    # two worker processes compiled every booster into the cache: one shared object each
    assert len(list((tmp_path / "side").glob("*.so"))) == n_boosters
    one = compile_policy_model(model, cache_dir=tmp_path / "one")
    for field in ("p", "decision_value", "p_reactivation"):
        np.testing.assert_array_equal(getattr(side.score(X), field), getattr(one.score(X), field))


def test_original_model_keeps_lightgbm_boosters(trained: tuple[PolicyModel, np.ndarray]) -> None:
    model, _ = trained
    compiled = compile_policy_model(model)
    assert model.reactivation is not None and compiled.reactivation is not None
    assert not isinstance(model.reactivation.booster_, CompiledBooster)
    assert isinstance(compiled.reactivation.booster_, CompiledBooster)
    assert compiled.metadata["scoring_backend"] == "lleaves"
    assert "scoring_backend" not in model.metadata


def test_cache_is_keyed_by_model_text(trained: tuple[PolicyModel, np.ndarray], tmp_path: Path):
    model, X = trained
    assert model.reactivation is not None
    booster = model.reactivation.booster_
    first = compile_booster(booster, tmp_path)
    again = compile_booster(booster, tmp_path)  # loaded from the cache
    assert len(list(tmp_path.glob("*.so"))) == 1
    cols = [model.feature_columns.index(c) for c in model.reactivation.feature_names_in_]
    np.testing.assert_array_equal(
        predict_numpy(first, X[:, cols]), predict_numpy(again, X[:, cols])
    )


def test_pickled_booster_compiles_again_on_arrival(
    trained: tuple[PolicyModel, np.ndarray], tmp_path: Path
) -> None:
    model, X = trained
    assert model.reactivation is not None
    compiled = compile_booster(model.reactivation.booster_, tmp_path)
    restored = pickle.loads(pickle.dumps(compiled))
    assert isinstance(restored, CompiledBooster)
    assert restored.model_sha256 == compiled.model_sha256
    cols = [model.feature_columns.index(c) for c in model.reactivation.feature_names_in_]
    np.testing.assert_array_equal(
        predict_numpy(compiled, X[:, cols]), predict_numpy(restored, X[:, cols])
    )


def test_only_kept_trees_are_compiled(tmp_path: Path) -> None:
    """A booster holding more trees than early stopping kept: compiled = LightGBM's choice.

    `lgb.train` normally drops the extra trees itself; a booster kept for further training
    (as here) still holds them, and LightGBM predicts with `best_iteration` only.
    """
    import lightgbm as lgb

    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 2))
    X[:, 1] = rng.integers(0, 5, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    params = lgb_params(
        objective="binary",
        learning_rate=0.5,
        num_leaves=31,
        min_child_samples=5,
        seed=0,
        n_jobs=1,
    )
    train = lgb.Dataset(X[:2000], label=y[:2000], categorical_feature=[1])
    valid = lgb.Dataset(X[2000:], label=y[2000:], reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,
    )
    assert 0 < booster.best_iteration < booster.current_iteration()
    compiled = compile_booster(booster, tmp_path)
    assert compiled.current_iteration() == booster.best_iteration
    arr = X
    assert _max_diff(predict_numpy(booster, arr), predict_numpy(compiled, arr)) <= TOL
    # all trees would score differently: the cut is what makes them equal
    all_trees = np.asarray(booster.predict(arr, num_iteration=booster.current_iteration()))
    assert _max_diff(all_trees, predict_numpy(compiled, arr)) > TOL
    with pytest.raises(ValueError, match="num_iteration"):
        compiled.predict(arr, num_iteration=1)


def test_unreadable_booster_is_a_compile_error() -> None:
    class Broken:
        best_iteration = 0

        def current_iteration(self) -> int:
            return 1

        def model_to_string(self, num_iteration: int) -> str:
            return "not a lightgbm model"

    with pytest.raises(CompileError, match="lleaves failed"):
        compile_booster(Broken())
