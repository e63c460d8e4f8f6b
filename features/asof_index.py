"""Vectorized as-of lookups: "how many rows of group g are strictly before time t".

Each table is sorted once by (group, time); a query (g, t) is then one `np.searchsorted` into a
combined integer key, so features for a million (customer, as-of) pairs cost a few binary
searches each, never a Python loop and never a copy of the history per cutoff.

Timestamps are replaced by their rank in a shared `TimeAxis` (the sorted distinct timestamps of
every table); a row's rank is below `axis.before(t)` exactly when its timestamp is below `t`,
so the key ``group * R + rank`` orders rows by group then time without overflowing int64.

Sums over a row range use per-group cumulative sums, so a feature of one customer depends only
on that customer's earlier rows: appending later rows, or other customers' rows, leaves it
bit-for-bit unchanged (the point-in-time property the tests check).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd

from features.errors import FeaturesError

NS_PER_SECOND = 10**9
NS_PER_DAY = 86_400 * NS_PER_SECOND


class TimeAxis:
    """A shared integer clock for all indexed tables, and each row's position on it.

    When every timestamp is a whole second (the usual case) a row's rank is simply its second
    offset from the earliest row, which needs no sort; otherwise ranks are dense positions in
    the sorted distinct timestamps. Either way `size` exceeds every rank and query rank.
    """

    def __init__(self, *ts_arrays: np.ndarray) -> None:
        arrays = [np.asarray(a, dtype=np.int64) for a in ts_arrays]
        allts = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        self.whole_seconds = bool(len(allts)) and not (allts % NS_PER_SECOND).any()
        if self.whole_seconds:
            self.origin = int(allts.min()) // NS_PER_SECOND
            span = int(allts.max()) // NS_PER_SECOND - self.origin + 1
            self.values = np.zeros(0, dtype=np.int64)
            self.size = span + 1
            ranks = allts // NS_PER_SECOND - self.origin
        else:
            order = np.argsort(allts, kind="stable")
            ordered = allts[order]
            new = np.ones(len(ordered), dtype=bool)
            new[1:] = ordered[1:] != ordered[:-1]
            self.values = ordered[new]
            self.size = len(self.values) + 1
            ranks = np.empty(len(allts), dtype=np.int64)
            ranks[order] = np.cumsum(new) - 1
        bounds = np.cumsum([0, *(len(a) for a in arrays)])
        self.row_ranks = [ranks[a:b] for a, b in itertools.pairwise(bounds)]
        """Rank of every row of each input array, in input order (for `GroupedIndex`)."""

    def _query(self, t: np.ndarray, strict: bool) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        if self.whole_seconds:
            # strictly before t: second < ceil(t); at or before t: second < floor(t) + 1
            sec = -(-t // NS_PER_SECOND) if strict else t // NS_PER_SECOND + 1
            return np.clip(sec - self.origin, 0, self.size - 1)
        side: Literal["left", "right"] = "left" if strict else "right"
        return np.searchsorted(self.values, t, side=side).astype(np.int64)

    def before(self, t: np.ndarray) -> np.ndarray:
        """Query rank: a row is strictly before `t` iff its rank is below this."""
        return self._query(t, strict=True)

    def at_or_before(self, t: np.ndarray) -> np.ndarray:
        """Query rank: a row is at or before `t` iff its rank is below this."""
        return self._query(t, strict=False)


class GroupedIndex:
    """Rows of one table sorted by (group, time), with as-of range queries."""

    def __init__(self, group: np.ndarray, ts: np.ndarray, rank: np.ndarray, axis: TimeAxis) -> None:
        group = np.asarray(group, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        self.axis = axis
        if len(group) and (int(group.max()) + 1) * axis.size >= 2**62:
            raise FeaturesError(
                "history too long or too many groups for the as-of index "
                f"({int(group.max()) + 1:,} groups x {axis.size:,} time steps)"
            )
        key = group * axis.size + rank
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        self.group = group[self.order]
        self.ts = ts[self.order]

    def __len__(self) -> int:
        return len(self.key)

    def start(self, g: np.ndarray) -> np.ndarray:
        """Position of the first row of each group `g`."""
        return np.searchsorted(self.key, g * self.axis.size, side="left")

    def before(self, g: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Position just after the last row of group `g` strictly before time `t`."""
        return np.searchsorted(self.key, g * self.axis.size + self.axis.before(t), side="left")

    def at_or_before(self, g: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Position just after the last row of group `g` at or before time `t`."""
        return np.searchsorted(self.key, g * self.axis.size + self.axis.at_or_before(t), "left")

    def sorted_values(self, values: np.ndarray) -> np.ndarray:
        """`values` (in the table's original row order) in the index's sorted order."""
        return np.asarray(values)[self.order]

    def prefix(self, values: np.ndarray, presorted: bool = False) -> np.ndarray:
        """Per-group inclusive running sums of `values`, padded with a leading 0.

        `values` are in the table's row order (or already sorted, with `presorted`);
        `range_sum(p, lo, hi, start)` turns the result into the sum over rows [lo, hi).
        """
        arr = np.asarray(values) if presorted else self.sorted_values(values)
        v = pd.Series(arr.astype(np.float64))
        run = v.groupby(self.group, sort=False).cumsum().to_numpy()
        return np.concatenate([[0.0], run])


def range_sum(prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sum over rows [lo, hi) of one group whose first row is `start` (see `prefix`)."""
    upper = prefix[hi]
    lower = np.where(lo > start, prefix[lo], 0.0)
    return np.where(hi > lo, upper - lower, 0.0)


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo_i, hi_i): (owner i of each element, element value), concatenated."""
    n = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), n)
    offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return owner, np.repeat(lo, n) + offsets
