"""The policy model: everything needed to score customers x options, in one picklable object.

`PolicyModel` carries the reactivation classifier and the offer-response learner (either may be
absent when the data did not support it), the feature set (its ordered columns are data), the
option list with each option's cost model, and the decision rule's parameters. `score` works on
a plain numpy matrix in feature-set column order and calls the LightGBM boosters directly, so
the API never builds a DataFrame per request; `predict_frame` is the DataFrame view used by the
MLflow pyfunc: it takes the feature set's own columns (text categoricals as text, encoded through
the vocabulary stored in the feature set, as training encoded them).

Decision values are conservative by design: for each option the engine ranks by

    decision_value_o = mean value of the default option + lower bound of (value_o - value_default)

where the mean and the spread are over the bagged learners. An option displaces the default (the
best single option on the training data) only where the model is confident it is better, so the
learned policy is not worse than "best single option for everyone" where the data cannot tell.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from models.base import predict_numpy
from models.errors import FeatureMismatchError, InvalidInputError
from models.reactivation import ReactivationClassifier
from models.support import AssignmentSupport
from models.uplift import (
    BaggedOptionLearner,
    DRLearner,
    SLearner,
    TLearner,
    stacked_predictions,
)
from models.value import incremental_margin

_EPS = 1e-6


# Offer types whose cost is a price reduction at checkout: it is recorded on the order itself
# (as its discount, so the order's revenue and margin are already net of it).
PRICE_REDUCTION_TYPES = frozenset({"percent_discount", "amount_discount"})


@dataclass(frozen=True)
class OptionCost:
    """Expected cost of an option if redeemed: a share of order revenue plus a fixed amount.

    `on_order`: the cost is a discount recorded on the converting order, so a realised order
    margin already carries it; other costs (shipping paid for the customer, a warranty, an
    expert's time) are borne outside the order and must be subtracted from its margin.
    """

    revenue_fraction: float = 0.0
    fixed: float = 0.0
    on_order: bool = False


@dataclass
class Scores:
    """Scores of n customers x k options (options in `PolicyModel.options` order)."""

    p: np.ndarray  # (n, k) P(convert | option), NaN without a response model
    value: np.ndarray  # (n, k) expected incremental margin (point estimate)
    decision_value: np.ndarray  # (n, k) conservative value the engine ranks by
    p_reactivation: np.ndarray  # (n,) P(order within horizon | no contact), NaN without model
    expected_revenue: np.ndarray  # (n,) revenue of a converting order
    expected_margin: np.ndarray  # (n,) margin of a converting order


@dataclass
class PolicyModel:
    """Reactivation + offer-response models packaged with what scoring needs.

    Attributes:
        feature_set: the feature set's JSON definition (name, version, ordered features).
        feature_columns: the column order of the matrix `score` takes.
        options: option ids scored; includes the control (no contact) and usually `none`.
        control: the no-contact option (value 0 by construction).
        costs: option id -> OptionCost (options absent cost nothing).
        catalog_version: version of the offer catalog the costs came from.
        response: fitted offer-response learner, or None.
        reactivation: fitted reactivation classifier, or None.
        calibration_shift: option -> logit shift fitted on randomized rows (0 when absent).
        default_option: the best single option on the training data (by mean value).
        z: normal quantile of the one-sided bound used by decision values.
        revenue_feature, margin_rate_feature: columns giving a customer's expected order
            revenue and margin rate; fallback_revenue/fallback_margin_rate where they are NaN.
        support: estimated P(option was sent | features) from the logged assignments, or None.
        min_support: below this estimated sending probability an option gets no decision value
            (NaN): the history holds no evidence of how such customers respond to it.
        metadata: free-form facts recorded at training (seed, learner, run id...).
    """

    feature_set: str
    feature_columns: tuple[str, ...]
    options: tuple[str, ...]
    control: str
    costs: dict[str, OptionCost]
    catalog_version: str
    response: BaggedOptionLearner | None = None
    reactivation: ReactivationClassifier | None = None
    calibration_shift: dict[str, float] = field(default_factory=dict)
    default_option: str = ""
    z: float = 1.96
    revenue_feature: str | None = None
    margin_rate_feature: str | None = None
    fallback_revenue: float = 0.0
    fallback_margin_rate: float = 0.0
    support: AssignmentSupport | None = None
    min_support: float = 0.02
    metadata: dict[str, str] = field(default_factory=dict)

    # --- derived -----------------------------------------------------------------------------
    # Cached: scoring runs per API request, and these only depend on fields fixed at build time
    # (dataclasses.replace builds a new object, so its caches start empty).
    @cached_property
    def feature_set_key(self) -> str:
        raw = json.loads(self.feature_set)
        return f"{raw['name']}@{raw['version']}"

    @cached_property
    def vocabularies(self) -> dict[str, tuple[str, ...]]:
        """Feature -> the sorted vocabulary its text values were coded into at training.

        Only text categoricals have one; numeric features and categoricals that arrive as codes
        (the synthetic feature sets) do not appear.
        """
        features = json.loads(self.feature_set).get("features", [])
        return {f["name"]: tuple(f["vocabulary"]) for f in features if f.get("vocabulary")}

    @cached_property
    def _column_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.feature_columns)}

    @cached_property
    def _reactivation_cols(self) -> list[int]:
        assert self.reactivation is not None
        missing = [c for c in self.reactivation.feature_names_in_ if c not in self._column_index]
        if missing:
            raise FeatureMismatchError(f"reactivation model needs columns absent here: {missing}")
        return [self._column_index[c] for c in self.reactivation.feature_names_in_]

    @cached_property
    def _cost_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        costs = [self.costs.get(o, OptionCost()) for o in self.options]
        return np.array([c.revenue_fraction for c in costs]), np.array([c.fixed for c in costs])

    @property
    def has_response(self) -> bool:
        return self.response is not None

    def _check(self, X: np.ndarray) -> np.ndarray:
        arr = np.asarray(X, dtype=float)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_columns):
            raise FeatureMismatchError(
                f"features: expected {len(self.feature_columns)} columns in feature-set order "
                f"({self.feature_set_key}), got shape {arr.shape}"
            )
        return arr

    def _col(self, X: np.ndarray, name: str | None) -> np.ndarray | None:
        i = None if name is None else self._column_index.get(name)
        return None if i is None else X[:, i]

    def economics(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected revenue and margin of a converting order, per customer."""
        n = X.shape[0]
        rev = self._col(X, self.revenue_feature)
        rate = self._col(X, self.margin_rate_feature)
        revenue = np.full(n, self.fallback_revenue) if rev is None else rev.copy()
        revenue[~np.isfinite(revenue) | (revenue <= 0)] = self.fallback_revenue
        margin_rate = np.full(n, self.fallback_margin_rate) if rate is None else rate.copy()
        margin_rate[~np.isfinite(margin_rate)] = self.fallback_margin_rate
        return revenue, revenue * np.clip(margin_rate, -1.0, 1.0)

    def cost_matrix(self, revenue: np.ndarray) -> np.ndarray:
        """(n, k) expected cost of each option if redeemed on an order of `revenue`."""
        frac, fixed = self._cost_vectors
        return revenue[:, None] * frac[None, :] + fixed[None, :]

    # --- response bags on numpy ---------------------------------------------------------------
    def _bags(self, X: np.ndarray) -> np.ndarray:
        """(n_bags, n, k_learner) P(convert | option) straight from the boosters."""
        learner = self.response
        assert learner is not None
        n = X.shape[0]
        if isinstance(learner, SLearner):
            bags = stacked_predictions(learner.models_, X, len(learner.options_), predict_numpy)
        elif isinstance(learner, TLearner | DRLearner):
            bags = np.stack(
                [np.column_stack([predict_numpy(m, X) for m in model]) for model in learner.models_]
            )
            if isinstance(learner, DRLearner):
                bags = np.clip(bags, _EPS, 1 - _EPS)
        else:  # pragma: no cover - guarded at construction
            raise InvalidInputError(f"unsupported learner {type(learner).__name__}")
        if self.calibration_shift:
            shift = np.array([self.calibration_shift.get(o, 0.0) for o in learner.options_])
            # sigmoid(logit(p) + shift) as odds times exp(shift): no log or exp per element
            odds = np.clip(bags, _EPS, 1 - _EPS) / np.clip(1 - bags, _EPS, 1)
            odds *= np.exp(shift)
            bags = odds / (1.0 + odds)
        # reorder the learner's columns to self.options (options unknown to it are NaN)
        idx = [learner.options_.index(o) if o in learner.options_ else -1 for o in self.options]
        res = np.full((bags.shape[0], n, len(self.options)), np.nan)
        for j, i in enumerate(idx):
            if i >= 0:
                res[:, :, j] = bags[:, :, i]
        return res

    def p_reactivation(self, X: np.ndarray) -> np.ndarray:
        """(n,) P(order within the horizon | no contact); NaN without a reactivation model.

        The reactivation score alone: `score` also runs every response booster on every row.
        """
        X = self._check(X)
        if self.reactivation is None:
            return np.full(X.shape[0], np.nan)
        return self.reactivation.predict_proba_numpy(X[:, self._reactivation_cols])

    def option_bags(
        self, X: np.ndarray, groups: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per bag, (n_bags, n, k) P(convert | option) and expected incremental margin
        (with `groups`, out of fold: see `score`)."""
        X = self._check(X)
        revenue, margin = self.economics(X)
        return self._option_bags(X, revenue, margin, groups)

    def _option_bags(
        self,
        X: np.ndarray,
        revenue: np.ndarray,
        margin: np.ndarray,
        groups: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        bags = self._bags(X)
        if groups is not None:
            bags = self._out_of_fold(bags, groups)
        control = self.options.index(self.control)
        return bags, incremental_margin(bags, margin, self.cost_matrix(revenue), control)

    @property
    def cross_fitted(self) -> bool:
        """Whether the response bags were cross-fitted by group (`score(X, groups=...)`)."""
        return getattr(self.response, "bag_groups_", None) is not None

    def _out_of_fold(self, bags: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """(n_bags / G, n, k): for each row, only the bags that left its group out."""
        bag_groups = getattr(self.response, "bag_groups_", None)
        if bag_groups is None:
            raise InvalidInputError("groups: this model's response bags were not cross-fitted")
        g = np.asarray(groups, dtype=np.int64).ravel()
        n_groups = int(bag_groups.max()) + 1
        if g.shape[0] != bags.shape[1] or (g < 0).any() or (g >= n_groups).any():
            raise InvalidInputError(f"groups: need one group in 0..{n_groups - 1} per row")
        per = len(bag_groups) // n_groups
        out = np.empty((per, *bags.shape[1:]))
        for grp in range(n_groups):
            rows = g == grp
            out[:, rows] = bags[np.flatnonzero(bag_groups == grp)][:, rows]
        return out

    def score(self, X: np.ndarray, groups: np.ndarray | None = None) -> Scores:
        """Score a (n, d) matrix in feature-set column order.

        `groups` (one cross-fitting group per row, as training assigned them; only for a
        cross-fitted model) scores each row out of fold: with only the bags that never saw a
        row of its group, so a training row is scored as honestly as a new customer.
        """
        X = self._check(X)
        n, k = X.shape[0], len(self.options)
        revenue, margin = self.economics(X)
        p_react = self.p_reactivation(X)
        if self.response is None:
            nan = np.full((n, k), np.nan)
            return Scores(nan, nan.copy(), nan.copy(), p_react, revenue, margin)
        bags, values = self._option_bags(X, revenue, margin, groups)
        control = self.options.index(self.control)
        p = bags.mean(axis=0)
        value = values.mean(axis=0)
        d = self.options.index(self.default_option) if self.default_option else control
        gain = values - values[:, :, [d]]
        lcb = gain.mean(axis=0) - self.z * gain.std(axis=0, ddof=1)
        decision = value[:, [d]] + lcb
        decision[:, d] = value[:, d]
        if self.support is not None:
            decision[~self.supported(X)] = np.nan
        return Scores(p, value, decision, p_react, revenue, margin)

    def supported(self, X: np.ndarray) -> np.ndarray:
        """(n, k) whether each option was sent to customers like this often enough to judge.

        The control (no contact) is always supported; options never logged never are.
        """
        n, k = X.shape[0], len(self.options)
        if self.support is None:
            return np.ones((n, k), dtype=bool)
        est = self.support.predict_proba_numpy(X)
        out = np.zeros((n, k), dtype=bool)
        for j, o in enumerate(self.options):
            if o == self.control:
                out[:, j] = True
            elif o in self.support.options_:
                out[:, j] = est[:, self.support.options_.index(o)] >= self.min_support
        return out

    def feature_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """The feature-set columns of a DataFrame as the matrix `score` takes.

        Numeric and boolean columns (any dtype, nullable ones included) are used as numbers, so
        category codes pass through. Text or pandas-categorical values of a feature with a
        vocabulary become codes into it, as in training: unknown and missing values are NaN,
        which the boosters treat as missing. Other columns must hold numbers.

        Raises:
            FeatureMismatchError: a feature-set column is absent.
            InvalidInputError: a column without a vocabulary holds values that are not numbers.
        """
        missing = [c for c in self.feature_columns if c not in X.columns]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FeatureMismatchError(
                f"the input lacks {len(missing)} of the {self.feature_set_key} feature-set "
                f"columns: {missing[:5]}{more}"
            )
        out = np.empty((len(X), len(self.feature_columns)))
        for j, col in enumerate(self.feature_columns):
            s = X[col]
            if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                out[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
            elif col in self.vocabularies:
                # -1 for unknown and missing values (pd.Categorical with unknown values is
                # deprecated in pandas 3 and will raise)
                codes = pd.Index(self.vocabularies[col]).get_indexer(pd.Index(s.astype("string")))
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                values = pd.to_numeric(s.astype(object), errors="coerce")
                bad = values.isna() & s.notna()
                if bad.any():
                    raise InvalidInputError(
                        f"column {col}: value {s[bad].iloc[0]!r} is not a number, and the "
                        f"feature set {self.feature_set_key} has no vocabulary for {col}"
                    )
                out[:, j] = values.to_numpy(dtype=float, na_value=np.nan)
        return out

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc output: p_<option>, value_<option>, best_offer, best_value per row.

        `X` holds the feature set's columns as the data has them (see `feature_matrix`).
        """
        s = self.score(self.feature_matrix(X))
        out: dict[str, Any] = {}
        for j, o in enumerate(self.options):
            out[f"p_{o}"] = s.p[:, j]
        for j, o in enumerate(self.options):
            out[f"value_{o}"] = s.value[:, j]
        out["p_reactivation"] = s.p_reactivation
        if self.response is not None:
            dv = np.where(np.isfinite(s.decision_value), s.decision_value, -np.inf)
            best = np.argmax(dv, axis=1)
            out["best_offer"] = np.asarray(self.options, dtype=object)[best]
            out["best_value"] = s.value[np.arange(len(best)), best]
        else:
            out["best_offer"] = np.full(len(X), "", dtype=object)
            out["best_value"] = np.full(len(X), np.nan)
        return pd.DataFrame(out, index=X.index)


def costs_from_catalog(catalog: Any, options: Sequence[str]) -> dict[str, OptionCost]:
    """OptionCost per option from an OfferCatalog (reserved options cost nothing)."""
    ids = set(catalog.offer_ids)
    out = {}
    for o in options:
        if o in ids:
            offer = catalog.get(o)
            out[o] = OptionCost(
                offer.cost.revenue_fraction,
                offer.cost.fixed,
                on_order=offer.type in PRICE_REDUCTION_TYPES,
            )
    return out


def shift_from(calibrator: Any) -> Mapping[str, float]:
    return dict(getattr(calibrator, "shift_", {}))
