"""Calibrators: binary (isotonic/sigmoid, chosen by CV) and per-option against randomized arms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.calibration import (
    BinaryCalibrator,
    OptionCalibrator,
    choose_calibration,
    expit,
    logit,
)
from models.errors import InvalidInputError, NotFittedError


def test_sigmoid_calibration_undoes_a_logit_distortion() -> None:
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.02, 0.6, 20000)
    y = (rng.random(true_p.size) < true_p).astype(float)
    raw = expit(2.0 * logit(true_p) + 1.0)  # overconfident and shifted
    cal = BinaryCalibrator("sigmoid").fit(raw, y)
    np.testing.assert_allclose(cal.transform(raw), true_p, atol=0.02)


def test_isotonic_is_monotone_and_chosen_for_a_step_shape() -> None:
    rng = np.random.default_rng(1)
    raw = rng.random(20000)
    true_p = np.where(raw > 0.5, 0.8, 0.1)  # a step no sigmoid of the logit can fit
    y = (rng.random(raw.size) < true_p).astype(float)
    assert choose_calibration(raw, y) == "isotonic"
    out = BinaryCalibrator("isotonic").fit(raw, y).transform(np.linspace(0, 1, 50))
    assert np.all(np.diff(out) >= 0)


def test_calibrator_errors_are_clear() -> None:
    with pytest.raises(NotFittedError):
        BinaryCalibrator().transform([0.5])
    with pytest.raises(InvalidInputError, match="method"):
        BinaryCalibrator("platt").fit([0.1, 0.9], [0, 1])  # type: ignore[arg-type]
    p = pd.DataFrame({"holdout": [0.1, 0.1], "a": [0.2, 0.2]})
    with pytest.raises(InvalidInputError, match="propensity"):
        OptionCalibrator().fit(p, ["holdout", "a"], [0, 1], propensity=[0.5, 0.0])


def test_option_calibrator_clips_tiny_propensities() -> None:
    # 1,000 rows of option a at propensity 0.5 converting 10%, and five at 0.001 that all
    # converted: unclipped those five weigh 5,000 against 2,000 and a reads 72%.
    rng = np.random.default_rng(3)
    y = np.concatenate([(rng.random(1000) < 0.1).astype(float), np.ones(5)])
    e = np.concatenate([np.full(1000, 0.5), np.full(5, 0.001)])
    p = pd.DataFrame({"a": np.full(1005, 0.1)})
    out = OptionCalibrator().fit(p, ["a"] * 1005, y, e).transform(p)
    assert out["a"].mean() < 0.4


def test_option_calibrator_matches_observed_rates_per_arm() -> None:
    rng = np.random.default_rng(2)
    n = 6000
    t = rng.choice(["holdout", "a"], n)
    true = np.where(t == "a", 0.2, 0.1)
    y = (rng.random(n) < true).astype(float)
    p = pd.DataFrame({"holdout": np.full(n, 0.05), "a": rng.uniform(0.3, 0.5, n)})
    cal = OptionCalibrator().fit(p, t, y)
    out = cal.transform(p)
    for o in ("holdout", "a"):
        m = t == o
        assert out[o][m].mean() == pytest.approx(y[m].mean(), abs=1e-6)
    # The shift is monotone: ranking within an option is kept.
    assert np.array_equal(np.argsort(out["a"].to_numpy()), np.argsort(p["a"].to_numpy()))
    with pytest.raises(InvalidInputError, match="options"):
        cal.transform(p[["a", "holdout"]])
