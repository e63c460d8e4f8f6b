"""Find customers of the demo world for the README tour: one per decision a retention team asks
about (an incentive on the way, blocked by consent, in the holdout).

Decides for every customer of the serving snapshot with the engine the API uses (policy,
catalog and model from the WINBACK_* settings, exploration key `--key`, at `--at`, default
now) and prints candidates of each kind, lapsed or at risk (eligible), with their figures:

- incentive path: at journey step 4 now with a contact chosen, and an incentive
  (`is_incentive`) that the model values above zero and no tier rule blocks. After that
  contact is recorded, step 5 (incentives only) is due 10 days later; the README asks about
  it with a dry run at that time;
- consent: every option blocked by `consent_opted_out`;
- holdout: in the holdout group.

Run after `make demo-model`:
    WINBACK_CATALOG_PATH=data/demo/offers.yaml .venv/bin/python bench/tour_customers.py
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.snapshot import Snapshot
from serving.batch.job import load_decider
from serving.decide import decide_rows
from serving.engine import reasons as r
from serving.model_scorer import mlflow_scorer_loader
from serving.settings import get_serving_settings
from training.tracking import configure_tracking

ELIGIBLE = ("at_risk", "lapsed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", type=Path, default=None, help="default WINBACK_SNAPSHOT_DIR")
    parser.add_argument("--key", default="tour", help="exploration key (the campaign id)")
    parser.add_argument("--at", default=None, help="decision time, ISO (default: now, UTC)")
    parser.add_argument("--show", type=int, default=5, help="candidates listed per kind")
    args = parser.parse_args()

    configure_tracking()
    settings = get_serving_settings()
    snapshot = Snapshot.load(args.snapshot or settings.snapshot_dir)
    decider, error = load_decider(settings, mlflow_scorer_loader())
    if error:
        raise SystemExit(f"model unavailable: {error}")
    at = pd.Timestamp(args.at).to_pydatetime() if args.at else datetime.now(UTC)
    at = at.replace(tzinfo=None)
    ids = np.empty(len(snapshot.row_of), dtype=object)
    for cid, row in snapshot.row_of.items():
        ids[row] = cid
    decided = decide_rows(
        decider,
        snapshot.matrix,
        np.ones(len(ids), dtype=bool),
        ids,
        snapshot.feature_set,
        snapshot.as_of.to_pydatetime(),
        at,
        "auto",
        args.key,
    )
    b = decided.batch
    code = {name: i for i, name in enumerate(r.EXCLUSION_ORDER)}
    options = list(b.options.offer_ids)
    incentive = np.asarray(b.options.is_incentive, dtype=bool)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "action": b.action,
            "stage": b.stage,
            "lapse_state": decided.lapse_state,
            "value_tier": decided.value_tier,
        }
    )
    eligible = frame["lapse_state"].isin(ELIGIBLE).to_numpy()
    tier_blocked = b.exclusion == code["offer_tier_not_eligible"]
    usable = incentive & ~tier_blocked & np.isfinite(b.values)
    inc_values = np.where(usable, b.values, -np.inf)
    best_inc = inc_values.argmax(axis=1)
    frame["best_incentive"] = np.asarray(options, dtype=object)[best_inc]
    frame["incentive_value"] = inc_values[np.arange(len(frame)), best_inc]
    contact = np.isin(b.action, ("offer", "message"))
    kinds = {
        "incentive path (step 4 contact now, step 5 ten days later)": eligible
        & contact
        & (b.stage == 4)
        & (frame["incentive_value"].to_numpy() > 0),
        "blocked by consent": eligible & (b.exclusion == code["consent_opted_out"]).all(axis=1),
        "in the holdout": eligible & (b.action == "holdout"),
    }
    print(
        f"{len(frame):,} customers, snapshot {snapshot.version}, decided at {at:%Y-%m-%d %H:%M} "
        f"with key {args.key!r}; actions: {frame['action'].value_counts().to_dict()}"
    )
    for kind, mask in kinds.items():
        found = frame[mask]
        if kind.startswith("incentive"):
            found = found.sort_values("incentive_value", ascending=False)
        print(f"\n{kind}: {len(found):,} customers")
        print(found.head(args.show).to_string(index=False))


if __name__ == "__main__":
    main()
