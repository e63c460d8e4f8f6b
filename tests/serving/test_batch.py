"""Batch scoring: same decisions as the API, atomic output, idempotent recording, summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from features.featureset import WINBACK_V1
from features.snapshot import Snapshot
from serving.api.metrics import Metrics
from serving.api.runtime import build_runtime
from serving.api.service import decide_and_record
from serving.batch.columns import COLUMNS, REASON_SEP
from serving.batch.errors import BatchError
from serving.batch.job import load_decider
from serving.batch.local import Wave, score_local
from serving.batch.output import open_output
from serving.batch.summary import NO_OFFER
from serving.decide import Decider
from serving.settings import ServingSettings
from serving.store import Preferences, Store
from serving.store.models import Contact, Decision
from tests.api.conftest import FakeSnapshots
from tests.factories import feature_rows, snapshot_of

AT = datetime(2026, 1, 10, 12, 0, 0)
N = 60


@dataclass
class LinearScorer:
    """Values that differ per customer: a per-option slope times the customer's order value."""

    slopes: dict[str, float] = field(
        default_factory=lambda: {"pct10": 0.05, "freeship": 0.08, "guide": 0.02, "none": 0.01}
    )
    version: str = "linear/1"
    feature_set_key: str = WINBACK_V1.key
    fail_after: int | None = None  # raise on the call after this many (crash tests)
    calls: int = 0

    @property
    def option_ids(self) -> list[str]:
        return list(self.slopes)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        aov = features[:, WINBACK_V1.columns.index("aov_lifetime")]
        s = np.array(list(self.slopes.values()))
        v = aov[:, None] * s[None, :] - 3.0
        return np.full_like(v, 0.2), v


def make_snapshot(n: int = N, seed: int = 3) -> Snapshot:
    rng = np.random.default_rng(seed)
    x = feature_rows(
        n,
        aov_lifetime=rng.uniform(20, 200, n),
        consent_sms=rng.integers(0, 3, n).astype(float),
        consent_email=rng.choice([0.0, 0.0, 0.0, 1.0], n),
        value_tier=rng.integers(0, 3, n).astype(float),
    )
    return snapshot_of(x, [f"c{i:03d}" for i in range(n)])


def decider_of(settings: ServingSettings, scorer: LinearScorer | None = None) -> Decider:
    decider, error = load_decider(settings, lambda uri: scorer or LinearScorer())
    assert error is None
    return decider


def run(
    tmp_path: Path, settings: ServingSettings, out: str = "wave.parquet", **kw: object
) -> tuple[pd.DataFrame, object]:
    path = tmp_path / out
    store = kw.pop("store", None)
    with open_output(path) as sink:
        res = score_local(
            kw.pop("snapshot", make_snapshot()),  # type: ignore[arg-type]
            kw.pop("decider", None) or decider_of(settings),  # type: ignore[arg-type]
            sink,
            Wave("wave-1", AT, "auto"),
            store=store,  # type: ignore[arg-type]
            chunk_rows=7,
            **kw,  # type: ignore[arg-type]
        )
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame = frame.astype(object).where(frame.notna(), None)  # nulls as None, like Decision
    return frame, res


def test_batch_decides_exactly_as_the_api(tmp_path: Path, settings: ServingSettings) -> None:
    snapshot = make_snapshot()
    store = Store.from_url(settings.database_url)
    # live state the snapshot does not have: c001 opted out of e-mail an hour ago
    store.record_consent("c001", "email", "opted_out", AT.replace(hour=11))
    rt = build_runtime(
        settings,
        store,
        Metrics(),
        scorer_loader=lambda uri: LinearScorer(),
        snapshots=FakeSnapshots(snapshot),
        clock=lambda: AT,
    )
    ids = [*snapshot.row_of, "not-in-snapshot"]
    outcomes = decide_and_record(rt, ids, "auto", now=AT, campaign_id="wave-1", dry_run=True)
    batch, _ = run(tmp_path, settings, snapshot=snapshot, store=store, customers=ids)

    assert batch["customer_id"].tolist() == ids
    api = [o.decision for o in outcomes]
    assert batch["action"].tolist() == [d.action for d in api]
    assert batch["offer_id"].tolist() == [d.offer_id for d in api]
    assert batch["channel"].tolist() == [d.channel for d in api]
    assert batch["stage"].tolist() == [d.stage for d in api]
    assert batch["reasons"].tolist() == [REASON_SEP.join(d.reasons) for d in api]
    np.testing.assert_array_equal(batch["propensity"], [d.propensity for d in api])
    assert batch["expected_incremental_margin"].tolist() == [d.value for d in api]
    assert batch["p_convert"].tolist() == [d.p_convert if d.is_contact else None for d in api]
    assert batch["p_convert"].notna().any()
    # segments as the decision log records them (snapshot codes decoded; unknown customer: none)
    tiers = dict(zip(batch["customer_id"], batch["value_tier"], strict=True))
    assert tiers["not-in-snapshot"] is None and tiers["c000"] is not None
    assert set(batch["value_tier"].dropna()) <= set(WINBACK_V1.feature("value_tier").vocabulary)
    assert set(batch["model_version"]) == {"linear/1"}
    # the cases that matter are all there: exploration, holdout, live opt-out, unknown
    reasons = set(batch["reasons"])
    assert {"chosen_by_exploration", "holdout_group", "unknown_customer"} <= reasons
    assert batch.loc[batch.customer_id == "c001", "channel"].item() != "email"
    assert list(batch.columns) == list(COLUMNS)


def test_one_customer_per_call_decides_exactly_as_the_batch(
    tmp_path: Path, settings: ServingSettings
) -> None:
    """The API's request path decides one customer per engine call (n = 1, where the engine's
    constant tables and the single-customer store read are used); the batch decides chunks.
    Both must give the same decision for every customer, live state included."""
    snapshot = make_snapshot()
    store = Store.from_url(settings.database_url)
    store.record_consent("c001", "email", "opted_out", AT.replace(hour=11))
    store.record_consent("c002", "sms", "opted_in", AT.replace(hour=10))
    store.set_preferences(Preferences("c003", AT.replace(hour=9), channels=("sms",)))
    rt = build_runtime(
        settings,
        store,
        Metrics(),
        scorer_loader=lambda uri: LinearScorer(),
        snapshots=FakeSnapshots(snapshot),
        clock=lambda: AT,
    )
    ids = [*snapshot.row_of, "not-in-snapshot"]
    one_by_one = [
        decide_and_record(rt, [cid], "auto", now=AT, campaign_id="wave-1", dry_run=True)[0]
        for cid in ids
    ]
    together = decide_and_record(rt, ids, "auto", now=AT, campaign_id="wave-1", dry_run=True)
    batch, _ = run(tmp_path, settings, snapshot=snapshot, store=store, customers=ids)

    # repr: the scores of an option the scorer does not know are NaN (NaN != NaN)
    assert [repr(o.decision) for o in one_by_one] == [repr(o.decision) for o in together]
    api = [o.decision for o in one_by_one]
    assert batch["action"].tolist() == [d.action for d in api]
    assert batch["offer_id"].tolist() == [d.offer_id for d in api]
    assert batch["channel"].tolist() == [d.channel for d in api]
    assert batch["reasons"].tolist() == [REASON_SEP.join(d.reasons) for d in api]
    np.testing.assert_array_equal(batch["propensity"], [d.propensity for d in api])
    assert {"message", "offer", "holdout", "none"} <= {d.action for d in api}


def test_offer_display_fields_follow_the_chosen_offer(
    tmp_path: Path, settings: ServingSettings
) -> None:
    frame, _ = run(tmp_path, settings, out="wave.csv")
    sent = frame[frame.offer_id == "pct10"]
    assert len(sent) > 0 and set(sent.offer_title) == {"10% off your next order"}
    assert frame.loc[frame.offer_id.isna(), "offer_title"].isna().all()


def test_a_crash_leaves_no_file_and_keeps_the_previous_one(
    tmp_path: Path, settings: ServingSettings
) -> None:
    out = tmp_path / "wave.parquet"
    out.write_bytes(b"previous wave")
    crashing = decider_of(settings, LinearScorer(fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, settings, decider=crashing)
    assert out.read_bytes() == b"previous wave"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".wave")] == []


def test_unknown_output_type_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match=r"--out: .*\.xlsx"), open_output(tmp_path / "w.xlsx"):
        pass


def _counts(url: str) -> tuple[int, int]:
    engine = Store.from_url(url).engine
    with Session(engine) as s:
        n_dec = s.scalar(select(func.count()).select_from(Decision)) or 0
        n_con = s.scalar(select(func.count()).select_from(Contact)) or 0
    return n_dec, n_con


def test_recording_a_wave_twice_counts_once(tmp_path: Path, settings: ServingSettings) -> None:
    store = Store.from_url(settings.database_url)
    first, res1 = run(tmp_path, settings, store=store, record=True)
    n_contacts = int(first.action.isin(["offer", "message"]).sum())
    assert n_contacts > 0
    assert _counts(settings.database_url) == (N, n_contacts)
    assert res1.recorded.recorded == N  # type: ignore[attr-defined]

    second, res2 = run(tmp_path, settings, out="again.parquet", store=store, record=True)
    assert _counts(settings.database_url) == (N, n_contacts)
    assert res2.recorded.already_recorded == N  # type: ignore[attr-defined]
    assert res2.recorded.recorded == 0  # type: ignore[attr-defined]
    # the rerun's file says what was recorded, not what the caps would now allow
    cols = ["customer_id", "decision_id", "action", "offer_id", "channel", "reasons"]
    pd.testing.assert_frame_equal(first[cols], second[cols])


def test_summary_counts_and_margin_match_the_file(
    tmp_path: Path, settings: ServingSettings
) -> None:
    frame, res = run(tmp_path, settings)
    s = res.summary  # type: ignore[attr-defined]
    assert s.rows == N
    assert dict(s.by_action) == frame.action.value_counts().to_dict()
    assert dict(s.by_offer) == frame.offer_id.fillna(NO_OFFER).value_counts().to_dict()
    assert s.margin_total == pytest.approx(frame.expected_incremental_margin.sum())
    per_offer = frame.groupby("offer_id").expected_incremental_margin.sum()
    for oid, total in per_offer.items():
        assert s.margin_by_offer.get(oid, 0.0) == pytest.approx(total)
    n_reasons = frame.reasons.str.split(REASON_SEP).str.len().sum()
    assert sum(s.by_reason.values()) == n_reasons


def test_parquet_schema_is_stable(tmp_path: Path, settings: ServingSettings) -> None:
    run(tmp_path, settings)
    schema = pq.read_schema(tmp_path / "wave.parquet")
    assert schema.field("stage").type == pa.int64()
    assert schema.field("expected_incremental_margin").type == pa.float64()
