"""Cross-fitted bags: a bag never learns from its left-out group, and scoring out of fold
uses only the bags that left a row's group out."""

from __future__ import annotations

import numpy as np
import pytest

from features.synthetic.catalog import default_catalog
from models.errors import InvalidInputError
from models.policy_model import PolicyModel, costs_from_catalog
from models.uplift import DRLearner, SLearner, TLearner
from tests.models.test_uplift import OPTIONS, make_world, small


@pytest.fixture(scope="module")
def world() -> dict:
    w = make_world(3000, 4)
    w["groups"] = (np.arange(3000) * 7919 % 2).astype(np.int64)
    return w


def _fit(cls: type, w: dict, y: np.ndarray) -> SLearner | TLearner:
    return small(cls, random_state=3, max_oob_rows=None).fit(
        w["X"], w["t"], y, propensity=w["e"], groups=w["groups"]
    )


@pytest.mark.parametrize("cls", [SLearner, TLearner])
def test_out_of_fold_predictions_never_come_from_a_bag_that_saw_the_row(
    cls: type, world: dict
) -> None:
    """Flip every label of group 0: the bags that left group 0 out, and so the out-of-fold
    predictions of group 0's rows, must not move; the other bags must."""
    a = _fit(cls, world, world["y"])
    flipped = np.where(world["groups"] == 0, 1 - world["y"], world["y"])
    b = _fit(cls, world, flipped)
    assert list(a.bag_groups_) == [0, 1, 0, 1]
    pa, pb = a.predict_proba_options_bags(world["X"]), b.predict_proba_options_bags(world["X"])
    left_out_0 = a.bag_groups_ == 0
    np.testing.assert_array_equal(pa[left_out_0], pb[left_out_0])
    assert not np.allclose(pa[~left_out_0], pb[~left_out_0])
    g0 = world["groups"] == 0
    oof_a, oof_b = a.oob_proba_options_.to_numpy(), b.oob_proba_options_.to_numpy()
    np.testing.assert_array_equal(oof_a[g0], oof_b[g0])
    # every row has an out-of-fold prediction: the mean of the bags that left its group out
    assert np.isfinite(oof_a).all()
    np.testing.assert_allclose(oof_a[g0], pa[left_out_0][:, g0].mean(axis=0))
    np.testing.assert_allclose(oof_a[~g0], pa[~left_out_0][:, ~g0].mean(axis=0))


def test_policy_model_scores_out_of_fold_with_the_other_groups_bags(world: dict) -> None:
    learner = _fit(TLearner, world, world["y"])
    cat = default_catalog()
    model = PolicyModel(
        feature_set="{}",
        feature_columns=tuple(world["X"].columns),
        options=OPTIONS,
        control="holdout",
        costs=costs_from_catalog(cat, OPTIONS),
        catalog_version=cat.version,
        response=learner,
        default_option="holdout",
        z=0.0,
    )
    X = world["X"].to_numpy(float)[:200]
    g = world["groups"][:200]
    assert model.cross_fitted
    bags, _ = model.option_bags(X)
    oof_bags, _ = model.option_bags(X, groups=g)
    assert oof_bags.shape == (2, 200, len(OPTIONS))
    for grp in (0, 1):
        rows = g == grp
        np.testing.assert_allclose(oof_bags[:, rows], bags[learner.bag_groups_ == grp][:, rows])
    np.testing.assert_allclose(model.score(X, groups=g).p, oof_bags.mean(axis=0))
    with pytest.raises(InvalidInputError, match="groups"):
        model.score(X, groups=np.full(200, 2))


def test_cross_fitting_needs_two_bags_per_group_and_a_learner_that_supports_it(
    world: dict,
) -> None:
    X, t, y, g = world["X"], world["t"], world["y"], world["groups"]
    with pytest.raises(InvalidInputError, match="groups"):
        SLearner(control="holdout", n_bags=3).fit(X, t, y, groups=g)
    with pytest.raises(InvalidInputError, match="groups"):
        SLearner(control="holdout", n_bags=2).fit(X, t, y, groups=g)
    with pytest.raises(InvalidInputError, match="groups"):
        SLearner(control="holdout", n_bags=4).fit(X, t, y, groups=g[:10])
    with pytest.raises(InvalidInputError, match="does not cross-fit"):
        DRLearner(control="holdout", n_bags=4).fit(X, t, y, groups=g)
    plain = small(SLearner).fit(X, t, y)
    assert plain.bag_groups_ is None
