"""Hillstrom e-mail test: our confidence-bound policy vs the naive two-model policy vs the best
single arm ("men's e-mail to everyone"), on 70/30 splits with seeds 0, 1, 2.

Reads ../shared/data/hillstrom/hillstrom.csv (relative to the repository root) directly. Per
split, our decision rule (learner and z) is chosen as training chooses it, on a validation
quarter of the 70% part, and the chosen learner is refitted on the whole 70% part; the
policies are evaluated on the 30% part by IPS with the known 1/3 assignment probabilities, as
paired differences vs the best single arm with 95% bootstrap CIs.

Run: .venv/bin/python bench/bench_hillstrom.py [--csv PATH] [--seeds 0 1 2] [--bags 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.policy import confident_choice
from models.uplift import DRLearner, SLearner, TLearner
from training.fit import VALIDATION_SHARE, Z_GRID
from training.metrics import uplift_scores
from training.policy_value import (
    LoggedData,
    RuleCandidate,
    choose_rule,
    deterministic_policy,
    policy_difference,
)

CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom" / "hillstrom.csv"
ARMS = {"No E-Mail": "holdout", "Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email"}
CONTROL = "holdout"
BEST_ARM = "mens_email"
FEATURES = ["recency", "history", "mens", "womens", "zip_code", "newbie", "channel"]
CATEGORICAL = ["zip_code", "channel"]


def load(path: Path) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    raw = pd.read_csv(path)
    X = raw[FEATURES].copy()
    for col in CATEGORICAL:
        X[col] = raw[col].astype("category").cat.codes.astype(int)
    t = raw["segment"].map(ARMS).to_numpy().astype(str)
    outcomes = raw[["conversion", "spend"]].astype(float)
    return X, t, outcomes


def naive_two_model(
    X_tr: pd.DataFrame,
    t_tr: np.ndarray,
    y_tr: np.ndarray,
    X_te: pd.DataFrame,
    options: list[str],
    seed: int,
) -> pd.DataFrame:
    """One default LGBMClassifier per arm; predicted conversion per arm on the test rows."""
    cols = {}
    for o in options:
        m = t_tr == o
        clf = lgb.LGBMClassifier(random_state=seed, verbose=-1, n_jobs=1)
        clf.fit(X_tr[m], y_tr[m], categorical_feature=CATEGORICAL)
        cols[o] = np.asarray(clf.predict_proba(X_te))[:, 1]
    return pd.DataFrame(cols, index=X_te.index)


def fmt(row: Any, scale: float, unit: str) -> str:
    return (
        f"{row['difference'] * scale:+.3f}{unit} "
        f"[{row['ci_low'] * scale:+.3f}, {row['ci_high'] * scale:+.3f}]"
    )


def run_split(
    X: pd.DataFrame,
    t: np.ndarray,
    out: pd.DataFrame,
    seed: int,
    bags_n: int,
    n_boot: int,
    z: float | None,
) -> dict[str, tuple[Any, Any]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    cut = int(0.7 * len(X))
    tr, te = perm[:cut], perm[cut:]
    X_tr, X_te = X.iloc[tr].reset_index(drop=True), X.iloc[te].reset_index(drop=True)
    t_tr, t_te = t[tr], t[te]
    y_tr = out["conversion"].to_numpy()[tr]
    y_te, s_te = out["conversion"].to_numpy()[te], out["spend"].to_numpy()[te]

    learners = {
        "S": SLearner(
            control=CONTROL, n_bags=bags_n, categorical_features=CATEGORICAL, random_state=seed
        ),
        "T": TLearner(
            control=CONTROL, n_bags=bags_n, categorical_features=CATEGORICAL, random_state=seed
        ),
        "DR": DRLearner(
            control=CONTROL, n_bags=bags_n, categorical_features=CATEGORICAL, random_state=seed
        ),
    }
    # As training does (training.fit.fit_response): the learners are fitted on 75% of the
    # training part, every (learner, z) rule is judged on the other 25% by its DR gain over the
    # best single arm (lower end of the 95% interval), and the chosen learner is refitted on the
    # whole training part. Here the value of an option is its conversion probability.
    val = np.random.default_rng(seed + 3).random(len(X_tr)) < VALIDATION_SHARE
    fit, hold = np.flatnonzero(~val), np.flatnonzero(val)
    oob_auuc, cands, qs = {}, [], []
    for name, learner in learners.items():
        learner.fit(X_tr.iloc[fit], t_tr[fit], y_tr[fit])
        oob = learner.oob_proba_options_
        ok = oob.notna().all(axis=1).to_numpy()
        s = uplift_scores(oob[ok], t_tr[fit][ok], y_tr[fit][ok], CONTROL)
        oob_auuc[name] = float(np.average(s["auuc"], weights=s["n"]))
        bags = learner.predict_proba_options_bags(X_tr.iloc[hold])
        cands.append(RuleCandidate(name, bags, learner.best_option_))
        qs.append(bags.mean(axis=0))
    options = learners["S"].options_
    logged_val = LoggedData.from_labels(options, t_tr[hold], 1 / 3, y_tr[hold])
    zs = Z_GRID if z is None else (z,)
    chosen, chosen_z, _ = choose_rule(cands, logged_val, np.mean(qs, axis=0), zs, seed=seed)
    ours = type(learners[chosen])(
        control=CONTROL, n_bags=bags_n, categorical_features=CATEGORICAL, random_state=seed
    ).fit(X_tr, t_tr, y_tr)
    learners[chosen] = ours
    default = ours.best_option_
    ours_choice = confident_choice(
        ours.predict_proba_options_bags(X_te), options, default, z=chosen_z
    )
    naive_p = naive_two_model(X_tr, t_tr, y_tr, X_te, options, seed)
    naive_choice = naive_p.idxmax(axis=1)

    pi_best = deterministic_policy([BEST_ARM] * len(X_te), options)
    policies = {
        "naive two-model": deterministic_policy(naive_choice, options),
        "ours, greedy (no LCB)": deterministic_policy(
            ours.predict_proba_options(X_te).idxmax(axis=1), options
        ),
        "ours (chosen rule)": deterministic_policy(ours_choice, options),
        "men's e-mail to all": pi_best,
    }
    auuc_text = ", ".join(f"{k} {v:.4f}" for k, v in oob_auuc.items())
    print(
        f"\n=== seed {seed}: train {len(tr)}, test {len(te)}; rule chosen on validation: "
        f"{chosen}-learner, z {chosen_z} (OOB AUUC {auuc_text}); default arm: {default}"
    )
    print(
        f"{'policy':<22} {'share deviating':>15}  {'conversion vs best, pp [95% CI]':<34}"
        f"{'spend vs best, $ [95% CI]':<30}"
    )
    result = {}
    for name, pi in policies.items():
        conv = policy_difference(
            LoggedData.from_labels(options, t_te, 1 / 3, y_te),
            pi,
            pi_best,
            n_boot=n_boot,
            seed=seed,
        ).loc["ips"]
        spend = policy_difference(
            LoggedData.from_labels(options, t_te, 1 / 3, s_te),
            pi,
            pi_best,
            n_boot=n_boot,
            seed=seed,
        ).loc["ips"]
        share = float((pi.argmax(axis=1) != options.index(BEST_ARM)).mean())
        print(f"{name:<22} {share:>15.1%}  {fmt(conv, 100, 'pp'):<34}{fmt(spend, 1, '$'):<30}")
        result[name] = (conv, spend)

    print("Qini coefficient on the test split (per option vs holdout):")
    preds = {f"{k}-learner": v.predict_proba_options(X_te) for k, v in learners.items()}
    preds["naive two-model"] = naive_p
    for name, p in preds.items():
        s = uplift_scores(p, t_te, y_te, CONTROL)
        cells = "  ".join(f"{o}: {s.loc[o, 'qini']:+.5f}" for o in s.index)
        print(f"  {name:<18} {cells}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bags", type=int, default=8)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument(
        "--z", type=float, default=None, help="fix the bound's quantile (default: chosen)"
    )
    args = parser.parse_args()
    start = time.time()
    X, t, out = load(args.csv)
    results = {s: run_split(X, t, out, s, args.bags, args.boot, args.z) for s in args.seeds}
    print("\n=== mean difference vs men's e-mail to all over seeds")
    for name in next(iter(results.values())):
        conv = np.mean([r[name][0]["difference"] for r in results.values()]) * 100
        spend = np.mean([r[name][1]["difference"] for r in results.values()])
        print(f"  {name:<22} conversion {conv:+.3f}pp  spend {spend:+.3f}$")
    print(f"elapsed {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
