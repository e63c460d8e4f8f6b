"""`winback simulate`: what a candidate policy (or model) would have earned on the logged rows.

The logged rows are the offer-response frame of a data directory (e.g. one written by
`winback export-log`): every past contact or holdout with its logged propensity and its
outcomes. For each row the decision engine decides again, with the candidate policy and the
candidate model (or rules only), from the row's own features as of its time; the candidate is
evaluated greedily (its exploration is switched off; its holdout group stays, and a held-out
or uncontacted customer counts as the `holdout` arm). Off-policy estimates (IPS, SNIPS and,
with a model, doubly robust) then give its conversions, margin, incentive cost and
unsubscribes, next to the logging policy's own (their on-policy means), with paired bootstrap
intervals for the difference. The doubly robust reward model of each metric is the candidate
model's own prediction: P(convert) for conversions, P(convert) x (order margin - incentive
cost) for margin, P(convert) x incentive cost for the cost; unsubscribes have none.

Only rows the logging policy contacted or held out are logged, so the comparison covers the
customers the current policy acted on; customers it chose not to contact are not in the log.

A candidate model must be judged on rows it was not trained on. On its own training rows it has
learned which customers happened to convert, so the candidate picks their logged option
exactly where it paid off and every estimate is biased upward (measured on the synthetic world:
8,000 customers, a model trained on all of its log and evaluated on all of it estimated 0.126
conversions per row [0.107, 0.148] for a candidate whose true value was 0.096; trained on an
independent world, 0.100 [0.087, 0.118] for a true 0.098). `since` keeps the rows logged at or
after a time: pass the end of the model's training window (`TRAIN_UNTIL_KEY` in the model's
metadata, when the training recorded it, is the default). Without either, the simulation
says in `warnings` that its rows may include the model's training rows.
This module imports `serving` (the engine) and `training` (the estimators): it is
orchestration across packages, so it lives at the edge (cli), keeping training free of serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.datadir import load_data_dir
from features.engine import FeatureEngine
from features.featureset import FeatureSet
from features.frames import offer_response_frame
from features.offers import OfferCatalog
from models.policy_model import PolicyModel, costs_from_catalog
from serving.decide import score_rows
from serving.engine import CustomerBatch, OptionSet, decide
from serving.model_scorer import PolicyScorer
from serving.policy import Exploration, FrequencyCaps, MarginFloor, Policy
from training.errors import TrainingError
from training.fit import TRAIN_UNTIL_KEY, logged_reward
from training.policy_value import LoggedData, evaluate_policies, policy_difference

METRICS = ("conversions", "margin", "incentive_cost", "unsubscribes")
MIN_SUPPORT = 30
"""Fewest logged rows that took the option a rule makes the candidate choose, for the logged
data to say anything about that rule's effect."""
CONTACT_ACTIONS = ("offer", "message")
TABLE_COLUMNS = (
    "current",
    "candidate",
    "candidate_low",
    "candidate_high",
    "difference",
    "diff_low",
    "diff_high",
    "candidate_ips",
    "candidate_dr",
    "candidate_dr_low",
    "candidate_dr_high",
)


@dataclass(frozen=True)
class Simulation:
    """Per metric (rows) the current and candidate values per logged row, with CIs.

    `table` columns: current (on-policy mean), candidate with candidate_low/high (SNIPS,
    bootstrap), difference with diff_low/high (SNIPS, paired bootstrap), candidate_ips,
    candidate_dr with candidate_dr_low/high (NaN without a model, and for unsubscribes, which
    the model does not predict). `incremental_margin` is
    the margin against holding everyone out, for both policies (SNIPS). `since` is the first
    logged time kept (None: all rows); `warnings` say what may bias the estimates.
    """

    rows: int
    contact_share_current: float
    contact_share_candidate: float
    table: pd.DataFrame
    incremental_margin: pd.DataFrame
    choices: pd.Series
    since: pd.Timestamp | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def candidate_choices(
    df: pd.DataFrame,
    fs: FeatureSet,
    catalog: OfferCatalog,
    policy: Policy,
    model: PolicyModel | None,
) -> np.ndarray:
    """The option the candidate gives each logged row (`holdout` = nothing sent)."""
    options = OptionSet.from_catalog(catalog, policy.offer_budget_defaults)
    greedy = policy.model_copy(update={"exploration": Exploration(epsilon=0.0)})
    scorer = PolicyScorer(model, "candidate") if model is not None else None
    out = np.full(len(df), c.HOLDOUT, dtype=object)
    for ts, idx in df.groupby(c.TS, sort=True).indices.items():
        x = df.iloc[idx][list(fs.columns)].to_numpy(dtype=float)
        ids = df.iloc[idx][c.CUSTOMER_ID].astype(str).to_numpy(dtype=object)
        at = pd.Timestamp(str(ts)).to_pydatetime()
        batch = CustomerBatch.from_features(x, fs, ids, at, np.ones(len(idx), bool), {})
        d = decide(batch, options, greedy, score_rows(scorer, x, fs, options), at, "auto")
        sent = np.isin(d.action, CONTACT_ACTIONS)
        out[idx] = np.where(sent, d.offer_id, c.HOLDOUT)
    return out


def _closest_contacts_days(df: pd.DataFrame) -> float | None:
    """Fewest days between two logged contacts of one customer (None: nobody has two)."""
    sent = df[df[c.OFFER_ID] != c.HOLDOUT][[c.CUSTOMER_ID, c.TS]].sort_values([c.CUSTOMER_ID, c.TS])
    gaps = sent.groupby(c.CUSTOMER_ID)[c.TS].diff().dropna()
    return float(gaps.min().total_seconds() / 86_400) if len(gaps) else None


def judgeability_warnings(
    df: pd.DataFrame,
    fs: FeatureSet,
    catalog: OfferCatalog,
    policy: Policy,
    model: PolicyModel | None,
    choice: np.ndarray,
) -> tuple[str, ...]:
    """What the logged data cannot judge of the candidate: its frequency caps and margin
    floor, each relaxed in turn. A rule whose removal changes no choice on the logged rows has
    no measurable effect here (its estimate is that of the policy without it); a rule that
    changes choices, but towards options the log rarely took, rests on a handful of rows."""
    out = []
    relaxed = {"frequency caps": ("frequency", FrequencyCaps()),
               "margin floor": ("margin_floor", MarginFloor())}  # fmt: skip
    logged = df[c.OFFER_ID].astype(str).to_numpy()
    for name, (field_name, off) in relaxed.items():
        if getattr(policy, field_name) == off:
            continue  # the candidate has no such rule
        without = policy.model_copy(update={field_name: off})
        other = candidate_choices(df, fs, catalog, without, model)
        changed = other != choice
        if not changed.any():
            why = ""
            if name == "frequency caps":
                gap = _closest_contacts_days(df)
                why = (
                    " (no customer has two logged contacts)"
                    if gap is None
                    else f" (one customer's logged contacts are at least {gap:.0f} days apart)"
                )
            else:
                why = " (it blocks no option the candidate would otherwise choose)"
            out.append(
                f"{name}: the candidate decides every one of the {len(df):,} logged rows "
                f"exactly as it would without them{why}, so their effect cannot be judged on "
                "this data: the estimates are those of the policy without them"
            )
            continue
        support = int((logged[changed] == choice[changed]).sum())
        if support < MIN_SUPPORT:
            out.append(
                f"{name}: change the candidate's choice on {int(changed.sum()):,} logged rows, "
                f"but only {support} of those rows logged the option it then chooses, so "
                "their effect is barely judged on this data"
            )
    return tuple(out)


def _rewards(df: pd.DataFrame, catalog: OfferCatalog) -> dict[str, np.ndarray]:
    """Per logged row: conversion, margin net of the offer's costs borne outside the order
    (`training.fit.logged_reward`: a discount is already in the order's margin), the
    incentive's whole cost, and unsubscribes."""
    converted = df[mf.CONVERTED].to_numpy(dtype=float)
    revenue = df[mf.OUTCOME_REVENUE].to_numpy(dtype=float)
    given = df[c.OFFER_ID].astype(str).to_numpy()
    margin, unit = logged_reward(costs_from_catalog(catalog, catalog.offer_ids), df, given)
    if unit != "margin":  # no margin in the data: unknown, not revenue under another name
        margin = np.full(len(df), np.nan)
    cost = np.zeros(len(df))
    for offer in catalog.offers:
        mine = (given == offer.offer_id) & (converted > 0)
        cost[mine] = offer.cost.revenue_fraction * revenue[mine] + offer.cost.fixed
    return {
        "conversions": converted,
        "margin": margin,
        "incentive_cost": cost,
        "unsubscribes": df[mf.UNSUBSCRIBED].to_numpy(dtype=float),
    }


def reward_models(
    model: PolicyModel, x: np.ndarray, options: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Reward models for DR, (n, len(options)) per metric, from the model's predictions.

    conversions: P(convert); margin: P(convert) x (margin of the order - incentive cost);
    incentive_cost: P(convert) x incentive cost. An option the model does not know gets 0.
    """
    s = model.score(x)
    revenue, margin = model.economics(x)
    cost = model.cost_matrix(revenue)
    per_metric = {
        "conversions": s.p,
        "margin": s.p * (margin[:, None] - cost),
        "incentive_cost": s.p * cost,
    }
    col = {o: j for j, o in enumerate(model.options)}
    out = {}
    for name, value in per_metric.items():
        q = np.zeros((len(x), len(options)))
        for j, o in enumerate(options):
            if o in col:
                q[:, j] = value[:, col[o]]
        out[name] = q
    return out


def simulate(
    data: Path,
    policy: Policy,
    model: PolicyModel | None = None,
    campaign: str | None = None,
    n_boot: int = 300,
    seed: int = 0,
    since: datetime | pd.Timestamp | None = None,
) -> Simulation:
    """Estimate what `policy` (with `model`, else rules only) would have earned on the logged
    contacts and holdouts of data directory `data`, against what the logging policy earned.

    `since` keeps only rows logged at or after that time (UTC when naive); with a model, it
    defaults to the end of the model's training window when its metadata records one.

    Raises:
        TrainingError: no logged rows with complete outcome windows and propensities, or the
            model's recorded training window is not a time.
    """
    ds = load_data_dir(Path(data))
    fs = FeatureSet.from_json(model.feature_set) if model is not None else None
    frame = offer_response_frame(FeatureEngine(ds), feature_set=fs)
    df = frame.data
    start, warnings = _first_row_time(model, since)
    keep = df["window_complete"].to_numpy(bool) & df[c.PROPENSITY].notna().to_numpy()
    if campaign is not None:
        keep &= (df[c.CAMPAIGN_ID] == campaign).to_numpy()
    if start is not None:
        keep &= (_utc(df[c.TS]) >= start).to_numpy()
    df = df[keep].reset_index(drop=True)
    if not len(df):
        raise TrainingError(
            f"{data}: no logged contact or holdout with a propensity and a complete outcome "
            "window"
            + (f" in campaign {campaign!r}" if campaign else "")
            + (f" at or after {start.isoformat()}" if start is not None else "")
        )
    fs = fs or FeatureSet.from_json(frame.spec.notes["feature_set_json"])
    choice = candidate_choices(df, fs, ds.catalog, policy, model)
    warnings = (*warnings, *judgeability_warnings(df, fs, ds.catalog, policy, model, choice))
    options = (*ds.catalog.offer_ids, c.NO_INCENTIVE, c.HOLDOUT)
    action = df[c.OFFER_ID].astype(str).to_numpy()
    prop = df[c.PROPENSITY].to_numpy(dtype=float)
    n, k = len(df), len(options)
    a = np.array([options.index(x) for x in action])
    pi_cand = np.zeros((n, k))
    pi_cand[np.arange(n), [options.index(x) for x in choice]] = 1.0
    # the logging policy: only pi[i, a_i] = p_i enters IPS/SNIPS (the rest spread evenly)
    pi_cur = np.tile((1.0 - prop)[:, None] / (k - 1), (1, k))
    pi_cur[np.arange(n), a] = prop
    pi_hold = np.zeros((n, k))
    pi_hold[:, options.index(c.HOLDOUT)] = 1.0
    q = reward_models(model, df[list(fs.columns)].to_numpy(float), options) if model else {}
    rows = {}
    incr = {}
    for name, reward in _rewards(df, ds.catalog).items():
        logged = LoggedData.from_labels(options, action, prop, reward)
        qq = q.get(name)
        est = evaluate_policies(
            logged, {"current": pi_cur, "candidate": pi_cand}, qq, n_boot=n_boot, seed=seed
        )
        diff = policy_difference(logged, pi_cand, pi_cur, n_boot=n_boot, seed=seed).loc["snips"]
        rows[name] = {
            "current": float(reward.mean()),
            "candidate": est.loc[("candidate", "snips"), "estimate"],
            "candidate_low": est.loc[("candidate", "snips"), "ci_low"],
            "candidate_high": est.loc[("candidate", "snips"), "ci_high"],
            "difference": diff["difference"],
            "diff_low": diff["ci_low"],
            "diff_high": diff["ci_high"],
            "candidate_ips": est.loc[("candidate", "ips"), "estimate"],
        }
        for col, stat in (("", "estimate"), ("_low", "ci_low"), ("_high", "ci_high")):
            dr = est.loc[("candidate", "dr"), stat] if qq is not None else np.nan
            rows[name][f"candidate_dr{col}"] = dr
        if name == "margin":
            for label, pi in (("current", pi_cur), ("candidate", pi_cand)):
                d = policy_difference(logged, pi, pi_hold, n_boot=n_boot, seed=seed).loc["snips"]
                incr[label] = {
                    "estimate": d["difference"],
                    "ci_low": d["ci_low"],
                    "ci_high": d["ci_high"],
                }
    return Simulation(
        rows=n,
        contact_share_current=float(np.mean(action != c.HOLDOUT)),
        contact_share_candidate=float(np.mean(choice != c.HOLDOUT)),
        table=pd.DataFrame(rows).T[list(TABLE_COLUMNS)],
        incremental_margin=pd.DataFrame(incr).T,
        choices=pd.Series(choice, index=df[c.CONTACT_ID].astype(str), name="candidate_option"),
        since=start,
        warnings=warnings,
    )


def _utc(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def _first_row_time(
    model: PolicyModel | None, since: datetime | pd.Timestamp | None
) -> tuple[pd.Timestamp | None, tuple[str, ...]]:
    """The first logged time to keep, and a warning when a model may be judged in-sample."""
    if since is not None:
        t = pd.Timestamp(since)
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")), ()
    if model is None:
        return None, ()
    recorded = model.metadata.get(TRAIN_UNTIL_KEY)
    if recorded is None:
        return None, (
            "the model does not record the end of its training window: rows it was trained on "
            "bias every estimate upward; pass --since with the end of its training window",
        )
    try:
        t = pd.Timestamp(recorded)
    except ValueError as exc:
        raise TrainingError(
            f"model metadata {TRAIN_UNTIL_KEY}: {recorded!r} is not a time ({exc})"
        ) from exc
    # rows strictly after the window (the window's last row trained the model)
    t = (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")) + pd.Timedelta(1, "ns")
    return t, ()
