"""CDNOW quality bar: our reactivation model vs BG/NBD and a plain RFM LightGBM, same run.

Protocol (the classic CDNOW split): calibration period up to 1997-09-30, the next 39 weeks
(1997-10-01 .. 1998-06-30) as holdout, all 23,570 customers; the label is "buys again in the
holdout". Every score is made from data before 1997-10-01 only.

- BG/NBD (`lifetimes`, benchmark-only dependency: `pip install -e '.[bench]'`): fitted on the
  calibration period's (frequency, recency, T) in days; the score is the expected number of
  purchases in the 273-day holdout.
- Our model: `winback_v1` features from our feature engine and `ReactivationClassifier`
  (defaults: the booster starts from its BTYD prior, a logistic model on BG/NBD summaries),
  trained WITHOUT looking past 1997-09-30. Rolling origins inside the calibration period, on
  the first of each month: at each origin every customer's features as of that origin,
  labelled "orders within the next H days", H = 30 days so that the last origin's window
  (1997-09-01 .. 09-30) ends on the cutoff. Origins 1997-04-01 .. 08-01 train, 1997-09-01
  early-stops and calibrates. The 39-week label cannot be observed before the cutoff; all
  customers joined CDNOW in 1997-Q1, so the scored customers (as of 1997-10-01) are older than
  every training row, and the latest origins (with the short horizon that fits before the
  cutoff) bring the training rows closest to them. The fitted model then scores the features
  as of 1997-10-01.
- Plain RFM LightGBM: the same origins and labels, but only recency, frequency, monetary value
  and tenure, and a default `LGBMClassifier`.

AUCs on all customers and on those lapsed > 90 days at the cutoff (no order since 1997-07-02),
each beside the issue's reference figure. Bar: our AUC >= 0.773 on all customers. `--boot`
resamples the customers to print the sampling noise: the SE of our AUC and a paired interval for
ours - BG/NBD.

Run: .venv/bin/python bench/bench_cdnow.py [--src CDNOW_master.txt] [--seed 0 [1 2 ...]] [--boot N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.asof_index import NS_PER_DAY
from features.build import resolve_feature_set
from features.datadir import load_data_dir
from features.engine import FeatureEngine
from features.featureset import FeatureSet
from features.importers.cdnow import import_cdnow, read_cdnow
from models.reactivation import ReactivationClassifier
from training.metrics import paired_auc_bootstrap, roc_auc

# the shared datasets sit beside the repository: ../shared/data relative to its root
SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
CUTOFF = pd.Timestamp("1997-10-01")  # first day after the calibration period
HOLDOUT_DAYS = 39 * 7  # 1997-10-01 .. 1998-06-30
TRAIN_ORIGINS = ("1997-04-01", "1997-05-01", "1997-06-01", "1997-07-01", "1997-08-01")
VALID_ORIGIN = "1997-09-01"
TRAIN_HORIZON = (CUTOFF - pd.Timestamp(VALID_ORIGIN)).days  # 30: labels end by 1997-09-30
LAPSED_DAYS = 90
RFM = ["days_since_last_order", "orders_lifetime", "aov_lifetime", "days_since_first_order"]
REFERENCE = {  # measured by the author
    ("BG/NBD", "all"): 0.763,
    ("BG/NBD", "lapsed"): 0.658,
    ("RFM LightGBM", "all"): 0.765,
}
BAR = 0.773


def frame_at(
    engine: FeatureEngine, fs: FeatureSet, origin: pd.Timestamp, horizon_days: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Features of every customer as of `origin`, and "orders in [origin, origin + H)"."""
    codes = engine.customers_before(origin.value)
    t = np.full(len(codes), origin.value, np.int64)
    matrix, _ = engine.compute(codes, t, fs)
    lo = engine.orders.before(codes, t)
    hi = engine.orders.before(codes, t + horizon_days * NS_PER_DAY)
    X = pd.DataFrame(matrix, columns=list(fs.columns), index=engine.customer_ids[codes])
    return X, (hi > lo).astype(int)


def bgnbd_scores(src: Path) -> pd.Series:
    """BG/NBD expected purchases in the holdout, per customer id, from the calibration period."""
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import summary_data_from_transaction_data

    raw = read_cdnow(src)
    cal = raw[raw["date"] < CUTOFF]
    summary = summary_data_from_transaction_data(
        cal,
        "customer_id",
        "date",
        freq="D",
        observation_period_end=CUTOFF - pd.Timedelta(days=1),
    )
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(summary["frequency"], summary["recency"], summary["T"])
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(
        HOLDOUT_DAYS, summary["frequency"], summary["recency"], summary["T"]
    )
    return pd.Series(np.asarray(expected, dtype=float), index=summary.index.astype(str))


def rfm_lightgbm(X_tr: pd.DataFrame, y_tr: np.ndarray, X_te: pd.DataFrame, seed: int) -> np.ndarray:
    clf = lgb.LGBMClassifier(random_state=seed, verbose=-1, n_jobs=2)
    clf.fit(X_tr[RFM], y_tr)
    return np.asarray(clf.predict_proba(X_te[RFM]))[:, 1]


def cv_ceiling(X: pd.DataFrame, y: np.ndarray, seed: int) -> np.ndarray:
    """NOT honest, a reference only: 5-fold cross-fitted LightGBM on the holdout labels
    themselves (features at the cutoff), i.e. what these inputs support at best."""
    from sklearn.model_selection import StratifiedKFold

    p = np.zeros(len(y))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)
    for tr, te in folds:
        clf = lgb.LGBMClassifier(
            num_leaves=7,
            min_child_samples=200,
            n_estimators=300,
            learning_rate=0.03,
            random_state=seed,
            verbose=-1,
            n_jobs=2,
        )
        clf.fit(X.iloc[tr], y[tr])
        p[te] = np.asarray(clf.predict_proba(X.iloc[te]))[:, 1]
    return p


def cv_prior_ceiling(Z: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """NOT honest, a reference only: a logistic regression on the prior's own inputs (BTYD
    expected purchases, P(alive), log recency, frequency, age, order value), 5-fold
    cross-fitted on the holdout labels: how far re-weighting those summaries could go."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    lr = LogisticRegression(max_iter=2000)
    return np.asarray(cross_val_predict(lr, Z, y, cv=folds, method="predict_proba"))[:, 1]


def paired_bootstrap(
    y: np.ndarray, ours: np.ndarray, other: np.ndarray, n_boot: int, seed: int = 0
) -> tuple[float, float, float]:
    """Standard error of our AUC, and a percentile 95% interval of ours - other's, over the
    same resamples of the customers (how far the test set's own noise moves the figures)."""
    auc, diff = paired_auc_bootstrap(y, ours, other, n_boot, seed)
    lo, hi = np.nanquantile(diff, [0.025, 0.975])
    return float(np.nanstd(auc, ddof=1)), float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="seed(s) of our model and the RFM LightGBM; with several, each seed's AUC and "
        "their mean are printed, and the bar is judged on the mean",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also print NOT-honest references: LightGBM on every feature, and a logistic "
        "regression on the prior's inputs, each cross-fitted on the holdout labels",
    )
    ap.add_argument(
        "--boot",
        type=int,
        default=500,
        help="bootstrap resamples of the customers for the AUC's sampling noise (0: skip)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        imported = import_cdnow(args.src, Path(tmp) / "cdnow")
        data = load_data_dir(imported.out)
    engine = FeatureEngine(data)
    fs = resolve_feature_set(engine, CUTOFF)
    cats = list(fs.categorical_columns)

    parts = [frame_at(engine, fs, pd.Timestamp(o), TRAIN_HORIZON) for o in TRAIN_ORIGINS]
    X_tr = pd.concat([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    X_va, y_va = frame_at(engine, fs, pd.Timestamp(VALID_ORIGIN), TRAIN_HORIZON)
    X_te, y_te = frame_at(engine, fs, CUTOFF, HOLDOUT_DAYS)
    if len(X_te) != imported.customers:
        raise SystemExit(f"{len(X_te)} customers at the cutoff, expected {imported.customers}")
    t1 = time.perf_counter()

    # The prior summarises each history as expected purchases over the question's horizon,
    # as the BG/NBD baseline does (the trees still learn from 30-day labels).
    fitted = {}
    for seed in args.seed:
        model = ReactivationClassifier(
            categorical_features=cats,
            random_state=seed,
            n_jobs=2,
            prior_horizon_days=HOLDOUT_DAYS,
        )
        fitted[seed] = model.fit(X_tr, y_tr, X_val=X_va, y_val=y_va)
    ours = fitted[args.seed[0]]
    p_ours = {s: m.predict_proba(X_te)[:, 1] for s, m in fitted.items()}
    t2 = time.perf_counter()
    # a default LGBMClassifier does not subsample: its seed changes nothing
    X_rfm, y_rfm = pd.concat([X_tr, X_va]), np.concatenate([y_tr, y_va])
    p_rfm = rfm_lightgbm(X_rfm, y_rfm, X_te, args.seed[0])
    t3 = time.perf_counter()
    bg = bgnbd_scores(args.src).reindex(X_te.index.astype(str))
    if bg.isna().any():
        raise SystemExit(f"BG/NBD: {int(bg.isna().sum())} customers without a score")
    t4 = time.perf_counter()

    lapsed = X_te["days_since_last_order"].to_numpy() > LAPSED_DAYS
    many = len(args.seed) > 1
    scores = {"BG/NBD": bg.to_numpy(), "RFM LightGBM": p_rfm}
    for seed in args.seed:
        scores[f"ours ({fs.key})" + (f" s{seed}" if many else "")] = p_ours[seed]
    if ours.prior_ is not None:  # diagnostic: what the trees add to the prior they start from
        scores["ours: prior alone"] = ours.prior_.decision_function(X_te.to_numpy(dtype=float))
    if args.ceiling:
        scores["ceiling (CV, peeks)"] = cv_ceiling(X_te, y_te, args.seed[0])
        if ours.prior_ is not None:
            Z = ours.prior_.transform(X_te.to_numpy(dtype=float))
            scores["prior refit (peeks)"] = cv_prior_ceiling(Z, y_te, args.seed[0])
    print(
        f"CDNOW: {len(X_te):,} customers, {imported.orders:,} orders; cutoff {CUTOFF.date()}, "
        f"holdout {HOLDOUT_DAYS} days; buy again in holdout: {y_te.mean():.1%} "
        f"(lapsed > {LAPSED_DAYS}d: {lapsed.sum():,} customers, {y_te[lapsed].mean():.1%})"
    )
    print(
        f"ours: trained on origins {', '.join(TRAIN_ORIGINS)} ({len(X_tr):,} rows), "
        f"validated on {VALID_ORIGIN}, label horizon {TRAIN_HORIZON} days (ends 1997-09-30); "
        f"{'/'.join(str(m.best_iteration_) for m in fitted.values())} rounds, "
        f"{'/'.join(m.calibration_ for m in fitted.values())} calibration, "
        f"prior {'BTYD' if ours.prior_ is not None else 'none'}"
    )
    print(
        f"\n{'model':24s} {'AUC all':>8s} {'(issue)':>8s} {'AUC lapsed>90d':>15s} {'(issue)':>8s}"
    )
    for name, s in scores.items():
        ref_all = REFERENCE.get((name, "all"))
        ref_lap = REFERENCE.get((name, "lapsed"))
        print(
            f"{name:24s} {roc_auc(y_te, s):8.4f} {_ref(ref_all):>8s} "
            f"{roc_auc(y_te[lapsed], s[lapsed]):15.4f} {_ref(ref_lap):>8s}"
        )
    aucs = [roc_auc(y_te, p) for p in p_ours.values()]
    ours_auc = float(np.mean(aucs))
    what = f"mean over seeds {', '.join(map(str, args.seed))}" if many else f"seed {args.seed[0]}"
    print(
        f"\nbar: ours {ours_auc:.5f} ({what}) >= {BAR} -> "
        f"{'PASS' if ours_auc >= BAR else 'FAIL'}; "
        f"ours - BG/NBD (same run) {ours_auc - roc_auc(y_te, bg.to_numpy()):+.4f}"
    )
    if many:
        print(f"ours per seed: {', '.join(f'{a:.5f}' for a in aucs)}; spread {np.ptp(aucs):.5f}")
    if args.boot:
        se, lo, hi = paired_bootstrap(y_te, p_ours[args.seed[0]], bg.to_numpy(), args.boot)
        print(
            f"sampling noise ({args.boot} bootstrap resamples of the customers, seed "
            f"{args.seed[0]}): SE of our AUC {se:.4f}; ours - BG/NBD 95% CI [{lo:+.4f}, {hi:+.4f}]"
        )
    print(
        f"time: import+features {t1 - t0:.1f}s, ours {t2 - t1:.1f}s, RFM LightGBM "
        f"{t3 - t2:.1f}s, BG/NBD {t4 - t3:.1f}s, total {t4 - t0:.1f}s"
    )


def _ref(x: float | None) -> str:
    return f"{x:.3f}" if x is not None else "-"


if __name__ == "__main__":
    main()
