"""Expected incremental margin and the confidence-bound choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.errors import InvalidInputError
from models.policy import confident_choice, gain_over_default
from models.value import best_options, incremental_margin, option_values


def test_value_formula_by_hand() -> None:
    p = pd.DataFrame({"holdout": [0.10, 0.10], "none": [0.12, 0.10], "pct10": [0.20, 0.11]})
    v = option_values(p, margin=[50.0, 20.0], costs={"pct10": [5.0, 2.0]})
    # Row 0: none 0.12*50 - 0.10*50 = 1.0; pct10 0.20*45 - 5 = 4.0.
    # Row 1: none 0; pct10 0.11*18 - 2 = -0.02.
    np.testing.assert_allclose(v["holdout"], [0.0, 0.0])
    np.testing.assert_allclose(v["none"], [1.0, 0.0])
    np.testing.assert_allclose(v["pct10"], [4.0, -0.02])
    best = best_options(v)
    assert best["best_offer"].tolist() == ["pct10", "holdout"]
    np.testing.assert_allclose(best["best_value"], [4.0, 0.0])


def test_value_is_vectorized_over_bags() -> None:
    rng = np.random.default_rng(0)
    bags = rng.uniform(0.05, 0.3, size=(5, 4, 3))
    v = incremental_margin(bags, margin=30.0, cost=np.array([0.0, 0.0, 4.0]), control_index=0)
    assert v.shape == (5, 4, 3)
    np.testing.assert_allclose(v[..., 0], 0.0)
    np.testing.assert_allclose(v[2, 1, 2], bags[2, 1, 2] * 26.0 - bags[2, 1, 0] * 30.0)


def test_value_input_errors_name_the_field() -> None:
    p = pd.DataFrame({"holdout": [0.1], "a": [0.2]})
    with pytest.raises(InvalidInputError, match="costs"):
        option_values(p, 10.0, {"b": 1.0})
    with pytest.raises(InvalidInputError, match="control option 'none'"):
        option_values(p, 10.0, {}, control="none")
    with pytest.raises(InvalidInputError, match="margin"):
        option_values(p, [1.0, 2.0], {})


def test_confident_choice_deviates_only_on_a_positive_lower_bound() -> None:
    # 3 bags, 3 rows, options (best, a, b). Row 0: a clearly better; row 1: a better on
    # average but noisy; row 2: b clearly worse.
    bags = np.array(
        [
            [[0.10, 0.20, 0.05], [0.10, 0.30, 0.10], [0.10, 0.10, 0.00]],
            [[0.10, 0.21, 0.05], [0.10, 0.00, 0.10], [0.10, 0.10, 0.00]],
            [[0.10, 0.19, 0.05], [0.10, 0.15, 0.10], [0.10, 0.10, 0.00]],
        ]
    )
    mean, _ = gain_over_default(bags, ["best", "a", "b"], "best")
    np.testing.assert_allclose(mean[0], [0.0, 0.10, -0.05])
    choice = confident_choice(bags, ["best", "a", "b"], "best", z=1.96)
    assert choice.tolist() == ["a", "best", "best"]
    blocked = np.array([[True, False, True]] * 3)
    assert (
        confident_choice(bags, ["best", "a", "b"], "best", allowed=blocked).tolist() == ["best"] * 3
    )
