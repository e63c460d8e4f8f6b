"""Cross-fitted training: a retraining learns from the latest (played) contacts, and every
held-out score of a trained-on contact comes from bags that never saw its customer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features import modeling_frame as mf
from features.synthetic.generate import generate_world, write_world
from training.evaluate import held_out, held_out_groups, matrix_for, response_test_mask
from training.fit import (
    CROSSFIT_KEY,
    TRAIN_UNTIL_KEY,
    build_policy_model,
    crossfit_groups,
    fit_response,
    response_split,
)
from training.inputs import TrainingInputs, load_training_inputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> TrainingInputs:
    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(3000, seed=5), out)
    return load_training_inputs(out)


def _model(inputs: TrainingInputs, frame, crossfit: bool):  # type: ignore[no-untyped-def]
    fit = fit_response(frame, 0, inputs.catalog, n_bags=4, z=0.0, crossfit=crossfit)
    meta = {"seed": "0", **fit.split}
    return fit, build_policy_model(inputs.catalog, fit, None, frame, None, meta, z=fit.z)


def test_groups_are_a_stable_hash_of_the_customer() -> None:
    ids = pd.Series([f"c{i}" for i in range(2000)] + ["c7"])
    g = crossfit_groups(ids)
    assert set(g) == {0, 1} and 0.45 < g.mean() < 0.55
    assert g[-1] == g[7]  # every contact of a customer is in one group
    np.testing.assert_array_equal(g, crossfit_groups(ids.copy()))


def test_a_retraining_learns_from_the_latest_contacts_only_when_cross_fitted(
    inputs: TrainingInputs,
) -> None:
    """Flip the conversions of the latest contacts (the wave just played): the time-split
    model does not move (it never trains on them), the cross-fitted one does."""
    frame = inputs.offer_response
    assert frame is not None
    latest = response_split(frame, 0)
    assert 0 < latest.sum() < len(latest)
    flipped_data = frame.data.copy()
    y = flipped_data[mf.CONVERTED].astype(int)
    flipped_data[mf.CONVERTED] = np.where(latest, 1 - y, y)
    flipped = replace(frame, data=flipped_data)
    X = matrix_for(_model(inputs, frame, False)[1], frame)[:300]

    fit, model = _model(inputs, frame, True)
    assert fit.train_mask.all()  # the latest contacts train too
    assert model.metadata[CROSSFIT_KEY] == "2:crossfit"
    ts = pd.to_datetime(frame.data[frame.spec.time_column])
    assert pd.Timestamp(model.metadata[TRAIN_UNTIL_KEY]) == ts.max()
    moved = _model(inputs, flipped, True)[1]
    assert not np.allclose(model.score(X).p, moved.score(X).p)

    old_fit, old = _model(inputs, frame, False)
    assert not old_fit.train_mask[latest].any()
    still = _model(inputs, flipped, False)[1]
    np.testing.assert_allclose(old.score(X).p, still.score(X).p)


def test_evaluation_scores_held_out_contacts_out_of_fold(inputs: TrainingInputs) -> None:
    frame = inputs.offer_response
    assert frame is not None
    _, model = _model(inputs, frame, True)
    test = response_test_mask(model, frame, 0)
    h = held_out(model, frame, 0, test)
    df = frame.data[test].reset_index(drop=True)
    groups = held_out_groups(model, df, frame.spec.id_column)
    assert groups is not None
    np.testing.assert_array_equal(groups, crossfit_groups(df[frame.spec.id_column]))
    X = matrix_for(model, frame)[test]
    oof = model.score(X, groups=groups).p
    cols = [model.options.index(o) for o in h.options]
    np.testing.assert_allclose(h.p.to_numpy(), oof[:, cols])
    assert not np.allclose(h.p.to_numpy(), model.score(X).p[:, cols])
