"""The assignment-support guard: no recommendation where the history holds no evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.errors import InvalidInputError
from models.support import AssignmentSupport


def _logged(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.3
    X = pd.DataFrame({"high_value": high.astype(float), "noise": rng.normal(size=n)})
    # "expert" was only ever sent to high-value customers; the others went to everyone
    options = np.where(high, rng.choice(["expert", "pct10", "holdout"], n), "")
    low = ~high
    options[low] = rng.choice(["pct10", "holdout"], low.sum())
    return X, options


def test_support_is_low_where_an_option_was_never_sent() -> None:
    X, assigned = _logged()
    model = AssignmentSupport(random_state=1).fit(X, assigned)
    grid = np.array([[1.0, 0.0], [0.0, 0.0]])
    p = model.predict_proba_numpy(grid)
    expert = model.options_.index("expert")
    assert p[0, expert] > 0.2  # high value: a third of them got it
    assert p[1, expert] < 0.02  # everyone else: never
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


def test_support_needs_two_options() -> None:
    X, _ = _logged(200)
    with pytest.raises(InvalidInputError, match="at least two options"):
        AssignmentSupport().fit(X, np.full(len(X), "pct10"))
