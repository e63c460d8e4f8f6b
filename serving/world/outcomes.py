"""Drawing a played wave's outcomes from the world's TRUE model, given what was decided.

For every customer of the world: the option actually taken (a recorded `offer`/`message`
contact; `holdout` and `none` are no contact), one uniform draw against the true P(order in
the attribution window) of that option (`TrueResponseModel.probabilities`); a converted
customer places one order at a random time in the window, with the customer's expected order
value times log-normal noise (mean 1), the offer's discount taken off revenue and margin, and
any other incentive's cost reported as `payload.incentive_cost`, so that every order's net
margin is the truth's `margin_if_convert - cost` in expectation. A contact also draws opens,
clicks, unsubscribes and complaints as the generator does (`campaigns.engagement`; no
delivery events: the world has no delivery receipts). Every outcome is recorded through
`serving.events.record_event`, the path of `POST /v1/events`.

Between the end of the window and the next wave, customers who have not dropped out keep
buying (Poisson at their rate). Those orders are recorded through the same path (no decision's
window holds them, so the report ignores them), so the store, and a log exported from it,
holds the same history as the snapshot of the next wave.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features import constants as c
from features.synthetic import config as wcfg
from features.synthetic.campaigns import engagement
from features.synthetic.generate import SyntheticWorld
from features.synthetic.truth import CustomerState
from serving.engine import OptionSet
from serving.events import record_event
from serving.store import EventRecord, Store

DISCOUNT_TYPES = ("percent_discount", "amount_discount")
POSTED_ENGAGEMENT = ("open", "click", "unsubscribe", "complaint")
CONTACT_ACTIONS = ("offer", "message")
MEAN_DELAY_DAYS = 6.0


@dataclass
class Drawn:
    """One wave's draws, as rows to append to the world's tables (contract columns)."""

    orders: pd.DataFrame
    events: pd.DataFrame
    posted: dict[str, int]


def taken_options(
    world: SyntheticWorld, decisions: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per world customer: (truth option index taken, decision id, channel, contacted).

    Customers without a decision, held out or not contacted take `holdout` (no contact).
    """
    ids = world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str).to_numpy()
    n = len(ids)
    option = {o: j for j, o in enumerate(world.model.option_ids)}
    hold = option[c.HOLDOUT]
    col = np.full(n, hold, dtype=np.int64)
    decision_id = np.full(n, None, dtype=object)
    channel = np.full(n, None, dtype=object)
    rows = pd.Index(ids).get_indexer(pd.Index(decisions[c.CUSTOMER_ID].astype(str)))
    known = rows >= 0
    sent = decisions["action"].isin(CONTACT_ACTIONS).to_numpy() & known
    offers = decisions[c.OFFER_ID].astype(object).to_numpy()
    col[rows[sent]] = [option[str(o)] for o in offers[sent]]
    decision_id[rows[known]] = decisions["decision_id"].to_numpy(dtype=object)[known]
    channel[rows[sent]] = decisions[c.CHANNEL].to_numpy(dtype=object)[sent]
    return col, decision_id, channel, col != hold


def _epoch(at: datetime) -> int:
    return int(pd.Timestamp(at).timestamp())


def draw_and_record(
    store: Store,
    options: OptionSet,
    world: SyntheticWorld,
    state: CustomerState,
    decisions: pd.DataFrame,
    at: datetime,
    until: datetime,
    wave_id: str,
    rng: np.random.Generator,
) -> Drawn:
    """Draw the wave's outcomes, record them in the store, return them as table rows."""
    ids = world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str).to_numpy()
    n = len(ids)
    window = world.config.attribution_days
    col, decision_id, channel, contacted = taken_options(world, decisions)
    ar = np.arange(n)
    p = world.model.probabilities(state)[ar, col]
    cost = world.model.offer_costs(state)[ar, col]
    converted = rng.random(n) < p
    delay = np.clip(rng.exponential(MEAN_DELAY_DAYS, n), 0.05, window - 1.05)
    noise = np.exp(wcfg.ORDER_VALUE_SIGMA * rng.standard_normal(n) - wcfg.ORDER_VALUE_SIGMA**2 / 2)
    offers = (*world.catalog.offers, None, None)
    is_discount = np.array([o is not None and o.type in DISCOUNT_TYPES for o in offers])[col]
    incentive_ids = {oid for oid, o in options.offers.items() if o.is_incentive}
    is_incentive = np.array([o is not None and o.offer_id in incentive_ids for o in offers])[col]
    offer_ids = np.array([o.offer_id if o is not None else None for o in offers], object)[col]
    favourite = np.asarray(wcfg.CATEGORIES, dtype=object)[world.population.favorite]
    gross = state.revenue_if_convert * noise
    # the offer's cost scales with the order's value as the catalog prices it
    unit_cost = np.where(
        state.revenue_if_convert > 0, cost / np.maximum(state.revenue_if_convert, 1e-9), 0.0
    )
    order_cost = np.where(contacted, unit_cost * gross, 0.0)
    discount = np.where(is_discount, order_cost, 0.0)
    other_cost = np.where(is_incentive & ~is_discount, order_cost, 0.0)
    revenue = gross - discount
    margin = state.margin_if_convert * noise - discount
    order_ts = np.array([at + timedelta(days=float(d)) for d in delay], dtype="datetime64[ns]")
    posted = {"order": 0}
    order_rows: list[tuple[object, ...]] = []
    for i in np.flatnonzero(converted):
        eid = f"{wave_id}-order-{ids[i]}"
        ts = pd.Timestamp(order_ts[i]).to_pydatetime()
        record_event(
            store,
            options,
            EventRecord(
                event_id=eid,
                customer_id=str(ids[i]),
                ts=ts,
                type="order",
                decision_id=decision_id[i] if contacted[i] else None,
                offer_id=offer_ids[i] if contacted[i] else None,
                revenue=round(float(revenue[i]), 2),
                margin=round(float(margin[i]), 2),
                payload={
                    c.CATEGORY: str(favourite[i]),
                    c.DISCOUNT_AMOUNT: round(float(discount[i]), 2),
                    "incentive_cost": round(float(other_cost[i]), 2),
                },
            ),
            received=ts,  # the world's clock: an opt-out takes effect in the played time
        )
        posted["order"] += 1
        order_rows.append(
            (eid, ids[i], order_ts[i], revenue[i], margin[i], favourite[i], discount[i])
        )
    converted_ts = np.where(converted, order_ts, np.datetime64("NaT"))
    event_rows = _engagement(
        store, options, world, state, at, wave_id, rng, ids, contacted, channel, decision_id,
        converted_ts, posted,
    )  # fmt: skip
    ongoing = _ongoing(world, state, at, until, wave_id, rng, ids, favourite)
    for eid, cid, at_ns, rev, mar, cat, _discount in ongoing:
        when = pd.Timestamp(at_ns).to_pydatetime()
        record_event(
            store,
            options,
            EventRecord(event_id=str(eid), customer_id=str(cid), ts=when, type="order",
                        revenue=rev, margin=mar,
                        payload={c.CATEGORY: str(cat), c.DISCOUNT_AMOUNT: 0.0}),
            received=when,
        )  # fmt: skip
    posted["ongoing order"] = len(ongoing)
    order_rows += ongoing
    orders = pd.DataFrame(
        order_rows,
        columns=[
            c.ORDER_ID,
            c.CUSTOMER_ID,
            c.ORDER_TS,
            c.REVENUE,
            c.MARGIN,
            c.CATEGORY,
            c.DISCOUNT_AMOUNT,
        ],
    )
    return Drawn(orders, event_rows, posted)


def _engagement(
    store: Store,
    options: OptionSet,
    world: SyntheticWorld,
    state: CustomerState,
    at: datetime,
    wave_id: str,
    rng: np.random.Generator,
    ids: np.ndarray,
    contacted: np.ndarray,
    channel: np.ndarray,
    decision_id: np.ndarray,
    order_ts: np.ndarray,
    posted: dict[str, int],
) -> pd.DataFrame:
    """Opens, clicks, unsubscribes and complaints of the contacts, recorded and returned."""
    sent = np.flatnonzero(contacted)
    ch = np.array([c.CHANNELS.index(str(x)) for x in channel[sent]], dtype=np.int64)
    conv = order_ts[sent]
    converted_at = np.where(np.isnat(conv), -1, conv.astype("datetime64[s]").astype(np.int64))
    p_unsub = world.model.unsubscribe_probability(state.take(sent), ch)
    drawn = engagement(rng, _epoch(at), ch, converted_at, p_unsub)
    rows = []
    for kind in POSTED_ENGAGEMENT:
        mask, when = drawn[kind]
        for j in np.flatnonzero(mask):
            i = sent[j]
            eid = f"{wave_id}-{kind}-{ids[i]}"
            ts = pd.Timestamp(int(when[j]), unit="s").to_pydatetime()
            record_event(
                store,
                options,
                EventRecord(
                    event_id=eid,
                    customer_id=str(ids[i]),
                    ts=ts,
                    type=kind,
                    channel=str(channel[i]),
                    contact_id=str(decision_id[i]),
                    decision_id=str(decision_id[i]),
                ),
                received=ts,
            )
            posted[kind] = posted.get(kind, 0) + 1
            rows.append((eid, ids[i], np.datetime64(ts, "ns"), kind, str(decision_id[i])))
    return pd.DataFrame(rows, columns=[c.EVENT_ID, c.CUSTOMER_ID, c.TS, c.EVENT_TYPE, c.CONTACT_ID])


def _ongoing(
    world: SyntheticWorld,
    state: CustomerState,
    at: datetime,
    until: datetime,
    wave_id: str,
    rng: np.random.Generator,
    ids: np.ndarray,
    favourite: np.ndarray,
) -> list[tuple[str, str, np.datetime64, float, float, str, float]]:
    """Orders of still-active customers after the window until the next wave."""
    start = at + timedelta(days=world.config.attribution_days)
    days = (until - start).total_seconds() / 86_400
    if days <= 0:
        return []
    pop = world.population
    alive = pop.death_s > _epoch(start)
    k = rng.poisson(np.where(alive, pop.rate * days / wcfg.YEAR_DAYS, 0.0))
    cust = np.repeat(np.arange(len(ids)), k)
    offs = rng.random(len(cust)) * days
    noise = np.exp(
        wcfg.ORDER_VALUE_SIGMA * rng.standard_normal(len(cust)) - wcfg.ORDER_VALUE_SIGMA**2 / 2
    )
    base = pd.Timestamp(start).to_datetime64().astype("datetime64[ns]")
    ts = base + (offs * 86_400e6).astype("timedelta64[us]")  # whole microseconds
    return [
        (
            f"{wave_id}-o{j}",
            str(ids[i]),
            ts[j],
            round(float(state.revenue_if_convert[i] * noise[j]), 2),
            round(float(state.margin_if_convert[i] * noise[j]), 2),
            str(favourite[i]),
            0.0,
        )
        for j, i in enumerate(cust)
    ]
