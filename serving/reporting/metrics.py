"""The campaign report, computed from plain DataFrames (see `serving.reporting.load`).

Units and definitions (stated again in every report's `definitions`):

- A *contact* is an `offer` or `message` decision; a *holdout* is a `holdout` decision (the
  randomized control, which receives nothing). `none` decisions are neither. The holdout is
  drawn only among customers a contact was due to, after every guardrail, and records the
  contact it replaced (offer, channel, stage, expected value), so the control of a contact is
  a *held-out would-be contact*; a holdout row belongs to the slice of its would-be decision
  (its offer and channel too). Holdouts that record no replaced contact (written before
  store revision 0004, when the holdout was drawn among every known customer) are not a fair
  control; they are used only when there is nothing else, and the report says so.
- Outcomes are attributed to a contact or holdout decision by time, identically in both arms:
  an order, unsubscribe or complaint of the customer from the decision's time until
  `window_days` later or until the customer's next contact/holdout decision, whichever comes
  first (so one order is never counted twice). Deliveries, opens and clicks are the events
  that name the decision (or its contact).
- Conversion: at least one attributed order. Days to purchase: to the first one.
- Net margin = order margin - incentive cost (the cost the order event reports under
  `payload.incentive_cost`; 0 when absent; `revenue` is already after discounts).
- Incremental conversion / margin: mean over contacts minus mean over holdouts, per contact;
  each segment (campaign, wave, offer, channel, stage, value tier, lapse state) is compared
  with the holdouts of the same segment when the holdouts record it, else with all holdouts.
  Intervals are clustered by customer (one customer may appear in several waves).
- Deliveries, opens and clicks: rates are `None` ("not reported") when no event of that type
  was reported at all, never 0%.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd

from serving.reporting.stats import (
    MIN_GROUP,
    Difference,
    Method,
    difference,
    proportion_interval,
    statement,
)
from serving.store.models import ACTION_HOLDOUT, CONTACT_ACTIONS, NOT_SENT

WINDOW_DAYS: Final = 30
REPEAT_HORIZON_DAYS: Final = 182  # two quarters
TREATED: Final = "treated"
HOLDOUT: Final = "holdout"
DIMENSIONS: Final = (
    "campaign_id",
    "wave",
    "offer_id",
    "channel",
    "stage",
    "value_tier",
    "lapse_state",
)
ORDER: Final = "order"
_FLAG_EVENTS: Final = {"delivered": "delivered", "opened": "open", "clicked": "click"}
_WINDOW_EVENTS: Final = {"unsubscribed": "unsubscribe", "complained": "complaint"}


def _attribute_window(arms: pd.DataFrame, events: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Attributed event rows: events joined to the decision whose window holds them."""
    if arms.empty or events.empty:
        return pd.DataFrame(columns=["decision_id", "type", "ts_event", "revenue", "margin", "ic"])
    w = arms[["decision_id", "customer_id", "ts"]].sort_values(["customer_id", "ts"])
    nxt = w.groupby("customer_id")["ts"].shift(-1)
    limit = w["ts"] + pd.Timedelta(days=window_days)
    w = w.assign(end=limit.where(nxt.isna() | (nxt >= limit), nxt))
    ev = events.rename(columns={"ts": "ts_event", "incentive_cost": "ic"})[
        ["customer_id", "type", "ts_event", "revenue", "margin", "ic"]
    ]
    j = w.merge(ev, on="customer_id")
    j = j[(j["ts_event"] >= j["ts"]) & (j["ts_event"] < j["end"])]
    return j[["decision_id", "type", "ts_event", "revenue", "margin", "ic"]]


def attribute_outcomes(
    decisions: pd.DataFrame, events: pd.DataFrame, window_days: int = WINDOW_DAYS
) -> pd.DataFrame:
    """One row per contact or holdout decision with its arm, segments and outcomes."""
    arms = decisions[decisions["action"].isin([*CONTACT_ACTIONS, ACTION_HOLDOUT])].copy()
    arms["arm"] = np.where(arms["action"] == ACTION_HOLDOUT, HOLDOUT, TREATED)
    arms["wave"] = arms["ts"].dt.strftime("%G-W%V")
    arms["sent"] = (arms["arm"] == TREATED) & (arms["contact_status"] != NOT_SENT)
    linked = events[events["decision_id"].isin(arms["decision_id"])]
    for col, etype in _FLAG_EVENTS.items():
        ids = linked.loc[linked["type"] == etype, "decision_id"]
        arms[col] = arms["decision_id"].isin(ids)
    att = _attribute_window(arms, events, window_days)
    for col, etype in _WINDOW_EVENTS.items():
        arms[col] = arms["decision_id"].isin(att.loc[att["type"] == etype, "decision_id"])
    orders = att[att["type"] == ORDER]
    agg = orders.groupby("decision_id").agg(
        first_order_ts=("ts_event", "min"),
        orders=("ts_event", "size"),
        revenue=("revenue", "sum"),
        margin=("margin", "sum"),
        incentive_cost=("ic", "sum"),
    )
    arms = arms.merge(agg, left_on="decision_id", right_index=True, how="left")
    arms["orders"] = arms["orders"].fillna(0).astype(int)
    arms["first_order_ts"] = pd.to_datetime(arms["first_order_ts"])
    for col in ("revenue", "margin", "incentive_cost"):
        arms[col] = arms[col].fillna(0.0)
    arms["converted"] = arms["orders"] > 0
    arms["days_to_purchase"] = (arms["first_order_ts"] - arms["ts"]).dt.total_seconds() / 86400
    arms["net_margin"] = arms["margin"] - arms["incentive_cost"]
    return arms.reset_index(drop=True)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _diff_fields(prefix: str, d: Difference) -> dict[str, Any]:
    return {
        f"{prefix}": d.estimate,
        f"{prefix}_ci_low": d.ci_low,
        f"{prefix}_ci_high": d.ci_high,
        f"{prefix}_conclusion": d.conclusion,
    }


def reported_types(events: pd.DataFrame) -> frozenset[str]:
    """The engagement event types (delivered, opened, clicked) reported at least once."""
    seen = set(events["type"].unique()) if len(events) else set()
    return frozenset(col for col, etype in _FLAG_EVENTS.items() if etype in seen)


def group_differences(
    treated: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    method: Method = "normal",
    min_group: int = MIN_GROUP,
    seed: int = 0,
) -> tuple[Difference, Difference]:
    """(incremental conversion, incremental net margin) per contact, clustered by customer."""
    kw: dict[str, Any] = {
        "method": method,
        "min_group": min_group,
        "seed": seed,
        "treated_clusters": treated["customer_id"].to_numpy(dtype=object),
        "holdout_clusters": holdout["customer_id"].to_numpy(dtype=object),
    }
    conv = difference(treated["converted"], holdout["converted"], **kw)
    margin = difference(treated["net_margin"], holdout["net_margin"], **kw)
    return conv, margin


def group_row(
    treated: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    method: Method = "normal",
    min_group: int = MIN_GROUP,
    seed: int = 0,
    reported: frozenset[str] = frozenset(_FLAG_EVENTS),
) -> dict[str, Any]:
    """Every metric of one group of contacts against its holdout (JSON-able values).

    `reported`: the engagement columns (`delivered`, `opened`, `clicked`) whose events were
    reported at all; the others are None (not reported), never 0.
    """
    n = len(treated)
    sent = int(treated["sent"].sum())
    delivered = int(treated["delivered"].sum())
    engaged_base = delivered or sent  # open/click rates over deliveries when reported
    conv, margin = group_differences(
        treated, holdout, method=method, min_group=min_group, seed=seed
    )
    days = treated["days_to_purchase"].dropna()
    row: dict[str, Any] = {
        "contacts": n,
        "sent": sent,
        "delivered": delivered if "delivered" in reported else None,
        "open_rate": _rate(int(treated["opened"].sum()), engaged_base)
        if "opened" in reported
        else None,
        "click_rate": _rate(int(treated["clicked"].sum()), engaged_base)
        if "clicked" in reported
        else None,
        "conversions": int(treated["converted"].sum()),
        "conversion_rate": _rate(int(treated["converted"].sum()), n),
        "median_days_to_purchase": float(days.median()) if len(days) else None,
        "revenue_per_contact": float(treated["revenue"].mean()) if n else None,
        "margin_per_contact": float(treated["margin"].mean()) if n else None,
        "incentive_cost": float(treated["incentive_cost"].sum()),
        "incentive_cost_per_contact": float(treated["incentive_cost"].mean()) if n else None,
        "net_margin_per_contact": float(treated["net_margin"].mean()) if n else None,
        "unsubscribes": int(treated["unsubscribed"].sum()),
        "complaints": int(treated["complained"].sum()),
        "unsubscribe_rate": _rate(int(treated["unsubscribed"].sum()), n),
        "holdouts": len(holdout),
        "holdout_conversion_rate": _rate(int(holdout["converted"].sum()), len(holdout)),
        "holdout_net_margin_per_customer": float(holdout["net_margin"].mean())
        if len(holdout)
        else None,
        "holdout_unsubscribe_rate": _rate(int(holdout["unsubscribed"].sum()), len(holdout)),
        **_diff_fields("incremental_conversion", conv),
        **_diff_fields("incremental_margin", margin),
        "statement": statement(conv, margin, min_group),
    }
    return row


def group_table(
    outcomes: pd.DataFrame,
    dimension: str,
    *,
    method: Method = "normal",
    min_group: int = MIN_GROUP,
    seed: int = 0,
    reported: frozenset[str] = frozenset(_FLAG_EVENTS),
) -> list[dict[str, Any]]:
    """One `group_row` per value of `dimension` among the contacts (largest group first)."""
    treated = outcomes[outcomes["arm"] == TREATED]
    holdout = outcomes[outcomes["arm"] == HOLDOUT]
    same_segment = holdout[dimension].notna().any()
    rows = []
    counts = treated[dimension].astype(object).fillna("(unknown)").value_counts()
    for value, _ in counts.items():
        key = treated[dimension].astype(object).fillna("(unknown)") == value
        if same_segment:
            control = holdout[holdout[dimension].astype(object).fillna("(unknown)") == value]
        else:
            control = holdout
        row = group_row(
            treated[key], control, method=method, min_group=min_group, seed=seed, reported=reported
        )
        group = value.item() if isinstance(value, np.generic) else value
        rows.append(
            {
                "dimension": dimension,
                "group": group if isinstance(group, str) else str(group),
                "control": "same segment" if same_segment else "all holdouts",
                **row,
            }
        )
    return rows


def group_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The overall row then every group row: the table the CSV output holds."""
    return [summary["overall"], *(r for rows in summary["groups"].values() for r in rows)]


def intention_to_treat(
    outcomes: pd.DataFrame,
    *,
    method: Method = "normal",
    min_group: int = MIN_GROUP,
    seed: int = 0,
) -> dict[str, Any]:
    """Per customer: the programme's effect on everyone it meant to contact.

    The unit is the customer: every customer with a contact or a held-out would-be contact,
    in the arm their assignment put them (the holdout is a stable hash, so a customer stays in
    one arm in every wave), with the outcomes of all their decisions summed (net margin) or
    combined (converted at least once). Contacts reported `not_sent` stay in the treated arm
    (assignment, not receipt, defines it). It applies only when no customer is in both arms
    (e.g. after the holdout's salt changed); otherwise it is not computed.
    """
    per = outcomes.groupby("customer_id").agg(
        arms=("arm", "nunique"),
        arm=("arm", "first"),
        converted=("converted", "max"),
        net_margin=("net_margin", "sum"),
    )
    mixed = int((per["arms"] > 1).sum())
    if mixed or per.empty:
        why = f"{mixed} customers are in both arms" if mixed else "no customer to compare"
        return {"applies": False, "why_not": why}
    t, h = per[per["arm"] == TREATED], per[per["arm"] == HOLDOUT]
    kw: dict[str, Any] = {"method": method, "min_group": min_group, "seed": seed}
    conv = difference(t["converted"].astype(float), h["converted"].astype(float), **kw)
    margin = difference(t["net_margin"], h["net_margin"], **kw)
    return {
        "applies": True,
        "unit": "customer",
        "customers_treated": len(t),
        "customers_held_out": len(h),
        **_diff_fields("incremental_conversion_per_customer", conv),
        **_diff_fields("incremental_margin_per_customer", margin),
    }


def conversion_curve(outcomes: pd.DataFrame, window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """Cumulative share converted by day since the decision, for contacts and holdouts."""
    days = np.arange(window_days + 1)
    out: dict[str, Any] = {"day": days}
    for arm in (TREATED, HOLDOUT):
        d = outcomes.loc[outcomes["arm"] == arm, "days_to_purchase"].to_numpy(float)
        n = int((outcomes["arm"] == arm).sum())
        out[arm] = [float(np.sum(d < day + 1) / n) for day in days] if n else [math.nan] * len(days)
    return pd.DataFrame(out)


def repeat_purchase(
    outcomes: pd.DataFrame,
    events: pd.DataFrame,
    as_of: pd.Timestamp | None,
    horizon_days: int = REPEAT_HORIZON_DAYS,
) -> list[dict[str, Any]]:
    """Per arm: share of reactivations followed by another order within two quarters.

    Only reactivations whose first order is at least `horizon_days` before `as_of` (the last
    event seen) are counted, so young ones cannot understate the rate.
    """
    orders = events.loc[events["type"] == ORDER, ["customer_id", "ts"]]
    rows = []
    for arm in (TREATED, HOLDOUT):
        conv = outcomes[(outcomes["arm"] == arm) & outcomes["converted"]]
        horizon = pd.Timedelta(days=horizon_days)
        mature = conv if as_of is None else conv[conv["first_order_ts"] + horizon <= as_of]
        j = mature[["decision_id", "customer_id", "first_order_ts"]].merge(orders, on="customer_id")
        later = j[(j["ts"] > j["first_order_ts"]) & (j["ts"] <= j["first_order_ts"] + horizon)]
        n, k = len(mature), int(later["decision_id"].nunique())
        lo, hi = proportion_interval(k, n)
        if n == 0:
            said = f"Not measurable yet: no reactivation is {horizon_days} days old."
        else:
            said = f"{k} of {n} reactivated customers bought again within {horizon_days} days."
        rows.append(
            {
                "arm": arm,
                "reactivations": len(conv),
                "mature_reactivations": n,
                "repeat_buyers": k,
                "repeat_rate": _rate(k, n),
                "ci_low": lo,
                "ci_high": hi,
                "statement": said,
            }
        )
    return rows


def guardrail_blocks(decisions: pd.DataFrame) -> list[dict[str, Any]]:
    """Per guardrail reason: blocked options and the decisions it touched (most first)."""
    pairs = [
        (did, e.get("reason"))
        for did, excluded in zip(decisions["decision_id"], decisions["excluded"], strict=True)
        for e in excluded
        if isinstance(e, dict) and e.get("reason")
    ]
    if not pairs:
        return []
    df = pd.DataFrame(pairs, columns=["decision_id", "reason"])
    agg = df.groupby("reason").agg(
        blocked_options=("decision_id", "size"), decisions=("decision_id", "nunique")
    )
    agg = agg.sort_values(["decisions", "blocked_options"], ascending=False)
    return [
        {"reason": str(r), "blocked_options": int(b), "decisions": int(d)}
        for r, b, d in agg.itertuples()
    ]


def no_contact_reasons(decisions: pd.DataFrame) -> dict[str, int]:
    """Why decisions sent nothing: first reason code of each `none` decision."""
    none = decisions[decisions["action"] == "none"]
    first = [r[0] if len(r) else "(none given)" for r in none["reasons"]]
    return {str(k): int(v) for k, v in pd.Series(first).value_counts().items()}


def calibration(outcomes: pd.DataFrame, n_bins: int = 10) -> list[dict[str, Any]]:
    """Predicted vs realised conversion of contacts by decile of the prediction.

    Empty when fewer than `5 * n_bins` contacts carry a logged prediction.
    """
    t = outcomes[(outcomes["arm"] == TREATED) & outcomes["predicted_conversion"].notna()]
    if len(t) < 5 * n_bins:
        return []
    bins = pd.qcut(t["predicted_conversion"].rank(method="first"), n_bins, labels=False)
    rows = []
    for b, g in t.groupby(bins):
        k, n = int(g["converted"].sum()), len(g)
        lo, hi = proportion_interval(k, n)
        rows.append(
            {
                "decile": int(b) + 1,
                "n": n,
                "predicted": float(g["predicted_conversion"].mean()),
                "realised": k / n,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return rows
