"""Fitting: time-based splits, the two models, and the `PolicyModel` they make together.

Splits are honest about time: the reactivation model trains on the earlier cutoffs, stops early
and calibrates on the next one, and is tested on the last; the response model trains on the
earlier contacts and is tested on the latest quarter of them (a random split only when every
contact has the same timestamp, as in a single randomized experiment such as Hillstrom).
Customers we contacted inside a reactivation label window are left out of the reactivation
training rows, so the baseline label is not contaminated by our own contacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import constants as c
from features import modeling_frame as mf
from features.frames import Frame
from features.offers import OfferCatalog
from models.calibration import OptionCalibrator
from models.policy_model import (
    PolicyModel,
    costs_from_catalog,
    mean_value_default,
)
from models.reactivation import ReactivationClassifier
from models.support import AssignmentSupport
from models.uplift import BaggedOptionLearner, SLearner, TLearner
from models.value import incremental_margin
from training.errors import TrainingError
from training.metrics import uplift_scores

REVENUE_FEATURE = "aov_lifetime"
MARGIN_RATE_FEATURE = "margin_rate_lifetime"


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
    test: pd.DataFrame  # test rows (frame columns) with `p_reactivation`
    split: dict[str, str]


def fit_reactivation(frame: Frame, seed: int) -> ReactivationFit:
    """Train on earlier cutoffs, validate on the next, test on the last."""
    enc = encode_features(frame)
    df = frame.data
    cutoffs = sorted(df[mf.CUTOFF].unique())
    if len(cutoffs) >= 3:
        train_cuts, val_cut, test_cut = cutoffs[:-2], cutoffs[-2], cutoffs[-1]
    else:
        train_cuts, val_cut, test_cut = cutoffs[:-1], cutoffs[-1], cutoffs[-1]
    clean = ~df[mf.CONTACTED_IN_WINDOW].astype(bool)
    tr = df[mf.CUTOFF].isin(train_cuts) & clean
    va = (df[mf.CUTOFF] == val_cut) & clean
    te = df[mf.CUTOFF] == test_cut
    y = df[mf.LABEL].astype(int)
    if y[tr].nunique() < 2:
        raise TrainingError("reactivation: the training cutoffs have a single label class")
    model = ReactivationClassifier(
        categorical_features=list(enc.categorical), random_state=seed, n_jobs=2
    ).fit(enc.X[tr], y[tr], X_val=enc.X[va], y_val=y[va])
    test = df[te].copy()
    test["p_reactivation"] = model.predict_proba(enc.X[te])[:, 1]
    split = {
        "train_cutoffs": ",".join(str(pd.Timestamp(x).date()) for x in train_cuts),
        "validation_cutoff": str(pd.Timestamp(val_cut).date()),
        "test_cutoff": str(pd.Timestamp(test_cut).date()),
        "train_rows": str(int(tr.sum())),
        "excluded_contacted_rows": str(int((~clean).sum())),
    }
    return ReactivationFit(model, test, split)


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


def response_split(frame: Frame, seed: int, test_share: float = 0.3) -> np.ndarray:
    """Boolean test mask: the latest contacts by time, or a seeded random share."""
    ts = pd.to_datetime(frame.data[frame.spec.time_column]).to_numpy(dtype="datetime64[ns]")
    ns = ts.astype(np.int64)
    if len(np.unique(ns)) > 1:
        test = ns > np.quantile(ns, 1 - test_share)
        if 0 < test.sum() < len(test):
            return np.asarray(test)
    rng = np.random.default_rng(seed)
    return np.asarray(rng.random(len(ts)) < test_share)


def logged_propensity(frame: Frame) -> np.ndarray:
    """Logged propensity per row; where it is missing, the option's share of the frame's rows."""
    df, spec = frame.data, frame.spec
    t = df[spec.treatment_column].astype(str)
    share = t.map(t.value_counts(normalize=True)).to_numpy(dtype=float)
    if spec.propensity_column and spec.propensity_column in df:
        p = pd.to_numeric(df[spec.propensity_column], errors="coerce").to_numpy(dtype=float)
        return np.where(np.isfinite(p) & (p > 0), p, share)
    return share


def fit_response(frame: Frame, seed: int, n_bags: int = 8) -> ResponseFit:
    """Fit S- and T-learners on the training contacts; keep the one with the better OOB AUUC."""
    enc = encode_features(frame)
    spec, df = frame.spec, frame.data
    test = response_split(frame, seed)
    train = ~test
    t = df[spec.treatment_column].astype(str).to_numpy()
    y = df[mf.CONVERTED].astype(int).to_numpy()
    e = logged_propensity(frame)
    if spec.control_value not in set(t[train]):
        raise TrainingError(f"offer response: no '{spec.control_value}' rows in the training split")
    common = dict(
        control=spec.control_value,
        n_bags=n_bags,
        categorical_features=list(enc.categorical),
        random_state=seed,
        n_jobs=2,
    )
    learners: dict[str, BaggedOptionLearner] = {
        "s_learner": SLearner(**common),  # type: ignore[arg-type]
        "t_learner": TLearner(**common),  # type: ignore[arg-type]
    }
    Xtr = enc.X[train]
    for learner in learners.values():
        learner.fit(Xtr, t[train], y[train], propensity=e[train])
    scores: dict[str, float] = {}
    for name, learner in learners.items():
        oob = learner.oob_proba_options_
        ok = np.isfinite(oob.to_numpy()).all(axis=1)
        scores[name] = _mean_auuc(oob[ok], t[train][ok], y[train][ok], spec.control_value)
    best = max(scores, key=lambda k: (scores[k], k == "s_learner"))
    chosen = learners[best]
    oob = chosen.oob_proba_options_
    ok = np.isfinite(oob.to_numpy()).all(axis=1)
    calibrator = OptionCalibrator().fit(oob[ok], t[train][ok], y[train][ok], e[train][ok])
    support = AssignmentSupport(
        categorical_features=list(enc.categorical), random_state=seed, n_jobs=2
    ).fit(Xtr, t[train])
    split = {"test_rows": str(int(test.sum())), "train_rows": str(int(train.sum()))}
    return ResponseFit(chosen, best, calibrator, train, test, scores, split, support)


def _mean_auuc(p: pd.DataFrame, t: np.ndarray, y: np.ndarray, control: str) -> float:
    """AUUC averaged over options (weighted by rows) of out-of-bag predictions."""
    s = uplift_scores(p, t, y, control)
    s = s[np.isfinite(s["auuc"])]
    if s.empty:
        return float("-inf")
    return float(np.average(s["auuc"], weights=s["n"]))


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
        revenue_feature=REVENUE_FEATURE if REVENUE_FEATURE in enc.X else None,
        margin_rate_feature=MARGIN_RATE_FEATURE if MARGIN_RATE_FEATURE in enc.X else None,
        fallback_revenue=revenue,
        fallback_margin_rate=margin_rate,
        metadata=metadata,
    )
    if response is not None:
        Xtr = enc.X.to_numpy(dtype=float)[response.train_mask]
        bags = model._bags(Xtr)
        rev, mar = model.economics(Xtr)
        values = incremental_margin(
            bags.mean(axis=0), mar, model.cost_matrix(rev), options.index(control)
        )
        model.default_option = mean_value_default(values, options, control)
    return model
