"""The logged reward of offline evaluation charges each offer's cost exactly once."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import modeling_frame as mf
from features.synthetic.catalog import default_catalog
from models.policy_model import PolicyModel, costs_from_catalog
from training.fit import logged_reward


def test_discounts_are_in_the_order_other_costs_are_subtracted() -> None:
    options = ("holdout", "pct20", "freeship", "bundle")
    costs = costs_from_catalog(default_catalog(), options)
    assert costs["pct20"].on_order and not costs["freeship"].on_order
    assert not costs["bundle"].on_order  # a bundle price is not recorded as a discount
    model = PolicyModel("{}", (), options, "holdout", costs, "synthetic-1")
    given = np.array(["pct20", "freeship", "bundle", "freeship", "holdout"])
    df = pd.DataFrame(
        {
            mf.CONVERTED: [1, 1, 1, 0, 1],
            # pct20's order already paid its 20% (revenue and margin are after the discount)
            mf.OUTCOME_REVENUE: [80.0, 100.0, 100.0, np.nan, 100.0],
            mf.OUTCOME_MARGIN: [20.0, 40.0, 40.0, np.nan, 40.0],
        }
    )
    reward, unit = logged_reward(model.costs, df, given)
    assert unit == "margin"
    np.testing.assert_allclose(reward, [20.0, 40.0 - 6.5, 40.0 - (0.06 * 100 + 2.0), 0.0, 40.0])
