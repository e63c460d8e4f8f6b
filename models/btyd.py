"""Buy-till-you-die (BTYD) models of repeat purchasing, fitted by maximum likelihood.

- `BetaGeoModel`, BG/NBD (Fader, Hardie and Lee 2005): while alive a customer buys as a
  Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat purchase they drop out
  with probability p ~ Beta(a, b).
- `ParetoNBDModel`, Pareto/NBD (Schmittlein, Morrison and Colombo 1987): the same purchasing,
  but an exponential lifetime with rate mu ~ Gamma(s, beta), so a one-time buyer can also be
  gone (BG/NBD always calls them alive). On CDNOW (calibration to 1997-09-30) its expected
  holdout purchases rank repeat buyers better than BG/NBD's (AUC 0.769 against 0.763).
- `BTYDPrior`: a logistic model on one of them, the log-odds `ReactivationClassifier`'s
  booster starts from.

A customer is summarised by `(x, t_x, T)`: repeat purchases `x` (orders after the first), the
age of the last purchase `t_x` and the age of the customer `T`, both measured from the first
purchase (in days here). Both models give, per customer, P(alive) and the expected number of
purchases in the next `t` days: smooth functions of `(x, t_x, T)` with the right shape, which a
tree model learns only coarsely, and which extrapolate to customer ages the training rows did
not cover.

Only numpy, scipy and scikit-learn are needed (the `lifetimes` package is a benchmark-only
dependency; the fits here match its parameters on CDNOW to within 0.1%).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1
from sklearn.base import BaseEstimator

from models.errors import InvalidInputError, NotFittedError, TrainingError

_PARAMS = ("r", "alpha", "a", "b")
_PARETO_PARAMS = ("r", "alpha", "s", "beta")


def rfm_summary(
    orders: Any, days_since_first: Any, days_since_last: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(x, t_x, T)` from order count and days since the first and the last order.

    Rows without an order (count < 1 or a missing value) give NaN in all three.
    """
    n = np.asarray(orders, dtype=float)
    first = np.asarray(days_since_first, dtype=float)
    last = np.asarray(days_since_last, dtype=float)
    ok = np.isfinite(n) & np.isfinite(first) & np.isfinite(last) & (n >= 1)
    T = np.where(ok, np.maximum(first, 0.0), np.nan)
    x = np.where(ok, n - 1.0, np.nan)
    t_x = np.where(ok, np.clip(first - last, 0.0, T), np.nan)
    # one order: no repeat, so recency carries no information (BG/NBD convention t_x = 0)
    t_x = np.where(x == 0, 0.0, t_x)
    return x, t_x, T


class BetaGeoModel(BaseEstimator):
    """BG/NBD fitted by maximum likelihood (L-BFGS on the log parameters).

    Args:
        penalizer: L2 penalty on the log parameters (0 = plain maximum likelihood); a small
            value keeps the fit finite on data that cannot identify the dropout process.
        max_iter: optimizer iterations.

    Attributes:
        params_: dict with r, alpha, a, b.
        log_likelihood_: mean log-likelihood per customer at the optimum.
        n_customers_: rows the model was fitted on.
    """

    def __init__(self, penalizer: float = 1e-3, max_iter: int = 500) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, x: Any, t_x: Any, T: Any, sample_weight: Any = None) -> BetaGeoModel:
        """Fit on customers with at least one order; rows with a NaN are ignored."""
        self.params_, self.log_likelihood_, self.n_customers_ = _fit_by_likelihood(
            _log_likelihood,
            _PARAMS,
            (False, True, False, False),
            (x, t_x, T, sample_weight),
            self,
            "BG/NBD",
        )
        return self

    def _check(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError("BetaGeoModel is not fitted yet: call fit first")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def p_alive(self, x: Any, t_x: Any, T: Any) -> np.ndarray:
        """P(the customer has not dropped out at age T); NaN where an input is NaN."""
        r, alpha, a, b = self._check()
        xa, ta, Ta = _arrays(x, t_x, T)
        return 1.0 / (1.0 + _dropout_odds(r, alpha, a, b, xa, ta, Ta))

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> np.ndarray:
        """E[purchases in (T, T + t]] given the history; NaN where an input is NaN."""
        r, alpha, a, b = self._check()
        xa, ta, Ta = _arrays(x, t_x, T)
        z = t / (alpha + Ta + t)
        hyp = hyp2f1(r + xa, b + xa, a + b + xa - 1.0, z)
        # the closed form holds for a != 1 (for a < 1 both factors are negative)
        head = (a + b + xa - 1.0) / (a - 1.0 if a != 1.0 else 1e-9)
        tail = 1.0 - np.power((alpha + Ta) / (alpha + Ta + t), r + xa) * hyp
        out = head * tail / (1.0 + _dropout_odds(r, alpha, a, b, xa, ta, Ta))
        # the series may misbehave for extreme inputs: fall back to the rate approximation
        bad = ~np.isfinite(out) & np.isfinite(xa) & np.isfinite(ta) & np.isfinite(Ta)
        if bad.any():
            rate = (r + xa[bad]) / (alpha + Ta[bad])
            out[bad] = rate * t * self.p_alive(xa[bad], ta[bad], Ta[bad])
        return np.asarray(np.maximum(out, 0.0))


class ParetoNBDModel(BaseEstimator):
    """Pareto/NBD (Schmittlein, Morrison and Colombo 1987), fitted by maximum likelihood.

    While alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); the
    lifetime is exponential with rate mu ~ Gamma(s, beta), so unlike BG/NBD a customer can
    drop out before a repeat purchase and a one-time buyer's P(alive) falls with age. The
    likelihood follows Fader, Hardie and Lee (2005), "A note on deriving the Pareto/NBD model
    and related expressions", computed in log space.

    Args:
        penalizer: L2 penalty on the log parameters (0 = plain maximum likelihood).
        max_iter: optimizer iterations.

    Attributes:
        params_: dict with r, alpha, s, beta.
        log_likelihood_: mean log-likelihood per customer at the optimum.
        n_customers_: rows the model was fitted on.
    """

    def __init__(self, penalizer: float = 1e-3, max_iter: int = 500) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, x: Any, t_x: Any, T: Any, sample_weight: Any = None) -> ParetoNBDModel:
        """Fit on customers with at least one order; rows with a NaN are ignored."""
        self.params_, self.log_likelihood_, self.n_customers_ = _fit_by_likelihood(
            _pareto_log_likelihood,
            _PARETO_PARAMS,
            (False, True, False, True),
            (x, t_x, T, sample_weight),
            self,
            "Pareto/NBD",
        )
        return self

    def _check(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError("ParetoNBDModel is not fitted yet: call fit first")
        p = self.params_
        return p["r"], p["alpha"], p["s"], p["beta"]

    def p_alive(self, x: Any, t_x: Any, T: Any) -> np.ndarray:
        """P(the customer is still alive at age T); NaN where an input is NaN."""
        r, alpha, s, beta = self._check()
        xa, ta, Ta = _arrays(x, t_x, T)
        log_ratio = (
            np.log(s / (r + s + xa))
            + (r + xa) * np.log(alpha + Ta)
            + s * np.log(beta + Ta)
            + _pareto_log_a0(r, alpha, s, beta, xa, ta, Ta)
        )
        return np.asarray(1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))))

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> np.ndarray:
        """E[purchases in (T, T + t]] given the history; NaN where an input is NaN."""
        r, alpha, s, beta = self._check()
        xa, ta, Ta = _arrays(x, t_x, T)
        if abs(s - 1.0) < 1e-9:
            tail = np.log((beta + Ta + t) / (beta + Ta))
        else:
            tail = (1.0 - np.power((beta + Ta) / (beta + Ta + t), s - 1.0)) / (s - 1.0)
        rate = (r + xa) * (beta + Ta) / (alpha + Ta)
        return np.asarray(rate * tail * self.p_alive(xa, ta, Ta))


def _fit_by_likelihood(
    log_likelihood: Callable[..., np.ndarray],
    names: tuple[str, str, str, str],
    time_scales: tuple[bool, bool, bool, bool],
    data: tuple[Any, Any, Any, Any],
    model: BetaGeoModel | ParetoNBDModel,
    what: str,
) -> tuple[dict[str, float], float, int]:
    """Maximum likelihood (L-BFGS on the log parameters, L2 `model.penalizer` on them) of a
    four-parameter BTYD model. Parameters marked in `time_scales` start at the mean customer
    age, the others at 1. Returns (params, mean log-likelihood, rows fitted on)."""
    xu, tu, Tu, counts, n = _distinct_rows(*data, what)
    total = counts.sum()
    scale = max(float(np.average(Tu, weights=counts)), 1.0)

    def objective(theta: np.ndarray) -> float:
        ll = log_likelihood(np.exp(theta), xu, tu, Tu)
        return float(-(counts @ ll) / total + model.penalizer * theta @ theta)

    start = np.log(np.where(time_scales, scale, 1.0))
    res = minimize(objective, start, method="L-BFGS-B", options={"maxiter": model.max_iter})
    theta = res.x
    if not np.all(np.isfinite(theta)) or not np.isfinite(res.fun):
        raise TrainingError(f"{what}: the likelihood fit did not converge ({res.message})")
    params = dict(zip(names, (float(v) for v in np.exp(theta)), strict=True))
    return params, -float(res.fun) + model.penalizer * float(theta @ theta), n


def _distinct_rows(
    x: Any, t_x: Any, T: Any, sample_weight: Any, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Checked (x, t_x, T) without NaN rows, as distinct rows with their total weight."""
    xa, ta, Ta = _arrays(x, t_x, T)
    w = np.ones(len(xa)) if sample_weight is None else np.asarray(sample_weight, float).ravel()
    if w.shape != xa.shape:
        raise InvalidInputError("sample_weight: length differs from x")
    keep = np.isfinite(xa) & np.isfinite(ta) & np.isfinite(Ta) & np.isfinite(w)
    xa, ta, Ta, w = xa[keep], ta[keep], Ta[keep], w[keep]
    if len(xa) == 0:
        raise TrainingError(f"{what}: no customer with an order to fit on")
    if np.any(xa < 0) or np.any(ta < 0) or np.any(ta > Ta + 1e-9):
        raise InvalidInputError(f"{what}: needs x >= 0 and 0 <= t_x <= T")
    # customers with the same summary share one likelihood term: fit on the distinct rows
    rows, inverse = np.unique(np.column_stack([xa, ta, Ta]), axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=w)
    return rows[:, 0], rows[:, 1], rows[:, 2], counts, len(xa)


def _pareto_log_a0(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
) -> np.ndarray:
    """log A0 of Fader, Hardie and Lee's note (the term for dying between t_x and T)."""
    big, small = (alpha, beta) if alpha >= beta else (beta, alpha)
    b = s + 1.0 if alpha >= beta else r + x
    a = r + s + x
    c = a + 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l1 = np.log(hyp2f1(a, b, c, (big - small) / (big + t_x))) - a * np.log(big + t_x)
        l2 = np.log(hyp2f1(a, b, c, (big - small) / (big + T))) - a * np.log(big + T)
        # l1 >= l2 since t_x <= T; equal when the last order is today (A0 = 0)
        return np.asarray(l1 + np.log(-np.expm1(np.minimum(l2 - l1, 0.0))))


def _pareto_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    r, alpha, s, beta = params
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    dead = np.log(s / (r + s + x)) + _pareto_log_a0(r, alpha, s, beta, x, t_x, T)
    out = head + np.logaddexp(alive, dead)
    return np.asarray(np.where(np.isfinite(out), out, -1e10))


def _arrays(x: Any, t_x: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float).ravel()
    ta = np.asarray(t_x, dtype=float).ravel()
    Ta = np.asarray(T, dtype=float).ravel()
    if not (xa.shape == ta.shape == Ta.shape):
        raise InvalidInputError("BTYD: x, t_x and T differ in length")
    return xa, ta, Ta


def _dropout_odds(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(dropped out) / P(alive) given the history (0 for customers without a repeat)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1.0, 1e-12))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        odds = np.exp(np.minimum(log_odds, 700.0))
    return np.where(x > 0, odds, np.where(np.isnan(x), np.nan, 0.0))


def _log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie and Lee 2005, eq. 6)."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    alive = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dead = np.where(
            x > 0,
            betaln(a + 1.0, np.maximum(b + x - 1.0, 1e-12))
            - betaln(a, b)
            - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.asarray(common + np.logaddexp(alive, dead))


_ORDERS_INPUT = 2  # index of log(1 + x) among the prior's inputs: NaN only without an order

# winback_v1 columns the prior reads (days, and an order count)
ORDERS_COLUMN = "orders_lifetime"
# winback_v2's count of distinct order days, preferred where present: BTYD models count repeat
# purchase *periods* (as lifetimes' summaries do, by day); same-day orders are one purchase.
ORDER_DAYS_COLUMN = "order_days_lifetime"
FIRST_ORDER_COLUMN = "days_since_first_order"
LAST_ORDER_COLUMN = "days_since_last_order"
MONETARY_COLUMN = "aov_lifetime"


class BTYDPrior(BaseEstimator):
    """A logistic model on BTYD summaries: the log-odds a booster starts from.

    `fit` fits a `ParetoNBDModel` (or a `BetaGeoModel`; no label needed) on the rows'
    `(x, t_x, T)` and then a
    logistic regression of the label on smooth transforms of each row: log expected purchases
    in `horizon_days`, log P(alive), log(1 + x), log(1 + days since the last order),
    log(1 + age) and, when the monetary column exists, log(1 + average order value). Rows
    without an order get the training mean of each input and an indicator. Every input is a
    monotone, unbounded function of the history, so the prior extrapolates to customers older
    or more frequent than any training row, where trees stay flat.

    Scoring is a few numpy operations on a row matrix (the serving path).

    Args:
        model: "pareto" (Pareto/NBD) or "bgnbd" (BG/NBD).
        horizon_days: the `t` of the expected-purchases input.
        C: inverse L2 strength of the logistic regression (on standardized inputs).
        orders_column, first_order_column, last_order_column, monetary_column: feature names.
        max_fit_rows: the BTYD parameters (four numbers) are fitted on at most this many
            rows, drawn with `random_state`: every distinct history is one likelihood term,
            so millions of rows (4 cutoffs x 1M customers) would cost minutes for no gain in
            precision. The logistic regression uses every row.
        random_state: seed of that draw.

    Attributes:
        btyd_: the fitted ParetoNBDModel or BetaGeoModel.
        columns_: indices (in the fit matrix) of orders, first, last and monetary (-1 absent).
        mean_, scale_, coef_, intercept_: the standardization and the logistic fit.
    """

    def __init__(
        self,
        model: Literal["pareto", "bgnbd"] = "pareto",
        horizon_days: float = 90.0,
        C: float = 1.0,
        orders_column: str = ORDERS_COLUMN,
        first_order_column: str = FIRST_ORDER_COLUMN,
        last_order_column: str = LAST_ORDER_COLUMN,
        monetary_column: str = MONETARY_COLUMN,
        max_fit_rows: int = 150_000,
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.max_fit_rows = max_fit_rows
        self.random_state = random_state
        self.horizon_days = horizon_days
        self.C = C
        self.orders_column = orders_column
        self.first_order_column = first_order_column
        self.last_order_column = last_order_column
        self.monetary_column = monetary_column

    def required_columns(self) -> tuple[str, str, str]:
        return (self.orders_column, self.first_order_column, self.last_order_column)

    def fit(
        self, X: np.ndarray, y: Any, columns: list[str], sample_weight: Any = None
    ) -> BTYDPrior:
        """Fit on a row matrix whose columns are named by `columns`."""
        from sklearn.linear_model import LogisticRegression

        missing = [c for c in self.required_columns() if c not in columns]
        if missing:
            raise InvalidInputError(f"BTYD prior: needs columns {missing}")
        index = {c: i for i, c in enumerate(columns)}
        self.columns_ = tuple(
            index.get(c, -1) for c in (*self.required_columns(), self.monetary_column)
        )
        arr = np.asarray(X, dtype=float)
        if self.model not in ("pareto", "bgnbd"):
            raise InvalidInputError(f"BTYD prior: model '{self.model}' is not pareto or bgnbd")
        btyd = ParetoNBDModel() if self.model == "pareto" else BetaGeoModel()
        sub = np.arange(len(arr))
        if len(arr) > self.max_fit_rows:
            rng = np.random.default_rng(self.random_state)
            sub = np.sort(rng.choice(len(arr), size=self.max_fit_rows, replace=False))
        w_sub = None if sample_weight is None else np.asarray(sample_weight, float)[sub]
        self.btyd_: BetaGeoModel | ParetoNBDModel = btyd.fit(
            *self._summary(arr[sub]), sample_weight=w_sub
        )
        raw = self._inputs(arr)
        has = ~np.isnan(raw[:, _ORDERS_INPUT])
        if not has.any():
            raise TrainingError("BTYD prior: no row with an order")
        self.mean_ = np.nan_to_num(np.nanmean(raw[has], axis=0))
        scale = np.nan_to_num(np.nanstd(raw[has], axis=0))
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Z = self._standardize(raw)
        lr = LogisticRegression(C=self.C, max_iter=1000)
        lr.fit(Z, np.asarray(y, dtype=float).astype(int), sample_weight=sample_weight)
        self.coef_ = np.asarray(lr.coef_, dtype=float).ravel()
        self.intercept_ = float(lr.intercept_[0])
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The logistic regression's inputs per row (standardized, plus the no-order flag)."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("BTYDPrior is not fitted yet: call fit first")
        return self._standardize(self._inputs(np.asarray(X, dtype=float)))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Prior log-odds per row of a matrix in the fit's column order."""
        return np.asarray(self.transform(X) @ self.coef_ + self.intercept_)

    def _summary(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i_n, i_first, i_last, _ = self.columns_
        return rfm_summary(arr[:, i_n], arr[:, i_first], arr[:, i_last])

    def _inputs(self, arr: np.ndarray) -> np.ndarray:
        """Untransformed inputs; NaN in every column for rows without an order."""
        x, t_x, T = self._summary(arr)
        cols = [
            np.log(self.btyd_.expected_purchases(self.horizon_days, x, t_x, T) + 1e-4),
            np.log(self.btyd_.p_alive(x, t_x, T) + 1e-6),
            np.log1p(x),
            np.log1p(T - t_x),
            np.log1p(T),
        ]
        i_money = self.columns_[3]
        if i_money >= 0:
            money = arr[:, i_money]
            cols.append(np.log1p(np.clip(np.where(np.isfinite(money), money, 0.0), 0.0, None)))
        with np.errstate(invalid="ignore"):
            out = np.column_stack(cols)
        out[~np.isfinite(out)] = np.nan  # an extreme history the series cannot evaluate
        out[np.isnan(x)] = np.nan
        return out

    def _standardize(self, raw: np.ndarray) -> np.ndarray:
        """Standardized inputs, NaN as the mean (0), plus a "never ordered" indicator."""
        missing = np.isnan(raw[:, _ORDERS_INPUT : _ORDERS_INPUT + 1]).astype(float)
        Z = np.where(np.isnan(raw), 0.0, (raw - self.mean_) / self.scale_)
        return np.column_stack([Z, missing])
