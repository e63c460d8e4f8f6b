"""The choice among allowed options: best expected value, with an epsilon exploration floor.

With a model, an option's value is its expected incremental margin against not contacting
(the scorer nets out the incentive's cost). The best allowed option wins; if its value is not
positive, contacting loses money against not contacting, so the decision is no contact now
(`no_positive_value`). There is deliberately no "a plain message is always fine" exception:
a message also spends contact pressure and invites unsubscribes, and the scorer is what prices
that; a stage that allows only `none` still sends it only when its value is positive.

Exploration (epsilon-greedy, only among customers who will be contacted): each of the k
allowed options gets probability epsilon / k and the best one gets the remaining 1 - epsilon
on top. With `among_positive`, only `floor` is spread over all k allowed options and the rest
of epsilon over the allowed options whose value is positive (the model does not expect them to
lose money against no contact): exploring options priced as losses cost the synthetic loop
about a fifth of the oracle's margin even with perfect values (bench/README.md). The draw
is a uniform number from blake2b of (customer id, decision key) — the same
customer and key always give the same draw, in any process (never Python's `hash()`) — and
the chosen option's probability is returned as its propensity, for off-policy evaluation.

Without a model (`rules_only_values`) the value is a deterministic preference: content first,
then the plain message, then incentives from the cheapest expected cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.constants import OFFER_TYPES
from serving.engine.options import OptionSet

_CONTENT = OFFER_TYPES.index("content")
_NONE = OFFER_TYPES.index("none")
_SCALE = float(2**64)


@dataclass(frozen=True)
class Choice:
    """Per customer: chosen option (-1 = none), propensity, explored flag, best value."""

    chosen: npt.NDArray[np.int64]
    propensity: npt.NDArray[np.float64]
    explored: npt.NDArray[np.bool_]
    no_positive_value: npt.NDArray[np.bool_]
    any_allowed: npt.NDArray[np.bool_]


DecisionKey = str | Sequence[str] | np.ndarray
"""One exploration key for every customer, or one per customer (requests decided together)."""


def uniform_draws(
    customer_ids: Sequence[str] | np.ndarray, key: DecisionKey
) -> npt.NDArray[np.float64]:
    """A uniform number in [0, 1) per customer, a stable function of (customer id, key).

    `key`: one key for all, or one per customer (the draw of customer i then uses key[i],
    exactly as if it had been decided alone under that key)."""
    n = len(customer_ids)
    if isinstance(key, str):
        suffixes = [b"\x00" + key.encode("utf-8") + b"\x00explore"] * n
    else:
        if len(key) != n:
            raise ValueError(f"decision_key: expected {n} keys, got {len(key)}")
        suffixes = [b"\x00" + str(k).encode("utf-8") + b"\x00explore" for k in key]
    out = np.empty(n, dtype=np.float64)
    for i, cid in enumerate(customer_ids):
        d = hashlib.blake2b(str(cid).encode("utf-8") + suffixes[i], digest_size=8).digest()
        out[i] = int.from_bytes(d, "big") / _SCALE
    return out


def rules_only_values(options: OptionSet, expected_revenue: np.ndarray) -> np.ndarray:
    """(n, K) preference scores for rules-only mode (higher is preferred, always > 0).

    content (3) > the plain message and other non-incentives (2) > incentives (1, minus a
    tiny amount growing with expected cost, so the cheapest wins; unknown revenue counts as 0).
    """
    rev = np.asarray(expected_revenue, dtype=np.float64)
    rev = np.where(np.isnan(rev), 0.0, rev)
    cost = options.expected_cost(rev)
    base = np.where(options.offer_type == _CONTENT, 3.0, np.where(options.is_incentive, 1.0, 2.0))
    return base[None, :] - np.where(options.is_incentive[None, :], cost / (1.0 + cost), 0.0)


def exploration_probabilities(
    allowed: npt.NDArray[np.bool_],
    values: npt.NDArray[np.float64],
    best: npt.NDArray[np.int64],
    epsilon: float,
    floor: float = 0.0,
    among_positive: bool = False,
) -> npt.NDArray[np.float64]:
    """(n, K) probability of each option for rows that will be contacted; each row sums to 1.

    `allowed` (n, K), `values` (n, K; NaN never counts as positive) and `best` (n,) the
    greedy choice, which must be allowed. The best option gets 1 - epsilon on top of its share.
    """
    a = np.asarray(allowed, dtype=bool)
    rows = np.arange(a.shape[0])
    k_all = np.maximum(a.sum(axis=1, keepdims=True), 1)
    if among_positive:
        pos = a & (np.nan_to_num(values, nan=-np.inf) > 0)
        k_pos = pos.sum(axis=1, keepdims=True)
        probs = np.where(a, floor / k_all, 0.0)
        probs += np.where(pos, (epsilon - floor) / np.maximum(k_pos, 1), 0.0)
        # nothing valued positively (rules that contact anyway): that share stays on the best
        probs[rows, best] += np.where(k_pos[:, 0] == 0, epsilon - floor, 0.0)
    else:
        probs = np.where(a, epsilon / k_all, 0.0)
    probs[rows, best] += 1.0 - epsilon
    return probs


def choose(
    allowed: npt.NDArray[np.bool_],
    values: npt.NDArray[np.float64],
    epsilon: float,
    customer_ids: Sequence[str] | np.ndarray,
    decision_key: DecisionKey,
    require_positive: bool = True,
    floor: float = 0.0,
    among_positive: bool = False,
) -> Choice:
    """Choose one option per row of `allowed` (n, K) by `values` (n, K).

    NaN values count as -inf (the option is never the best, though exploration may pick it
    unless `among_positive`, and then only through `floor`). Ties go to the lowest option
    index, so the result is deterministic. Exploration: `exploration_probabilities`.
    """
    n = allowed.shape[0]
    v = np.where(allowed & ~np.isnan(values), values, -np.inf)
    best = np.argmax(v, axis=1)
    best_value = v[np.arange(n), best]
    any_allowed: npt.NDArray[np.bool_] = np.asarray(allowed.any(axis=1), dtype=bool)
    positive = best_value > 0 if require_positive else np.isfinite(best_value)
    contact = any_allowed & positive
    chosen = np.where(contact, best, -1)
    propensity = np.ones(n)
    explored = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(contact)
    if epsilon > 0 and len(rows):
        probs = exploration_probabilities(
            allowed[rows], values[rows], best[rows], epsilon, floor, among_positive
        )
        cum = np.cumsum(probs, axis=1)
        ids = np.asarray(customer_ids, dtype=object)[rows]
        keys = decision_key if isinstance(decision_key, str) else np.asarray(decision_key)[rows]
        u = uniform_draws(ids, keys) * cum[:, -1]
        pick = np.argmax(cum > u[:, None], axis=1)
        chosen[rows] = pick
        propensity[rows] = probs[np.arange(len(rows)), pick]
        explored[rows] = pick != best[rows]
    return Choice(chosen, propensity, explored, any_allowed & ~positive, any_allowed)
