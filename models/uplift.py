"""Multi-treatment offer-response (uplift) learners on LightGBM.

Every learner estimates P(convert | option, x) for every option, the control included, and is
bagged: it is fitted `n_bags` times on bootstrap resamples (stratified by option), each fit
stopping early on its out-of-bag rows. The mean over bags is the estimate; the spread over bags
is a per-row standard error, which the confidence-bound policy (`models.policy`) uses to
deviate from the best single option only where an uplift is confidently positive.

Training is organised for speed without changing what is estimated: the training matrix is
binned into one LightGBM Dataset once, and every booster of every bag trains on a row subset
of it (in-bag rows weighted by their bootstrap counts, out-of-bag rows for early stopping), so
nothing is binned twice. Boosters run on one thread each and `n_jobs` bags are fitted at once
in threads; each bag draws its resample from its own seed and the out-of-bag sums are taken in
bag order, so the fitted model does not depend on `n_jobs`.

Learners:
- `SLearner`: one booster, the option as a categorical feature.
- `TLearner`: one booster per option.
- `DRLearner`: doubly robust pseudo-outcomes with cross-fitted per-option outcome models, then
  one regression per option of the pseudo-outcome on x (estimates E[Y(o) | x]).

Where assignment was not uniform, pass the logged `propensity` (probability of the option the
row received): S and T weight rows by 1 / propensity, DR uses it in the pseudo-outcome; every
propensity is clipped at `models.base.PROPENSITY_FLOOR` first, so a handful of rows logged at
an exploration floor's tiny probability cannot outweigh the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from models.base import (
    binned_dataset,
    booster_predict,
    check_binary,
    check_categoricals,
    check_columns,
    check_features,
    check_weights,
    inverse_propensity,
    lgb_params,
    train_on_rows,
)
from models.errors import InvalidInputError

_EPS = 1e-6
OPTION_COLUMN = "__option__"
# Rows of one stacked S-learner design (every row once per option code). Bounds its memory
# (250k held-out contacts x 9 options x 60 columns would be 1.1 GB) and lets every bag predict
# from the same block instead of each building its own copy.
_STACKED_ROWS = 1 << 18


def stacked_predictions(
    models: Sequence[Any], X: np.ndarray, k: int, predict: Callable[[Any, np.ndarray], np.ndarray]
) -> np.ndarray:
    """(len(models), n, k): each S-learner booster's prediction for every row of `X` under
    every option code 0..k-1 (the option is the design's last column).

    Rows are stacked once per option, a block of at most `_STACKED_ROWS` design rows at a time,
    and every booster predicts that block before the next is built. `predict(model, design)`
    returns one prediction per design row. Predictions do not depend on the block size.
    """
    n, d = X.shape
    out = np.empty((len(models), n, k))
    step = max(1, _STACKED_ROWS // k)
    block = np.empty((min(n, step) * k, d + 1))
    for lo in range(0, n, step):
        m = min(n, lo + step) - lo
        design = block[: m * k]  # leading rows of a C-ordered array: contiguous
        grid = design.reshape(k, m, d + 1)
        grid[:, :, :-1] = X[lo : lo + m]
        grid[:, :, -1] = np.arange(k)[:, None]
        for b, model in enumerate(models):
            out[b, lo : lo + m] = predict(model, design).reshape(k, m).T
    return out


class BaggedOptionLearner(BaseEstimator):
    """Base of the learners: input checks, bagging, out-of-bag predictions, uncertainty.

    Args:
        control: the no-contact option.
        n_bags: bootstrap resamples (at least 2: the spread over bags is the standard error).
        n_estimators, learning_rate, num_leaves, min_child_samples: LightGBM tree parameters.
        early_stopping_rounds: rounds without out-of-bag improvement before a booster stops.
        categorical_features: columns holding integer category codes.
        random_state: seed of the resamples and of LightGBM.
        n_jobs: bags fitted at once, in threads. Each booster runs on one thread: on a few
            shared cores LightGBM's own threads mostly wait on each other (measured on 2
            loaded cores: a 30,000-row round took 80 ms on 2 threads, 6.5 ms on one), while
            bags are independent. Results do not depend on n_jobs.
        max_oob_rows: each bag predicts at most this many of its out-of-bag rows (a sample
            drawn from the bag's seed; None: all). Predicting every option for every
            out-of-bag row was 45% of an S-learner's fit at 150,000 contacts, and the
            out-of-bag estimates only serve calibration and the default option, which a few
            hundred thousand rows settle.

    Attributes:
        feature_names_in_: columns seen in fit.
        options_: option labels, the control first, then the others sorted.
        control_: the control option.
        arm_rates_: observed (inverse-propensity weighted) conversion rate per option.
        best_option_: the option with the highest observed rate (the best single arm).
        models_: per bag, the fitted model(s).
        oob_proba_options_: out-of-bag P(convert | option) per training row (NaN where no
            bag that left the row out predicted it; see max_oob_rows). Fitted with `groups`:
            out-of-fold, each row's mean over the bags that left its whole group out.
        bag_groups_: fitted with `groups`, the group each bag left out (bag b leaves out group
            b mod the number of groups); None without groups.
    """

    def __init__(
        self,
        control: str = "holdout",
        n_bags: int = 8,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        early_stopping_rounds: int = 30,
        categorical_features: Sequence[str] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
        max_oob_rows: int | None = 100_000,
    ) -> None:
        self.control = control
        self.n_bags = n_bags
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.max_oob_rows = max_oob_rows

    # whether `fit(groups=...)` keeps every left-out row out of a bag (the DR learner's
    # pseudo-outcomes use out-of-bag rows of their own, so it does not)
    _cross_fits = True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # LightGBM routes missing values itself
        return tags

    # --- subclass hooks ---------------------------------------------------------------------
    def _design(self, X: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """The matrix the boosters train on (binned once), its column names and categoricals."""
        return X, list(self.feature_names_in_), list(self._cats)

    def _fit_bag(
        self,
        data: Any,
        X: np.ndarray,
        t: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        counts: np.ndarray,
        seed: int,
    ) -> Any:
        """Fit one bag on the binned `data` (rows of `X`): `w` are the inverse-propensity
        weights, `counts` the bootstrap counts (rows with count 0 are out of bag and serve for
        early stopping)."""
        raise NotImplementedError

    def _predict_bag(self, model: Any, X: np.ndarray) -> np.ndarray:
        """(n, k) probabilities in the order of `options_` for a matrix in feature order."""
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------------
    def _params(self, objective: str, seed: int) -> dict[str, Any]:
        return lgb_params(
            objective=objective,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            seed=seed,
            n_jobs=1,
        )

    def _booster(
        self,
        objective: str,
        data: Any,
        w: np.ndarray,
        counts: np.ndarray,
        fit_rows: np.ndarray,
        val_rows: np.ndarray,
        seed: int,
        what: str,
        label: np.ndarray | None = None,
    ) -> Any:
        """Booster on `fit_rows` weighted by w * counts, stopping early on `val_rows` (w).

        `label` replaces the Dataset's labels (a regression on pseudo-outcomes, say).
        """
        fit = np.flatnonzero(fit_rows)
        val = np.flatnonzero(val_rows)
        return train_on_rows(
            self._params(objective, seed),
            data,
            fit,
            weight=(w * counts)[fit],
            label=None if label is None else label[fit],
            n_estimators=self.n_estimators,
            val_rows=val,
            val_weight=w[val],
            val_label=None if label is None else label[val],
            early_stopping_rounds=self.early_stopping_rounds,
            what=what,
        )

    def fit(
        self,
        X: pd.DataFrame,
        treatment: Any,
        y: Any,
        propensity: Any = None,
        sample_weight: Any = None,
        groups: Any = None,
    ) -> BaggedOptionLearner:
        """Fit the bags; with `groups` (one integer 0..G-1 per row, e.g. a hash of the
        customer id) the bags are cross-fitted: bag b never sees a row of group b mod G (it
        neither trains nor stops early on them) and predicts exactly those rows, so
        `oob_proba_options_` is out-of-fold and `PolicyModel.score(X, groups=...)` can score
        any row with only the bags that never saw its group. n_bags must be a multiple of G,
        with at least two bags per group (their spread is the standard error)."""
        X = check_features(X)
        n = len(X)
        t = np.asarray(treatment).astype(str).ravel()
        if t.shape[0] != n:
            raise InvalidInputError(f"treatment: has {t.shape[0]} values, X has {n} rows")
        y_arr = check_binary(y, n)
        sw = check_weights(sample_weight, n)
        if self.n_bags < 2:
            raise InvalidInputError("n_bags: must be at least 2 (the spread over bags is the SE)")
        if self.max_oob_rows is not None and self.max_oob_rows < 1:
            raise InvalidInputError("max_oob_rows: must be a positive number of rows, or None")
        fold, n_groups = _check_groups(groups, n, self.n_bags)
        if fold is not None and not self._cross_fits:
            raise InvalidInputError(f"groups: {type(self).__name__} does not cross-fit")
        labels = sorted(set(t.tolist()))
        if self.control not in labels:
            raise InvalidInputError(f"treatment: no row has the control option '{self.control}'")
        if len(labels) < 2:
            raise InvalidInputError("treatment: need the control and at least one other option")
        self.options_ = [self.control] + [o for o in labels if o != self.control]
        self.control_ = self.control
        codes = pd.Categorical(t, categories=self.options_).codes.astype(np.int64)
        if propensity is None:
            # assignment taken as random at each option's share: the DR pseudo-outcome's 1/e
            self._inv_propensity = inverse_propensity((np.bincount(codes) / n)[codes], n)
            w = sw
        else:
            self._inv_propensity = inverse_propensity(propensity, n)
            w = sw * self._inv_propensity
        w = w / w.mean()
        self._cats = check_categoricals(X, self.categorical_features)
        self.arm_rates_ = pd.Series(
            [np.average(y_arr[codes == k], weights=w[codes == k]) for k in range(len(labels))],
            index=self.options_,
        )
        self.best_option_ = str(self.arm_rates_.idxmax())
        self.feature_names_in_ = np.array([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)

        Xa = X.to_numpy(dtype=float)
        design, names, cats = self._design(Xa, codes)
        data = binned_dataset(
            design,
            y_arr,
            feature_names=names,
            categorical=cats,
            params=self._params("binary", self.random_state),
            what=type(self).__name__,
        )
        del design
        seeds = np.random.SeedSequence(self.random_state).spawn(self.n_bags)

        def one_bag(b: int) -> tuple[Any, np.ndarray, np.ndarray | None]:
            rng = np.random.default_rng(seeds[b])
            counts = np.zeros(n)
            # cross-fitted: the bag's resample and early-stopping rows exclude its left-out
            # group (weight 0), and the bag predicts that group only
            seen = np.ones(n, dtype=bool) if fold is None else fold != b % n_groups
            for k in range(len(self.options_)):
                idx = np.flatnonzero((codes == k) & seen)
                if not len(idx):
                    continue
                draw = rng.integers(0, len(idx), size=len(idx))
                counts[idx] += np.bincount(draw, minlength=len(idx))
            oob = counts == 0 if fold is None else ~seen
            wb = w if fold is None else w * seen
            model = self._fit_bag(data, Xa, codes, y_arr, wb, counts, self.random_state + b)
            rows = np.flatnonzero(oob)
            if self.max_oob_rows is not None and len(rows) > self.max_oob_rows:
                rows = np.sort(rng.choice(rows, size=self.max_oob_rows, replace=False))
            predicted = np.zeros(n, dtype=bool)
            predicted[rows] = True
            return model, predicted, self._predict_bag(model, Xa[rows]) if len(rows) else None

        try:
            if self.n_jobs > 1:
                with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
                    results = list(pool.map(one_bag, range(self.n_bags)))
            else:
                results = [one_bag(b) for b in range(self.n_bags)]
        finally:
            del self._inv_propensity
        # summed in bag order, whatever order the threads finished in: same data, same sums
        oob_sum = np.zeros((n, len(self.options_)))
        oob_cnt = np.zeros(n)
        self.models_ = []
        for model, oob, pred in results:
            self.models_.append(model)
            if pred is not None:
                oob_sum[oob] += pred
                oob_cnt[oob] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            oob_mean = oob_sum / oob_cnt[:, None]
        self.oob_proba_options_ = pd.DataFrame(oob_mean, columns=self.options_, index=X.index)
        self.bag_groups_ = (
            None if fold is None else np.arange(self.n_bags, dtype=np.int64) % n_groups
        )
        return self

    def predict_proba_options_bags(self, X: pd.DataFrame) -> np.ndarray:
        """Array (n_bags, n, k): P(convert | option) from each bag, options as `options_`."""
        Xa = check_columns(self, X).to_numpy(dtype=float)
        return np.stack([self._predict_bag(m, Xa) for m in self.models_])

    def predict_proba_options(self, X: pd.DataFrame) -> pd.DataFrame:
        """DataFrame (n, k): P(convert | option) for every option (columns `options_`)."""
        bags = self.predict_proba_options_bags(X)
        return pd.DataFrame(bags.mean(axis=0), columns=self.options_, index=X.index)

    def predict_uplift(
        self, X: pd.DataFrame, reference: str | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Uplift of every option vs `reference` (default: control) and its std over bags."""
        ref = self.control_ if reference is None else reference
        if ref not in getattr(self, "options_", [ref]):
            raise InvalidInputError(f"reference: '{ref}' is not one of {self.options_}")
        bags = self.predict_proba_options_bags(X)
        diff = bags - bags[:, :, [self.options_.index(ref)]]
        mean = pd.DataFrame(diff.mean(axis=0), columns=self.options_, index=X.index)
        std = pd.DataFrame(diff.std(axis=0, ddof=1), columns=self.options_, index=X.index)
        return mean, std


def _check_groups(groups: Any, n: int, n_bags: int) -> tuple[np.ndarray | None, int]:
    """Cross-fitting groups as int64 codes 0..G-1 (None: plain bagging), and G."""
    if groups is None:
        return None, 0
    g = np.asarray(groups).ravel()
    if g.shape[0] != n or not np.issubdtype(g.dtype, np.integer) or (g < 0).any():
        raise InvalidInputError("groups: need one non-negative integer group per row")
    n_groups = int(g.max()) + 1
    if n_groups < 2 or n_bags % n_groups or n_bags // n_groups < 2:
        raise InvalidInputError(
            f"groups: {n_groups} groups need n_bags a multiple of it with at least two bags "
            f"per group (n_bags={n_bags})"
        )
    return g.astype(np.int64), n_groups


class SLearner(BaggedOptionLearner):
    """One booster on x plus the option (a categorical feature); weights 1 / clipped propensity."""

    def _design(self, X: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        out = np.empty((X.shape[0], X.shape[1] + 1))
        out[:, :-1] = X
        out[:, -1] = t
        return out, [*self.feature_names_in_, OPTION_COLUMN], [*self._cats, OPTION_COLUMN]

    def _fit_bag(
        self,
        data: Any,
        X: np.ndarray,
        t: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        counts: np.ndarray,
        seed: int,
    ) -> Any:
        return self._booster("binary", data, w, counts, counts > 0, counts == 0, seed, "S-learner")

    def _predict_bag(self, model: Any, X: np.ndarray) -> np.ndarray:
        def predict(m: Any, design: np.ndarray) -> np.ndarray:
            return booster_predict(m, design, "S-learner")

        return stacked_predictions([model], X, len(self.options_), predict)[0]


class TLearner(BaggedOptionLearner):
    """One booster per option, each on the rows that received it."""

    def _fit_bag(
        self,
        data: Any,
        X: np.ndarray,
        t: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        counts: np.ndarray,
        seed: int,
    ) -> Any:
        return [
            self._booster(
                "binary",
                data,
                w,
                counts,
                (t == k) & (counts > 0),
                (t == k) & (counts == 0),
                seed,
                f"T-learner option '{o}'",
            )
            for k, o in enumerate(self.options_)
        ]

    def _predict_bag(self, model: Any, X: np.ndarray) -> np.ndarray:
        return np.column_stack([booster_predict(m, X, "T-learner") for m in model])


class DRLearner(BaggedOptionLearner):
    """Doubly robust learner of E[Y(o) | x] for every option o.

    Within each bag, per-option outcome models mu_o are cross-fitted on two folds (each row's
    mu comes from the model that did not see it); the pseudo-outcome
    phi_o = mu_o(x) + 1[T = o] / e(x) * (y - mu_o(x)) is then regressed on x, one booster per
    option, stopping early on the out-of-bag rows.
    """

    _cross_fits = False

    def _fit_bag(
        self,
        data: Any,
        X: np.ndarray,
        t: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        counts: np.ndarray,
        seed: int,
    ) -> Any:
        n, k = len(t), len(self.options_)
        oob = counts == 0
        rng = np.random.default_rng(seed)
        fold = rng.integers(0, 2, size=n)
        mu = np.zeros((n, k))
        for f in (0, 1):
            for j, o in enumerate(self.options_):
                fit_rows = (t == j) & (counts > 0) & (fold != f)
                # stop early on out-of-bag rows of the fitting fold: rows of fold f get their mu
                # from this model, so their labels must not pick its number of trees.
                val_rows = (t == j) & (counts == 0) & (fold != f)
                m = self._booster(
                    "binary",
                    data,
                    w,
                    counts,
                    fit_rows,
                    val_rows,
                    seed,
                    f"DR-learner outcome model '{o}'",
                )
                rows = fold == f
                mu[rows, j] = booster_predict(m, X[rows], "DR-learner")
        # 1/propensity (clipped at fit) enters the pseudo-outcome, so the final fit is weighted
        # by counts only.
        inv_e = self._inv_propensity
        finals = []
        for j, o in enumerate(self.options_):
            phi = mu[:, j] + (t == j) * inv_e * (y - mu[:, j])
            finals.append(
                self._booster(
                    "regression",
                    data,
                    np.ones(n),
                    counts,
                    counts > 0,
                    oob,
                    seed,
                    f"DR-learner final model '{o}'",
                    label=phi,
                )
            )
        return finals

    def _predict_bag(self, model: Any, X: np.ndarray) -> np.ndarray:
        cols = [booster_predict(m, X, "DR-learner") for m in model]
        return np.clip(np.column_stack(cols), _EPS, 1 - _EPS)
