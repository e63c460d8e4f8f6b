"""Time as float days since the Unix epoch (UTC), the engine's one internal time unit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_DAY = 86400.0


def to_days(ts: datetime | date | np.datetime64) -> float:
    """Days since the epoch; naive datetimes are taken as UTC, aware ones are converted."""
    if isinstance(ts, np.datetime64):
        return float(ts.astype("datetime64[us]").astype(np.int64)) / (_SECONDS_PER_DAY * 1e6)
    if isinstance(ts, datetime):
        if ts.tzinfo is not None:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        return (ts - _EPOCH).total_seconds() / _SECONDS_PER_DAY
    return float((date(ts.year, ts.month, ts.day) - _EPOCH.date()).days)


def many_to_days(values: Sequence[datetime]) -> npt.NDArray[np.float64]:
    """`to_days` of each value."""
    return np.fromiter((to_days(v) for v in values), dtype=np.float64, count=len(values))
