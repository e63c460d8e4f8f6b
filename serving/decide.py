"""Decide for a set of customer rows: the one step the API and the batch scorer share.

snapshot rows (+ live overlay from the store) -> `CustomerBatch` -> scores (`align_scores`)
-> `decide` -> a columnar `DecisionBatch`. The API calls it with the rows of one request;
the batch scorer with chunks of the whole snapshot. Given the same rows, store state, model,
policy, time and decision key both get the same decisions, because both go through
`decide_rows`. Recording (and the HTTP view) stays with the caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from features.featureset import DEFAULT_FEATURE_SET, FeatureSet
from features.snapshot import Snapshot
from serving.engine import CustomerBatch, Decision, DecisionBatch, OptionSet, Scores, decide
from serving.engine.choose import DecisionKey
from serving.engine.rules import BudgetUsage
from serving.engine.timeutil import to_days
from serving.errors import ModelUnavailableError
from serving.policy import Policy
from serving.precomputed import PrecomputedScores, SnapshotRowScorer
from serving.scoring import Scorer, align_scores
from serving.store import ContactCaps, CustomerState, Store

log = logging.getLogger("winback.decide")

STATE_CHUNK = 5_000
"""Customers per store read (keeps each `IN (...)` list well under SQLite's bind limit)."""


@dataclass(frozen=True, eq=False)
class Decider:
    """What a decision needs besides the customers: options, policy, scorer and caps."""

    options: OptionSet
    policy: Policy
    scorer: Scorer | None
    base_caps: ContactCaps


@dataclass(frozen=True, eq=False)
class Decided:
    """A `DecisionBatch` plus the live state it was made with (for the caller's recording).

    `value_tier` and `lapse_state` are the customers' segments as the snapshot states them,
    decoded to their names (None for a customer not in the snapshot or without a value); the
    decision log records them so the report can compare each segment with its own holdouts.
    """

    batch: DecisionBatch
    live: Mapping[str, CustomerState]
    scored: bool
    value_tier: npt.NDArray[np.object_]
    lapse_state: npt.NDArray[np.object_]

    def segment(self, i: int) -> tuple[str | None, str | None]:
        """(value tier, lapse state) of row i."""
        return self.value_tier[i], self.lapse_state[i]


def decode(
    codes: npt.NDArray[np.int64],
    known: npt.NDArray[np.bool_],
    vocabulary: Sequence[str] | npt.NDArray[np.object_],
) -> npt.NDArray[np.object_]:
    """Category names of integer `codes` (None where unknown, out of range or not `known`).

    `vocabulary`: the names, or `segment_names` of them (the names plus a final None).
    """
    names = (
        vocabulary
        if isinstance(vocabulary, np.ndarray)
        else np.array([*vocabulary, None], dtype=object)
    )
    size = len(names) - 1
    ok = known & (codes >= 0) & (codes < size)
    return names[np.where(ok, codes, size)]


_SEGMENTS: dict[int, tuple[FeatureSet, npt.NDArray[np.object_], npt.NDArray[np.object_]]] = {}


def segment_names(fs: FeatureSet) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.object_]]:
    """The value-tier and lapse-state names of `fs` plus a final None, as `decode` takes
    them (cached by identity: a feature set is immutable and serves every request)."""
    hit = _SEGMENTS.get(id(fs))
    if hit is not None and hit[0] is fs:
        return hit[1], hit[2]
    tiers, states = (
        np.array([*fs.feature(name).vocabulary, None], dtype=object)
        for name in ("value_tier", "lapse_state")
    )
    if len(_SEGMENTS) > 32:
        _SEGMENTS.clear()
    _SEGMENTS[id(fs)] = (fs, tiers, states)
    return tiers, states


def decision_key(
    at: datetime, request_id: str | None = None, campaign_id: str | None = None
) -> str:
    """The exploration key: the request id, else the campaign (wave) id, else the date.

    The batch scorer passes its wave id as `campaign_id`, so an API call with the same
    campaign id (and no request id) on the same customer draws identically.
    """
    return request_id or campaign_id or at.date().isoformat()


def lookback_days(caps: ContactCaps, now: datetime, as_of: datetime) -> int:
    """Days of live contacts the guardrails need: the cap horizon and everything since as_of."""
    horizon = caps.horizon.total_seconds() / 86400
    since_snapshot = to_days(now) - to_days(as_of)
    return math.ceil(max(horizon, since_snapshot, 1.0)) + 1


def gather(
    snapshot: Snapshot | None, ids: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """(matrix, known) for `ids` from the snapshot (NaN rows for customers it lacks)."""
    matrix, rows = gather_rows(snapshot, ids)
    return matrix, rows >= 0


def gather_rows(
    snapshot: Snapshot | None, ids: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(matrix, snapshot row of each id, -1 where the snapshot lacks it; NaN matrix rows)."""
    if snapshot is not None and len(ids) == 1:  # one API request: a copy of one row
        row = snapshot.row_of.get(ids[0], -1)
        if row >= 0:
            return snapshot.matrix[row : row + 1].copy(), np.array([row], dtype=np.int64)
    width = len((snapshot.feature_set if snapshot is not None else DEFAULT_FEATURE_SET).features)
    matrix = np.full((len(ids), width), np.nan)
    if snapshot is None:
        return matrix, np.full(len(ids), -1, dtype=np.int64)
    pos = np.array([snapshot.row_of.get(cid, -1) for cid in ids], dtype=np.int64)
    known = pos >= 0
    matrix[known] = snapshot.matrix[pos[known]]
    return matrix, pos


def live_states(
    store: Store | None, ids: Sequence[str], at: datetime, days: int
) -> dict[str, CustomerState]:
    """The store's live overlay for `ids`, keeping only customers with something live."""
    if store is None:
        return {}
    out: dict[str, CustomerState] = {}
    for start in range(0, len(ids), STATE_CHUNK):
        part = store.customer_states(ids[start : start + STATE_CHUNK], at, days)
        out.update(
            (cid, s)
            for cid, s in part.items()
            if s.contacts or s.consent or s.preferences is not None or s.last_order_ts is not None
        )
    return out


def score_rows(
    scorer: Scorer | None,
    matrix: npt.NDArray[np.float64],
    feature_set: FeatureSet | None,
    options: OptionSet,
    stored: PrecomputedScores | None = None,
    rows: npt.NDArray[np.int64] | None = None,
) -> Scores | None:
    """The scorer's values aligned to `options`, or None (rules only) when it cannot score.

    With `stored` scores that this scorer would compute (`PrecomputedScores.serves`) and the
    snapshot `rows` of the matrix rows, the stored rows are used instead of scoring them.
    """
    if scorer is None or feature_set is None:
        return None
    if stored is not None and rows is not None and stored.serves(scorer):
        scorer = SnapshotRowScorer(scorer, stored, rows)
    if scorer.feature_set_key != feature_set.key:
        log.warning(
            "model %s expects feature set %s but the snapshot has %s: rules only",
            scorer.version,
            scorer.feature_set_key,
            feature_set.key,
        )
        return None
    try:
        return align_scores(scorer, matrix, options)
    except ModelUnavailableError as exc:
        log.warning("scoring failed, deciding by rules only: %s", exc)
        return None


def decide_rows(
    decider: Decider,
    matrix: npt.NDArray[np.float64],
    known: npt.NDArray[np.bool_],
    ids: Sequence[str] | npt.NDArray[np.object_],
    feature_set: FeatureSet | None,
    as_of: datetime,
    at: datetime,
    channel: str,
    key: DecisionKey,
    store: Store | None = None,
    candidate_offer_ids: Sequence[str] | None = None,
    budget_usage: Mapping[str, BudgetUsage] | None = None,
    stored: PrecomputedScores | None = None,
    rows: npt.NDArray[np.int64] | None = None,
) -> Decided:
    """Decide for these customer rows (the shared API/batch step).

    Args:
        decider: options, policy, scorer and caps.
        matrix, known: feature rows in `feature_set` order; `known` False = not in snapshot.
        ids: the customer ids of the rows.
        feature_set: the snapshot's feature set (None when there is no snapshot).
        as_of: the snapshot's point in time.
        at: the decision time (naive UTC).
        channel: a channel name or `auto`.
        key: the exploration key (see `decision_key`), or one per row.
        store: read for the live overlay (None: no live state).
        candidate_offer_ids, budget_usage: passed to `decide`.
        stored, rows: the snapshot's precomputed scores and the snapshot row of each matrix
            row (see `score_rows`); scores are identical either way, only faster.
    """
    id_list = [str(c) for c in ids]
    live = live_states(store, id_list, at, lookback_days(decider.base_caps, at, as_of))
    fs = feature_set or DEFAULT_FEATURE_SET
    batch = CustomerBatch.from_features(
        matrix, fs, np.asarray(id_list, dtype=object), as_of, known, live
    )
    scores = score_rows(decider.scorer, matrix, feature_set, decider.options, stored, rows)
    result = decide(
        batch,
        decider.options,
        decider.policy,
        scores,
        at,
        channel=channel,
        decision_key=key,
        candidate_offer_ids=candidate_offer_ids,
        budget_usage=budget_usage,
    )
    tiers, states = segment_names(fs)
    return Decided(
        result,
        live,
        scores is not None,
        value_tier=decode(batch.value_tier, batch.known, tiers),
        lapse_state=decode(batch.lapse_state, batch.known, states),
    )


def decision_fields(d: Decision, segment: tuple[str | None, str | None]) -> dict[str, Any]:
    """The decision-log columns that come from an engine decision (the API and batch both
    record through this, so a decision is logged the same way wherever it was made).

    A holdout row records the contact it replaced (offer, channel, expected value,
    P(convert), and that option's propensity as `replaced_propensity`), so the report can
    put it in the slice of its would-be decision; nothing treats a holdout as a contact.
    """
    rep = d.replaced
    return {
        "customer_id": d.customer_id,
        "action": d.action,
        "offer_id": rep.offer_id if rep is not None else d.offer_id,
        "channel": rep.channel if rep is not None else d.channel,
        "stage": d.stage,
        "propensity": d.propensity,
        "replaced_propensity": rep.propensity if rep is not None else None,
        "expected_value": rep.value if rep is not None else d.value,
        "reasons": list(d.reasons),
        "scores": {k: (v if math.isfinite(v) else None) for k, v in d.scores.items()} or None,
        "excluded": [{"offer_id": e.offer_id, "reason": e.reason} for e in d.excluded],
        "model_version": d.model_version,
        "policy_version": d.policy_version,
        "value_tier": segment[0],
        "lapse_state": segment[1],
        "p_convert": rep.p_convert if rep is not None else (d.p_convert if d.is_contact else None),
    }
