"""Knobs of the synthetic world and the fixed vocabularies it draws from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86_400
YEAR_DAYS = 365.25

# Categories: name, relative order value, margin rate, share of orders in the population.
CATEGORIES = ("electronics", "home", "apparel", "beauty", "books", "sports", "grocery")
CATEGORY_VALUE = np.array([2.2, 1.3, 1.0, 0.7, 0.5, 1.2, 0.6])
CATEGORY_MARGIN = np.array([0.14, 0.34, 0.46, 0.58, 0.28, 0.36, 0.20])
CATEGORY_WEIGHT = np.array([0.12, 0.16, 0.22, 0.14, 0.12, 0.10, 0.14])
FAVORITE_SHARE = 0.6
"""Share of a customer's orders in their favourite category (the rest follow the weights)."""
ORDER_VALUE_SIGMA = 0.35
"""Log-scale spread of one order's value around the customer's typical order value."""

REGIONS = ("north", "south", "east", "west", "central")
REGION_DELIVERY_RISK = np.array([1.8, 0.8, 1.0, 1.0, 0.7])
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "affiliate")
ACQUISITION_WEIGHT = np.array([0.35, 0.25, 0.15, 0.15, 0.10])
ACQUISITION_DISCOUNT_LIFT = np.array([0.0, 0.08, 0.05, 0.0, 0.18])

# Consent: share opted in at signup per channel (order of features.constants.CHANNELS).
CONSENT_OPT_IN = np.array([0.9, 0.45, 0.4, 0.65, 0.75])
EMAIL_ORGANIC_OPT_OUT = 0.12
"""Share of email subscribers who unsubscribe on their own during the history."""


@dataclass(frozen=True)
class WorldConfig:
    """Size, seed and time frame of a generated world.

    Attributes:
        n_customers: number of customers.
        seed: seed of the numpy Generator every random draw comes from.
        end: end of the history (the "as of" date of the data), ISO date.
        history_days: length of the history before `end` (customers sign up within it).
        purchase_rate: mean orders per year of an active customer.
        lifetime_years: mean time before an active customer drops out (without friction).
        n_waves: past win-back campaign waves.
        wave_spacing_days: days between waves; the last wave ends `attribution_days` + a week
            before `end`, so every outcome is observed.
        attribution_days: window after a contact in which an order counts as a conversion.
        lapse_days: days without an order after which a customer is eligible for win-back.
    """

    n_customers: int
    seed: int = 0
    end: str = "2025-01-01"
    history_days: int = 1095
    purchase_rate: float = 17.5
    lifetime_years: float = 3.5
    n_waves: int = 6
    wave_spacing_days: int = 91
    attribution_days: int = 30
    lapse_days: int = 90

    @property
    def end_s(self) -> int:
        return int(np.datetime64(self.end, "s").astype(np.int64))

    @property
    def start_s(self) -> int:
        return self.end_s - self.history_days * DAY

    def wave_times(self) -> np.ndarray:
        """Epoch seconds of each wave, oldest first."""
        last = self.end_s - (self.attribution_days + 7) * DAY
        back = np.arange(self.n_waves - 1, -1, -1, dtype=np.int64) * self.wave_spacing_days * DAY
        return last - back
