"""Scores stored with the snapshot: used only when they are what live scoring would give."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from features.snapshot import Snapshot
from features.synthetic.generate import generate_world, write_world
from serving.api.metrics import Metrics
from serving.api.runtime import build_runtime
from serving.api.service import decide_and_record
from serving.model_scorer import PolicyScorer
from serving.precomputed import SCORES, precomputed_scores, scores_attachment
from serving.settings import ServingSettings
from serving.store import Store
from tests.api.conftest import FakeSnapshots
from tests.serving.test_batch import AT, LinearScorer, make_snapshot
from training.fit import encode_features
from training.inputs import load_training_inputs
from training.pipeline import fit_policy


@dataclasses.dataclass
class CountingScorer(LinearScorer):
    """LinearScorer that counts the feature rows it was asked to score."""

    rows_scored: int = 0

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.rows_scored += features.shape[0]
        return super().score(features)


def with_scores(snapshot: Snapshot, scorer: LinearScorer) -> Snapshot:
    att = scores_attachment(scorer, np.asarray(snapshot.matrix), chunk=7)
    return dataclasses.replace(snapshot, attachments={SCORES: att})


def decide_all(
    cfg: ServingSettings, snapshot: Snapshot, scorer: LinearScorer
) -> list[tuple[object, ...]]:
    rt = build_runtime(
        cfg,
        Store.from_url(cfg.database_url),
        Metrics(),
        scorer_loader=lambda uri: scorer,
        snapshots=FakeSnapshots(snapshot),
        clock=lambda: AT,
    )
    ids = [*snapshot.row_of, "not-in-snapshot"]
    out = decide_and_record(rt, ids, "auto", now=AT, campaign_id="wave-1", dry_run=True)
    return [
        (d.customer_id, d.action, d.offer_id, d.channel, d.value, d.reasons, _finite(d.scores))
        for d in (o.decision for o in out)
    ]


def _finite(scores: Mapping[str, float]) -> dict[str, float | None]:
    """NaN as None, so that equal score dicts compare equal."""
    return {k: (v if v == v else None) for k, v in scores.items()}


def test_stored_scores_give_the_live_decisions_without_calling_the_model(
    settings: ServingSettings,
) -> None:
    plain = make_snapshot()
    live_scorer, stored_scorer = CountingScorer(), CountingScorer()
    live = decide_all(settings, plain, live_scorer)
    stored = decide_all(settings, with_scores(plain, LinearScorer()), stored_scorer)
    assert stored == live
    assert live_scorer.rows_scored == len(plain) + 1
    assert stored_scorer.rows_scored == 1  # only the customer the snapshot lacks


def test_scores_of_another_model_version_are_ignored(
    settings: ServingSettings,
) -> None:
    plain = make_snapshot()
    old = with_scores(plain, LinearScorer())  # stored by linear/1
    newer = dict(pct10=0.01, freeship=0.01, guide=0.09, none=0.02)
    scorer = CountingScorer(slopes=newer, version="linear/2")
    decided = decide_all(settings, old, scorer)
    assert decided == decide_all(settings, plain, CountingScorer(slopes=newer, version="linear/2"))
    assert scorer.rows_scored == len(plain) + 1
    assert {d[2] for d in decided} & {"guide"}  # the new model's preference shows


def test_malformed_attachment_is_not_used() -> None:
    snap = with_scores(make_snapshot(), LinearScorer())
    att = snap.attachments[SCORES]
    broken = dataclasses.replace(att, meta={**att.meta, "option_ids": ["pct10"]})
    assert precomputed_scores(dataclasses.replace(snap, attachments={SCORES: broken})) is None
    assert precomputed_scores(make_snapshot()) is None
    assert precomputed_scores(None) is None


@pytest.mark.slow
def test_batch_precomputation_equals_row_by_row_scoring_of_a_real_model(tmp_path: Path) -> None:
    """The stored value of a row is bit-for-bit the value one request would compute."""
    write_world(generate_world(2000, seed=5), tmp_path)
    inputs = load_training_inputs(tmp_path)
    assert inputs.offer_response is not None
    model, _ = fit_policy(inputs, seed=1, n_bags=2)
    X = encode_features(inputs.offer_response).X.to_numpy(dtype=float)[:3000]
    scorer = PolicyScorer(model, "winback-policy/1")
    att = scores_attachment(scorer, X, chunk=2500)  # one multi-threaded chunk, one small
    for i in range(0, len(X), 97):
        p, v = scorer.score(X[i : i + 1])
        np.testing.assert_array_equal(att.arrays["p"][i], p[0])
        np.testing.assert_array_equal(att.arrays["value"][i], v[0])
