"""The decision log's segment columns (value tier, lapse state, predicted conversion).

Migration 0002 adds them to a store that already holds 0001 rows without losing any; the
batch `--record` path fills them (holdouts included); the campaign report reads them, and
still reads the older rows that kept the segment in their recorded context.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from features.constants import LAPSE_STATES, VALUE_TIERS
from features.featureset import WINBACK_V1
from features.snapshot import Snapshot
from serving.batch.local import Wave, score_local
from serving.batch.output import open_output
from serving.engine import CustomerBatch, OptionSet, Scores, decide
from serving.policy import parse_policy
from serving.reporting import report_summary
from serving.settings import ServingSettings
from serving.store import Store, create_store_engine, upgrade_database
from serving.store.migrate import alembic_config, current_revision
from serving.store.models import Decision, Event
from tests.factories import catalog, feature_rows, logged_decision, snapshot_of
from tests.serving.conftest import POLICY
from tests.serving.test_batch import LinearScorer, decider_of

T0 = datetime(2026, 3, 2, 9, 0)
AT = datetime(2026, 1, 10, 12, 0, 0)


# --- migration 0001 -> 0002 ------------------------------------------------------------------
_OLD_DECISIONS = [
    # (decision_id, customer, action, offer, channel, propensity, reasons, scores)
    ("d1", "c1", "offer", "pct10", "email", 0.9, '["chosen_best_value"]', '{"pct10": 4.5}'),
    ("d2", "c2", "holdout", None, None, 0.1, '["holdout_group"]', None),
    ("d3", "c3", "none", None, None, 1.0, '["no_allowed_option"]', None),
]


def _fill_at_0001(url: str) -> None:
    """Rows as a 0001 store holds them (plain SQL: the ORM already knows 0002's columns)."""
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            for did, cid, action, offer, channel, prop, reasons, scores in _OLD_DECISIONS:
                conn.execute(
                    text(
                        "INSERT INTO decisions (decision_id, request_id, customer_id, ts, action,"
                        " offer_id, channel, stage, propensity, expected_value, reasons, scores,"
                        " excluded, model_version, policy_version, campaign_id, dry_run) VALUES"
                        " (:did, :rid, :cid, :ts, :action, :offer, :channel, 1, :prop, 2.5,"
                        " :reasons, :scores, '[]', 'm/1', 'p1', 'spring', false)"
                    ),
                    {
                        "did": did,
                        "rid": f"r-{did}",
                        "cid": cid,
                        "ts": T0,
                        "action": action,
                        "offer": offer,
                        "channel": channel,
                        "prop": prop,
                        "reasons": reasons,
                        "scores": scores,
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO contacts (contact_id, decision_id, customer_id, ts, channel,"
                    " offer_id, campaign_id, stage, status) VALUES"
                    " ('d1', 'd1', 'c1', :ts, 'email', 'pct10', 'spring', 1, 'sent')"
                ),
                {"ts": T0},
            )
            conn.execute(
                text(
                    "INSERT INTO events (event_id, customer_id, ts, type, decision_id, revenue,"
                    " margin, received_ts) VALUES"
                    " ('e1', 'c1', :ts, 'order', 'd1', 80.0, 24.0, :ts)"
                ),
                {"ts": T0 + timedelta(days=2)},
            )
    finally:
        engine.dispose()


def _snapshot_of(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: [tuple(r) for r in conn.execute(text(f"SELECT {cols} FROM {t} ORDER BY 1"))]
                for t, cols in (
                    (
                        "decisions",
                        "decision_id, request_id, customer_id, ts, action, offer_id, channel,"
                        " stage, propensity, expected_value, reasons, scores, model_version,"
                        " campaign_id, dry_run",
                    ),
                    ("contacts", "contact_id, decision_id, status"),
                    ("events", "event_id, decision_id, revenue"),
                )
            }
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_every_row_and_adds_null_columns(url: str) -> None:
    upgrade_database(url, "0001")
    _fill_at_0001(url)
    before = _snapshot_of(url)
    assert len(before["decisions"]) == 3

    upgrade_database(url)
    engine = create_store_engine(url)
    try:
        assert current_revision(engine) == "0005"  # head
        insp = inspect(engine)
        cols = {c["name"]: c for c in insp.get_columns("decisions")}
        assert {"value_tier", "lapse_state", "p_convert"} <= set(cols)
        assert all(cols[c]["nullable"] for c in ("value_tier", "lapse_state", "p_convert"))
        indexes = {i["name"] for i in insp.get_indexes("decisions")}
        assert "ix_decisions_customer_ts" in indexes
        assert "ix_decisions_request_id" not in indexes  # dropped in 0005: no query used it
        with engine.connect() as conn:
            added = conn.execute(
                text("SELECT value_tier, lapse_state, p_convert FROM decisions")
            ).all()
    finally:
        engine.dispose()
    assert _snapshot_of(url) == before  # nothing already stored is lost or changed
    assert added == [(None, None, None)] * 3

    # the old rows still report; new writes carry the columns
    store = Store.from_url(url)
    try:
        summary = report_summary(store, campaign="spring")
        assert (summary["totals"]["contacts"], summary["totals"]["holdouts"]) == (1, 1)
        with Session(store.engine) as s, s.begin():
            s.add(
                Decision(
                    decision_id="d4", customer_id="c4", ts=T0, action="holdout", reasons=[],
                    value_tier="high", lapse_state="lapsed", campaign_id="spring",
                )
            )  # fmt: skip
        with Session(store.engine) as s:
            row = s.get(Decision, "d4")
            assert row is not None and (row.value_tier, row.lapse_state) == ("high", "lapsed")
    finally:
        store.dispose()


def test_downgrade_to_0001_and_back_keeps_the_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url, "0001")
    _fill_at_0001(url)
    before = _snapshot_of(url)
    upgrade_database(url)
    engine = create_store_engine(url)
    try:
        command.downgrade(alembic_config(engine), "0001")
        assert current_revision(engine) == "0001"
        cols = {c["name"] for c in inspect(engine).get_columns("decisions")}
        assert "value_tier" not in cols
    finally:
        engine.dispose()
    assert _snapshot_of(url) == before
    upgrade_database(url)
    assert _snapshot_of(url) == before


# --- the engine: P(convert) of the chosen option ---------------------------------------------
def test_decision_batch_carries_p_convert_of_the_chosen_option() -> None:
    """Per-option P(convert) differs, so only the chosen option's value can match; exploration
    (epsilon 0.5) makes some customers' choice differ from the best one."""
    options = OptionSet.from_catalog(catalog())
    policy = parse_policy(POLICY.replace("epsilon: 0.3", "epsilon: 0.5"))
    n, k = 200, len(options)
    ids = [f"c{i}" for i in range(n)]
    x = feature_rows(n, aov_lifetime=np.linspace(40, 200, n))
    batch = CustomerBatch.from_features(x, WINBACK_V1, ids, datetime(2026, 1, 1))
    p = np.tile(np.linspace(0.05, 0.5, k), (n, 1))
    value = np.tile(np.arange(1.0, k + 1.0), (n, 1))
    result = decide(
        batch, options, policy, Scores(p, value, "m/1"), AT, channel="auto", decision_key="w"
    )

    would = result.chosen >= 0  # a contact, or the contact a holdout replaced
    sent = result.sent
    assert sent.sum() > 20 and result.held_out.sum() > 0
    assert len(set(result.chosen[sent].tolist())) > 1  # exploration picked other options
    np.testing.assert_array_equal(result.p_convert[would], p[0][result.chosen[would]])
    assert np.isnan(result.p_convert[~would]).all()
    i = int(np.flatnonzero(sent)[0])
    assert result.decision(i).p_convert == pytest.approx(p[0][result.chosen[i]])
    h = result.decision(int(np.flatnonzero(result.held_out)[0]))
    assert h.p_convert is None and h.replaced is not None  # nothing sent; replaced is kept
    assert h.replaced.p_convert == pytest.approx(p[0][options.index[h.replaced.offer_id]])
    rules_only = decide(batch, options, policy, None, AT, channel="auto", decision_key="w")
    assert np.isnan(rules_only.p_convert).all()


# --- batch --record ----------------------------------------------------------------------------
N = 60


def _snapshot() -> Snapshot:
    rng = np.random.default_rng(11)
    x = feature_rows(
        N,
        aov_lifetime=rng.uniform(20, 200, N),
        value_tier=rng.integers(0, 3, N).astype(float),
        lapse_state=rng.integers(0, 4, N).astype(float),
    )
    x[5, WINBACK_V1.columns.index("value_tier")] = np.nan  # a customer without a tier
    return snapshot_of(x, [f"c{i:03d}" for i in range(N)])


def _record_wave(
    tmp_path: Path, settings: ServingSettings, wave_id: str, scored: bool = True
) -> dict[str, Decision]:
    snapshot = _snapshot()
    decider = decider_of(settings, LinearScorer())
    if not scored:
        decider = replace(decider, scorer=None)
    store = Store.from_url(settings.database_url)
    try:
        with open_output(tmp_path / f"{wave_id}.parquet") as sink:
            score_local(
                snapshot,
                decider,
                sink,
                Wave(wave_id, AT, "auto"),
                store=store,
                record=True,
                customers=[*snapshot.row_of, "not-in-snapshot"],
                chunk_rows=17,
            )
        with Session(store.engine) as s:
            rows = s.scalars(select(Decision).where(Decision.campaign_id == wave_id)).all()
            return {r.customer_id: r for r in rows}
    finally:
        store.dispose()


def test_batch_record_logs_segment_and_p_convert(tmp_path: Path, settings: ServingSettings) -> None:
    rows = _record_wave(tmp_path, settings, "wave-1")
    snap = _snapshot()
    assert len(rows) == N + 1
    tier_col = WINBACK_V1.columns.index("value_tier")
    lapse_col = WINBACK_V1.columns.index("lapse_state")
    for cid, i in snap.row_of.items():
        tier, lapse = snap.matrix[i, tier_col], snap.matrix[i, lapse_col]
        assert rows[cid].value_tier == (None if np.isnan(tier) else VALUE_TIERS[int(tier)])
        assert rows[cid].lapse_state == LAPSE_STATES[int(lapse)]
    unknown = rows["not-in-snapshot"]
    assert (unknown.value_tier, unknown.lapse_state, unknown.p_convert) == (None, None, None)

    by_action: dict[str, list[Decision]] = {}
    for r in rows.values():
        by_action.setdefault(r.action, []).append(r)
    assert {"offer", "holdout", "none"} <= set(by_action)
    contacts = by_action["offer"] + by_action.get("message", [])
    assert all(r.p_convert == pytest.approx(0.2) for r in contacts)  # LinearScorer's P(convert)
    holdouts = by_action["holdout"]
    # a holdout records the contact it replaced, with its P(convert) and its propensity
    assert all(r.p_convert == pytest.approx(0.2) and r.value_tier is not None for r in holdouts)
    assert all(r.offer_id is not None and r.channel is not None for r in holdouts)
    assert all(0 < (r.replaced_propensity or 0) <= 1 for r in holdouts)
    assert all(r.p_convert is None for r in by_action["none"])


def test_rules_only_batch_records_segment_without_p_convert(
    tmp_path: Path, settings: ServingSettings
) -> None:
    rows = _record_wave(tmp_path, settings, "wave-rules", scored=False)
    contacts = [r for r in rows.values() if r.action in ("offer", "message")]
    assert contacts and all(r.p_convert is None for r in contacts)
    assert all(r.model_version == "rules-only" for r in contacts)
    assert all(r.lapse_state is not None for r in contacts)


# --- the report's breakdown ------------------------------------------------------------------
def test_report_breaks_down_by_logged_tier_and_lapse_state(tmp_path: Path) -> None:
    """Per tier, contacts convert at `p` and holdouts at `p / 2`: each tier's lift is measured
    against its own holdouts. A few old rows carry the tier only in their `reasons`."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    store = Store.from_url(url)
    rng = np.random.default_rng(5)
    truth = {"occasional": 0.1, "mid": 0.3, "high": 0.6}
    rows: list[object] = []
    for i in range(1200):
        tier = tuple(truth)[i % 3]
        treated = i % 2 == 0
        old = i < 30  # written before 0002: the segment only in the recorded context
        cid, did = f"c{i}", f"d{i}"
        ts = T0 + timedelta(minutes=i)
        p = truth[tier] if treated else truth[tier] / 2
        rows += logged_decision(
            did,
            cid,
            ts,
            treated=treated,
            campaign_id="w",
            reasons=["chosen_best_value" if treated else "holdout_group"]
            + ([{"value_tier": tier}] if old else []),
            value_tier=None if old else tier,
            lapse_state=None if old else ("lapsed", "churned")[i % 4 // 2],
            p_convert=float(np.clip(p + rng.normal(0, 0.05), 0.01, 0.99))
            if treated and not old
            else None,
        )
        if rng.random() < p:
            at = ts + timedelta(days=3)
            rows.append(
                Event(event_id=f"{did}-o", customer_id=cid, ts=at, type="order",
                      revenue=50.0, margin=15.0, received_ts=at)
            )  # fmt: skip
    with Session(store.engine) as s, s.begin():
        s.add_all(rows)
    try:
        summary = report_summary(store, campaign="w")
    finally:
        store.dispose()

    tiers = {r["group"]: r for r in summary["groups"]["value_tier"]}
    assert set(tiers) == set(truth)  # the old rows' tiers come from their context
    assert all(r["control"] == "same segment" for r in tiers.values())
    assert all(r["contacts"] == 200 and r["holdouts"] == 200 for r in tiers.values())
    assert tiers["high"]["incremental_conversion"] > tiers["occasional"]["incremental_conversion"]
    for tier, p in truth.items():
        row = tiers[tier]
        assert (
            row["incremental_conversion_ci_low"] <= p / 2 <= row["incremental_conversion_ci_high"]
        )
    lapse = {r["group"]: r for r in summary["groups"]["lapse_state"]}
    assert {"lapsed", "churned"} <= set(lapse)
    assert lapse["lapsed"]["control"] == "same segment"
    assert not any(n.startswith(("value_tier", "lapse_state")) for n in summary["notes"])
    deciles = summary["calibration"]
    assert len(deciles) == 10
    assert deciles[-1]["realised"] > deciles[0]["realised"] + 0.2
