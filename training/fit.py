"""Fitting: time-based splits, the two models, and the `PolicyModel` they make together.

Splits are honest about time: the reactivation model trains on the earlier cutoffs, stops early
and calibrates on the next one, and is tested on the last (with only two cutoffs, the last one's
customers are halved by a seeded hash of their id: one half validates, the other tests); the
response model trains on the
earlier contacts and is tested on the latest quarter of them (a random split only when every
contact has the same timestamp, as in a single randomized experiment such as Hillstrom).
Customers we contacted inside a reactivation label window are left out of the reactivation
training rows, so the baseline label is not contaminated by our own contacts.

`fit_response(crossfit=True)` (`winback train --crossfit`) trains the response model on every
contact instead, the latest included, with bags cross-fitted by a hash of the customer id; the
held-out contacts are then scored out of fold (`CROSSFIT_KEY`), so a retraining after a played
wave learns from that wave and is still judged on predictions that never saw a customer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.frames import Frame
from features.offers import OfferCatalog
from models.calibration import OptionCalibrator
from models.policy_model import (
    OptionCost,
    PolicyModel,
    costs_from_catalog,
)
from models.reactivation import ReactivationClassifier
from models.support import AssignmentSupport
from models.uplift import BaggedOptionLearner, SLearner, TLearner
from training.errors import TrainingError
from training.metrics import uplift_scores
from training.policy_value import LoggedData, RuleCandidate, best_single_option, choose_rule

# One LightGBM thread per booster. On the 2 shared cores training runs on, LightGBM's OpenMP
# threads spend most of their time waiting on each other: a 30,000-row boosting round took
# 80 ms on 2 threads and 6.5 ms on one (loaded machine). Parallelism comes from fitting the
# bags of the response learners at once instead (BAG_JOBS threads).
LGBM_THREADS = 1
BAG_JOBS = 2

# A converting order's expected revenue and margin, by preference: at full price (an offer's
# cost applies to the price before discounts; `winback_v2`), else as paid (`winback_v1`). On the
# 200k synthetic world the full-price pair lifted the learned share of the oracle from 83.2% to
# 87.9% (S-learner, z = 0): as-paid figures, lowered by habitual discounts, made every
# discount look dearer than it is.
REVENUE_FEATURES = ("aov_gross_lifetime", "aov_lifetime")
MARGIN_RATE_FEATURES = ("margin_rate_gross_lifetime", "margin_rate_lifetime")


def _first_present(columns: pd.Index, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in columns), None)


@dataclass
class Encoded:
    """A frame's features as a numeric matrix, with the feature-set definition (JSON)."""

    X: pd.DataFrame
    feature_set_json: str
    categorical: tuple[str, ...]


def encode_features(frame: Frame) -> Encoded:
    """Numeric features in spec order; text categoricals become codes into sorted vocabularies."""
    spec, df = frame.spec, frame.data
    X = pd.DataFrame(index=df.index)
    vocab: dict[str, list[str]] = {}
    for col in spec.feature_columns:
        s = df[col]
        if col in spec.categorical_columns and not pd.api.types.is_numeric_dtype(s):
            cats = sorted(str(v) for v in s.dropna().unique())
            vocab[col] = cats
            codes = pd.Categorical(s.astype("string"), categories=cats).codes.astype(float)
            X[col] = np.where(codes < 0, np.nan, codes)
        else:
            X[col] = pd.to_numeric(s, errors="coerce").astype(float)
    fs_json = spec.notes.get("feature_set_json")
    if not fs_json:
        name, _, version = spec.feature_set.partition("@")
        fs_json = json.dumps(
            {
                "name": name,
                "version": version or "1",
                "features": [
                    {
                        "name": col,
                        "dtype": "category" if col in spec.categorical_columns else "float64",
                        "lookback": "",
                        "meaning": "",
                        "vocabulary": vocab.get(col, []),
                    }
                    for col in spec.feature_columns
                ],
            }
        )
    return Encoded(X, fs_json, tuple(spec.categorical_columns))


@dataclass
class ReactivationFit:
    model: ReactivationClassifier
    split: dict[str, str]


def in_test_half(ids: pd.Series, seed: int) -> np.ndarray:
    """Boolean mask: the customers in the test half, by a seeded hash of their id.

    `pd.util.hash_pandas_object` is a fixed-key SipHash, so the halves are the same in every
    process (Python's `hash()` of a string is salted per process) and for every row of a
    customer.
    """
    salted = f"{seed}:" + ids.astype(str)
    h = pd.util.hash_pandas_object(salted, index=False).to_numpy()
    return np.asarray(h % 2 == 1)


@dataclass
class ReactivationSplit:
    """Boolean row masks of a reactivation frame, and their description for the run."""

    train: pd.Series
    validation: pd.Series
    test: pd.Series
    info: dict[str, str]


def reactivation_split(frame: Frame, seed: int) -> ReactivationSplit:
    """Train on the earlier cutoffs, validate on the next, test on the last.

    With exactly two cutoffs there is no next cutoff to validate on: the model trains on the
    first, and the last cutoff's customers are split by `in_test_half` into a validation half
    (early stopping and calibration) and a test half, so no row both tunes and tests the model.
    Rows we contacted inside the label window are left out of all three: our contact, not the
    customer alone, may have caused their order. Fewer than two cutoffs leave nothing to test
    on: TrainingError.
    """
    df = frame.data
    if "protocol" in frame.spec.notes:
        return _protocol_split(frame, seed)
    cutoffs = sorted(df[mf.CUTOFF].unique())
    if len(cutoffs) < 2:
        raise TrainingError(
            f"reactivation: a time-based split needs at least two cutoffs, the frame has "
            f"{len(cutoffs)}"
        )
    cut = df[mf.CUTOFF]
    clean = ~df[mf.CONTACTED_IN_WINDOW].astype(bool)
    if len(cutoffs) >= 3:
        train_cuts, val_cut, test_cut = cutoffs[:-2], cutoffs[-2], cutoffs[-1]
    else:
        train_cuts, val_cut, test_cut = cutoffs[:1], cutoffs[-1], cutoffs[-1]
    tr = cut.isin(train_cuts) & clean
    va = (cut == val_cut) & clean
    te = (cut == test_cut) & clean
    info = {
        "train_cutoffs": ",".join(str(pd.Timestamp(x).date()) for x in train_cuts),
        "validation_cutoff": str(pd.Timestamp(val_cut).date()),
        "test_cutoff": str(pd.Timestamp(test_cut).date()),
        "train_rows": str(int(tr.sum())),
        "excluded_contacted_rows": str(int((~clean).sum())),
    }
    if len(cutoffs) == 2:
        half = pd.Series(in_test_half(df[frame.spec.id_column], seed), index=df.index)
        va, te = va & ~half, te & half
        info["test_split"] = "half of the last cutoff's customers (2 cutoffs)"
        info["validation_half_rows"] = str(int(va.sum()))
        info["test_half_rows"] = str(int(te.sum()))
    return ReactivationSplit(tr, va, te, info)


# A protocol frame holds every customer at each of six origins: 6M training rows on a
# 1M-customer world, where 400k rows of the same customers' histories teach the booster as much
# (the 200k world's fit took 66 s of CPU on 1.2M rows). Above the caps, the training and
# validation rows are those of a seeded hash sample of the customers; CDNOW (117,850 training
# rows) is never sampled, so its figure is the bench's.
PROTOCOL_MAX_TRAIN_ROWS = 400_000
PROTOCOL_MAX_VALIDATION_ROWS = 100_000


def _customer_sample(ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """A seeded hash sample of about `share` of the customers (every row of a chosen one)."""
    salted = f"sample:{seed}:" + ids.astype(str)
    h = pd.util.hash_pandas_object(salted, index=False).to_numpy()
    return np.asarray(h % 100_000 < share * 100_000)


CAP_NOTE = "{}_rows_before_sample"
EXCLUDED_NOTE = "origin_excluded_contacted_rows"


def protocol_cap(
    labels: pd.DataFrame, train_origins: list[str], validation_origin: str, seed: int
) -> tuple[set[str] | None, dict[str, str]]:
    """The customers whose origin rows `_protocol_split` would keep under the caps, decided
    from the origins' labels alone (`features.frames.reactivation_labels`), before any feature
    is computed; None when no cap applies. Also the frame notes that make the split of a frame
    holding only those customers' origin rows choose the same rows (the row counts the caps
    were applied to; split it with the same `seed`)."""
    cut = labels[mf.CUTOFF]
    clean = ~labels[mf.CONTACTED_IN_WINDOW].astype(bool)
    ids = labels[c.CUSTOMER_ID]
    tr = cut.isin(pd.to_datetime(train_origins)) & clean
    va = (cut == pd.Timestamp(validation_origin)) & clean
    kept = []
    capped = False
    notes = {EXCLUDED_NOTE: str(int((~clean).sum()))}
    for name, mask, cap in (
        ("train", tr, PROTOCOL_MAX_TRAIN_ROWS),
        ("validation", va, PROTOCOL_MAX_VALIDATION_ROWS),
    ):
        n = int(mask.sum())
        notes[CAP_NOTE.format(name)] = str(n)
        if n > cap:
            capped = True
            mask = mask & _customer_sample(ids, cap / n, seed)
        kept.append(ids[mask.to_numpy()])
    if not capped:
        return None, {}
    return set(pd.concat(kept).astype(str)), notes


def _protocol_split(frame: Frame, seed: int) -> ReactivationSplit:
    """The split a `CutoffProtocol` frame declares: its training origins, its validation origin,
    and its cutoff (no rows when the data does not reach the cutoff's labels). Training and
    validation rows above `PROTOCOL_MAX_*_ROWS` are a customer sample; the test rows never are."""
    from training.protocol import CutoffProtocol

    p = CutoffProtocol.from_json(frame.spec.notes["protocol"])
    df = frame.data
    cut = df[mf.CUTOFF]
    clean = ~df[mf.CONTACTED_IN_WINDOW].astype(bool)
    tr = cut.isin(pd.to_datetime(list(p.train_origins))) & clean
    va = (cut == pd.Timestamp(p.validation_origin)) & clean
    te = (cut == p.cutoff_ts) & clean
    sampled = {}
    ids = df[frame.spec.id_column]
    for name, mask, cap in (
        ("train", tr, PROTOCOL_MAX_TRAIN_ROWS),
        ("validation", va, PROTOCOL_MAX_VALIDATION_ROWS),
    ):
        # a frame built for the capped customers only (`protocol_cap`) says how many rows the
        # caps were applied to
        n = int(frame.spec.notes.get(CAP_NOTE.format(name), mask.sum()))
        if n > cap:
            share = cap / n
            keep = mask & _customer_sample(ids, share, seed)
            sampled[f"{name}_sample"] = f"{share:.1%} of the customers ({n:,} rows, cap {cap:,})"
            if name == "train":
                tr = keep
            else:
                va = keep
    excluded = int((~clean).sum())
    if EXCLUDED_NOTE in frame.spec.notes:  # the origins' rows were built for a sample only
        excluded = int(frame.spec.notes[EXCLUDED_NOTE]) + int((~clean & (cut == p.cutoff_ts)).sum())
    info = {
        "protocol": "cutoff",
        "population": p.population,
        "cutoff": p.cutoff,
        "horizon_days": str(p.horizon_days),
        "train_cutoffs": ",".join(p.train_origins),
        "validation_cutoff": p.validation_origin,
        "train_horizon_days": str(p.train_horizon_days),
        "test_cutoff": p.cutoff if p.labelled else "",
        "train_rows": str(int(tr.sum())),
        "train_positive_rate": f"{df.loc[tr, mf.LABEL].mean():.4f}" if tr.any() else "",
        "validation_rows": str(int(va.sum())),
        "validation_positive_rate": f"{df.loc[va, mf.LABEL].mean():.4f}" if va.any() else "",
        "test_rows": str(int(te.sum())),
        "test_positive_rate": f"{df.loc[te, mf.LABEL].mean():.4f}" if te.any() else "",
        "excluded_contacted_rows": str(excluded),
        **sampled,
    }
    return ReactivationSplit(tr, va, te, info)


def fit_reactivation(frame: Frame, seed: int) -> ReactivationFit:
    """Fit on the training rows of `reactivation_split`, stopping early on its validation rows."""
    enc = encode_features(frame)
    df = frame.data
    split = reactivation_split(frame, seed)
    tr, va = split.train, split.validation
    y = df[mf.LABEL].astype(int)
    if y[tr].nunique() < 2:
        raise TrainingError("reactivation: the training cutoffs have a single label class")
    # the prior summarises each history over the question's horizon (a protocol's N), as
    # bench/bench_cdnow.py does; older frames keep the classifier's default
    horizon = split.info.get("horizon_days")
    prior = {"prior_horizon_days": float(horizon)} if horizon else {}
    model = ReactivationClassifier(
        categorical_features=list(enc.categorical),
        random_state=seed,
        n_jobs=LGBM_THREADS,
        **prior,  # type: ignore[arg-type]
    ).fit(enc.X[tr], y[tr], X_val=enc.X[va], y_val=y[va])
    return ReactivationFit(model, split.info)


@dataclass
class ResponseFit:
    learner: BaggedOptionLearner
    learner_name: str
    calibrator: OptionCalibrator
    train_mask: np.ndarray
    test_mask: np.ndarray
    auuc_by_learner: dict[str, float]
    split: dict[str, str] = field(default_factory=dict)
    support: AssignmentSupport | None = None
    z: float = 1.96
    rule_table: pd.DataFrame | None = None
    crossfit: str | None = None


TRAIN_UNTIL_KEY = "response_train_until"
"""Model metadata: the time (ISO 8601) of the latest contact the response model trained on,
recorded when the split is by time (`winback simulate` then judges the model on later rows
only). Absent after a random split, where no time separates training rows from others."""


def train_until(frame: Frame, train: np.ndarray) -> str | None:
    """The latest training contact's time, if every other contact is later (else None)."""
    ts = pd.to_datetime(frame.data[frame.spec.time_column])
    if not train.any() or train.all():
        return None
    last, first_other = ts[train].max(), ts[~train].min()
    return last.isoformat() if last < first_other else None


RESPONSE_TEST_AFTER = "response_test_after_ns"
"""Frame note: the held-out contacts are those after this time (ns, a float's repr), computed
over every contact of the data; frames holding a sample of the customers, or one partition,
carry it so their split is the whole data's (`training.sampled_inputs`)."""
RESPONSE_TRAIN_UNTIL = "response_train_until"
"""Frame note: the latest training contact's time over the whole data (ISO 8601)."""


def response_split(frame: Frame, seed: int, test_share: float = 0.3) -> np.ndarray:
    """Boolean test mask: the latest contacts by time, or a seeded random share (the frame's
    `RESPONSE_TEST_AFTER` note, when present, fixes the time; only for the default share)."""
    ts = pd.to_datetime(frame.data[frame.spec.time_column]).to_numpy(dtype="datetime64[ns]")
    ns = ts.astype(np.int64)
    after = frame.spec.notes.get(RESPONSE_TEST_AFTER)
    if after is not None and test_share == 0.3:
        return np.asarray(ns > float(after))
    if len(np.unique(ns)) > 1:
        test = ns > np.quantile(ns, 1 - test_share)
        if 0 < test.sum() < len(test):
            return np.asarray(test)
    rng = np.random.default_rng(seed)
    return np.asarray(rng.random(len(ts)) < test_share)


CROSSFIT_KEY = "response_crossfit"
"""Model metadata of a cross-fitted response model: `<groups>:<salt>` of `crossfit_groups`,
with which evaluation and promotion score any contact out of fold."""
CROSSFIT_GROUPS = 2
CROSSFIT_SALT = "crossfit"


def crossfit_groups(ids: pd.Series, spec: str = f"{CROSSFIT_GROUPS}:{CROSSFIT_SALT}") -> np.ndarray:
    """The cross-fitting group (0..G-1) of each row by a salted hash of its customer id.

    `spec` is `<groups>:<salt>` as recorded under `CROSSFIT_KEY`. The salt is fixed, not the
    training seed, so every model trained on a growing log puts a customer in the same group
    and a customer's contacts never straddle groups (no customer informs their own score).
    """
    n, _, salt = spec.partition(":")
    salted = f"{salt}:" + ids.astype(str)
    h = pd.util.hash_pandas_object(salted, index=False).to_numpy()
    return np.asarray(h % np.uint64(int(n)), dtype=np.int64)


def logged_propensity(frame: Frame) -> np.ndarray:
    """Logged propensity per row; where it is missing, the option's share of the frame's rows."""
    df, spec = frame.data, frame.spec
    t = df[spec.treatment_column].astype(str)
    share = t.map(t.value_counts(normalize=True)).to_numpy(dtype=float)
    if spec.propensity_column and spec.propensity_column in df:
        p = pd.to_numeric(df[spec.propensity_column], errors="coerce").to_numpy(dtype=float)
        return np.where(np.isfinite(p) & (p > 0), p, share)
    return share


# The S- or T-learner is chosen (by out-of-bag AUUC) on at most this many training contacts;
# only the chosen one is then fitted on all of them. Fitting both on everything doubled the
# cost of the response model, the largest part of training, for one comparison of two numbers.
SELECTION_ROWS = 50_000
# The decision rule (learner and z, the width of the confidence bound) is chosen on the latest
# VALIDATION_SHARE of the training contacts (by time; a seeded random share when every contact
# has one time), at most VALIDATION_ROWS of them; the candidates are fitted on the earlier rest.
VALIDATION_SHARE = 0.25
VALIDATION_ROWS = 50_000
Z_GRID = (0.0, 0.5, 1.0, 1.96)
# The assignment-support model (a multiclass P(option sent | x), used only against a floor
# of 0.02) is fitted on at most this many training contacts: its cost grows with the contacts,
# while telling which options were ever sent to customers like these does not need them all.
SUPPORT_ROWS = 200_000


def sample_rows(n: int, seed: int, limit: int) -> np.ndarray:
    """Sorted indices of a seeded random `limit` of n rows, or of all n when n <= limit."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_response(
    frame: Frame,
    seed: int,
    catalog: OfferCatalog,
    n_bags: int = 8,
    selection_limit: int | None = None,
    support_limit: int | None = None,
    z: float | None = None,
    crossfit: bool = False,
) -> ResponseFit:
    """Choose the learner and z on validation contacts; fit the chosen learner on all contacts.

    The training contacts are split by time: the S- and T-learners are fitted on (a sample of
    `selection_limit`, default `SELECTION_ROWS`, of) the earlier ones, and every (learner, z)
    rule is judged on the latest `VALIDATION_SHARE` by `choose_rule`: by the doubly robust
    gain of its decisions over the best single option, a bold rule only where that gain is
    significant, the S-learner unless the T-learner is significantly better. The out-of-bag
    AUUC of both learners is recorded beside it. On the 200k synthetic world AUUC
    preferred the T-learner (0.0390 vs 0.0376) whose decisions were worth less (74% of the
    oracle against 83% at z = 0): AUUC scores each option's uplift ranking alone, while a
    decision compares options with one another. A given `z` fixes z; only the learner is
    then chosen. The assignment-support model is fitted on `support_limit` (default
    `SUPPORT_ROWS`) training contacts.

    `crossfit`: train on every contact, the latest included, in `crossfit_groups` by customer:
    each bag leaves one group out, so every contact has out-of-fold predictions. The rule
    (learner, z) is chosen as without it (on the latest quarter of the training contacts,
    by learners fitted on the earlier ones); only the registered learner then trains on
    every contact, and its default option is judged out of fold on all of them. Evaluation
    and promotion score the held-out rows of `response_split` out of fold (`CROSSFIT_KEY` in
    the metadata). Without it, the latest contacts are held out and never trained on: a model
    retrained right after a played wave would not learn from that wave. (Judging the rule
    out of fold, on every contact or on the latest quarter, was measured in the loop bench and
    chose worse rules: bench/README.md.)
    """
    enc = encode_features(frame)
    spec, df = frame.spec, frame.data
    test = response_split(frame, seed)
    groups: np.ndarray | None = None
    if crossfit:
        if n_bags % CROSSFIT_GROUPS or n_bags < 2 * CROSSFIT_GROUPS:
            raise TrainingError(
                f"n_bags: cross-fitting in {CROSSFIT_GROUPS} groups needs an even number of "
                f"bags, at least {2 * CROSSFIT_GROUPS} (got {n_bags})"
            )
        groups = crossfit_groups(df[spec.id_column])
        test = np.zeros(len(df), dtype=bool)
    train = ~test
    t = df[spec.treatment_column].astype(str).to_numpy()[train]
    y = df[mf.CONVERTED].astype(int).to_numpy()[train]
    e = logged_propensity(frame)[train]
    if spec.control_value not in set(t):
        raise TrainingError(f"offer response: no '{spec.control_value}' rows in the training split")
    common: dict[str, Any] = dict(
        control=spec.control_value,
        n_bags=n_bags,
        categorical_features=list(enc.categorical),
        random_state=seed,
        n_jobs=BAG_JOBS,
    )
    kinds: dict[str, type[BaggedOptionLearner]] = {"s_learner": SLearner, "t_learner": TLearner}
    Xtr = enc.X[train]
    sup = sample_rows(len(Xtr), seed + 1, SUPPORT_ROWS if support_limit is None else support_limit)
    if len(set(t[sup])) < len(set(t)):
        sup = np.arange(len(Xtr))  # an option missing from the sample would never be supported
    support = AssignmentSupport(
        categorical_features=list(enc.categorical), random_state=seed, n_jobs=LGBM_THREADS
    ).fit(Xtr.iloc[sup], t[sup])
    train_frame = Frame(df[train].reset_index(drop=True), spec)
    g = None if groups is None else groups[train]
    # the rule is chosen as without cross-fitting: learners fitted on the earlier contacts,
    # judged on the latest quarter they did not see; cross-fitting changes only the final fit
    val = _validation_rows(train_frame, seed)
    fit_rows = np.flatnonzero(~val)
    limit = SELECTION_ROWS if selection_limit is None else selection_limit
    sel = fit_rows[sample_rows(len(fit_rows), seed, limit)]
    if spec.control_value not in set(t[sel]):
        sel = fit_rows  # a sample without control rows cannot score uplift
    val_rows = np.flatnonzero(val)
    val_rows = val_rows[sample_rows(len(val_rows), seed + 2, VALIDATION_ROWS)]
    scores: dict[str, float] = {}
    fitted: dict[str, BaggedOptionLearner] = {}
    for name, kind in kinds.items():
        learner = kind(**common).fit(Xtr.iloc[sel], t[sel], y[sel], propensity=e[sel])
        oob = learner.oob_proba_options_
        ok = np.isfinite(oob.to_numpy()).all(axis=1)
        scores[name] = _mean_auuc(oob[ok], t[sel][ok], y[sel][ok], spec.control_value)
        fitted[name] = learner
    zs = Z_GRID if z is None else (z,)
    best, chosen_z, table = _choose_rule(
        fitted, catalog, support, train_frame, sel, val_rows, seed, zs
    )
    # cross-fitted, every contact (the latest too) trains the model that is registered
    chosen = kinds[best](**common).fit(Xtr, t, y, propensity=e, groups=g)
    del fitted
    oob = chosen.oob_proba_options_
    ok = np.isfinite(oob.to_numpy()).all(axis=1)
    calibrator = OptionCalibrator().fit(oob[ok], t[ok], y[ok], e[ok])
    split = {
        "test_rows": str(int(test.sum())),
        "train_rows": str(int(train.sum())),
        "learner_choice_rows": str(len(sel)),
        "rule_validation_rows": str(len(val_rows)),
        "support_rows": str(len(sup)),
        "decision_rule_z": str(chosen_z),
    }
    until = train_until(frame, train) or frame.spec.notes.get(RESPONSE_TRAIN_UNTIL)
    crossfit_spec = None
    if crossfit:
        crossfit_spec = f"{CROSSFIT_GROUPS}:{CROSSFIT_SALT}"
        split[CROSSFIT_KEY] = crossfit_spec
        # every contact trained the model: `winback simulate` judges it on later ones only
        until = pd.to_datetime(df[spec.time_column]).max().isoformat()
        split["test_rows"] = str(int(response_split(frame, seed).sum()))
        split["test_scoring"] = "out of fold (cross-fitted by customer)"
    if until is not None:
        split[TRAIN_UNTIL_KEY] = until
    return ResponseFit(
        chosen,
        best,
        calibrator,
        train,
        test,
        scores,
        split,
        support,
        chosen_z,
        table,
        crossfit_spec,
    )


def _validation_rows(train_frame: Frame, seed: int) -> np.ndarray:
    """Boolean mask of the training contacts the decision rule is judged on."""
    return response_split(train_frame, seed + 3, test_share=VALIDATION_SHARE)


def _choose_rule(
    fitted: Mapping[str, BaggedOptionLearner],
    catalog: OfferCatalog,
    support: AssignmentSupport,
    train_frame: Frame,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    seed: int,
    zs: Sequence[float],
) -> tuple[str, float, pd.DataFrame]:
    """Each fitted learner as a PolicyModel, judged by `choose_rule` on the validation rows."""
    spec = train_frame.spec
    fit_frame = Frame(train_frame.data.iloc[fit_rows].reset_index(drop=True), spec)
    val_df = train_frame.data.iloc[val_rows].reset_index(drop=True)
    val_df["__action__"] = val_df[spec.treatment_column].astype(str)
    t_fit = fit_frame.data[spec.treatment_column].astype(str).to_numpy()
    y_fit = fit_frame.data[mf.CONVERTED].astype(int).to_numpy()
    e_fit = logged_propensity(fit_frame)
    Xv = encode_features(Frame(val_df, spec)).X.to_numpy(dtype=float)
    candidates, q_parts = [], []
    model: PolicyModel | None = None
    for name, learner in fitted.items():
        oob = learner.oob_proba_options_
        ok = np.isfinite(oob.to_numpy()).all(axis=1)
        cal = OptionCalibrator().fit(oob[ok], t_fit[ok], y_fit[ok], e_fit[ok])
        everything = np.ones(len(fit_rows), dtype=bool)
        fit = ResponseFit(learner, name, cal, everything, ~everything, {}, support=support)
        model = build_policy_model(catalog, fit, None, fit_frame, None, {})
        bags, values = model.option_bags(Xv)
        allowed = model.supported(Xv) & np.isfinite(values).all(axis=0)
        candidates.append(RuleCandidate(name, values, model.default_option, allowed))
        q_parts.append(bags.mean(axis=0))
    assert model is not None
    rev, mar = model.economics(Xv)  # the same for every learner: features, not boosters
    # the DR estimates' reward model is both learners' P(convert), averaged
    p = np.mean(q_parts, axis=0)
    logged, q = logged_with_reward_model(model, Frame(val_df, spec), p, rev, mar)
    return choose_rule(candidates, logged, q, zs, seed=seed)


def logged_with_reward_model(
    model: PolicyModel, frame: Frame, p: np.ndarray, revenue: np.ndarray, margin: np.ndarray
) -> tuple[LoggedData, np.ndarray]:
    """The contacts of `frame` as logged data (option given, propensity, realised reward, over
    `model.options`) and the doubly robust estimators' reward model for them: `p`, an (n, k)
    P(convert | option), times an order's margin net of the option's cost (revenue where the
    data have no margin, as the reward then is)."""
    given = frame.data[frame.spec.treatment_column].astype(str).to_numpy()
    reward, unit = logged_reward(model.costs, frame.data, given)
    per_order = (revenue if unit == "revenue" else margin)[:, None] - model.cost_matrix(revenue)
    logged = LoggedData.from_labels(model.options, given, logged_propensity(frame), reward)
    return logged, np.nan_to_num(p * per_order)


def _mean_auuc(p: pd.DataFrame, t: np.ndarray, y: np.ndarray, control: str) -> float:
    """AUUC averaged over options (weighted by rows) of out-of-bag predictions."""
    s = uplift_scores(p, t, y, control)
    s = s[np.isfinite(s["auuc"])]
    if s.empty:
        return float("-inf")
    return float(np.average(s["auuc"], weights=s["n"]))


def logged_reward(
    costs: Mapping[str, OptionCost], df: pd.DataFrame, given: np.ndarray
) -> tuple[np.ndarray, str]:
    """Realised margin net of the logged offer's cost (revenue where margin is unknown).

    `df` holds the outcome columns; `given` is the option each row received.

    A discount is already in the order's margin (revenue is after discounts), so only costs
    borne outside the order are subtracted; subtracting a discount again made every discount
    look twice as dear (on the synthetic world, pct20's logged reward per contact fell from
    1.66 to 0.03, against a true 1.23).
    """
    margin = pd.to_numeric(df[mf.OUTCOME_MARGIN], errors="coerce").to_numpy(dtype=float)
    revenue = pd.to_numeric(df[mf.OUTCOME_REVENUE], errors="coerce").to_numpy(dtype=float)
    unit = "margin"
    if not np.isfinite(margin).any():
        margin, unit = revenue, "revenue"
    margin = np.nan_to_num(margin)
    conv = df[mf.CONVERTED].to_numpy(dtype=float)
    cost = np.zeros(len(df))
    for o, oc in costs.items():
        if oc.on_order:
            continue
        sel = given == o
        cost[sel] = oc.revenue_fraction * np.nan_to_num(revenue[sel]) + oc.fixed
    return margin - conv * cost, unit


def economics_fallbacks(frame: Frame) -> tuple[float, float]:
    """Mean revenue and margin rate of converting contacts (used where features lack them)."""
    df = frame.data
    conv = df[mf.CONVERTED].astype(bool)
    rev = pd.to_numeric(df.loc[conv, mf.OUTCOME_REVENUE], errors="coerce")
    mar = pd.to_numeric(df.loc[conv, mf.OUTCOME_MARGIN], errors="coerce")
    revenue = float(rev.mean()) if rev.notna().any() else 0.0
    if mar.notna().any() and rev.sum() > 0:
        return revenue, float(mar.sum() / rev[mar.notna()].sum())
    return revenue, 1.0  # margin unknown (Hillstrom): values are in revenue


def build_policy_model(
    catalog: OfferCatalog,
    response: ResponseFit | None,
    reactivation: ReactivationFit | None,
    response_frame: Frame | None,
    reactivation_frame: Frame | None,
    metadata: dict[str, str],
    z: float = 1.96,
) -> PolicyModel:
    """Assemble the PolicyModel and pick the default (best single) option on training rows."""
    frame = response_frame or reactivation_frame
    assert frame is not None
    enc = encode_features(frame)
    options: tuple[str, ...]
    if response is not None:
        options = tuple(response.learner.options_)
        if c.NO_INCENTIVE not in options:
            options = (*options, c.NO_INCENTIVE)
    else:
        options = (*catalog.offer_ids, c.NO_INCENTIVE, c.HOLDOUT)
    control = response.learner.control_ if response is not None else c.HOLDOUT
    revenue, margin_rate = (0.0, 0.0)
    if response_frame is not None:
        revenue, margin_rate = economics_fallbacks(response_frame)
    elif reactivation_frame is not None:
        d = reactivation_frame.data
        pos = d[mf.LABEL].astype(bool)
        mean_rev = float(pd.to_numeric(d.loc[pos, mf.OUTCOME_REVENUE], errors="coerce").mean())
        revenue = mean_rev if np.isfinite(mean_rev) else 0.0  # NaN (no positives) is truthy
    model = PolicyModel(
        feature_set=enc.feature_set_json,
        feature_columns=tuple(enc.X.columns),
        options=options,
        control=control,
        costs=costs_from_catalog(catalog, options),
        catalog_version=catalog.version,
        response=response.learner if response is not None else None,
        reactivation=reactivation.model if reactivation is not None else None,
        calibration_shift=dict(response.calibrator.shift_) if response is not None else {},
        support=response.support if response is not None else None,
        z=z,
        revenue_feature=_first_present(enc.X.columns, REVENUE_FEATURES),
        margin_rate_feature=_first_present(enc.X.columns, MARGIN_RATE_FEATURES),
        fallback_revenue=revenue,
        fallback_margin_rate=margin_rate,
        metadata=metadata,
    )
    if response is not None:
        assert response_frame is not None
        train = response.train_mask
        spec = response_frame.spec
        logged = (spec.treatment_column, spec.propensity_column, *spec.outcome_columns)
        cols = [col for col in logged if col and col in response_frame.data]
        train_rows = Frame(response_frame.data.loc[train, cols].reset_index(drop=True), spec)
        model.default_option = oob_default_option(
            model,
            response.learner,
            response.calibrator,
            enc.X.to_numpy(float)[train],
            train_rows,
        )
    return model


def oob_default_option(
    model: PolicyModel,
    learner: BaggedOptionLearner,
    calibrator: OptionCalibrator,
    X_train: np.ndarray,
    train_rows: Frame,
) -> str:
    """The best single option: the highest doubly robust value of giving it to every training
    contact (`train_rows`, whose features are X_train), as `choose_rule` and the evaluation
    judge it.

    The reward model is the learner's out-of-bag P(convert), calibrated, times the margin of
    an order net of the option's cost: each row's estimate comes from the bags that did not see
    it, and they are already computed, whereas predicting every training row with every booster
    again costs more than fitting at a million contacts. The model's mean value alone chose an
    option the learner overrated where it was never sent: on a 200k synthetic world, bundle
    (true value -0.125 per contact, where guide is worth +0.197), so the careful rules fell
    back to a loss.
    """
    oob = learner.oob_proba_options_
    ok = np.isfinite(oob.to_numpy()).all(axis=1)
    p_learner = calibrator.transform(oob[ok]).to_numpy()
    p = np.zeros((int(ok.sum()), len(model.options)))
    for j, o in enumerate(model.options):
        if o in learner.options_:
            p[:, j] = p_learner[:, learner.options_.index(o)]
    rev, mar = model.economics(X_train[ok])
    rows = Frame(train_rows.data[ok].reset_index(drop=True), train_rows.spec)
    logged, q = logged_with_reward_model(model, rows, p, rev, mar)
    return best_single_option(logged, "dr", q=q)
