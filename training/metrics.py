"""Offline evaluation metrics, pure numpy.

Reactivation (binary): `roc_auc`, `log_loss`, `brier`, `expected_calibration_error`,
`lift_at_top`.

Uplift of one option vs the control: `uplift_curve`, `qini_curve`, `qini_coefficient`,
`auuc`, `uplift_at_k`; `select_by_auuc` picks a learner by validation AUUC averaged over
options. Definitions (N rows of the option or the control, sorted by predicted uplift, highest
first; ties are kept together: curves are evaluated only at the end of each block of equal
scores and joined by straight lines; for the first k rows, n_t(k), n_c(k) count treated and
control rows and y_t(k), y_c(k) sum their outcomes, all weighted by `weight` when given):

- Qini curve: Q(k) = y_t(k) - y_c(k) * n_t(k) / n_c(k)   (Q = y_t(k) when n_c(k) = 0).
- Uplift curve: U(k) = (y_t(k) / n_t(k) - y_c(k) / n_c(k)) * k   (0 when n_t or n_c is 0).
- Qini coefficient: (area under Q - area under the random line from (0, 0) to (N, Q(N))) / N^2,
  areas by the trapezoid rule over k in [0, N]. 0 for a random ranking, positive when the
  model ranks the responders to treatment first; a scale-free incremental-rate quantity.
- AUUC: area under U over k in [0, N], divided by N^2 (the mean over the population of the
  uplift in the top k; equal to U(N) / (2N) for a random ranking).
- Uplift at k: for the top fraction k, treated rate - control rate among those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

_EPS = 1e-15


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float).ravel()


def roc_auc(y: Any, score: Any) -> float:
    """Probability that a random positive scores above a random negative (ties count 1/2)."""
    y_arr, s = _arr(y), _arr(score)
    pos = y_arr == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # Average ranks within ties.
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_auc_bootstrap(
    y: Any, a: Any, b: Any, n_boot: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """AUC of scores `a`, and AUC(a) - AUC(b), on `n_boot` resamples of the rows (the same
    resamples for both); NaN where a resample holds a single class."""
    y_arr, sa, sb = _arr(y), _arr(a), _arr(b)
    rng = np.random.default_rng(seed)
    auc_a, diff = np.empty(n_boot), np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(y_arr), len(y_arr))
        auc_a[i] = roc_auc(y_arr[idx], sa[idx])
        diff[i] = auc_a[i] - roc_auc(y_arr[idx], sb[idx])
    return auc_a, diff


def log_loss(y: Any, p: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps]."""
    y_arr, q = _arr(y), np.clip(_arr(p), eps, 1 - eps)
    return float(-np.mean(y_arr * np.log(q) + (1 - y_arr) * np.log(1 - q)))


def brier(y: Any, p: Any) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((_arr(p) - _arr(y)) ** 2))


def expected_calibration_error(y: Any, p: Any, n_bins: int = 10) -> float:
    """sum over equal-width bins of [0, 1] of (n_b / n) * |mean(y_b) - mean(p_b)|."""
    y_arr, q = _arr(y), _arr(p)
    bins = np.clip((q * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(y_arr[m].mean() - q[m].mean())
    return float(total)


def lift_at_top(y: Any, score: Any, fraction: float = 0.1) -> float:
    """Positive rate among the top `fraction` by score (ceil(n * fraction) rows, stable order)
    divided by the overall positive rate."""
    y_arr, s = _arr(y), _arr(score)
    k = max(1, int(np.ceil(len(s) * fraction)))
    top = np.argsort(-s, kind="mergesort")[:k]
    base = y_arr.mean()
    return float(y_arr[top].mean() / base) if base > 0 else float("nan")


def _cumulative(y: Any, treated: Any, score: Any, weight: Any = None) -> tuple[np.ndarray, ...]:
    """k, n_t, n_c, y_t, y_c at the end of each tie block, with a leading zero point."""
    y_arr, t, s = _arr(y), _arr(treated).astype(bool), _arr(score)
    w = np.ones_like(y_arr) if weight is None else _arr(weight)
    order = np.argsort(-s, kind="mergesort")
    y_arr, t, s, w = y_arr[order], t[order], s[order], w[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    k = np.r_[0.0, (ends + 1).astype(float)]
    n_t = np.r_[0.0, np.cumsum(w * t)[ends]]
    n_c = np.r_[0.0, np.cumsum(w * ~t)[ends]]
    y_t = np.r_[0.0, np.cumsum(w * y_arr * t)[ends]]
    y_c = np.r_[0.0, np.cumsum(w * y_arr * ~t)[ends]]
    return k, n_t, n_c, y_t, y_c


def qini_curve(y: Any, treated: Any, score: Any, weight: Any = None) -> tuple[np.ndarray, ...]:
    """(k, Q(k)) at tie-block ends, starting at (0, 0)."""
    k, n_t, n_c, y_t, y_c = _cumulative(y, treated, score, weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n_c > 0, y_t - y_c * n_t / np.where(n_c > 0, n_c, 1), y_t)
    return k, q


def uplift_curve(y: Any, treated: Any, score: Any, weight: Any = None) -> tuple[np.ndarray, ...]:
    """(k, U(k)) at tie-block ends, starting at (0, 0)."""
    k, n_t, n_c, y_t, y_c = _cumulative(y, treated, score, weight)
    ok = (n_t > 0) & (n_c > 0)
    rate_t = y_t / np.where(ok, n_t, 1)
    rate_c = y_c / np.where(ok, n_c, 1)
    return k, np.where(ok, (rate_t - rate_c) * k, 0.0)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def qini_coefficient(y: Any, treated: Any, score: Any, weight: Any = None) -> float:
    """(area under the Qini curve - area under the random line) / N^2; see module docstring."""
    k, q = qini_curve(y, treated, score, weight)
    n = k[-1]
    return (_trapezoid(k, q) - n * q[-1] / 2.0) / n**2


def auuc(y: Any, treated: Any, score: Any, weight: Any = None) -> float:
    """Area under the uplift curve / N^2; see module docstring."""
    k, u = uplift_curve(y, treated, score, weight)
    return _trapezoid(k, u) / k[-1] ** 2


def uplift_at_k(y: Any, treated: Any, score: Any, k: float = 0.3) -> float:
    """Treated rate - control rate among the top ceil(k * N) rows by score (stable order)."""
    y_arr, t, s = _arr(y), _arr(treated).astype(bool), _arr(score)
    top = np.argsort(-s, kind="mergesort")[: max(1, int(np.ceil(len(s) * k)))]
    yt, tt = y_arr[top], t[top]
    if tt.all() or not tt.any():
        return float("nan")
    return float(yt[tt].mean() - yt[~tt].mean())


class _OptionModel(Protocol):
    def predict_proba_options(self, X: pd.DataFrame) -> pd.DataFrame: ...


def uplift_scores(
    p_options: pd.DataFrame, treatment: Any, y: Any, control: str, weight: Any = None
) -> pd.DataFrame:
    """Per non-control option: Qini coefficient, AUUC and uplift at 30%, on its rows and the
    control's, ranking by the predicted uplift p_option - p_control."""
    t = np.asarray(treatment).astype(str)
    y_arr = _arr(y)
    w = None if weight is None else _arr(weight)
    rows = []
    for o in p_options.columns:
        if o == control:
            continue
        m = (t == o) | (t == control)
        score = (p_options[o] - p_options[control]).to_numpy()[m]
        wm = None if w is None else w[m]
        rows.append(
            {
                "option": o,
                "n": int(m.sum()),
                "qini": qini_coefficient(y_arr[m], t[m] == o, score, wm),
                "auuc": auuc(y_arr[m], t[m] == o, score, wm),
                "uplift_at_30": uplift_at_k(y_arr[m], t[m] == o, score, 0.3),
            }
        )
    return pd.DataFrame(rows).set_index("option")


def select_by_auuc(
    learners: Mapping[str, _OptionModel],
    X_val: pd.DataFrame,
    treatment_val: Any,
    y_val: Any,
    control: str,
    weight: Any = None,
) -> tuple[str, pd.Series]:
    """The learner with the highest validation AUUC (mean over options, weighted by rows)."""
    scores = {}
    for name, model in learners.items():
        s = uplift_scores(model.predict_proba_options(X_val), treatment_val, y_val, control, weight)
        scores[name] = float(np.average(s["auuc"], weights=s["n"]))
    series = pd.Series(scores, name="auuc")
    return str(series.idxmax()), series
