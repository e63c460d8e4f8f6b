"""Decisions that by design do not do worse than the best single option.

`confident_choice` keeps every customer on a default option (the best single arm, or the
best option by value) and moves a customer to another option only where the lower confidence
bound of the estimated gain over the default is above zero. The gain and its standard error
come from the bagged learners (`predict_proba_options_bags`), so the error accounts for the
sampling noise of the training data; where the evidence is weak the decision shrinks to the
default, and the policy's value can only differ from the default's where the model is
confident.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.errors import InvalidInputError


def gain_over_default(
    bags: np.ndarray, options: Sequence[str], default: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over bags of (estimate_o - estimate_default), both (n, k).

    Args:
        bags: (n_bags, n, k) per-bag estimates (probabilities or values) per option.
        options: the k option labels.
        default: the option to compare against.
    """
    opts = list(options)
    if default not in opts:
        raise InvalidInputError(f"default: '{default}' is not one of {opts}")
    if bags.ndim != 3 or bags.shape[2] != len(opts) or bags.shape[0] < 2:
        raise InvalidInputError("bags: expected shape (n_bags >= 2, n, len(options))")
    diff = bags - bags[:, :, [opts.index(default)]]
    return diff.mean(axis=0), diff.std(axis=0, ddof=1)


def confident_choice(
    bags: np.ndarray,
    options: Sequence[str],
    default: str,
    z: float = 1.96,
    allowed: np.ndarray | None = None,
) -> pd.Series:
    """Per row, the option with the highest lower bound of gain over `default`, if it is > 0.

    The lower bound of option o is mean_o - z * std_o, the mean and std being over bags of the
    difference estimate_o - estimate_default. Rows where no option has a positive lower bound
    (the usual case when the data cannot tell options apart) get `default`.

    Args:
        bags: (n_bags, n, k) per-bag estimates per option (higher is better).
        options: the k option labels.
        default: the fallback option (e.g. the best single arm on the training data).
        z: the normal quantile of the one-sided bound (1.96: a 97.5% lower bound).
        allowed: optional (n, k) boolean mask of options a row may get (default allowed always).
    """
    mean, std = gain_over_default(bags, options, default)
    lower = mean - z * std
    if allowed is not None:
        if allowed.shape != lower.shape:
            raise InvalidInputError(f"allowed: shape {allowed.shape} != {lower.shape}")
        lower = np.where(allowed, lower, -np.inf)
    d = list(options).index(default)
    lower[:, d] = 0.0
    best = np.argmax(lower, axis=1)
    # Strictly positive bound required; ties at 0 stay on the default.
    best = np.where(lower[np.arange(len(best)), best] > 0, best, d)
    return pd.Series(np.asarray(options, dtype=object)[best], name="option")


def greedy_choice(estimates: pd.DataFrame) -> pd.Series:
    """The option with the highest point estimate per row (the naive policy)."""
    return pd.Series(estimates.idxmax(axis=1).to_numpy(), index=estimates.index, name="option")
