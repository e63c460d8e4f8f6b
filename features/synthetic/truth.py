"""The TRUE response model of the synthetic world: what each option really does to whom.

The chance that a contacted (or held-out) customer orders within the attribution window is

    P(option) = 1 - (1 - p_base) * (1 - sigmoid(organic + uplift(option) - fatigue))

where `p_base` is the chance of an order from the customer's ongoing buying (zero once they
have dropped out), `organic` the log-odds of a spontaneous comeback, `uplift` the effect of the
option (zero for `holdout`) and `fatigue` grows with the contacts already sent in this lapse
episode. Every driver except `p_base` is computed from quantities a feature builder can see in
the tables (recency, frequency, spend, share of discounted orders, delivery issues, prior
contacts), and `p_base` itself is predictable from recency and frequency. Training code must
never import this module: it is the answer key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.constants import HOLDOUT, NO_INCENTIVE, VALUE_TIERS
from features.offers import Offer, OfferCatalog

TIER_THRESHOLDS = (500.0, 2500.0)
"""Lifetime revenue (currency) at which a customer becomes `mid`, then `high` value."""


def value_tier(lifetime_revenue: np.ndarray) -> np.ndarray:
    """Tier code (index into VALUE_TIERS) from revenue of all orders so far."""
    return np.searchsorted(np.asarray(TIER_THRESHOLDS), lifetime_revenue, side="right").astype(
        np.int8
    )


@dataclass(frozen=True)
class CustomerState:
    """What drives response, one entry per customer, at the moment of a decision.

    Attributes:
        recency_days: days since the last order.
        frequency: number of orders so far.
        lifetime_revenue: revenue of all orders so far.
        discount_share: share of past orders that carried a discount.
        delivery_issues: delivery issues on past orders.
        prior_contacts: win-back contacts already sent since the last order (stage - 1).
        p_base: chance of an order in the window from ongoing buying alone (latent).
        revenue_if_convert: expected gross revenue of the order if the customer converts.
        margin_if_convert: expected margin of that order before any offer cost.
    """

    recency_days: np.ndarray
    frequency: np.ndarray
    lifetime_revenue: np.ndarray
    discount_share: np.ndarray
    delivery_issues: np.ndarray
    prior_contacts: np.ndarray
    p_base: np.ndarray
    revenue_if_convert: np.ndarray
    margin_if_convert: np.ndarray

    @property
    def tier(self) -> np.ndarray:
        return value_tier(self.lifetime_revenue)

    def take(self, index: np.ndarray) -> CustomerState:
        """The state of a subset of customers."""
        return CustomerState(**{k: np.asarray(v)[index] for k, v in vars(self).items()})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


class TrueResponseModel:
    """The true conversion probability of every option for every customer.

    Options are the catalog's offers in catalog order, then `none`, then `holdout`.
    """

    def __init__(self, catalog: OfferCatalog) -> None:
        self.catalog = catalog
        self.option_ids: tuple[str, ...] = (*catalog.offer_ids, NO_INCENTIVE, HOLDOUT)

    def organic_logit(self, s: CustomerState) -> np.ndarray:
        """Log-odds of coming back in the window with no contact (after dropping out)."""
        months = np.maximum(s.recency_days, 1.0) / 30.0
        return (
            -2.4
            + 0.35 * np.log1p(s.frequency)
            - 1.0 * np.log(np.maximum(months / 3.0, 0.2))
            - 0.6 * s.discount_share
            - 0.25 * np.minimum(s.delivery_issues, 4)
        )

    def uplift(self, offer: Offer | None, s: CustomerState) -> np.ndarray:
        """Log-odds added by sending `offer` (None means `none`: a message without incentive)."""
        tier = s.tier
        occasional = (tier == 0).astype(float)
        mid = (tier == 1).astype(float)
        high = (tier == 2).astype(float)
        recent = (s.recency_days < 180).astype(float)
        kind = "none" if offer is None else offer.type
        if kind == "none":
            return 0.1 + 0.35 * recent
        if kind in ("percent_discount", "amount_discount"):
            assert offer is not None
            pct = offer.value if kind == "percent_discount" else 100 * offer.value / 60.0
            strength = (max(pct, 0.0) / 10.0) ** 0.6
            return -0.2 + strength * (2.6 * s.discount_share + 0.6 * occasional) - 0.3 * high
        if kind == "free_shipping":
            return 0.0 + 0.6 * np.minimum(s.delivery_issues, 3) + 0.2 * occasional
        if kind == "bundle":
            return 0.1 + 0.4 * mid + 0.15 * np.log1p(s.frequency) - 0.3 * occasional
        if kind == "extended_warranty":
            return 0.0 + 0.35 * mid + 0.6 * high
        if kind == "expert_consult":
            return -0.1 + 1.6 * high + 0.2 * mid
        if kind == "content":
            return 0.0 + 1.0 * recent
        raise ValueError(f"offer type '{kind}' has no true response")

    def response_logits(self, s: CustomerState) -> np.ndarray:
        """Comeback log-odds per option (customers x options), before ongoing buying."""
        base = self.organic_logit(s)
        fatigue = 0.4 * s.prior_contacts
        cols = [base + self.uplift(o, s) - fatigue for o in self.catalog.offers]
        cols.append(base + self.uplift(None, s) - fatigue)
        cols.append(base)
        return np.stack(cols, axis=1)

    def probabilities(self, s: CustomerState) -> np.ndarray:
        """True P(order within the window) per option (customers x options)."""
        p_resp = _sigmoid(self.response_logits(s))
        return 1.0 - (1.0 - s.p_base[:, None]) * (1.0 - p_resp)

    def offer_costs(self, s: CustomerState) -> np.ndarray:
        """Cost of each option if redeemed (customers x options); zero for none and holdout."""
        rev = s.revenue_if_convert
        cols = [o.cost.revenue_fraction * rev + o.cost.fixed for o in self.catalog.offers]
        cols += [np.zeros_like(rev), np.zeros_like(rev)]
        return np.stack(cols, axis=1)

    def incremental_margin(self, s: CustomerState) -> np.ndarray:
        """True expected margin of each option minus that of holding out (customers x options)."""
        p = self.probabilities(s)
        m = s.margin_if_convert[:, None]
        return p * (m - self.offer_costs(s)) - p[:, -1:] * m

    def unsubscribe_probability(self, s: CustomerState, channel: np.ndarray) -> np.ndarray:
        """Chance that a contact on `channel` (index of CHANNELS) makes the customer opt out."""
        per_channel = np.array([0.004, 0.012, 0.008, 0.002, 0.001])
        return np.minimum(per_channel[channel] * (1.0 + 1.5 * s.prior_contacts), 0.5)


__all__ = ["VALUE_TIERS", "CustomerState", "TrueResponseModel", "value_tier"]
