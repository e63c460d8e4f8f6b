"""Past win-back campaigns: who was targeted, what they got, and what happened.

Waves run every `wave_spacing_days`. At each wave the customers without an order for
`lapse_days` (and with a consented channel) are candidates; a share is targeted, more of those
already in a win-back journey, whose stage then advances. Each targeted customer gets one
option drawn at random among those allowed (offers whose tier range and channels fit, `none`,
`holdout`) with probabilities that depend on the value tier; the propensity is logged. The
channel is drawn uniformly among the consented channels the offer allows (it changes opens and
unsubscribes, not conversion). Outcomes come from `TrueResponseModel`; a conversion is a real
order inside the attribution window, and candidates that were not targeted may come back on
their own, as a holdout would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features import constants as c
from features.offers import OfferCatalog
from features.synthetic.config import DAY, YEAR_DAYS, WorldConfig
from features.synthetic.population import Population, draw_categories, draw_gross
from features.synthetic.truth import CustomerState, TrueResponseModel

HOLDOUT_SHARE = np.array([0.16, 0.12, 0.08])
"""Share of targeted customers held out, by value tier."""
TARGET_SHARE = (0.35, 0.6)
"""Chance a candidate is targeted: new to the journey, already in it."""
OPEN_RATE = np.array([0.22, 0.0, 0.12, 0.30, 0.0])
CLICK_RATE = np.array([0.12, 0.05, 0.10, 0.12, 0.0])
"""Click rate given an open (email, push, in_app) or given delivery (sms)."""
EV = {name: i for i, name in enumerate(c.EVENT_TYPES)}


def _type_weights(kind: str) -> np.ndarray:
    """Assignment weight of an offer type for each value tier (occasional, mid, high)."""
    if kind in ("percent_discount", "amount_discount"):
        return np.array([1.6, 1.0, 0.5])
    if kind in ("expert_consult", "extended_warranty"):
        return np.array([1.0, 1.0, 2.0])
    return np.array([1.0, 1.0, 1.0])


@dataclass
class Rows:
    """Growing column lists of one table, concatenated at the end."""

    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.cols.setdefault(k, []).append(np.asarray(v))

    def get(self, name: str, dtype: type | str) -> np.ndarray:
        parts = self.cols.get(name, [])
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype=dtype)


@dataclass
class CampaignHistory:
    """Everything the campaigns produced (contacts, orders, events, consent changes, truth)."""

    contacts: Rows
    orders: Rows
    events: Rows
    consent: Rows
    truth_p: np.ndarray
    truth_revenue: np.ndarray
    truth_margin: np.ndarray


class _OrderIndex:
    """Point-in-time aggregates of the organic orders, by binary search (no per-row loops)."""

    def __init__(self, pop: Population, start_s: int) -> None:
        self.start_s = start_s
        self.first = pop.order_start[:-1]
        self.keys = pop.order_cust.astype(np.int64) * (1 << 32) + (pop.order_ts - start_s)
        self.ts = pop.order_ts
        rev = pop.order_gross - pop.order_discount
        self.cum_rev = np.concatenate([[0.0], np.cumsum(rev)])
        self.cum_disc = np.concatenate([[0], np.cumsum(pop.order_discount > 0)])
        self.cum_deliv = np.concatenate([[0], np.cumsum(pop.order_delivery_issue)])
        self.cust_key = np.arange(pop.n, dtype=np.int64) * (1 << 32)

    def before(self, t: int) -> dict[str, np.ndarray]:
        pos = np.searchsorted(self.keys, self.cust_key + (t - self.start_s), side="left")
        count = pos - self.first
        last = np.where(count > 0, self.ts[np.maximum(pos - 1, 0)], -1)
        return {
            "pos": pos,
            "count": count,
            "last": last,
            "rev": self.cum_rev[pos] - self.cum_rev[self.first],
            "disc": self.cum_disc[pos] - self.cum_disc[self.first],
            "deliv": self.cum_deliv[pos] - self.cum_deliv[self.first],
        }

    def any_in(self, cust: np.ndarray, pos: np.ndarray, t_end: int) -> np.ndarray:
        """Whether each customer in `cust` has an order from `pos` up to `t_end`."""
        key = self.cust_key[cust] + (t_end - self.start_s)
        end = np.searchsorted(self.keys, key, side="right")
        out: np.ndarray = end > pos
        return out


@dataclass(frozen=True)
class OfferArrays:
    """The catalog as arrays; options are the offers, then `none`, then `holdout`."""

    channels: np.ndarray
    min_tier: np.ndarray
    max_tier: np.ndarray
    weights: np.ndarray
    percent: np.ndarray
    amount: np.ndarray

    @classmethod
    def from_catalog(cls, catalog: OfferCatalog) -> OfferArrays:
        offers = catalog.offers
        zeros = [0.0, 0.0]
        return cls(
            channels=np.array([[ch in o.channels for ch in c.CHANNELS] for o in offers]),
            min_tier=np.array([c.VALUE_TIERS.index(o.min_value_tier) for o in offers]),
            max_tier=np.array([c.VALUE_TIERS.index(o.max_value_tier) for o in offers]),
            weights=np.stack([_type_weights(o.type) for o in offers] + [np.ones(3)], axis=1),
            percent=np.array([o.value * (o.type == "percent_discount") for o in offers] + zeros),
            amount=np.array([o.value * (o.type == "amount_discount") for o in offers] + zeros),
        )

    @property
    def k(self) -> int:
        return len(self.min_tier)


def assign_options(
    rng: np.random.Generator, tier: np.ndarray, consented: np.ndarray, arrays: OfferArrays
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomized assignment: option index, its logged propensity, and channel (-1 = none).

    An offer is allowed when the tier is within its range and one of its channels is
    consented; `none` and `holdout` are always allowed. Holdout gets a tier-dependent share,
    the allowed options split the rest in proportion to tier-dependent weights.
    """
    k, n = arrays.k, len(tier)
    rows = np.arange(n)
    chan_ok = (consented.astype(np.int8) @ arrays.channels.T.astype(np.int8)) > 0
    tier_ok = (tier[:, None] >= arrays.min_tier) & (tier[:, None] <= arrays.max_tier)
    allowed = np.concatenate([chan_ok & tier_ok, np.ones((n, 1), bool)], axis=1)
    w = arrays.weights[tier] * allowed
    hold = HOLDOUT_SHARE[tier][:, None]
    probs = np.concatenate([w / w.sum(axis=1, keepdims=True) * (1.0 - hold), hold], axis=1)
    cum = np.cumsum(probs, axis=1)
    choice = np.minimum((cum < rng.random(n)[:, None]).sum(axis=1), k + 1)
    choice = np.where(probs[rows, choice] > 0, choice, k + 1)  # guard against rounding
    every_channel = np.ones((1, len(c.CHANNELS)), bool)
    usable = consented & np.concatenate([arrays.channels, every_channel])[np.minimum(choice, k)]
    channel = np.argmax(rng.random(usable.shape) * usable, axis=1)
    return choice, probs[rows, choice], np.where(choice == k + 1, -1, channel)


@dataclass
class _Journeys:
    """What changes between waves: campaign orders, journeys and consent, per customer."""

    n: int
    opt_out: np.ndarray
    count: np.ndarray = field(init=False)
    revenue: np.ndarray = field(init=False)
    discounted: np.ndarray = field(init=False)
    last_order: np.ndarray = field(init=False)
    stage: np.ndarray = field(init=False)
    last_contact: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.n, np.int64)
        self.revenue = np.zeros(self.n)
        self.discounted = np.zeros(self.n, np.int64)
        self.last_order = np.full(self.n, -1, np.int64)
        self.stage = np.zeros(self.n, np.int64)
        self.last_contact = np.full(self.n, -1, np.int64)

    def add_orders(
        self, cust: np.ndarray, ts: np.ndarray, revenue: np.ndarray, disc: np.ndarray
    ) -> None:
        np.add.at(self.count, cust, 1)
        np.add.at(self.revenue, cust, revenue)
        np.add.at(self.discounted, cust, (disc > 0).astype(np.int64))
        np.maximum.at(self.last_order, cust, ts)


def _wave_state(
    pop: Population,
    index: _OrderIndex,
    jr: _Journeys,
    conf: WorldConfig,
    t: int,
    expected: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, CustomerState, np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of the wave at `t`, their state, consent, who orders anyway, and the
    position (in the population's orders) of each one's first organic order from `t` on."""
    agg = index.before(t)
    count = agg["count"] + jr.count
    last = np.maximum(agg["last"], jr.last_order)
    jr.stage[last > jr.last_contact] = 0  # an order since the last contact ends the journey
    recency = (t - last) / DAY
    consented = pop.opted_in & (jr.opt_out > t)
    cand = np.flatnonzero(
        (count > 0)
        & (recency >= conf.lapse_days)
        & (recency <= 1000)
        & (pop.signup_s <= t - 120 * DAY)
        & consented.any(axis=1)
    )
    p_window = 1.0 - np.exp(-pop.rate[cand] * conf.attribution_days / YEAR_DAYS)
    state = CustomerState(
        recency_days=recency[cand],
        frequency=count[cand].astype(float),
        lifetime_revenue=(agg["rev"] + jr.revenue)[cand],
        discount_share=(agg["disc"] + jr.discounted)[cand] / count[cand],
        delivery_issues=agg["deliv"][cand].astype(float),
        prior_contacts=jr.stage[cand].astype(float),
        p_base=np.where(pop.death_s[cand] > t, p_window, 0.0),
        revenue_if_convert=expected[0][cand],
        margin_if_convert=expected[1][cand],
    )
    base_hit = index.any_in(cand, agg["pos"][cand], t + conf.attribution_days * DAY)
    return cand, state, consented[cand], base_hit, agg["pos"][cand]


def engagement(
    rng: np.random.Generator,
    t: int,
    channel: np.ndarray,
    converted_at: np.ndarray,
    p_unsub: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Opens, clicks, visits, unsubscribes and complaints of sent contacts: (mask, ts) by type.

    `converted_at` is the conversion order's time, or -1 when the contact did not convert.
    """
    n = len(channel)
    conv = converted_at >= 0
    opened = rng.random(n) < np.where(
        conv, np.minimum(OPEN_RATE[channel] * 3, 0.8), OPEN_RATE[channel]
    )
    reach = opened | (channel == c.CHANNELS.index("sms"))  # an sms is clicked without an open
    clicked = reach & (rng.random(n) < np.where(conv, 0.6, CLICK_RATE[channel]))
    visited = conv | (clicked & (rng.random(n) < 0.6))
    t_open = t + rng.integers(600, 3 * DAY, size=n)
    t_click = t_open + rng.integers(10, 3600, size=n)
    t_visit = np.where(conv, np.maximum(converted_at - 600, t + 60), t_click + 30)
    unsub = rng.random(n) < p_unsub
    complaint = unsub & (rng.random(n) < 0.1)
    t_unsub = t + rng.integers(600, 4 * DAY, size=n)
    return {
        "open": (opened, t_open),
        "click": (clicked, t_click),
        "visit": (visited, t_visit),
        "unsubscribe": (unsub, t_unsub),
        "complaint": (complaint, t_unsub + 60),
    }


def _redeem_anyway(
    pop: Population,
    jr: _Journeys,
    arrays: OfferArrays,
    cust: np.ndarray,
    choice: np.ndarray,
    orders_anyway: np.ndarray,
    next_order: np.ndarray,
) -> None:
    """A targeted customer who orders in the window anyway uses the discount code too.

    The first organic order of the window (at `next_order`) carries the offer's discount, as a
    conversion order does. This is what makes a discount dear, and what the truth's value
    charges: the offer's cost on every conversion, including those that would have happened
    anyway. (Before, such orders kept their own price: on a 200k world the logged margin per
    converting pct20 contact was 9.46 against the truth's 6.74, which made discounts look
    cheaper in the logs than in the truth.) The journeys' aggregates take the change, as they
    take campaign orders, so later waves see it.
    """
    discount = (arrays.percent[choice] > 0) | (arrays.amount[choice] > 0)
    at = next_order[orders_anyway & discount]
    if len(at) == 0:
        return
    opt = choice[orders_anyway & discount]
    gross = pop.order_gross[at]
    new = np.round(gross * arrays.percent[opt] / 100.0, 2) + np.minimum(arrays.amount[opt], gross)
    old = pop.order_discount[at]
    who = cust[orders_anyway & discount]
    np.add.at(jr.revenue, who, old - new)
    np.add.at(jr.discounted, who, ((new > 0) & ~(old > 0)).astype(np.int64))
    pop.order_discount[at] = new


def simulate_campaigns(
    rng: np.random.Generator,
    pop: Population,
    catalog: OfferCatalog,
    model: TrueResponseModel,
    conf: WorldConfig,
) -> CampaignHistory:
    """Run every wave in time order, updating consent and journeys as they go."""
    arrays = OfferArrays.from_catalog(catalog)
    k = arrays.k
    expected = pop.expected_order_value()
    window = conf.attribution_days * DAY
    index = _OrderIndex(pop, conf.start_s)
    jr = _Journeys(pop.n, pop.opt_out_s.copy())
    contacts, orders, events, consent = Rows(), Rows(), Rows(), Rows()
    truth_p, truth_rev, truth_margin = [], [], []
    n_contacts = 0

    for wave, t in enumerate(conf.wave_times().tolist()):
        cand, state, consented, base_hit, next_order = _wave_state(
            pop, index, jr, conf, t, expected
        )
        share = np.where(jr.stage[cand] > 0, TARGET_SHARE[1], TARGET_SHARE[0])
        targeted = rng.random(len(cand)) < share
        u_resp = rng.random(len(cand))  # one draw per customer couples potential outcomes

        sel = np.flatnonzero(targeted)
        cust, st = cand[sel], state.take(sel)
        choice, propensity, channel = assign_options(rng, st.tier, consented[sel], arrays)
        p_resp = 1.0 / (1.0 + np.exp(-model.response_logits(st)))
        new_order = (u_resp[sel] < p_resp[np.arange(len(sel)), choice]) & ~base_hit[sel]
        _redeem_anyway(pop, jr, arrays, cust, choice, base_hit[sel], next_order[sel])
        kid = n_contacts + np.arange(len(sel))
        n_contacts += len(sel)
        contacts.add(
            cust=cust,
            ts=np.full(len(sel), t),
            channel=channel,
            wave=np.full(len(sel), wave),
            offer=choice,
            stage=jr.stage[cust] + 1,
            propensity=propensity,
        )
        truth_p.append(model.probabilities(st))
        truth_rev.append(st.revenue_if_convert)
        truth_margin.append(st.margin_if_convert)

        # conversion orders, and spontaneous comebacks of candidates not targeted
        rest = np.flatnonzero(~targeted)
        p_organic = 1.0 / (1.0 + np.exp(-model.organic_logit(state.take(rest))))
        organic = rest[(u_resp[rest] < p_organic) & ~base_hit[rest]]
        conv = np.flatnonzero(new_order)
        delay = np.clip(rng.exponential(6 * DAY, len(conv)), 3600, window - 3600).astype(np.int64)
        o_cust = np.concatenate([cust[conv], cand[organic]])
        o_ts = np.concatenate([t + delay, t + rng.integers(3600, window, size=len(organic))])
        o_cat = draw_categories(rng, pop.favorite[o_cust])
        o_gross = draw_gross(rng, pop.aov[o_cust], o_cat)
        o_opt = np.concatenate([choice[conv], np.full(len(organic), k + 1)])
        habitual = (rng.random(len(o_cust)) < pop.discount_pref[o_cust]) & (o_opt >= k)
        o_disc = np.round(o_gross * arrays.percent[o_opt] / 100.0, 2) + np.minimum(
            arrays.amount[o_opt], o_gross
        )
        o_disc = np.where(habitual, np.round(o_gross * 0.1, 2), o_disc)
        orders.add(cust=o_cust, ts=o_ts, gross=o_gross, discount=o_disc, category=o_cat)
        jr.add_orders(o_cust, o_ts, o_gross - o_disc, o_disc)

        # what the sent messages caused
        sent = np.flatnonzero(choice <= k)
        converted_at = np.full(len(sel), -1, np.int64)
        converted_at[conv] = t + delay
        ch = channel[sent]
        p_unsub = model.unsubscribe_probability(st.take(sent), ch)
        for kind, (mask, when) in engagement(rng, t, ch, converted_at[sent], p_unsub).items():
            events.add(
                cust=cust[sent[mask]],
                ts=when[mask],
                type=np.full(int(mask.sum()), EV[kind]),
                contact=kid[sent[mask]],
            )
            if kind == "unsubscribe":
                u_cust, u_ch, u_ts = cust[sent[mask]], ch[mask], when[mask]
                consent.add(cust=u_cust, channel=u_ch, ts=u_ts)
                jr.opt_out[u_cust, u_ch] = np.minimum(jr.opt_out[u_cust, u_ch], u_ts)
        jr.stage[cust[sent]] += 1
        jr.last_contact[cust[sent]] = t

    return CampaignHistory(
        contacts=contacts,
        orders=orders,
        events=events,
        consent=consent,
        truth_p=np.concatenate(truth_p) if truth_p else np.empty((0, k + 2)),
        truth_revenue=np.concatenate(truth_rev) if truth_rev else np.empty(0),
        truth_margin=np.concatenate(truth_margin) if truth_margin else np.empty(0),
    )
