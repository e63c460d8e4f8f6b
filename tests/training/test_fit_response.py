"""fit_response: the S/T choice on a sample of the training contacts, the chosen one on all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.synthetic.generate import generate_world, write_world
from training.fit import TRAIN_UNTIL_KEY, Z_GRID, fit_response, sample_rows, train_until
from training.inputs import TrainingInputs, load_training_inputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> TrainingInputs:
    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(3000, seed=3), out)
    return load_training_inputs(out)


def test_sample_rows_are_a_seeded_sample_or_all() -> None:
    np.testing.assert_array_equal(sample_rows(10, 0, 50), np.arange(10))
    a = sample_rows(1000, 1, 100)
    assert len(a) == 100 and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, sample_rows(1000, 1, 100))
    assert not np.array_equal(a, sample_rows(1000, 2, 100))


def test_learner_chosen_on_a_sample_is_fitted_on_every_training_contact(
    inputs: TrainingInputs,
) -> None:
    frame = inputs.offer_response
    assert frame is not None
    fit = fit_response(frame, 0, inputs.catalog, n_bags=2, selection_limit=400, support_limit=500)
    n_train = int(fit.train_mask.sum())
    assert n_train > 500
    assert fit.split["learner_choice_rows"] == "400"
    assert fit.split["support_rows"] == "500"
    assert fit.support is not None and fit.support.options_ == sorted(fit.learner.options_)
    assert set(fit.auuc_by_learner) == {"s_learner", "t_learner"}
    assert fit.learner_name in fit.auuc_by_learner
    # the rule: every (learner, z) judged on the validation rows. The learner by its best rule
    # significantly better than the best single option (the S-learner unless the T-learner's
    # best beats its best significantly), then the least careful of its significant rules
    # unless its best is significantly better; if no rule is significant, the careful z
    table = fit.rule_table
    assert table is not None and len(table) == 2 * len(Z_GRID)
    sig = table[table.ci_low > 0]
    order = ["dr_gain_vs_best_single", "z"]
    if len(sig):
        learner = sig.sort_values(order, ascending=False).iloc[0]["learner"]
        challenged = learner != "s_learner" and (sig.learner == "s_learner").any()
        if challenged and table.attrs["challenger_vs_preferred"]["ci_low"] <= 0:
            learner = "s_learner"  # the paired test that decided
        own = sig[sig.learner == learner]
        best = own.sort_values(order, ascending=False).iloc[0]
        if best["z"] != own["z"].min() and table.attrs["careful_vs_bold"]["ci_low"] <= 0:
            best = own.sort_values("z").iloc[0]
    else:
        careful = table[table.z == max(Z_GRID)]
        best = careful.sort_values("ci_low", ascending=False).iloc[0]
    assert (best["learner"], best["z"]) == (fit.learner_name, fit.z)
    assert fit.split["decision_rule_z"] == str(fit.z)
    assert len(fit.learner.oob_proba_options_) == n_train  # the final fit saw all of them
    again = fit_response(frame, 0, inputs.catalog, n_bags=2, selection_limit=400, support_limit=500)
    assert again.learner_name == fit.learner_name
    assert again.auuc_by_learner == fit.auuc_by_learner
    X = np.random.default_rng(0).normal(size=(5, fit.learner.n_features_in_))
    Xf = pd.DataFrame(X, columns=list(fit.learner.feature_names_in_))
    np.testing.assert_array_equal(
        fit.learner.predict_proba_options_bags(Xf), again.learner.predict_proba_options_bags(Xf)
    )


def test_small_data_chooses_on_every_training_contact(inputs: TrainingInputs) -> None:
    frame = inputs.offer_response
    assert frame is not None
    fit = fit_response(frame, 0, inputs.catalog, n_bags=2)
    n_choice, n_val = int(fit.split["learner_choice_rows"]), int(fit.split["rule_validation_rows"])
    assert n_choice + n_val == int(fit.split["train_rows"])  # fitted on the earlier, judged later
    assert n_val > 0
    assert fit.split["support_rows"] == fit.split["train_rows"]


def test_the_end_of_the_training_window_is_recorded_for_a_split_by_time(
    inputs: TrainingInputs,
) -> None:
    frame = inputs.offer_response
    assert frame is not None
    fit = fit_response(frame, 0, inputs.catalog, n_bags=2)
    ts = pd.to_datetime(frame.data[frame.spec.time_column])
    until = pd.Timestamp(fit.split[TRAIN_UNTIL_KEY])
    assert until == ts[fit.train_mask].max()
    assert (ts[fit.test_mask] > until).all()  # simulate judges the model on those rows only
    # one randomized experiment (every contact at one time): no time separates the rows
    one_time = frame.data.assign(**{frame.spec.time_column: ts.min()})
    assert train_until(replace(frame, data=one_time), fit.train_mask) is None
