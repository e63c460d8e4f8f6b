"""Honest evaluation of a PolicyModel on held-out rows.

Reactivation: AUC, log loss, Brier, ECE and lift at the top decile on the last cutoff (rows
we contacted in the label window left out), overall and by value tier and lapse state.
Response: Qini, AUUC and uplift at 30% per option on the latest contacts. Policy value: the
learned policy (no guardrails) against no incentive for anyone, the best single option for
everyone, uniform random and no contact, by IPS, SNIPS and DR with bootstrap intervals, the
reward being the realised margin net of the incentive's cost; on a synthetic world also the
true value from `ground_truth.parquet` and the oracle's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.frames import Frame
from models.policy_model import PolicyModel
from training import metrics as m
from training.fit import (
    CROSSFIT_KEY,
    crossfit_groups,
    logged_propensity,
    logged_reward,
    reactivation_split,
    response_split,
)
from training.policy_value import (
    LoggedData,
    bootstrap_policies,
    deterministic_policy,
    point_estimates,
    policy_difference,
    random_policy,
    single_option_policy,
    subset,
)

SLICES = ("value_tier", "lapse_state")


@dataclass
class Evaluation:
    """Everything measured: flat metrics (for MLflow) and tables (for people)."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    """What a reader must know to trust the figures: the protocol (who is in each frame), an
    assumed margin rate, a part not evaluated and why."""

    def to_json(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "metrics": self.metrics,
            "tables": {
                k: json.loads(v.reset_index().to_json(orient="records"))
                for k, v in self.tables.items()
            },
        }


def matrix_for(model: PolicyModel, frame: Frame) -> np.ndarray:
    """The frame's features as the model's numeric matrix (`PolicyModel.feature_matrix`: text
    categoricals through the feature set's vocabulary; FeatureMismatchError naming the columns
    a frame of another feature set lacks)."""
    return model.feature_matrix(frame.data)


def _decoded(model: PolicyModel, X: np.ndarray, column: str) -> np.ndarray | None:
    if column not in model.feature_columns:
        return None
    vocab = list(model.vocabularies.get(column, ()))
    codes = X[:, model.feature_columns.index(column)]
    labels = np.array([*vocab, "unknown"], dtype=object)
    idx = np.where(np.isfinite(codes) & (codes >= 0) & (codes < len(vocab)), codes, len(vocab))
    return labels[idx.astype(int)]


def _binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if len(np.unique(y)) < 2:
        return {"n": float(len(y))}
    return {
        "n": float(len(y)),
        "auc": m.roc_auc(y, p),
        "log_loss": m.log_loss(y, p),
        "brier": m.brier(y, p),
        "ece": m.expected_calibration_error(y, p),
        "lift_top_decile": m.lift_at_top(y, p, 0.1),
    }


def reactivation_test_mask(model: PolicyModel, frame: Frame, seed: int) -> np.ndarray:
    """The reactivation rows `model`'s training held out for testing (`reactivation_split` with
    its own seed)."""
    return reactivation_split(frame, split_seed(model, seed)).test.to_numpy(dtype=bool)


def reactivation_test(
    model: PolicyModel, frame: Frame, seed: int, test: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, P(reactivation), label) on the test rows (default `reactivation_test_mask`): the
    last cutoff's customers (its test half when the frame has two cutoffs) we did not contact
    inside its label window."""
    if test is None:
        test = reactivation_test_mask(model, frame, seed)
    sub = Frame(frame.data[test].reset_index(drop=True), frame.spec)
    X = matrix_for(model, sub)
    return X, model.p_reactivation(X), sub.data[mf.LABEL].to_numpy(dtype=float)


@dataclass
class ReactivationScores:
    """What the reactivation metrics need of held-out rows: P(reactivation), the label and the
    slices (value tier, lapse state) of each row; narrow, so partitions can be concatenated."""

    p: np.ndarray
    y: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: list[ReactivationScores]) -> ReactivationScores:
        keys = [k for k in SLICES if all(k in s.groups for s in parts)] if parts else []
        return cls(
            np.concatenate([s.p for s in parts]) if parts else np.zeros(0),
            np.concatenate([s.y for s in parts]) if parts else np.zeros(0),
            {k: np.concatenate([s.groups[k] for s in parts]) for k in keys},
        )


def reactivation_scores(
    model: PolicyModel, frame: Frame, seed: int = 0
) -> ReactivationScores | None:
    """The model's scores on the frame's held-out rows (`reactivation_test`); None if none."""
    test = reactivation_test_mask(model, frame, seed)
    if not test.any():
        return None
    X, p, y = reactivation_test(model, frame, seed, test)
    groups = {col: g for col in SLICES if (g := _decoded(model, X, col)) is not None}
    return ReactivationScores(p, y, groups)


def evaluate_reactivation(model: PolicyModel, frame: Frame, ev: Evaluation, seed: int = 0) -> None:
    """Metrics on the reactivation rows the model's training held out (`reactivation_test`)."""
    report_reactivation(reactivation_scores(model, frame, seed), ev)


def evaluate_reactivation_parts(
    model: PolicyModel, frames: Iterable[Frame], ev: Evaluation, seed: int = 0
) -> None:
    """`evaluate_reactivation` over held-out rows given partition by partition: each part is
    scored alone, and only its narrow scores are kept for the metrics."""
    parts = [s for f in frames if (s := reactivation_scores(model, f, seed)) is not None]
    report_reactivation(ReactivationScores.concat(parts) if parts else None, ev)


def report_reactivation(scores: ReactivationScores | None, ev: Evaluation) -> None:
    """The reactivation metrics, per slice too, from held-out scores (None: no held-out row)."""
    if scores is None or not len(scores.y):  # a protocol whose cutoff's labels lie beyond the data
        ev.notes["reactivation_not_evaluated"] = (
            "no held-out rows: the data does not reach the cutoff's labels"
        )
        return
    p, y = scores.p, scores.y
    overall = _binary_metrics(y, p)
    ev.metrics.update({f"reactivation_{k}": v for k, v in overall.items()})
    rows = [{"slice": "all", "group": "all", **overall}]
    for col, groups in scores.groups.items():
        for g in sorted(set(groups)):
            sel = groups == g
            rows.append({"slice": col, "group": g, **_binary_metrics(y[sel], p[sel])})
    ev.tables["reactivation"] = pd.DataFrame(rows).set_index(["slice", "group"])
    ev.curves["reliability"] = _reliability(y, p)
    ev.metrics["reactivation_test_cutoff_rows"] = float(len(y))


def _reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    predicted = pd.Series(p).groupby(idx).mean()
    observed = pd.Series(y).groupby(idx).mean()
    return pd.DataFrame({"predicted": predicted, "observed": observed})


@dataclass
class HeldOut:
    """A model's view of the held-out contacts: its scores, choices and the logged data."""

    df: pd.DataFrame
    X: np.ndarray | None  # None when scored partition by partition (`ScoredContacts`)
    p: pd.DataFrame  # P(convert | option) for the logged options
    options: list[str]
    learned: np.ndarray  # the model's choice per row (no guardrails)
    logged: LoggedData
    q: np.ndarray  # reward model for DR: p * (margin - cost)
    unit: str
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    """Per row, its value tier and lapse state (the policy-value slices)."""


@dataclass
class ScoredContacts:
    """What the response metrics need of held-out contacts, and nothing else: the logged
    columns, the model's P(convert) and decision value for every option, its economics and the
    rows' slices. Narrow, so the contacts can be scored partition by partition (in worker
    processes) and the parts concatenated for the bootstrap, which resamples all of them."""

    df: pd.DataFrame
    p: np.ndarray  # (n, k): every option of the model
    decision: np.ndarray  # (n, k)
    revenue: np.ndarray
    margin: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: list[ScoredContacts]) -> ScoredContacts:
        keys = [k for k in SLICES if all(k in s.groups for s in parts)]
        return cls(
            pd.concat([s.df for s in parts], ignore_index=True),
            np.concatenate([s.p for s in parts]),
            np.concatenate([s.decision for s in parts]),
            np.concatenate([s.revenue for s in parts]),
            np.concatenate([s.margin for s in parts]),
            {k: np.concatenate([s.groups[k] for s in parts]) for k in keys},
        )


LOGGED_COLUMNS = (c.CONTACT_ID, mf.CONVERTED, mf.OUTCOME_REVENUE, mf.OUTCOME_MARGIN)


def score_contacts(
    model: PolicyModel, frame: Frame, seed: int, test: np.ndarray | None = None
) -> tuple[ScoredContacts, np.ndarray]:
    """Score the held-out contacts of `frame` (`test`, default `response_test_mask`); also
    returns their feature matrix."""
    spec = frame.spec
    if test is None:
        test = response_test_mask(model, frame, seed)
    df = frame.data[test].reset_index(drop=True)
    X = matrix_for(model, Frame(df, spec))
    s = model.score(X, groups=held_out_groups(model, df, spec.id_column))  # out of fold
    keep = [*LOGGED_COLUMNS, spec.treatment_column, spec.propensity_column]
    narrow = df[[col for col in dict.fromkeys(keep) if col and col in df.columns]]
    groups = {col: g for col in SLICES if (g := _decoded(model, X, col)) is not None}
    return ScoredContacts(
        narrow, s.p, s.decision_value, s.expected_revenue, s.expected_margin, groups
    ), X


def split_seed(model: PolicyModel, seed: int) -> int:
    """The seed of `model`'s own train/test split (its training seed; `seed` for models that
    did not record one). Where contacts carry one timestamp (a single randomized experiment
    such as Hillstrom) the held-out contacts are a random share drawn from it: drawn from any
    other seed, most of them would be rows the model trained on."""
    try:
        return int(model.metadata.get("seed", seed))
    except ValueError:
        return seed


def response_test_mask(model: PolicyModel, frame: Frame, seed: int) -> np.ndarray:
    """The contacts `model` did not train on: the split training made."""
    return response_split(frame, split_seed(model, seed))


def held_out_groups(model: PolicyModel, df: pd.DataFrame, id_column: str) -> np.ndarray | None:
    """The cross-fitting groups to score `df` out of fold with, for a cross-fitted model
    (None otherwise: its held-out rows are rows it never trained on)."""
    spec = model.metadata.get(CROSSFIT_KEY)
    if not spec or not model.cross_fitted:
        return None
    return crossfit_groups(df[id_column], spec)


def held_out(
    model: PolicyModel, frame: Frame, seed: int, test: np.ndarray | None = None
) -> HeldOut:
    """Score the held-out contacts and build the logged data.

    `test` defaults to the split the model's training made (`response_test_mask`).
    """
    scored, X = score_contacts(model, frame, seed, test)
    h = held_out_scored(model, scored, frame.spec)
    h.X = X
    return h


def held_out_scored(model: PolicyModel, scored: ScoredContacts, spec: mf.FrameSpec) -> HeldOut:
    """`held_out` from contacts already scored (`score_contacts`, parts concatenated)."""
    df = scored.df.copy()
    df["__action__"] = df[spec.treatment_column].astype(str)
    given = set(df["__action__"].unique())
    logged_opts = [o for o in model.options if o in given]
    cols = [model.options.index(o) for o in logged_opts]
    dv = scored.decision[:, cols]
    best = np.argmax(np.where(np.isfinite(dv), dv, -np.inf), axis=1)
    learned = np.asarray(logged_opts, dtype=object)[best]
    reward, unit = logged_reward(model.costs, df, df["__action__"].to_numpy())
    e = logged_propensity(Frame(df, spec))
    logged = LoggedData.from_labels(logged_opts, df["__action__"], e, reward)
    rev, mar = scored.revenue, scored.margin
    if unit == "revenue":
        mar = rev
    q = scored.p[:, cols] * (mar[:, None] - model.cost_matrix(rev)[:, cols])
    p_df = pd.DataFrame(scored.p[:, cols], columns=logged_opts)
    return HeldOut(df, None, p_df, logged_opts, learned, logged, q, unit, scored.groups)


def evaluate_response(
    model: PolicyModel,
    frame: Frame,
    seed: int,
    ev: Evaluation,
    ground_truth: pd.DataFrame | None = None,
    n_boot: int = 300,
) -> None:
    """The response metrics and policy values on the held-out contacts of `frame`."""
    report_response(model, held_out(model, frame, seed), seed, ev, ground_truth, n_boot)


def report_response(
    model: PolicyModel,
    h: HeldOut,
    seed: int,
    ev: Evaluation,
    ground_truth: pd.DataFrame | None = None,
    n_boot: int = 300,
) -> None:
    """`evaluate_response` from held-out contacts already scored (`held_out`,
    `held_out_scored`)."""
    df, logged_opts, logged, q, learned, unit = h.df, h.options, h.logged, h.q, h.learned, h.unit
    y = df[mf.CONVERTED].to_numpy(dtype=float)
    uplift = m.uplift_scores(h.p, df["__action__"], y, model.control)
    ev.tables["uplift"] = uplift
    for o, row in uplift.iterrows():
        ev.metrics[f"qini_{o}"] = float(row["qini"])
        ev.metrics[f"auuc_{o}"] = float(row["auuc"])
    actions = df["__action__"].to_numpy()
    curves = {}
    for o in logged_opts:
        if o == model.control:
            continue
        rows = (actions == o) | (actions == model.control)
        score = (h.p[o] - h.p[model.control]).to_numpy()[rows]
        curves[o] = m.qini_curve(y[rows], actions[rows] == o, score)
    ev.curves["qini"] = curves
    best_single = model.default_option if model.default_option in logged_opts else model.control
    n = len(df)
    policies = {
        "learned": deterministic_policy(learned, logged_opts),
        "best_single": single_option_policy(n, logged_opts, best_single),
        "random": random_policy(n, logged_opts),
        "no_contact": single_option_policy(n, logged_opts, model.control),
    }
    if c.NO_INCENTIVE in logged_opts:  # never logged (Hillstrom): no evidence, no baseline row
        policies["no_incentive"] = single_option_policy(n, logged_opts, c.NO_INCENTIVE)
    # one resampling serves the values and the paired difference (the same resamples)
    boot = bootstrap_policies(logged, policies, q=q, n_boot=n_boot, seed=seed)
    values = boot.values()
    ev.tables["policy_value"] = values
    for pol, est, estimate in zip(
        values.index.get_level_values(0),
        values.index.get_level_values(1),
        values["estimate"],
        strict=True,
    ):
        ev.metrics[f"policy_{pol}_{est}"] = float(estimate)
    diff = boot.difference("learned", "best_single")
    ev.tables["learned_minus_best_single"] = diff
    for est, row in diff.iterrows():
        ev.metrics[f"learned_minus_best_single_{est}"] = float(row["difference"])
        ev.metrics[f"learned_minus_best_single_{est}_ci_low"] = float(row["ci_low"])
    ev.tables["policy_value_slices"] = _policy_slices(
        model, h, policies["learned"], policies["best_single"], seed
    )
    ev.metrics["reward_unit_is_margin"] = float(unit == "margin")
    ev.metrics["response_test_rows"] = float(n)
    ev.metrics["share_deviating_from_best_single"] = float(np.mean(learned != best_single))
    if ground_truth is not None and c.CONTACT_ID in df:
        _true_values(model, df, ground_truth, learned, policies, logged_opts, ev)


SLICE_MIN_ROWS = 200  # below this a slice's interval says little; it is listed with its n only
SLICE_BOOTSTRAP = 200


def _policy_slices(
    model: PolicyModel, h: HeldOut, learned: np.ndarray, best_single: np.ndarray, seed: int
) -> pd.DataFrame:
    """DR value of the learned policy and of the best single option per value tier and lapse
    state of the held-out contacts, with a paired bootstrap interval of their difference."""
    rows: list[dict[str, Any]] = []
    for col in SLICES:
        groups = h.groups.get(col)
        if groups is None:
            continue
        for g in sorted(set(groups)):
            sel = groups == g
            row: dict[str, Any] = {"slice": col, "group": g, "n": int(sel.sum())}
            row["deviating"] = float(np.mean(learned[sel].argmax(1) != best_single[sel].argmax(1)))
            if sel.sum() >= SLICE_MIN_ROWS:
                sub, q = subset(h.logged, sel), h.q[sel]
                row["learned_dr"] = point_estimates(sub, learned[sel], q)["dr"]
                row["best_single_dr"] = point_estimates(sub, best_single[sel], q)["dr"]
                d = policy_difference(
                    sub, learned[sel], best_single[sel], q=q, n_boot=SLICE_BOOTSTRAP, seed=seed
                ).loc["dr"]
                row |= {
                    "difference": d["difference"],
                    "ci_low": d["ci_low"],
                    "ci_high": d["ci_high"],
                }
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["slice", "group", "n"]).set_index(["slice", "group"])
    return pd.DataFrame(rows).set_index(["slice", "group"])


def _true_values(
    model: PolicyModel,
    df: pd.DataFrame,
    truth: pd.DataFrame,
    learned: np.ndarray,
    policies: dict[str, np.ndarray],
    options: list[str],
    ev: Evaluation,
) -> None:
    t = truth.set_index(c.CONTACT_ID).reindex(df[c.CONTACT_ID].astype(str))
    if t["margin_if_convert"].isna().all():
        return
    mar = t["margin_if_convert"].to_numpy(dtype=float)
    rev = t["revenue_if_convert"].to_numpy(dtype=float)
    p0 = t[f"p_{model.control}"].to_numpy(dtype=float)
    cost = model.cost_matrix(rev)
    truth_v = np.column_stack(
        [
            t[f"p_{o}"].to_numpy(dtype=float) * (mar - cost[:, model.options.index(o)]) - p0 * mar
            for o in options
        ]
    )
    rows = {}
    for name, pi in policies.items():
        rows[name] = float(np.nanmean((pi * truth_v).sum(axis=1)))
    rows["oracle"] = float(np.nanmean(np.nanmax(truth_v, axis=1)))
    for name, v in rows.items():
        ev.metrics[f"true_incremental_margin_{name}"] = v
    oracle = rows["oracle"]
    if oracle > 0:
        ev.metrics["learned_share_of_oracle"] = rows["learned"] / oracle
    ev.tables["true_value"] = pd.Series(rows, name="true_incremental_margin_per_contact").to_frame()
