"""SQLite WAL pages written per recorded decision, as the API's group commit writes them.

Usage::

    .venv/bin/python bench/bench_wal.py [--preload 200000] [--groups 1,4,16] [--commits 400]
        [--keyed both|yes|no] [--contact-share 1.0] [--work /tmp/wb_bench_wal]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/winback_bench_wal]

Every recorded decision of the send-time API is one row in `decisions` plus, for a contact,
one in `contacts` and, with a `request_id`, one in `idempotency_keys`; each B-tree those rows
land in (tables and indexes) dirties at least one page, and every dirty page is appended to
the WAL by the commit and copied back by a checkpoint. Under load that I/O is what holds the
SQLite write gate (bench/README.md, issue 19, session s29), so this counts it: a store made by
the migrations is preloaded with `--preload` recorded contacts (so the B-trees are as deep as
a store that has run a while), then `--commits` group commits of each size in `--groups` are
recorded through `Store.record_group`, each entry a decision of a distinct customer drawn at
random out of 1,000,000 (a `--contact-share` of them contacts, the rest `none` decisions),
with an idempotency key (`--keyed yes`, as the bench's and a careful ESP's requests carry) or
without (`--keyed no`). Automatic checkpoints are off during a measurement; the WAL's frame
count after it, divided by the decisions, is the figure.

The count is of pages, not time: it does not depend on the machine's speed or load.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from bench_api import fresh_pg_database  # type: ignore[import-not-found]  # bench/ is the script's folder

from serving.api.service import keyed_decision_id, new_decision_id
from serving.store.caps import ContactCaps
from serving.store.engine import create_store_engine
from serving.store.migrate import upgrade_database
from serving.store.records import DecisionRecord, IdempotencyClaim
from serving.store.repository import GroupEntry, Store

CUSTOMERS = 1_000_000
OFFERS = ("pct10", "pct20", "free_shipping", "bundle", "warranty", "expert_help", "content")


def _record(
    rng: np.random.Generator, cid: str, at: datetime, keyed: bool, contact: bool = True
) -> GroupEntry:
    """A decision shaped like the API's (reasons, scores, exclusions, segment): a contact
    (`offer` by e-mail), else `none` (no contact row)."""
    key = uuid.uuid4().hex if keyed else None
    did = keyed_decision_id(key, cid, at) if key is not None else new_decision_id()
    offer = OFFERS[int(rng.integers(len(OFFERS)))]
    record = DecisionRecord(
        decision_id=did,
        customer_id=cid,
        ts=at,
        action="offer" if contact else "none",
        request_id=key,
        offer_id=offer if contact else None,
        channel="email" if contact else None,
        stage=int(rng.integers(1, 6)),
        propensity=0.93,
        expected_value=float(rng.normal()),
        reasons=[{"code": "best_expected_value", "offer_id": offer}],
        scores={o: round(float(rng.normal()), 4) for o in OFFERS},
        excluded=[{"offer_id": "pct20", "reasons": ["tier_not_eligible"]}],
        model_version="winback-uplift/3",
        policy_version="p-1a2b3c4d",
        campaign_id="bench",
        value_tier="high",
        lapse_state="lapsed",
        p_convert=0.12,
    )
    claim = IdempotencyClaim(key, "f" * 64, "/v1/recommendations", at) if key else None
    return GroupEntry(record, ContactCaps(), claim, None)


def _customers(rng: np.random.Generator, n: int) -> list[str]:
    return [f"c{int(i):07d}" for i in rng.choice(CUSTOMERS, size=n, replace=False)]


def _wal_frames(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        _busy, frames, _ = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)
    finally:
        con.close()


def _truncate(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return 0


def _pg_wal_bytes(store: Store, checkpoint: bool = False) -> int:
    """PostgreSQL's WAL position in bytes (after a CHECKPOINT when asked)."""
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if checkpoint:
            conn.exec_driver_sql("CHECKPOINT")
        lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar()
    return int(lsn)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preload", type=int, default=200_000)
    ap.add_argument("--groups", default="1,4,16")
    ap.add_argument("--commits", type=int, default=400)
    ap.add_argument("--keyed", choices=("both", "yes", "no"), default="both")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wb_bench_wal"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pg-url",
        default=None,
        help="measure on PostgreSQL instead: WAL bytes per decision (pg_current_wal_lsn, after "
        "a CHECKPOINT, so full-page images count each page a measurement touches first) in a "
        "database the bench drops and creates afresh (its own, never a shared one)",
    )
    ap.add_argument(
        "--contact-share",
        type=float,
        default=1.0,
        help="share of the measured decisions that are contacts (the rest: `none`, no contact "
        "row); bench_api.py's requests are about 0.1",
    )
    args = ap.parse_args(argv)
    try:
        groups = [int(g) for g in args.groups.split(",")]
    except ValueError:
        print(f"--groups: expected comma-separated integers, got {args.groups!r}", file=sys.stderr)
        return 2
    if any(g < 1 for g in groups) or args.preload < 0 or args.commits < 1:
        print("--groups, --commits: at least 1; --preload: at least 0", file=sys.stderr)
        return 2
    if not 0.0 <= args.contact_share <= 1.0:
        print(f"--contact-share: must be in [0, 1], got {args.contact_share}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    db = args.work / "store.db"
    pg = args.pg_url is not None
    if pg:
        fresh_pg_database(args.pg_url)
    url = args.pg_url if pg else f"sqlite:///{db}"
    upgrade_database(url)
    # SQLite: autocheckpoint off, the WAL keeps every frame the measured commits append
    store = Store(create_store_engine(url, wal_autocheckpoint=None if pg else 0))
    at = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    done = 0
    while done < args.preload:  # preloaded in groups of 500, checkpointed as it goes
        n = min(500, args.preload - done)
        at += timedelta(seconds=1)
        store.record_group([_record(rng, c, at, True) for c in _customers(rng, n)])
        done += n
        if not pg and done % 20_000 < 500:
            _truncate(db)
    if pg:
        with store.engine.connect() as conn:
            page = conn.exec_driver_sql("SHOW block_size").scalar()
    else:
        page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    print(
        f"store: {'PostgreSQL' if pg else 'SQLite'}, {args.preload:,} contacts preloaded; "
        f"page size {page} bytes; contacts {args.contact_share:.0%} of the measured decisions"
    )
    unit = "WAL KB" if pg else "WAL pages"
    print(f"| request_id | group size | commits | {unit} per commit | {unit} per decision |")
    print("|---|---|---|---|---|")
    for keyed in {"both": (True, False), "yes": (True,), "no": (False,)}[args.keyed]:
        for g in groups:
            start = _pg_wal_bytes(store, checkpoint=True) if pg else _truncate(db)
            for _ in range(args.commits):
                at += timedelta(seconds=1)
                store.record_group(
                    [
                        _record(rng, c, at, keyed, bool(rng.random() < args.contact_share))
                        for c in _customers(rng, g)
                    ]
                )
            # SQLite: frames; PostgreSQL: KB
            frames = (_pg_wal_bytes(store) - start) / 1024 if pg else _wal_frames(db)
            print(
                f"| {'yes' if keyed else 'no'} | {g} | {args.commits} | "
                f"{frames / args.commits:.1f} | {frames / (args.commits * g):.2f} |"
            )
    store.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
