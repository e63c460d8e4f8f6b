"""fit_reactivation: no row both tunes the model (early stopping, calibration) and tests it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features import modeling_frame as mf
from features.frames import Frame
from training.errors import TrainingError
from training.fit import fit_reactivation, in_test_half, reactivation_split

CUTOFFS = ("2024-01-01", "2024-04-01", "2024-07-01")


def reactivation_frame(n_cutoffs: int, customers: int = 400, seed: int = 0) -> Frame:
    """Every customer at every cutoff; the label follows `recency`; every 7th row contacted."""
    rng = np.random.default_rng(seed)
    parts = []
    for cutoff in CUTOFFS[:n_cutoffs]:
        recency = rng.uniform(0, 365, customers)
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": [f"c{i:04d}" for i in range(customers)],
                    mf.CUTOFF: pd.Timestamp(cutoff),
                    "recency_days": recency,
                    "orders_lifetime": rng.poisson(3, customers).astype(float),
                    mf.LABEL: rng.random(customers) < 0.6 - recency / 730,
                    mf.CONTACTED_IN_WINDOW: np.arange(customers) % 7 == 0,
                }
            )
        )
    spec = mf.FrameSpec(
        kind="reactivation",
        feature_set="test@1",
        feature_columns=("recency_days", "orders_lifetime"),
        outcome_columns=(mf.LABEL,),
    )
    return Frame(pd.concat(parts, ignore_index=True), spec)


def test_two_cutoffs_validate_and_test_on_disjoint_halves_of_the_last() -> None:
    frame = reactivation_frame(2)
    df = frame.data
    last = df[mf.CUTOFF] == df[mf.CUTOFF].max()
    contacted = df[mf.CONTACTED_IN_WINDOW]
    split = reactivation_split(frame, seed=3)
    val, test = split.validation, split.test
    assert not (val & test).any()
    assert ((val | test) <= last).all()
    # the last cutoff is covered, but for the contacted rows (neither validation nor test)
    assert ((val | test | (last & contacted)) == last).all()
    assert (split.train == (~last & ~contacted)).all()
    ids = df["customer_id"]
    assert set(ids[val]).isdisjoint(ids[test])
    assert 0.4 < test.sum() / (last & ~contacted).sum() < 0.6
    assert split.info["test_split"] == "half of the last cutoff's customers (2 cutoffs)"
    assert split.info["validation_half_rows"] == str(int(val.sum()))
    assert split.info["test_half_rows"] == str(int(test.sum()))

    again = reactivation_split(frame, seed=3)
    assert (again.validation == val).all() and (again.test == test).all()
    other = reactivation_split(frame, seed=4)
    assert not (other.test == test).all()  # the seed salts the halves


@pytest.mark.slow
def test_two_cutoffs_fit_is_tested_only_on_the_test_half() -> None:
    frame = reactivation_frame(2)
    df = frame.data
    fit = fit_reactivation(frame, seed=3)
    split = reactivation_split(frame, seed=3)
    last_ids = set(df.loc[df[mf.CUTOFF] == df[mf.CUTOFF].max(), "customer_id"])
    assert set(df.loc[split.test, "customer_id"]) < last_ids  # before: the whole last cutoff
    assert fit.split == split.info
    # the model stopped early and calibrated on the validation half: it predicts there
    X_val = df.loc[split.validation, list(frame.spec.feature_columns)]
    assert fit.model.predict_proba(X_val)[:, 1].std() > 0


def test_three_cutoffs_still_validate_on_the_second_last_and_test_on_the_last() -> None:
    frame = reactivation_frame(3)
    cut, clean = frame.data[mf.CUTOFF], ~frame.data[mf.CONTACTED_IN_WINDOW]
    split = reactivation_split(frame, seed=3)
    assert (split.train == ((cut == pd.Timestamp(CUTOFFS[0])) & clean)).all()
    assert (split.validation == ((cut == pd.Timestamp(CUTOFFS[1])) & clean)).all()
    assert (split.test == ((cut == pd.Timestamp(CUTOFFS[2])) & clean)).all()
    assert "test_split" not in split.info


def test_one_cutoff_is_refused_with_the_reason() -> None:
    with pytest.raises(TrainingError, match="at least two cutoffs, the frame has 1"):
        fit_reactivation(reactivation_frame(1), seed=0)


@pytest.mark.slow  # a fresh interpreter imports training.fit
def test_test_half_does_not_depend_on_python_hash_randomisation() -> None:
    ids = pd.Series([f"c{i:04d}" for i in range(50)])
    here = "".join("1" if x else "0" for x in in_test_half(ids, 7))
    code = (
        "import pandas as pd; from training.fit import in_test_half; "
        "ids = pd.Series([f'c{i:04d}' for i in range(50)]); "
        "print(''.join('1' if x else '0' for x in in_test_half(ids, 7)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == here


def test_evaluation_scores_the_test_half_the_models_training_held_out() -> None:
    import json

    from models.policy_model import PolicyModel
    from training.evaluate import Evaluation, evaluate_reactivation

    frame = reactivation_frame(2)
    df = frame.data
    fit = fit_reactivation(frame, seed=3)
    fs = json.dumps({"name": "test", "version": "1", "features": []})
    model = PolicyModel(
        fs,
        frame.spec.feature_columns,
        ("holdout",),
        "holdout",
        {},
        "v1",
        reactivation=fit.model,
        metadata={"seed": "3"},
    )
    ev = Evaluation()
    evaluate_reactivation(model, frame, ev, seed=0)  # the split follows the model's seed, 3
    split = reactivation_split(frame, seed=3)
    assert not (split.test & df[mf.CONTACTED_IN_WINDOW]).any()  # contacted: not organic
    assert ev.metrics["reactivation_n"] == split.test.sum()
    assert ev.metrics["reactivation_n"] < (split.validation | split.test).sum() / 1.5
