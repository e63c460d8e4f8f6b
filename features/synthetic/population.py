"""Customers, their organic orders, friction, browsing and consent (before any campaign).

Each customer has latent traits: a purchase rate, a lifetime after which they drop out, a
typical order value, a taste for discounts, a favourite category and a delivery risk. Orders
arrive uniformly over the active period; each order may bring friction (a delivery issue, a
stockout, a support ticket), and friction can end the customer's active period on the spot,
so friction visibly raises lapsing. Everything is drawn array-wise, never per customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic import config as cfg
from features.synthetic.config import DAY, YEAR_DAYS, WorldConfig

FRICTION_TYPES = ("delivery_issue", "stockout", "support_ticket")
LAPSE_AFTER_FRICTION = np.array([0.2, 0.08, 0.1])
"""Chance that a friction event of each type ends the customer's active period."""
NEVER = np.iinfo(np.int64).max


@dataclass
class Population:
    """Latent customer traits plus organic orders, sorted by (customer, time)."""

    signup_s: np.ndarray
    region: np.ndarray
    acquisition: np.ndarray
    rate: np.ndarray
    death_s: np.ndarray
    aov: np.ndarray
    discount_pref: np.ndarray
    favorite: np.ndarray
    # orders, sorted by customer then time; order_start[i]:order_start[i+1] are customer i's
    order_cust: np.ndarray
    order_ts: np.ndarray
    order_gross: np.ndarray
    order_discount: np.ndarray
    order_category: np.ndarray
    order_delivery_issue: np.ndarray
    order_start: np.ndarray
    # friction and browsing events (no contact)
    event_cust: np.ndarray
    event_ts: np.ndarray
    event_type: np.ndarray
    # consent: initial opt-in per channel and the time of an organic opt-out (NEVER if none)
    opted_in: np.ndarray
    opt_out_s: np.ndarray

    @property
    def n(self) -> int:
        return len(self.signup_s)

    def expected_order_value(self) -> tuple[np.ndarray, np.ndarray]:
        """Expected gross revenue and margin (before any offer) of a customer's next order."""
        noise = np.exp(cfg.ORDER_VALUE_SIGMA**2 / 2)
        mix_v = float(cfg.CATEGORY_WEIGHT @ cfg.CATEGORY_VALUE)
        mix_m = float(cfg.CATEGORY_WEIGHT @ (cfg.CATEGORY_VALUE * cfg.CATEGORY_MARGIN))
        fav_v = cfg.CATEGORY_VALUE[self.favorite]
        fav_m = fav_v * cfg.CATEGORY_MARGIN[self.favorite]
        share = cfg.FAVORITE_SHARE
        revenue = self.aov * noise * (share * fav_v + (1 - share) * mix_v)
        margin = self.aov * noise * (share * fav_m + (1 - share) * mix_m)
        return revenue, margin


def draw_categories(rng: np.random.Generator, favorite: np.ndarray) -> np.ndarray:
    """One category per row: the favourite with FAVORITE_SHARE, else by population weights."""
    other = rng.choice(len(cfg.CATEGORIES), size=len(favorite), p=cfg.CATEGORY_WEIGHT)
    keep = rng.random(len(favorite)) < cfg.FAVORITE_SHARE
    return np.where(keep, favorite, other).astype(np.int8)


def draw_gross(rng: np.random.Generator, aov: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Gross order values (before discount), rounded to cents."""
    noise = rng.lognormal(0.0, cfg.ORDER_VALUE_SIGMA, size=len(aov))
    return np.round(aov * cfg.CATEGORY_VALUE[category] * noise, 2)


def _customers(rng: np.random.Generator, conf: WorldConfig) -> dict[str, np.ndarray]:
    n = conf.n_customers
    span = conf.end_s - 150 * DAY - conf.start_s
    signup = conf.start_s + (span * rng.random(n) ** 1.3).astype(np.int64)
    region = rng.choice(len(cfg.REGIONS), size=n, p=[0.2, 0.25, 0.2, 0.2, 0.15]).astype(np.int8)
    acq = rng.choice(len(cfg.ACQUISITION_CHANNELS), size=n, p=cfg.ACQUISITION_WEIGHT)
    rate = rng.gamma(2.0, conf.purchase_rate / 2.0, size=n)
    lifetime_days = rng.exponential(conf.lifetime_years * YEAR_DAYS, size=n)
    death = signup + (lifetime_days * DAY).astype(np.int64)
    aov = rng.lognormal(np.log(45.0), 0.55, size=n)
    pref = rng.beta(1.0, 4.0, size=n) + cfg.ACQUISITION_DISCOUNT_LIFT[acq]
    favorite = rng.choice(len(cfg.CATEGORIES), size=n, p=cfg.CATEGORY_WEIGHT).astype(np.int8)
    delivery_risk = rng.beta(1.5, 30.0, size=n) * cfg.REGION_DELIVERY_RISK[region]
    return {
        "signup": signup,
        "region": region,
        "acq": acq.astype(np.int8),
        "rate": rate,
        "death": death,
        "aov": aov,
        "pref": np.clip(pref, 0.0, 0.95),
        "favorite": favorite,
        "delivery_risk": np.clip(delivery_risk, 0.0, 0.5),
    }


def simulate_population(rng: np.random.Generator, conf: WorldConfig) -> Population:
    """Draw customers and their organic history up to `conf.end`."""
    cu = _customers(rng, conf)
    n = conf.n_customers
    active_end = np.minimum(cu["death"], conf.end_s)
    years = (active_end - cu["signup"]) / (YEAR_DAYS * DAY)
    n_orders = 1 + rng.poisson(cu["rate"] * np.maximum(years, 0.0))
    cust = np.repeat(np.arange(n, dtype=np.int32), n_orders)
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_orders, out=start[1:])
    dur = (active_end - cu["signup"])[cust]
    ts = cu["signup"][cust] + (rng.random(len(cust)) * np.maximum(dur, 0)).astype(np.int64)
    ts[start[:-1]] = cu["signup"] + rng.integers(0, 3600, size=n)  # first order at signup
    # sort by (customer, time): customers are already grouped, so one key sort suffices
    order = np.argsort(cust.astype(np.int64) * (1 << 32) + (ts - conf.start_s), kind="stable")
    ts = ts[order]
    del order

    # friction on each order; a friction event may end the active period right there
    m = len(cust)
    kinds = np.full(m, -1, dtype=np.int8)
    u = rng.random(m)
    p_del = cu["delivery_risk"][cust]
    kinds[u < p_del] = 0
    kinds[(kinds < 0) & (u < p_del + 0.02)] = 1
    kinds[(kinds < 0) & (u < p_del + 0.045)] = 2
    has = kinds >= 0
    ends = has & (rng.random(m) < LAPSE_AFTER_FRICTION[np.maximum(kinds, 0)])
    idx = np.arange(m, dtype=np.int64)
    first_end = np.minimum.reduceat(np.where(ends, idx, NEVER), start[:-1])
    keep = idx <= first_end[cust]
    stopped = first_end < NEVER
    death = cu["death"].copy()
    death[stopped] = np.minimum(death[stopped], ts[first_end[stopped]] + DAY)
    cust, ts, kinds = cust[keep], ts[keep], kinds[keep]
    del keep, idx, u, p_del, ends
    counts = np.bincount(cust, minlength=n)
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])

    category = draw_categories(rng, cu["favorite"][cust])
    gross = draw_gross(rng, cu["aov"][cust], category)
    discounted = rng.random(len(cust)) < cu["pref"][cust]
    rate = rng.choice(np.array([0.1, 0.15, 0.2]), size=len(cust))
    discount = np.where(discounted, np.round(gross * rate, 2), 0.0)
    del discounted, rate

    # friction events follow their order by hours to days
    fr = np.flatnonzero(kinds >= 0)
    delay = rng.integers(1 * 3600, 8 * DAY, size=len(fr))
    f_ts = ts[fr] + delay
    f_kind = kinds[fr].astype(np.int8)
    # browsing: visits while active and for a while after
    n_visits = rng.poisson(0.35 * counts)
    v_cust = np.repeat(np.arange(n, dtype=np.int32), n_visits)
    v_end = np.minimum(death + 120 * DAY, conf.end_s)[v_cust]
    v_start = cu["signup"][v_cust]
    v_ts = v_start + (rng.random(len(v_cust)) * np.maximum(v_end - v_start, 0)).astype(np.int64)
    ev_cust = np.concatenate([cust[fr], v_cust])
    ev_ts = np.concatenate([f_ts, v_ts])
    ev_type = np.concatenate([f_kind, np.full(len(v_cust), len(FRICTION_TYPES), np.int8)])
    inside = ev_ts < conf.end_s

    opted_in = rng.random((n, len(cfg.CONSENT_OPT_IN))) < cfg.CONSENT_OPT_IN
    opt_out = np.full((n, len(cfg.CONSENT_OPT_IN)), NEVER, dtype=np.int64)
    leaves = opted_in[:, 0] & (rng.random(n) < cfg.EMAIL_ORGANIC_OPT_OUT)
    when = cu["signup"] + DAY + (rng.random(n) * (conf.end_s - cu["signup"] - DAY)).astype(np.int64)
    opt_out[leaves, 0] = when[leaves]

    return Population(
        signup_s=cu["signup"],
        region=cu["region"],
        acquisition=cu["acq"],
        rate=cu["rate"],
        death_s=death,
        aov=cu["aov"],
        discount_pref=cu["pref"],
        favorite=cu["favorite"],
        order_cust=cust,
        order_ts=ts,
        order_gross=gross,
        order_discount=discount,
        order_category=category,
        order_delivery_issue=kinds == 0,
        order_start=start,
        event_cust=ev_cust[inside],
        event_ts=ev_ts[inside],
        event_type=ev_type[inside],
        opted_in=opted_in,
        opt_out_s=opt_out,
    )
