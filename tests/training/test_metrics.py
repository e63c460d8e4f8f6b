"""Evaluation metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.metrics import (
    auuc,
    brier,
    expected_calibration_error,
    lift_at_top,
    log_loss,
    paired_auc_bootstrap,
    qini_coefficient,
    qini_curve,
    roc_auc,
    uplift_at_k,
    uplift_curve,
    uplift_scores,
)


def test_binary_metrics_by_hand() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx(0.1)
    # bins: [0.1, 0.15] -> |0.5 - 0.125| * 2/4; 0.8 -> 0.2 * 1/4; 0.9 -> 0.1 * 1/4
    ece = expected_calibration_error([0, 1, 1, 1], [0.1, 0.15, 0.8, 0.9])
    assert ece == pytest.approx(0.1875 + 0.05 + 0.025)
    y = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert lift_at_top(y, np.arange(10, 0, -1)) == pytest.approx(5.0)


def test_auc_agrees_with_sklearn_on_random_data() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500), 2)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_qini_and_uplift_curves_by_hand() -> None:
    y, t, s = [1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0.8, 0.7, 0.6]
    k, q = qini_curve(y, t, s)
    np.testing.assert_allclose(k, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(q, [0, 1, 1, -1, 0])
    # area 0.5 + 1 + 0 - 0.5 = 1; random line area 4 * 0 / 2 = 0; / N^2 = 16
    assert qini_coefficient(y, t, s) == pytest.approx(1 / 16)
    _, u = uplift_curve(y, t, s)
    np.testing.assert_allclose(u, [0, 0, 0, -1.5, 0])
    assert auuc(y, t, s) == pytest.approx(-1.5 / 16)


def test_ties_are_kept_together() -> None:
    y, t = [1, 0, 1, 0], [1, 1, 0, 0]
    k, q = qini_curve(y, t, [1, 1, 0, 0])
    np.testing.assert_allclose(k, [0, 2, 4])
    np.testing.assert_allclose(q, [0, 1, 0])
    assert qini_coefficient(y, t, [1, 1, 0, 0]) == pytest.approx(2 / 16)
    # Order of tied rows does not matter.
    assert qini_coefficient([0, 1, 0, 1], [1, 1, 0, 0], [1, 1, 0, 0]) == pytest.approx(2 / 16)


def test_uplift_at_k_and_random_ranking() -> None:
    y, t = [1, 0, 1, 0, 0, 1], [1, 0, 1, 0, 1, 0]
    assert uplift_at_k(y, t, [6, 5, 4, 3, 2, 1], k=0.5) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    n = 20000
    t_big = rng.integers(0, 2, n)
    y_big = (rng.random(n) < 0.1 + 0.05 * t_big).astype(int)
    assert abs(qini_coefficient(y_big, t_big, rng.random(n))) < 0.005


def test_good_ranking_scores_above_bad_ranking() -> None:
    rng = np.random.default_rng(2)
    n = 20000
    x = rng.random(n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.1 + 0.2 * t * (x > 0.5)).astype(int)
    # Perfect ranking: Q(k) ~ 0.1 k up to N/2, then 0.05 N; area 0.0375 N^2, random 0.025 N^2.
    assert qini_coefficient(y, t, x) == pytest.approx(0.0125, abs=0.003)
    assert qini_coefficient(y, t, -x) == pytest.approx(-0.0125, abs=0.003)
    assert auuc(y, t, x) > auuc(y, t, -x)


def test_uplift_scores_per_option() -> None:
    p = pd.DataFrame({"holdout": [0.1] * 4, "a": [0.3, 0.2, 0.1, 0.0]})
    s = uplift_scores(p, ["a", "a", "holdout", "holdout"], [1, 0, 1, 0], "holdout")
    assert list(s.index) == ["a"]
    assert s.loc["a", "qini"] == pytest.approx(1 / 16)
    assert s.loc["a", "n"] == 4


def test_paired_auc_bootstrap_uses_the_same_resamples_for_both_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.5, 400)
    auc, diff = paired_auc_bootstrap(y, good, good, n_boot=50, seed=1)
    assert auc.shape == diff.shape == (50,)
    np.testing.assert_array_equal(diff, 0.0)  # same rows for both: no spurious difference
    assert 0.8 < auc.mean() < 1.0 and auc.std() > 0
    _, vs_noise = paired_auc_bootstrap(y, good, rng.normal(size=400), n_boot=50, seed=1)
    assert (vs_noise > 0.2).all()
    again, _ = paired_auc_bootstrap(y, good, good, n_boot=50, seed=1)
    np.testing.assert_array_equal(again, auc)
