"""CDNOW as a retailer's own data, through the command line only, vs BG/NBD and the bench.

Three commands, exactly as a user runs them (subprocesses of the project's `winback`):

    winback import transactions CDNOW_master.txt --mapping docs/mappings/cdnow.yaml --out DIR
    winback train DIR --cutoff 1997-10-01 --horizon-days 273 --model-name bench-own-data
    winback evaluate models:/bench-own-data@challenger DIR --out evaluation.json

The figure is `metrics.reactivation_auc` of that JSON: all customers, labelled "buys within the
273 days from 1997-10-01". Beside it, in the same run:

- BG/NBD (`lifetimes`, `pip install -e '.[bench]'`) fitted on the calibration period, as
  `bench/bench_cdnow.py` does, with a paired bootstrap interval of CLI - BG/NBD over the same
  resamples of the customers (`training.metrics.paired_auc_bootstrap`). For the pairing, the
  model's scores are recomputed from the registered model on the cutoff's frame (the evaluate
  command's own rows); the bench checks they give the JSON's AUC to 1e-9.
- the bench's own figure: `bench/bench_cdnow.py`'s protocol through the Python API (same
  origins, horizons and prior), recomputed here.

Bars: CLI - BG/NBD interval above zero; |CLI - bench| <= 0.002.

Run: .venv/bin/python bench/bench_own_data.py [--src CDNOW_master.txt] [--boot 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_cdnow import (  # type: ignore[import-not-found]  # bench/ is the script's folder
    CUTOFF,
    HOLDOUT_DAYS,
    SRC,
    TRAIN_HORIZON,
    TRAIN_ORIGINS,
    VALID_ORIGIN,
    bgnbd_scores,
    frame_at,
)

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "docs" / "mappings" / "cdnow.yaml"
MODEL = "bench-own-data"


def winback(*args: str, env: dict[str, str]) -> str:
    """Run one `winback` command as a user would; its output (exit on failure)."""
    exe = Path(sys.executable).parent / "winback"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"winback {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def bench_figure(src: Path, seed: int) -> float:
    """bench/bench_cdnow.py's AUC for our model, through the Python API, in this run."""
    from features.build import resolve_feature_set
    from features.datadir import load_data_dir
    from features.engine import FeatureEngine
    from features.importers.cdnow import import_cdnow
    from models.reactivation import ReactivationClassifier
    from training.metrics import roc_auc

    with tempfile.TemporaryDirectory() as tmp:
        data = load_data_dir(import_cdnow(src, Path(tmp) / "cdnow").out)
    engine = FeatureEngine(data)
    fs = resolve_feature_set(engine, CUTOFF)
    parts = [frame_at(engine, fs, pd.Timestamp(o), TRAIN_HORIZON) for o in TRAIN_ORIGINS]
    X_tr, y_tr = pd.concat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    X_va, y_va = frame_at(engine, fs, pd.Timestamp(VALID_ORIGIN), TRAIN_HORIZON)
    X_te, y_te = frame_at(engine, fs, CUTOFF, HOLDOUT_DAYS)
    model = ReactivationClassifier(
        categorical_features=list(fs.categorical_columns),
        random_state=seed,
        n_jobs=2,
        prior_horizon_days=HOLDOUT_DAYS,
    ).fit(X_tr, y_tr, X_val=X_va, y_val=y_va)
    return roc_auc(y_te, model.predict_proba(X_te)[:, 1])


def cli_scores(data: Path, uri: str) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """The registered model's scores and labels on the rows `winback evaluate` used."""
    from models.pyfunc import load_policy_model
    from training.evaluate import reactivation_test, reactivation_test_mask
    from training.inputs import load_training_inputs, protocol_args
    from training.tracking import configure_tracking

    configure_tracking()
    model = load_policy_model(uri)
    inputs = load_training_inputs(data, **protocol_args(model.metadata))  # type: ignore[arg-type]
    frame = inputs.reactivation
    assert frame is not None
    test = reactivation_test_mask(model, frame, 0)
    _, p, y = reactivation_test(model, frame, 0, test)
    ids = pd.Index(frame.data.loc[test, "customer_id"].astype(str))
    return ids, p, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument("--boot", type=int, default=1000, help="paired bootstrap resamples")
    args = ap.parse_args()
    from training.metrics import paired_auc_bootstrap, roc_auc

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "WINBACK_MLRUNS_DIR": str(tmp / "mlruns"), "WINBACK_MODEL_NAME": MODEL}
        data, report = tmp / "cdnow", tmp / "evaluation.json"
        t0 = time.perf_counter()
        out = winback(
            "import",
            "transactions",
            str(args.src),
            "--mapping",
            str(MAPPING),
            "--out",
            str(data),
            env=env,
        )
        print("$ winback import transactions ... --mapping docs/mappings/cdnow.yaml")
        print(out.strip())
        t1 = time.perf_counter()
        out = winback(
            "train",
            str(data),
            "--cutoff",
            str(CUTOFF.date()),
            "--horizon-days",
            str(HOLDOUT_DAYS),
            env=env,
        )
        print(f"$ winback train DIR --cutoff {CUTOFF.date()} --horizon-days {HOLDOUT_DAYS}")
        boxes = tuple("┏┃┡│└")  # the tables are printed by the JSON's figures below
        print("\n".join(x for x in out.splitlines() if not x.lstrip().startswith(boxes)))
        t2 = time.perf_counter()
        uri = f"models:/{MODEL}@challenger"
        winback("evaluate", uri, str(data), "--out", str(report), env=env)
        t3 = time.perf_counter()
        doc = json.loads(report.read_text())
        cli_auc = float(doc["metrics"]["reactivation_auc"])
        os.environ.update({"WINBACK_MLRUNS_DIR": env["WINBACK_MLRUNS_DIR"]})
        ids, p_cli, y = cli_scores(data, uri)
    if abs(roc_auc(y, p_cli) - cli_auc) > 1e-9:
        raise SystemExit(f"scores recomputed give AUC {roc_auc(y, p_cli)}, the JSON {cli_auc}")
    bg = bgnbd_scores(args.src).reindex(ids).to_numpy()
    if np.isnan(bg).any():
        raise SystemExit(f"BG/NBD: {int(np.isnan(bg).sum())} customers without a score")
    bg_auc = roc_auc(y, bg)
    t4 = time.perf_counter()
    bench_auc = bench_figure(args.src, seed=0)
    t5 = time.perf_counter()
    _, diff = paired_auc_bootstrap(y, p_cli, bg, args.boot, 0)
    lo, hi = np.nanquantile(diff, [0.025, 0.975])

    print(
        f"\nCDNOW, {len(y):,} customers at {CUTOFF.date()}, buy within {HOLDOUT_DAYS} days: "
        f"{y.mean():.1%}"
    )
    print(f"{'':34s} {'AUC':>8s}")
    print(f"{'CLI (evaluate JSON)':34s} {cli_auc:8.4f}")
    print(f"{'BG/NBD (same run)':34s} {bg_auc:8.4f}")
    print(f"{'bench_cdnow protocol, Python API':34s} {bench_auc:8.4f}")
    print(
        f"\nCLI - BG/NBD {cli_auc - bg_auc:+.4f}, paired bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}] "
        f"({args.boot} resamples) -> {'PASS' if lo > 0 else 'FAIL'} (interval above zero)"
    )
    gap = cli_auc - bench_auc
    print(f"CLI - bench {gap:+.4f} -> {'PASS' if abs(gap) <= 0.002 else 'FAIL'} (within 0.002)")
    print(
        f"time: import {t1 - t0:.1f}s, train {t2 - t1:.1f}s, evaluate {t3 - t2:.1f}s, "
        f"BG/NBD {t4 - t3:.1f}s, bench protocol {t5 - t4:.1f}s"
    )


if __name__ == "__main__":
    main()
