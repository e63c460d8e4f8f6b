"""The option set of a decision: every catalog offer plus `none` (a message without incentive).

Built once per catalog (the API keeps it with the loaded catalog) and held as arrays, so the
guardrails index offers by position rather than by looking anything up per request. The
built-in `none` option is always the last one; `holdout` is an action, never an option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from features.constants import CHANNELS, NO_INCENTIVE, OFFER_TYPES, VALUE_TIERS
from features.offers import Budget, Offer, OfferCatalog
from serving.engine.errors import EngineInputError
from serving.engine.timeutil import to_days

_FAR_PAST = -1e9
_FAR_FUTURE = 1e9


@dataclass(frozen=True, eq=False)
class OptionSet:
    """K options as parallel arrays (offer ids in order; `none` last).

    Attributes:
        offer_ids: the option ids, `none` last.
        offer_type: code of each option's type in `features.constants.OFFER_TYPES`.
        is_incentive: whether the option gives something of value (costs margin).
        cost_fraction / cost_fixed: the cost model of one redemption.
        channel_ok: (K, len(CHANNELS)) whether the option may go out on each channel.
        min_tier / max_tier: codes into VALUE_TIERS of the offer's tier range.
        valid_from / valid_to: first and last valid day (days since epoch, inclusive).
        budgets: each option's budget (its own, else the policy default, else None).
        offers: the catalog offers by id, for display fields.
    """

    offer_ids: tuple[str, ...]
    offer_type: npt.NDArray[np.int8]
    is_incentive: npt.NDArray[np.bool_]
    cost_fraction: npt.NDArray[np.float64]
    cost_fixed: npt.NDArray[np.float64]
    channel_ok: npt.NDArray[np.bool_]
    min_tier: npt.NDArray[np.int8]
    max_tier: npt.NDArray[np.int8]
    valid_from: npt.NDArray[np.float64]
    valid_to: npt.NDArray[np.float64]
    budgets: tuple[Budget | None, ...]
    offers: Mapping[str, Offer] = field(default_factory=dict)
    catalog_version: str = ""

    def __len__(self) -> int:
        return len(self.offer_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each offer id (built once; the option set is immutable)."""
        return {o: i for i, o in enumerate(self.offer_ids)}

    @property
    def none_index(self) -> int:
        return len(self.offer_ids) - 1

    def expected_cost(self, revenue: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(n, K) expected cost of one redemption on orders of `revenue` (n,); 0 if no incentive."""
        rev = np.asarray(revenue, dtype=np.float64).reshape(-1, 1)
        cost = self.cost_fraction[None, :] * rev + self.cost_fixed[None, :]
        return np.where(self.is_incentive[None, :], cost, 0.0)

    def mask_of(self, offer_ids: Iterable[str], keep_none: bool = True) -> npt.NDArray[np.bool_]:
        """(K,) True for the listed ids (and `none` when `keep_none`); unknown ids are an error."""
        idx = self.index
        mask = np.zeros(len(self), dtype=bool)
        for oid in offer_ids:
            if oid not in idx:
                raise EngineInputError(f"candidate_offer_ids: unknown offer id '{oid}'")
            mask[idx[oid]] = True
        if keep_none:
            mask[self.none_index] = True
        return mask

    @classmethod
    def from_catalog(
        cls, catalog: OfferCatalog, budget_defaults: Budget | None = None
    ) -> OptionSet:
        """Options of `catalog` plus `none`; offers without a budget get `budget_defaults`."""
        offers = list(catalog.offers)
        rows: list[dict[str, Any]] = []
        for o in offers:
            rows.append(
                {
                    "id": o.offer_id,
                    "type": OFFER_TYPES.index(o.type),
                    "incentive": o.is_incentive,
                    "frac": o.cost.revenue_fraction,
                    "fixed": o.cost.fixed,
                    "channels": [ch in o.channels for ch in CHANNELS],
                    "min_tier": VALUE_TIERS.index(o.min_value_tier),
                    "max_tier": VALUE_TIERS.index(o.max_value_tier),
                    "from": to_days(o.valid_from) if o.valid_from else _FAR_PAST,
                    "to": to_days(o.valid_to) if o.valid_to else _FAR_FUTURE,
                    "budget": o.budget if o.budget is not None else budget_defaults,
                }
            )
        rows.append(
            {
                "id": NO_INCENTIVE,
                "type": OFFER_TYPES.index("none"),
                "incentive": False,
                "frac": 0.0,
                "fixed": 0.0,
                "channels": [True] * len(CHANNELS),
                "min_tier": 0,
                "max_tier": len(VALUE_TIERS) - 1,
                "from": _FAR_PAST,
                "to": _FAR_FUTURE,
                "budget": None,
            }
        )
        return cls(
            offer_ids=tuple(r["id"] for r in rows),
            offer_type=np.array([r["type"] for r in rows], dtype=np.int8),
            is_incentive=np.array([r["incentive"] for r in rows], dtype=bool),
            cost_fraction=np.array([r["frac"] for r in rows], dtype=np.float64),
            cost_fixed=np.array([r["fixed"] for r in rows], dtype=np.float64),
            channel_ok=np.array([r["channels"] for r in rows], dtype=bool),
            min_tier=np.array([r["min_tier"] for r in rows], dtype=np.int8),
            max_tier=np.array([r["max_tier"] for r in rows], dtype=np.int8),
            valid_from=np.array([r["from"] for r in rows], dtype=np.float64),
            valid_to=np.array([r["to"] for r in rows], dtype=np.float64),
            budgets=tuple(r["budget"] for r in rows),
            offers={o.offer_id: o for o in offers},
            catalog_version=catalog.version,
        )
