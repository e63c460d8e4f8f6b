"""Benchmark of the feature layer: features as of one cutoff, and frames for 4 cutoffs.

Usage::

    .venv/bin/python bench/bench_features.py DATA_DIR
    .venv/bin/python bench/bench_features.py --generate /tmp/w1m --customers 1000000 --seed 7

With `--generate`, the world comes from `features.synthetic` (the project's generator) when it
is importable, else from a simple vectorized stand-in defined here (said in the output).
Peak memory is the process's maximum resident set size (it includes loading the data).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features import constants as c
from features.build import engine_view
from features.datadir import load_data_dir, write_data_dir
from features.engine import FeatureEngine
from features.frames import default_cutoffs, offer_response_frame, reactivation_frame
from features.snapshot import Snapshot, write_snapshot


def peak_gb() -> float:
    """Peak resident memory since the last `reset_peak()` (Linux VmHWM), in GB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def rss_gb() -> float:
    """Current resident memory (Linux VmRSS), in GB; 0 where unavailable."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def reset_peak() -> None:
    """Start a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def standin_world(n: int, seed: int, out: Path) -> None:
    """~20 orders per customer over 3 years, contacts, events and consent; all vectorized."""
    from tests.factories import catalog

    rng = np.random.default_rng(seed)
    start = np.datetime64("2022-01-01", "s").astype(np.int64)
    span = 3 * 365 * 86400
    cid = np.char.add("c", np.arange(n).astype(str)).astype(object)
    signup = start + rng.integers(0, span // 2, n)
    n_orders = rng.poisson(20, n)
    owner = np.repeat(np.arange(n), n_orders)
    m = len(owner)
    ots = signup[owner] + (rng.random(m) * (start + span - signup[owner])).astype(np.int64)
    rev = np.round(rng.lognormal(3.5, 0.6, m), 2)
    cats = np.array(["books", "music", "garden", "toys", "home", "sport", "beauty", "food"])
    orders = pd.DataFrame(
        {
            c.ORDER_ID: np.char.add("o", np.arange(m).astype(str)),
            c.CUSTOMER_ID: cid[owner],
            c.ORDER_TS: ots.astype("datetime64[s]").astype("datetime64[ns]"),
            c.REVENUE: rev,
            c.MARGIN: np.round(rev * rng.uniform(0.2, 0.5, m), 2),
            c.CATEGORY: cats[rng.integers(0, len(cats), m)],
            c.DISCOUNT_AMOUNT: np.where(rng.random(m) < 0.2, np.round(rev * 0.1, 2), 0.0),
        }
    )
    k_owner = rng.integers(0, n, 2 * n)
    kts = np.maximum(signup[k_owner], start + span - rng.integers(0, 365 * 86400, 2 * n))
    offers = np.array(["pct10", "freeship", "guide", "none", "holdout"], dtype=object)
    offer = offers[rng.integers(0, len(offers), 2 * n)]
    kid = np.char.add("k", np.arange(2 * n).astype(str))
    contacts = pd.DataFrame(
        {
            c.CONTACT_ID: kid,
            c.CUSTOMER_ID: cid[k_owner],
            c.TS: kts.astype("datetime64[s]").astype("datetime64[ns]"),
            c.CHANNEL: np.where(offer == "holdout", None, "email"),
            c.CAMPAIGN_ID: "wave",
            c.OFFER_ID: offer,
            c.STAGE: 1,
            c.PROPENSITY: 0.2,
        }
    )
    e_owner = rng.integers(0, n, 5 * n)
    ets = signup[e_owner] + (rng.random(5 * n) * (start + span - signup[e_owner])).astype(np.int64)
    events = pd.DataFrame(
        {
            c.EVENT_ID: np.char.add("e", np.arange(5 * n).astype(str)),
            c.CUSTOMER_ID: cid[e_owner],
            c.TS: ets.astype("datetime64[s]").astype("datetime64[ns]"),
            c.EVENT_TYPE: np.array(c.EVENT_TYPES)[rng.integers(0, len(c.EVENT_TYPES), 5 * n)],
            c.CONTACT_ID: None,
        }
    )
    consent = pd.DataFrame(
        {
            c.CUSTOMER_ID: cid,
            c.CHANNEL: "email",
            c.STATUS: np.where(rng.random(n) < 0.8, "opted_in", "opted_out"),
            c.UPDATED_TS: signup.astype("datetime64[s]").astype("datetime64[ns]"),
        }
    )
    customers = pd.DataFrame(
        {c.CUSTOMER_ID: cid, c.SIGNUP_TS: signup.astype("datetime64[s]").astype("datetime64[ns]")}
    )
    tables = {
        c.CUSTOMERS: customers,
        c.ORDERS: orders,
        c.CONTACTS: contacts,
        c.EVENTS: events,
        c.CONSENT: consent,
    }
    write_data_dir(out, tables, catalog())


def generate(out: Path, n: int, seed: int) -> str:
    try:
        from features.synthetic.generate import generate_world, write_world
    except ImportError:
        standin_world(n, seed, out)
        return "bench stand-in generator (features.synthetic not importable)"
    write_world(generate_world(n, seed), out)
    return "features.synthetic generator"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path)
    parser.add_argument("--generate", type=Path, help="write a synthetic world here first")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cutoffs", type=int, default=4)
    args = parser.parse_args()
    directory = args.data_dir
    if args.generate is not None:
        t0 = time.perf_counter()
        how = generate(args.generate, args.customers, args.seed)
        print(
            f"generated {args.customers:,} customers with {how} in {time.perf_counter() - t0:.1f}s"
        )
        directory = args.generate
    if directory is None:
        parser.error("give DATA_DIR or --generate DIR")

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    data = load_data_dir(directory)
    t_load = time.perf_counter() - t0
    print(
        f"loaded+validated {directory}: {len(data.customers):,} customers, "
        f"{len(data.orders):,} orders, {len(data.contacts):,} contacts, "
        f"{len(data.events):,} events in {t_load:.1f}s (peak RSS {peak_gb():.2f} GB, "
        f"{rss_gb():.2f} GB held after loading)"
    )
    gc.collect()
    reset_peak()
    c0 = cpu()
    t0 = time.perf_counter()
    engine = FeatureEngine(data)
    t_index = time.perf_counter() - t0
    cutoff = default_cutoffs(data, engine.config.horizon_days, 1)[0]
    t1 = time.perf_counter()
    view = engine_view(engine, cutoff)
    t_query = time.perf_counter() - t1
    print(
        f"features as of {cutoff.date()}: {view.features.shape[0]:,} x {view.features.shape[1]} "
        f"in {t_index + t_query:.1f}s wall (index {t_index:.1f}s + compute {t_query:.1f}s), "
        f"{cpu() - c0:.1f}s CPU; peak RSS during this stage {peak_gb():.2f} GB "
        "(the loaded data included)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_snapshot(view, Path(tmp))
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = Snapshot.load(Path(tmp))
        t_load = time.perf_counter() - t0
        ids = list(view.features.index[:: max(len(view.features) // 100_000, 1)])
        t0 = time.perf_counter()
        for cid in ids:
            snap.get(cid)
        per_get = (time.perf_counter() - t0) / len(ids)
    print(
        f"snapshot: write {t_write:.1f}s, load {t_load:.1f}s, get() {per_get * 1e6:.2f} us "
        f"per customer ({len(ids):,} lookups)"
    )
    del view, snap
    gc.collect()
    reset_peak()
    c0 = cpu()
    t0 = time.perf_counter()
    cuts = default_cutoffs(data, engine.config.horizon_days, args.cutoffs)
    react = reactivation_frame(engine, cuts)
    t_react = time.perf_counter() - t0
    t0 = time.perf_counter()
    offer = offer_response_frame(engine)
    t_offer = time.perf_counter() - t0
    print(
        f"frames: reactivation {len(react.data):,} rows for {len(cuts)} cutoffs in {t_react:.1f}s; "
        f"offer-response {len(offer.data):,} rows in {t_offer:.1f}s; "
        f"total with indexing {t_index + t_react + t_offer:.1f}s wall, {cpu() - c0:.1f}s CPU "
        f"(+ index CPU above); peak RSS during frames {peak_gb():.2f} GB"
    )


if __name__ == "__main__":
    main()
