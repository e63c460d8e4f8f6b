"""Coverage bar: does the report's 95% interval cover the TRUE incremental margin per contact?

For each campaign (a different world seed and play seed): generate a synthetic world, play
`--waves` waves on it with `serving.world.play_world` (rules only, the example policy with a
holdout share of `--holdout-share`; every decision recorded and every outcome posted through
the store, as `winback world play` does), build the report from the store (`report_summary`,
as `winback report --json` does) and compare its `incremental_margin_per_contact` interval
with `truth.json`'s overall value. Prints per campaign: the report's estimate and 95%
interval, the truth, whether the interval covers it, and the sign check (an interval that
excludes zero must have the truth's sign); then "covered k of n" (bar: k >= 18 of 20, and
no sign error).

Run: .venv/bin/python bench/bench_report_coverage.py [--campaigns 20] [--customers 20000]
     [--waves 1] [--days-between 35] [--holdout-share 0.05] [--first-seed 100]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from features.synthetic.generate import generate_world, write_world
from serving.batch.job import load_decider
from serving.reporting import report_summary
from serving.scoring import no_model_loader
from serving.settings import ServingSettings
from serving.store import Store, upgrade_database
from serving.world import play_world

POLICY = Path(__file__).resolve().parents[1] / "policy.example.yaml"


def policy_file(folder: Path, share: float) -> Path:
    """The example policy with the holdout share replaced."""
    text = POLICY.read_text(encoding="utf-8")
    text, n = re.subn(r"(holdout:\s*\n\s*share:\s*)[0-9.]+", rf"\g<1>{share}", text)
    if n != 1:
        raise SystemExit("policy.example.yaml: cannot find holdout.share to replace")
    path = folder / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def campaign(
    folder: Path, world_seed: int, play_seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    world = generate_world(args.customers, world_seed)
    data = write_world(world, folder / "world")
    url = f"sqlite:///{folder / 'store.db'}"
    upgrade_database(url)
    settings = ServingSettings(
        database_url=url,
        policy_path=policy_file(folder, args.holdout_share),
        catalog_path=data / "offers.yaml",
        model_uri="",
    )
    decider, _ = load_decider(settings, no_model_loader)
    store = Store.from_url(url)
    try:
        truth = play_world(
            data, folder / "play", decider, store, args.waves, args.days_between, play_seed
        )
        report = report_summary(store)
    finally:
        store.dispose()
    head = report["incremental_margin_per_contact"]
    weeks = sorted(report["groups"].get("wave", []), key=lambda g: str(g["group"]))
    per_wave = [
        (
            g["incremental_margin_ci_low"],
            g["incremental_margin_ci_high"],
            w.incremental_margin_per_contact,
        )
        for g, w in zip(weeks, truth.waves, strict=False)
        if g["incremental_margin_ci_low"] is not None
        and w.incremental_margin_per_contact is not None
    ]
    return {
        "per_wave": per_wave,
        "estimate": head["estimate"],
        "lo": head["ci_low"],
        "hi": head["ci_high"],
        "n_t": head["n_contacted"],
        "n_c": head["n_control"],
        "truth": truth.overall["incremental_margin_per_contact"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=20)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--waves", type=int, default=1)
    ap.add_argument("--days-between", type=int, default=35)
    ap.add_argument("--holdout-share", type=float, default=0.05)
    ap.add_argument("--first-seed", type=int, default=100)
    args = ap.parse_args()
    print(
        f"{args.campaigns} campaigns x {args.customers:,} customers, {args.waves} waves "
        f"{args.days_between} days apart, holdout share {args.holdout_share}, rules only"
    )
    print(
        f"{'#':>3} {'world':>6} {'play':>5} {'contacts':>9} {'control':>8} {'estimate':>9} "
        f"{'95% CI':>19} {'truth':>8} {'covered':>8} {'sign':>9} {'s':>5}"
    )
    covered = sign_errors = excluded = 0
    gaps: list[float] = []
    wave_intervals = wave_covered = 0
    for k in range(args.campaigns):
        world_seed, play_seed = args.first_seed + k, 1000 + args.first_seed + k
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="winback-coverage-") as tmp:
            r = campaign(Path(tmp), world_seed, play_seed, args)
        ok = r["lo"] <= r["truth"] <= r["hi"]
        gaps.append(r["estimate"] - r["truth"])
        wave_intervals += len(r["per_wave"])
        wave_covered += sum(lo <= t <= hi for lo, hi, t in r["per_wave"])
        covered += ok
        if r["lo"] > 0 or r["hi"] < 0:
            excluded += 1
            right = (r["lo"] > 0) == (r["truth"] > 0)
            sign_errors += not right
            sign = "right" if right else "WRONG"
        else:
            sign = "(spans 0)"
        print(
            f"{k + 1:>3} {world_seed:>6} {play_seed:>5} {r['n_t']:>9,} {r['n_c']:>8,} "
            f"{r['estimate']:>+9.3f} [{r['lo']:>+8.3f}, {r['hi']:>+8.3f}] {r['truth']:>+8.3f} "
            f"{'yes' if ok else 'NO':>8} {sign:>9} {time.perf_counter() - t0:>5.0f}",
            flush=True,
        )
    n = args.campaigns
    print(
        f"covered {covered} of {n} (bar: at least {int(0.9 * n)}); "
        f"{excluded} intervals exclude zero, {sign_errors} with the wrong sign (bar: 0)"
    )
    sd = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
    print(
        f"estimate - truth: mean {statistics.fmean(gaps):+.3f}, "
        f"standard error {sd / len(gaps) ** 0.5:.3f} over {len(gaps)} campaigns"
    )
    if args.waves > 1:
        print(
            f"per wave: {wave_covered} of {wave_intervals} wave intervals cover their wave's truth"
        )


if __name__ == "__main__":
    main()
