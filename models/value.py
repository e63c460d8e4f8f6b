"""Expected incremental margin of each option: the quantity decisions maximize.

For a customer and option o, with P(o) = P(convert | o) and P(c) = P(convert | control):

    value_o = P(o) * (E[margin] - E[cost_o]) - P(c) * E[margin]

The control (`holdout`, no contact) has value 0 by construction; `none` (a message without
incentive) has cost 0 and is valued by its own conversion probability. All functions are
vectorized on (..., n customers, k options) arrays, so per-bag values (for confidence bounds)
are computed the same way as point values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.errors import InvalidInputError


def incremental_margin(p: np.ndarray, margin: Any, cost: Any, control_index: int) -> np.ndarray:
    """value[..., i, o] = p[..., i, o] * (margin_i - cost_io) - p[..., i, c] * margin_i.

    Args:
        p: (..., n, k) conversion probabilities per option.
        margin: scalar or (n,) expected margin of a converting order per customer.
        cost: scalar, (k,) per option or (n, k) expected cost of the option when redeemed.
        control_index: column of the control (no contact) option.
    """
    p = np.asarray(p, dtype=float)
    if p.ndim < 2:
        raise InvalidInputError("p: expected an array (..., customers, options)")
    n, k = p.shape[-2:]
    if not 0 <= control_index < k:
        raise InvalidInputError(f"control_index: {control_index} outside 0..{k - 1}")
    m = np.asarray(margin, dtype=float)
    if m.ndim == 1:
        if m.shape[0] != n:
            raise InvalidInputError(f"margin: has {m.shape[0]} values for {n} customers")
        m = m[:, None]
    elif m.ndim != 0:
        raise InvalidInputError("margin: expected a scalar or one value per customer")
    c = np.asarray(cost, dtype=float)
    if c.ndim == 1 and c.shape[0] != k:
        raise InvalidInputError(f"cost: has {c.shape[0]} values for {k} options")
    if c.ndim == 2 and c.shape != (n, k):
        raise InvalidInputError(f"cost: shape {c.shape} != (customers, options) {(n, k)}")
    if c.ndim > 2:
        raise InvalidInputError("cost: expected a scalar, (options,) or (customers, options)")
    return np.asarray(p * (m - c) - p[..., [control_index]] * m)


def option_values(
    p_options: pd.DataFrame,
    margin: Any,
    costs: Mapping[str, Any],
    control: str = "holdout",
) -> pd.DataFrame:
    """value_<option> per customer from P(convert | option) (columns are option labels).

    Args:
        p_options: (n, k) probabilities, columns the option labels (control included).
        margin: scalar or per-customer expected margin of a conversion.
        costs: expected cost per option, scalar or per customer; options absent cost 0
            (so `none` and the control cost nothing).
        control: the no-contact option, whose value is 0.
    """
    opts = [str(o) for o in p_options.columns]
    if control not in opts:
        raise InvalidInputError(f"p_options: no column for the control option '{control}'")
    unknown = sorted(set(costs) - set(opts))
    if unknown:
        raise InvalidInputError(f"costs: options {unknown} are not columns of p_options")
    n = len(p_options)
    cost = np.column_stack(
        [np.broadcast_to(np.asarray(costs.get(o, 0.0), dtype=float), (n,)) for o in opts]
    )
    v = incremental_margin(p_options.to_numpy(dtype=float), margin, cost, opts.index(control))
    return pd.DataFrame(v, columns=opts, index=p_options.index)


def best_options(values: pd.DataFrame, options: Sequence[str] | None = None) -> pd.DataFrame:
    """`best_offer` and `best_value` per row (ties go to the earlier column)."""
    v = values if options is None else values[list(options)]
    arr = v.to_numpy(dtype=float)
    idx = np.argmax(arr, axis=1)
    return pd.DataFrame(
        {
            "best_offer": np.asarray(v.columns, dtype=object)[idx],
            "best_value": arr[np.arange(len(arr)), idx],
        },
        index=values.index,
    )
