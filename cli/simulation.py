"""`winback simulate`: what a candidate policy (or model) would have earned on the logged rows.

The logged rows are the offer-response frame of a data directory (e.g. one written by
`winback export-log`): every past contact or holdout with its logged propensity and its
outcomes. For each row the decision engine decides again, with the candidate policy and the
candidate model (or rules only), from the row's own features as of its time; the candidate is
evaluated greedily (its exploration is switched off; its holdout group stays, and a held-out
or uncontacted customer counts as the `holdout` arm). Off-policy estimates (IPS, SNIPS and,
with a model, doubly robust with the model's predicted margin as the reward model) then give
its conversions, margin, incentive cost and unsubscribes, next to the logging policy's own
(their on-policy means), with paired bootstrap intervals for the difference.

Only rows the logging policy contacted or held out are logged, so the comparison covers the
customers the current policy acted on; customers it chose not to contact are not in the log.
This module imports `serving` (the engine) and `training` (the estimators): it is
orchestration across packages, so it lives at the edge (cli), keeping training free of serving.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from models.policy_model import PolicyModel
from serving.decide import score_rows
from serving.engine import CustomerBatch, OptionSet, decide
from serving.model_scorer import PolicyScorer
from serving.policy import Exploration, Policy
from training.errors import TrainingError
from training.policy_value import LoggedData, evaluate_policies, policy_difference

METRICS = ("conversions", "margin", "incentive_cost", "unsubscribes")
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
)


@dataclass(frozen=True)
class Simulation:
    """Per metric (rows) the current and candidate values per logged row, with CIs.

    `table` columns: current (on-policy mean), candidate with candidate_low/high (SNIPS,
    bootstrap), difference with diff_low/high (SNIPS, paired bootstrap), candidate_ips,
    candidate_dr (NaN without a model; margin only). `incremental_margin` is
    the margin against holding everyone out, for both policies (SNIPS).
    """

    rows: int
    contact_share_current: float
    contact_share_candidate: float
    table: pd.DataFrame
    incremental_margin: pd.DataFrame
    choices: pd.Series


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


def _rewards(df: pd.DataFrame, catalog: OfferCatalog) -> dict[str, np.ndarray]:
    converted = df[mf.CONVERTED].to_numpy(dtype=float)
    revenue = df[mf.OUTCOME_REVENUE].to_numpy(dtype=float)
    cost = np.zeros(len(df))
    for offer in catalog.offers:
        mine = (df[c.OFFER_ID] == offer.offer_id).to_numpy() & (converted > 0)
        cost[mine] = offer.cost.revenue_fraction * revenue[mine] + offer.cost.fixed
    return {
        "conversions": converted,
        "margin": df[mf.OUTCOME_MARGIN].to_numpy(dtype=float),
        "incentive_cost": cost,
        "unsubscribes": df[mf.UNSUBSCRIBED].to_numpy(dtype=float),
    }


def _q_margin(model: PolicyModel, x: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    """Reward model for DR: the model's P(convert) x (margin of the order - incentive cost)."""
    s = model.score(x)
    revenue, margin = model.economics(x)
    value = s.p * (margin[:, None] - model.cost_matrix(revenue))
    col = {o: j for j, o in enumerate(model.options)}
    q = np.zeros((len(x), len(options)))
    for j, o in enumerate(options):
        if o in col:
            q[:, j] = value[:, col[o]]
    return q


def simulate(
    data: Path,
    policy: Policy,
    model: PolicyModel | None = None,
    campaign: str | None = None,
    n_boot: int = 300,
    seed: int = 0,
) -> Simulation:
    """Estimate what `policy` (with `model`, else rules only) would have earned on the logged
    contacts and holdouts of data directory `data`, against what the logging policy earned.

    Raises:
        TrainingError: no logged rows with complete outcome windows and propensities.
    """
    ds = load_data_dir(Path(data))
    fs = FeatureSet.from_json(model.feature_set) if model is not None else None
    frame = offer_response_frame(FeatureEngine(ds), feature_set=fs)
    df = frame.data
    keep = df["window_complete"].to_numpy(bool) & df[c.PROPENSITY].notna().to_numpy()
    if campaign is not None:
        keep &= (df[c.CAMPAIGN_ID] == campaign).to_numpy()
    df = df[keep].reset_index(drop=True)
    if not len(df):
        raise TrainingError(
            f"{data}: no logged contact or holdout with a propensity and a complete outcome "
            "window" + (f" in campaign {campaign!r}" if campaign else "")
        )
    fs = fs or FeatureSet.from_json(frame.spec.notes["feature_set_json"])
    choice = candidate_choices(df, fs, ds.catalog, policy, model)
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
    q = _q_margin(model, df[list(fs.columns)].to_numpy(float), options) if model else None
    rows = {}
    incr = {}
    for name, reward in _rewards(df, ds.catalog).items():
        logged = LoggedData.from_labels(options, action, prop, reward)
        qq = q if name == "margin" else None
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
            "candidate_dr": est.loc[("candidate", "dr"), "estimate"] if qq is not None else np.nan,
        }
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
    )
