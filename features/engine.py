"""The feature engine: every feature family of `winback_v1` for many (customer, as-of) pairs.

`FeatureEngine(data, config)` indexes a `DataSet` once (see `features.asof_index`);
`compute(customers, as_of)` then returns the features of each pair, using only rows strictly
before that pair's as-of time. Training frames (many cutoffs, one as-of per contact) and the
serving snapshot (one as-of for everyone) all go through this one function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import constants as c
from features.asof_index import NS_PER_DAY, GroupedIndex, TimeAxis, expand_ranges, range_sum
from features.config import FeatureConfig
from features.dataset import DataSet
from features.errors import FeaturesError
from features.featureset import (
    CONSENT_STATES,
    CONTACT_WINDOWS,
    ENGAGEMENT_EVENTS,
    ENGAGEMENT_WINDOWS,
    FRICTION_EVENTS,
    FRICTION_WINDOWS,
    RFM_WINDOWS,
    FeatureSet,
)

RESPONSE_EVENTS = ("open", "click", "visit")
Arrays = dict[str, np.ndarray]


def _ns(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _arrow(values: pd.Series | pd.Index | np.ndarray | tuple[str, ...]) -> pa.Array:
    arr = pa.array(values, from_pandas=True)
    return arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr


def _codes(values: pd.Series | np.ndarray, vocabulary: pd.Index) -> np.ndarray:
    """Position of each value in `vocabulary`, -1 if absent or missing (hashing in Arrow)."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    found = pc.index_in(_arrow(values), value_set=_arrow(vocabulary))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


class FeatureEngine:
    """A `DataSet` indexed for as-of queries. Build once, query many times."""

    def __init__(self, data: DataSet, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self.data = data
        cust = data.customers
        self.customer_ids = pd.Index(cust[c.CUSTOMER_ID].astype(object).to_numpy(), dtype=object)
        self.signup = _ns(cust[c.SIGNUP_TS])
        orders, contacts, events, consent = data.orders, data.contacts, data.events, data.consent
        o_ts, k_ts, e_ts, s_ts = (
            _ns(orders[c.ORDER_TS]),
            _ns(contacts[c.TS]),
            _ns(events[c.TS]),
            _ns(consent[c.UPDATED_TS]),
        )
        self.axis = TimeAxis(o_ts, k_ts, e_ts, s_ts)
        o_r, k_r, e_r, s_r = self.axis.row_ranks
        # orders, by customer and by (customer, category)
        o_cust = _codes(orders[c.CUSTOMER_ID], self.customer_ids)
        cats = pc.unique(_arrow(orders[c.CATEGORY])).to_pylist() if len(orders) else []
        self.categories = tuple(sorted(str(x) for x in cats if x is not None))
        self.order_cat = _codes(orders[c.CATEGORY], pd.Index(self.categories, dtype=object))
        self.n_cat = max(len(self.categories), 1)
        self.orders = GroupedIndex(o_cust, o_ts, o_r, self.axis)
        rev = orders[c.REVENUE].to_numpy(np.float64)
        mar = orders[c.MARGIN].to_numpy(np.float64)
        discount = orders[c.DISCOUNT_AMOUNT].fillna(0.0).to_numpy(np.float64)
        disc = (discount > 0).astype(np.float64)
        self.p_rev = self.orders.prefix(rev)
        self.p_mar = self.orders.prefix(mar)
        self.p_discount = self.orders.prefix(discount)
        self.c_disc = np.concatenate([[0.0], np.cumsum(self.orders.sorted_values(disc))])
        ts_sorted = self.orders.ts
        same = np.concatenate([[False], self.orders.group[1:] == self.orders.group[:-1]])
        gap = np.where(same, np.diff(ts_sorted, prepend=ts_sorted[:1]) / NS_PER_DAY, 0.0)
        self.p_gap2 = self.orders.prefix(gap**2, presorted=True)
        # 1 on a customer's first order of each calendar day (UTC): distinct order days
        day = ts_sorted // NS_PER_DAY
        new_day = np.ones(len(day), dtype=bool)
        new_day[1:] = ~same[1:] | (day[1:] != day[:-1])
        self.p_order_days = self.orders.prefix(new_day.astype(np.float64), presorted=True)
        self.cat_index = GroupedIndex(o_cust * self.n_cat + self.order_cat, o_ts, o_r, self.axis)
        grp = self.cat_index.group
        self.cat_groups = grp[np.concatenate([[True], grp[1:] != grp[:-1]])] if len(grp) else grp
        self.p_cat_rev = self.cat_index.prefix(rev)
        # events by (customer, type); response events by the contact they answer
        self.n_types = len(c.EVENT_TYPES)
        e_cust = _codes(events[c.CUSTOMER_ID], self.customer_ids)
        e_type = _codes(events[c.EVENT_TYPE], pd.Index(c.EVENT_TYPES))
        self.events = GroupedIndex(e_cust * self.n_types + e_type, e_ts, e_r, self.axis)
        self.contact_ids = pd.Index(contacts[c.CONTACT_ID].astype(object).to_numpy(), dtype=object)
        linked = (
            events[c.EVENT_TYPE].isin(RESPONSE_EVENTS).to_numpy()
            & events[c.CONTACT_ID].notna().to_numpy()
        )
        self.responses = GroupedIndex(
            _codes(events.loc[linked, c.CONTACT_ID], self.contact_ids),
            e_ts[linked],
            e_r[linked],
            self.axis,
        )
        # contacts actually sent (a holdout received nothing, so it is no contact)
        sent = (contacts[c.OFFER_ID] != c.HOLDOUT).to_numpy(dtype=bool)
        self.sent_rows = np.flatnonzero(sent)
        k_cust = _codes(contacts[c.CUSTOMER_ID], self.customer_ids)
        self.contacts = GroupedIndex(k_cust[sent], k_ts[sent], k_r[sent], self.axis)
        types = {o.offer_id: o.type for o in data.catalog.offers}
        types[c.NO_INCENTIVE] = "none"
        offer_ids = contacts[c.OFFER_ID].astype(object)
        self.contact_offer = offer_ids.to_numpy()
        self.contact_type = _codes(offer_ids.map(types), pd.Index(c.OFFER_TYPES))
        # consent by (customer, channel)
        n_ch = len(c.CHANNELS)
        s_cust = _codes(consent[c.CUSTOMER_ID], self.customer_ids)
        s_ch = _codes(consent[c.CHANNEL], pd.Index(c.CHANNELS))
        self.consent = GroupedIndex(s_cust * n_ch + s_ch, s_ts, s_r, self.axis)
        self.consent_status = _codes(consent[c.STATUS], pd.Index(CONSENT_STATES))

    # ------------------------------------------------------------------------------------------
    def customer_codes(self, customer_ids: pd.Series | np.ndarray) -> np.ndarray:
        """Row codes of `customer_ids`; an unknown id is a FeaturesError naming it."""
        codes = self.customer_ids.get_indexer(np.asarray(customer_ids, dtype=object))
        if (codes < 0).any():
            bad = np.asarray(customer_ids, dtype=object)[codes < 0][:5]
            raise FeaturesError(f"unknown customer_id(s): {', '.join(map(str, bad))}")
        return codes.astype(np.int64)

    def customers_before(self, as_of: int) -> np.ndarray:
        """Codes of the customers who signed up strictly before `as_of` (ns)."""
        return np.flatnonzero(self.signup < as_of).astype(np.int64)

    def category_vocabulary(self, as_of: int, limit: int) -> tuple[str, ...]:
        """The `limit` most ordered categories before `as_of`, alphabetically."""
        before = self.orders.ts < as_of
        counts = np.bincount(self.order_cat[self.orders.order[before]], minlength=self.n_cat)
        ranked = sorted((-n, name) for name, n in zip(self.categories, counts, strict=False) if n)
        return tuple(sorted(name for _, name in ranked[:limit]))

    # ------------------------------------------------------------------------------------------
    def compute(
        self, cust: np.ndarray, as_of: np.ndarray, feature_set: FeatureSet
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Features (float64 matrix, columns in `feature_set` order) and decoded guardrail state."""
        cust = np.asarray(cust, dtype=np.int64)
        t = np.asarray(as_of, dtype=np.int64)
        out: Arrays = {}
        state: dict[str, object] = {}
        self._orders(cust, t, out)
        self._lapse_and_tier(out, state)
        self._categories(cust, t, out, feature_set)
        self._events(cust, t, out)
        self._contacts(cust, t, out, state, feature_set)
        self._consent(cust, t, out, state)
        missing = [name for name in feature_set.columns if name not in out]
        if missing:
            raise FeaturesError(
                f"feature set {feature_set.key} declares unknown features {missing}"
            )
        matrix = np.column_stack([out[name] for name in feature_set.columns]).astype(np.float64)
        for name in (
            "days_since_last_order",
            *[f"contacts_{w}d" for w in CONTACT_WINDOWS],
            "days_since_last_contact",
            "journey_stage",
        ):
            state[name] = out[name]
        return matrix, pd.DataFrame(state)

    def lapse_state(self, cust: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        """The `lapse_state` feature alone (codes into `LAPSE_STATES`; NaN before any order),
        as `compute` gives it, without the other families."""
        out: Arrays = {}
        self._orders(np.asarray(cust, dtype=np.int64), np.asarray(as_of, dtype=np.int64), out)
        self._lapse_and_tier(out, {})
        return out["lapse_state"]

    def _orders(self, cust: np.ndarray, t: np.ndarray, out: Arrays) -> None:
        o = self.orders
        s0, p = o.start(cust), o.before(cust, t)
        n = (p - s0).astype(np.float64)
        has = n > 0
        last = (
            np.where(has, o.ts[np.maximum(p - 1, 0)], 0) if len(o) else np.zeros(len(t), np.int64)
        )
        first = np.where(has, o.ts[np.minimum(s0, max(len(o) - 1, 0))], 0) if len(o) else last
        out["tenure_days"] = (t - self.signup[cust]) / NS_PER_DAY
        out["days_since_last_order"] = np.where(has, (t - last) / NS_PER_DAY, np.nan)
        out["days_since_first_order"] = np.where(has, (t - first) / NS_PER_DAY, np.nan)
        for w in RFM_WINDOWS:
            pw = o.before(cust, t - w * NS_PER_DAY)
            out[f"orders_{w}d"] = (p - pw).astype(np.float64)
            out[f"revenue_{w}d"] = range_sum(self.p_rev, pw, p, s0)
            if w == 365:
                out["margin_365d"] = range_sum(self.p_mar, pw, p, s0)
        out["orders_lifetime"] = n
        out["order_days_lifetime"] = range_sum(self.p_order_days, s0, p, s0)
        rev = range_sum(self.p_rev, s0, p, s0)
        mar = range_sum(self.p_mar, s0, p, s0)
        out["revenue_lifetime"], out["margin_lifetime"] = rev, mar
        with np.errstate(divide="ignore", invalid="ignore"):
            out["aov_lifetime"] = np.where(has, rev / n, np.nan)
            out["margin_rate_lifetime"] = np.where(rev > 0, mar / rev, np.nan)
            gaps = n - 1
            mean = np.where(gaps >= 1, (last - first) / NS_PER_DAY / gaps, np.nan)
            sq = range_sum(self.p_gap2, s0, p, s0)
            var = np.maximum(sq / gaps - mean**2, 0.0)
            out["gap_mean_days"] = mean
            out["gap_std_days"] = np.where(gaps >= 2, np.sqrt(var), np.nan)
            out["overdue_ratio"] = np.where(mean > 0, out["days_since_last_order"] / mean, np.nan)
            out["discount_order_share"] = np.where(
                has, (self.c_disc[p] - self.c_disc[s0]) / n, np.nan
            )
            # before discounts: what an order is worth at full price (offers' costs apply to it)
            gross = rev + range_sum(self.p_discount, s0, p, s0)
            out["aov_gross_lifetime"] = np.where(has, gross / n, np.nan)
            out["margin_rate_gross_lifetime"] = np.where(
                gross > 0, (mar + gross - rev) / gross, np.nan
            )
        self._last_order = last
        self._has_order = has

    def _lapse_and_tier(self, out: Arrays, state: dict[str, object]) -> None:
        cfg = self.config
        days = out["days_since_last_order"]
        lapse = np.select(
            [days < cfg.at_risk_days, days < cfg.lapsed_days, days < cfg.churned_days, days >= 0],
            [0.0, 1.0, 2.0, 3.0],
            default=np.nan,
        )
        rev = out["revenue_lifetime"]
        tier = np.select(
            [rev >= cfg.high_tier_revenue, rev >= cfg.mid_tier_revenue], [2.0, 1.0], 0.0
        )
        out["lapse_state"], out["value_tier"] = lapse, tier
        state["lapse_state"] = _decode(lapse, c.LAPSE_STATES)
        state["value_tier"] = _decode(tier, c.VALUE_TIERS)

    def _categories(self, cust: np.ndarray, t: np.ndarray, out: Arrays, fs: FeatureSet) -> None:
        q = len(cust)
        lo = np.searchsorted(self.cat_groups, cust * self.n_cat)
        hi = np.searchsorted(self.cat_groups, (cust + 1) * self.n_cat)
        owner, gi = expand_ranges(lo, hi)
        g = self.cat_groups[gi]
        ci = self.cat_index
        s0, p = ci.start(g), ci.before(g, t[owner])
        keep = p > s0
        owner, g = owner[keep], g[keep]
        spend = range_sum(self.p_cat_rev, s0[keep], p[keep], s0[keep])
        cat = g % self.n_cat
        out["n_categories"] = np.bincount(owner, minlength=q).astype(np.float64)
        rank = np.lexsort((cat, -spend, owner))
        first = np.ones(len(rank), dtype=bool)
        first[1:] = owner[rank][1:] != owner[rank][:-1]
        best = rank[first]
        vocab = pd.Index(_vocabulary(fs, "favourite_category"), dtype=object)
        code_of_cat = _codes(np.array(self.categories, dtype=object), vocab).astype(np.float64)
        code_of_cat[code_of_cat < 0] = np.nan
        fav = np.full(q, np.nan)
        share = np.full(q, np.nan)
        fav[owner[best]] = code_of_cat[cat[best]] if len(best) else fav[owner[best]]
        rev = out["revenue_lifetime"][owner[best]]
        with np.errstate(divide="ignore", invalid="ignore"):
            share[owner[best]] = np.where(rev > 0, spend[best] / rev, np.nan)
        out["favourite_category"], out["top_category_share"] = fav, np.minimum(share, 1.0)

    def _events(self, cust: np.ndarray, t: np.ndarray, out: Arrays) -> None:
        e = self.events
        families = [(FRICTION_EVENTS, FRICTION_WINDOWS), (ENGAGEMENT_EVENTS, ENGAGEMENT_WINDOWS)]
        for names, windows in families:
            for event, stem in names.items():
                g = cust * self.n_types + c.EVENT_TYPES.index(event)
                p = e.before(g, t)
                for w in windows:
                    out[f"{stem}_{w}d"] = (p - e.before(g, t - w * NS_PER_DAY)).astype(np.float64)
                if names is FRICTION_EVENTS:
                    out[f"{stem}_lifetime"] = (p - e.start(g)).astype(np.float64)

    def _contacts(
        self, cust: np.ndarray, t: np.ndarray, out: Arrays, state: dict[str, object], fs: FeatureSet
    ) -> None:
        k = self.contacts
        s0, p = k.start(cust), k.before(cust, t)
        has = p > s0
        for w in CONTACT_WINDOWS:
            out[f"contacts_{w}d"] = (p - k.before(cust, t - w * NS_PER_DAY)).astype(np.float64)
        last_pos = np.maximum(p - 1, 0)
        last_ts = np.where(has, k.ts[last_pos], 0) if len(k) else np.zeros(len(t), np.int64)
        out["days_since_last_contact"] = np.where(has, (t - last_ts) / NS_PER_DAY, np.nan)
        after_order = k.at_or_before(cust, self._last_order)
        out["journey_stage"] = np.where(self._has_order, p - np.maximum(after_order, s0), p - s0)
        out["journey_stage"] = out["journey_stage"].astype(np.float64)
        row: np.ndarray = np.zeros(len(t), np.int64)
        offer: np.ndarray = np.full(len(t), None, dtype=object)
        if len(k):
            row = self.sent_rows[k.order[last_pos]]
            offer = self.contact_offer[row].copy()
            offer[~has] = None
        vocab = pd.Index(_vocabulary(fs, "last_offer_type"), dtype=object)
        type_code = np.full(len(t), np.nan)
        if len(k):
            tc = self.contact_type[row]
            names = np.array(c.OFFER_TYPES, dtype=object)[np.maximum(tc, 0)]
            mapped = _codes(names, vocab).astype(np.float64)
            type_code = np.where(has & (tc >= 0) & (mapped >= 0), mapped, np.nan)
        out["last_offer_type"] = type_code
        responded = np.zeros(len(t), dtype=bool)
        if len(k):
            r = self.responses
            resp_events = r.before(row, t) > r.start(row) if len(r) else responded
            orders_after = self.orders.before(cust, t) > self.orders.before(cust, last_ts)
            responded = resp_events | orders_after
        out["last_contact_responded"] = np.where(has, responded.astype(np.float64), np.nan)
        state["last_offer_id"] = pd.array(offer, dtype="string")

    def _consent(
        self, cust: np.ndarray, t: np.ndarray, out: Arrays, state: dict[str, object]
    ) -> None:
        s = self.consent
        unknown = float(CONSENT_STATES.index("unknown"))
        for i, ch in enumerate(c.CHANNELS):
            g = cust * len(c.CHANNELS) + i
            s0, p = s.start(g), s.before(g, t)
            code = np.full(len(t), unknown)
            if len(s):
                last = self.consent_status[s.order[np.maximum(p - 1, 0)]]
                code = np.where(p > s0, last.astype(np.float64), unknown)
            out[f"consent_{ch}"] = code
            state[f"consent_{ch}"] = _decode(code, CONSENT_STATES)


def _decode(codes: np.ndarray, vocabulary: tuple[str, ...]) -> pd.api.extensions.ExtensionArray:
    names = np.array([*vocabulary, None], dtype=object)
    idx = np.where(np.isnan(codes), len(vocabulary), np.nan_to_num(codes, nan=0)).astype(np.int64)
    return pd.array(names[idx], dtype="string")


def _vocabulary(fs: FeatureSet, name: str) -> tuple[str, ...]:
    return fs.feature(name).vocabulary if name in fs.columns else ()
