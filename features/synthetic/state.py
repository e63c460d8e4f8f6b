"""Every customer's TRUE response drivers at a point in time, from tables plus latent traits.

`true_state(world, data, at)` reads the observable drivers (recency, frequency, spend,
discount share, delivery issues, contacts since the last order) from the data's tables as of
`at`, so it follows a world whose history has grown (played waves append orders and
contacts), and the latent ones (ongoing buying, expected order value) from the world's
population. Like the rest of `features.synthetic`, it is the answer key: only code that
plays or evaluates against the truth may use it, never training or serving.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from features import constants as c
from features.dataset import DataSet
from features.synthetic import config as wcfg
from features.synthetic.generate import SyntheticWorld
from features.synthetic.truth import CustomerState

NEVER_DAYS = 1e4
"""Recency of a customer with no order before `at` (far beyond any lapse window)."""


def true_state(world: SyntheticWorld, data: DataSet, at: datetime) -> CustomerState:
    """The drivers of every customer of `world` (in its customer order) as of `at`."""
    ids = pd.Index(world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str))
    n = len(ids)
    t = pd.Timestamp(at)
    o = data.orders[data.orders[c.ORDER_TS] < t]
    code = ids.get_indexer(pd.Index(o[c.CUSTOMER_ID].astype(str)))
    count = np.bincount(code, minlength=n).astype(float)
    revenue = np.bincount(code, o[c.REVENUE].to_numpy(float), minlength=n)
    disc = np.bincount(code, (o[c.DISCOUNT_AMOUNT].to_numpy(float) > 0), minlength=n)
    last = pd.Series(o[c.ORDER_TS].to_numpy(), index=code).groupby(level=0).max()
    last_ts = np.full(n, np.datetime64("NaT"), "datetime64[ns]")
    last_ts[last.index.to_numpy()] = last.to_numpy()
    age = (t.to_datetime64() - last_ts).astype("timedelta64[s]").astype(np.int64) / 86_400
    recency = np.where(np.isnat(last_ts), np.nan, age)
    ev = data.events[(data.events[c.EVENT_TYPE] == "delivery_issue") & (data.events[c.TS] < t)]
    deliv = np.bincount(ids.get_indexer(pd.Index(ev[c.CUSTOMER_ID].astype(str))), minlength=n)
    k = data.contacts[(data.contacts[c.OFFER_ID] != c.HOLDOUT) & (data.contacts[c.TS] < t)]
    kc = ids.get_indexer(pd.Index(k[c.CUSTOMER_ID].astype(str)))
    since_order = k[c.TS].to_numpy("datetime64[ns]") > last_ts[kc]
    prior = np.bincount(kc[since_order], minlength=n).astype(float)
    pop = world.population
    p_window = 1.0 - np.exp(-pop.rate * world.config.attribution_days / wcfg.YEAR_DAYS)
    alive = pop.death_s > int(t.timestamp())
    rev_if, mar_if = pop.expected_order_value()
    return CustomerState(
        recency_days=np.nan_to_num(recency, nan=NEVER_DAYS),
        frequency=count,
        lifetime_revenue=revenue,
        discount_share=disc / np.maximum(count, 1),
        delivery_issues=deliv.astype(float),
        prior_contacts=prior,
        p_base=np.where(alive, p_window, 0.0),
        revenue_if_convert=rev_if,
        margin_if_convert=mar_if,
    )
