"""Uplift learners: contract, determinism, recovery of a feature-dependent best option."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.synthetic.catalog import default_catalog
from models import uplift
from models.base import booster_predict
from models.errors import FeatureMismatchError, InvalidInputError, NotFittedError
from models.policy import confident_choice
from models.policy_model import PolicyModel, costs_from_catalog
from models.uplift import DRLearner, SLearner, TLearner
from training.metrics import select_by_auuc

OPTIONS = ("holdout", "pct10", "freeship")
LEARNERS = (SLearner, TLearner, DRLearner)


def make_world(n: int, seed: int, confounded: bool = False) -> dict[str, Any]:
    """pct10 helps customers with x > 0, freeship those with x <= 0; holdout converts at 10%.

    With `confounded`, customers with x > 0 are more often held out (known propensities).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    X = pd.DataFrame({"x": x, "noise": rng.normal(size=n), "region": rng.integers(0, 3, n)})
    if confounded:
        p_hold = np.where(x > 0, 0.6, 0.2)
        probs = np.column_stack([p_hold, (1 - p_hold) / 2, (1 - p_hold) / 2])
    else:
        probs = np.full((n, 3), 1 / 3)
    u = rng.random(n)[:, None]
    arm = (u > np.cumsum(probs, axis=1)).sum(axis=1)
    t = np.asarray(OPTIONS)[arm]
    true_p = np.column_stack(
        [np.full(n, 0.10), 0.10 + 0.20 * (x > 0) + 0.02, 0.10 + 0.20 * (x <= 0) + 0.02]
    )
    true_p[:, 0] += 0.05 * (x > 0)  # held-out rows with x > 0 convert more by themselves
    y = (rng.random(n) < true_p[np.arange(n), arm]).astype(int)
    return {"X": X, "t": t, "y": y, "e": probs[np.arange(n), arm], "true_p": true_p}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return make_world(4000, 0)


@pytest.fixture(scope="module")
def fitted(world: dict) -> dict:
    """Each learner fitted once on the shared world (fitting is the slow part)."""
    return {cls: small(cls).fit(world["X"], world["t"], world["y"]) for cls in LEARNERS}


def small(cls: type, **kw: object):
    return cls(control="holdout", n_bags=4, n_estimators=100, categorical_features=["region"], **kw)


@pytest.mark.parametrize("cls", LEARNERS)
def test_contract(cls: type, world: dict, fitted: dict) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        small(cls).predict_proba_options(world["X"])
    learner = fitted[cls]
    assert learner.options_ == ["holdout", "freeship", "pct10"]
    p = learner.predict_proba_options(world["X"])
    assert list(p.columns) == learner.options_
    assert ((p.to_numpy() > 0) & (p.to_numpy() < 1)).all()
    with pytest.raises(FeatureMismatchError, match=r"unexpected \['extra'\]"):
        learner.predict_proba_options(world["X"].assign(extra=1.0))


def test_bad_inputs_name_the_field(world: dict) -> None:
    X, t, y = world["X"], world["t"], world["y"]
    with pytest.raises(InvalidInputError, match="control option 'control'"):
        SLearner(control="control").fit(X, t, y)
    with pytest.raises(InvalidInputError, match="treatment: has 3 values"):
        SLearner().fit(X, t[:3], y)
    with pytest.raises(InvalidInputError, match="propensity"):
        TLearner(n_bags=2).fit(X, t, y, propensity=np.zeros(len(y)))
    with pytest.raises(InvalidInputError, match="n_bags"):
        TLearner(n_bags=1).fit(X, t, y)
    with pytest.raises(InvalidInputError, match="max_oob_rows: must be a positive"):
        TLearner(n_bags=2, max_oob_rows=0).fit(X, t, y)


@pytest.mark.parametrize("cls", LEARNERS)
def test_same_seed_same_predictions(cls: type) -> None:
    w = make_world(1200, 4)
    a = small(cls, random_state=3).fit(w["X"], w["t"], w["y"])
    b = small(cls, random_state=3).fit(w["X"], w["t"], w["y"])
    pd.testing.assert_frame_equal(a.predict_proba_options(w["X"]), b.predict_proba_options(w["X"]))
    c = small(cls, random_state=4).fit(w["X"], w["t"], w["y"])
    assert not np.allclose(a.predict_proba_options(w["X"]), c.predict_proba_options(w["X"]))


def test_t_learner_recovers_the_best_option_by_feature(fitted: dict) -> None:
    learner = fitted[TLearner]
    test = make_world(2000, 1)
    X = test["X"]
    choice = confident_choice(
        learner.predict_proba_options_bags(X), learner.options_, learner.best_option_, z=1.0
    )
    pos = (X["x"] > 0.3).to_numpy()
    neg = (X["x"] < -0.3).to_numpy()
    assert (choice[pos] == "pct10").mean() > 0.8
    assert (choice[neg] == "freeship").mean() > 0.8


@pytest.mark.parametrize("cls", [SLearner, DRLearner])
def test_uplift_ranking_follows_the_feature(cls: type, fitted: dict) -> None:
    learner = fitted[cls]
    test = make_world(2000, 1)
    p = learner.predict_proba_options(test["X"])
    edge = (p["pct10"] - p["freeship"]).to_numpy()
    pos = (test["X"]["x"] > 0.3).to_numpy()
    neg = (test["X"]["x"] < -0.3).to_numpy()
    # True edge: +0.20 where x > 0 and -0.20 where x <= 0.
    assert edge[pos].mean() - edge[neg].mean() > 0.1
    assert (edge[pos] > 0).mean() > 0.7 and (edge[neg] < 0).mean() > 0.7


def test_confident_choice_stays_on_default_without_signal() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame({"x": rng.normal(size=n)})
    t = rng.choice(["holdout", "a", "b"], n)
    y = (rng.random(n) < 0.1).astype(int)  # no option does anything
    learner = TLearner(n_bags=6, n_estimators=100).fit(X, t, y)
    choice = confident_choice(
        learner.predict_proba_options_bags(X), learner.options_, learner.best_option_
    )
    assert (choice == learner.best_option_).mean() > 0.95


def test_inverse_propensity_weighting_corrects_confounded_assignment() -> None:
    w = make_world(6000, 2, confounded=True)
    truth = w["true_p"].mean(axis=0)
    learner = small(TLearner).fit(w["X"], w["t"], w["y"], propensity=w["e"])
    naive = small(TLearner).fit(w["X"], w["t"], w["y"])
    # holdout is over-represented among x > 0, where it converts more: naive rate is biased up.
    assert abs(learner.arm_rates_["holdout"] - truth[0]) < 0.015
    assert naive.arm_rates_["holdout"] - truth[0] > 0.01
    p = learner.predict_proba_options(w["X"]).mean()
    np.testing.assert_allclose(p[["holdout", "pct10", "freeship"]], truth, atol=0.03)


def a_few_rows_at_a_tiny_propensity(seed: int) -> dict[str, Any]:
    """3,000 rows randomised at 1/3 over three options (10% convert), then eleven pct10 rows
    logged at 0.003 (an exploration floor spread over many options) that all converted."""
    rng = np.random.default_rng(seed)
    n = 3000
    t = np.concatenate([rng.choice(list(OPTIONS), n), ["pct10"] * 11])
    y = np.concatenate([(rng.random(n) < 0.1).astype(int), np.ones(11, dtype=int)])
    e = np.concatenate([np.full(n, 1 / 3), np.full(11, 0.003)])
    return {"X": pd.DataFrame({"x": rng.normal(size=n + 11)}), "t": t, "y": y, "e": e}


@pytest.mark.parametrize("cls", (SLearner, TLearner))
def test_a_few_rows_at_a_tiny_propensity_do_not_outweigh_the_rest(cls: type) -> None:
    # Unclipped, the eleven rows weigh 11 / 0.003 = 3,667 against the other ~1,000 pct10 rows'
    # 3,000 and pct10 reads 61% converting (the loop's next model made such an option its
    # default); clipped at the propensity floor they weigh 1,100 and the thousand rows decide.
    w = a_few_rows_at_a_tiny_propensity(0)
    learner = cls(control="holdout", n_bags=4, n_estimators=100).fit(
        w["X"], w["t"], w["y"], propensity=w["e"]
    )
    assert learner.arm_rates_["pct10"] < 0.4
    p = learner.predict_proba_options(w["X"]).mean()
    assert p["pct10"] < 0.4
    assert p["holdout"] < 0.16  # the S-learner's shared trees are not dragged up either


def test_oob_predictions_and_uplift_std(world: dict, fitted: dict) -> None:
    learner = fitted[TLearner]
    oob = learner.oob_proba_options_
    assert oob.shape == (len(world["X"]), 3)
    assert oob.notna().all(axis=1).mean() > 0.8
    mean, std = learner.predict_uplift(world["X"])
    assert (mean["holdout"] == 0).all() and (std["holdout"] == 0).all()
    assert (std[["pct10", "freeship"]] > 0).all().all()


def test_select_by_auuc_prefers_the_informative_learner(world: dict, fitted: dict) -> None:
    good = fitted[TLearner]
    blind = TLearner(n_bags=4, n_estimators=100).fit(world["X"][["noise"]], world["t"], world["y"])

    class Blind:
        def predict_proba_options(self, X: pd.DataFrame) -> pd.DataFrame:
            return blind.predict_proba_options(X[["noise"]])

    test = make_world(2000, 5)
    name, scores = select_by_auuc(
        {"T": good, "blind": Blind()}, test["X"], test["t"], test["y"], "holdout"
    )
    assert name == "T"
    assert scores["T"] > scores["blind"]


@pytest.mark.parametrize("cls", [SLearner, TLearner])
def test_capping_out_of_bag_predictions_leaves_the_model_unchanged(
    cls: type, world: dict, fitted: dict
) -> None:
    capped = small(cls, max_oob_rows=300).fit(world["X"], world["t"], world["y"])
    full = fitted[cls]
    X = world["X"].iloc[:50]
    np.testing.assert_array_equal(
        capped.predict_proba_options_bags(X), full.predict_proba_options_bags(X)
    )
    done = capped.oob_proba_options_.notna().all(axis=1).to_numpy()
    assert 0 < done.sum() <= 4 * 300  # 4 bags, each predicted at most 300 rows
    # a row's estimate averages only bags that left it out; fewer bags, same kind of number
    c, f = capped.oob_proba_options_[done], full.oob_proba_options_[done]
    assert np.abs(c.to_numpy() - f.to_numpy()).mean() < 0.05


def test_s_learner_predictions_do_not_depend_on_the_stacking_block(
    world: dict, fitted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fitted[SLearner]
    X = world["X"].iloc[:37]
    whole = s.predict_proba_options_bags(X)
    # blocks of 4 customers x 3 options: 10 blocks, the last one short
    monkeypatch.setattr(uplift, "_STACKED_ROWS", 4 * len(OPTIONS))
    np.testing.assert_array_equal(s.predict_proba_options_bags(X), whole)
    # reference: each customer under each option code, one design row at a time
    Xa = X.to_numpy(dtype=float)
    for b in (0, 3):
        for i in (0, 4, 36):
            for j in range(len(OPTIONS)):
                row = np.append(Xa[i], j)[None, :]
                assert whole[b, i, j] == booster_predict(s.models_[b], row)[0]


@pytest.mark.parametrize("cls", (SLearner, TLearner))
def test_policy_model_calibration_shifts_each_option_on_the_logit_scale(
    cls: type, world: dict, fitted: dict
) -> None:
    learner = fitted[cls]
    costs = costs_from_catalog(default_catalog(), OPTIONS)
    X = world["X"].iloc[:40]
    base = PolicyModel(
        '{"name": "t", "version": 1}', tuple(X.columns), OPTIONS, "holdout", costs, "t"
    )
    shift = {"pct10": 0.7, "freeship": -1.2}  # holdout: no shift
    plain = replace(base, response=learner)
    shifted = replace(base, response=learner, calibration_shift=shift)
    raw, _ = plain.option_bags(X.to_numpy(dtype=float))
    got, _ = shifted.option_bags(X.to_numpy(dtype=float))
    order = [learner.options_.index(o) for o in OPTIONS]
    np.testing.assert_array_equal(raw, learner.predict_proba_options_bags(X)[:, :, order])
    for j, o in enumerate(OPTIONS):
        logit = np.log(raw[:, :, j] / (1 - raw[:, :, j])) + shift.get(o, 0.0)
        np.testing.assert_allclose(got[:, :, j], 1 / (1 + np.exp(-logit)), rtol=1e-12)
