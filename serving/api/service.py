"""The request path: snapshot rows + live state -> engine -> decision log, for n customers.

No DataFrame is built here: feature rows are numpy views out of the snapshot matrix, the
live overlay comes from one batched store read, and the engine runs once for the whole
request. A contact decision is recorded through `Store.try_record_contact`, whose cap check
and write share one transaction; if a concurrent request took the cap first, the decision
becomes `none` with the cap's reason code and is logged as such. Dry runs record nothing.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from features.constants import CHANNELS
from features.featureset import WINBACK_V1
from features.snapshot import Snapshot
from serving.api.runtime import Runtime
from serving.api.scoring import align_scores
from serving.engine import CustomerBatch, Decision, Scores, decide
from serving.engine.decision import NONE
from serving.engine.timeutil import to_days
from serving.errors import DuplicateDecisionError, ModelUnavailableError
from serving.store import ContactCaps, DecisionRecord, Preferences
from serving.store.records import utc_naive

log = logging.getLogger("winback.api")


@dataclass(frozen=True)
class Outcome:
    """One customer's decision as recorded (or not), with its id and display inputs."""

    decision_id: str
    decision: Decision
    request_id: str | None
    campaign_id: str | None
    dry_run: bool
    recorded: bool
    top_categories: tuple[str, ...]
    duplicate_of: bool = False  # an existing decision was returned instead (dedupe / race)


@dataclass(frozen=True)
class _Meta:
    request_id: str | None
    campaign_id: str | None
    dry_run: bool


def new_decision_id() -> str:
    return uuid.uuid4().hex


def top_categories(snapshot: Snapshot | None, row: np.ndarray | None) -> tuple[str, ...]:
    """The customer's favourite category from the snapshot (empty when not known)."""
    if snapshot is None or row is None:
        return ()
    fs = snapshot.feature_set
    try:
        j = fs.columns.index("favourite_category")
    except ValueError:
        return ()
    code, vocab = row[j], fs.feature("favourite_category").vocabulary
    if math.isnan(code) or not 0 <= int(code) < len(vocab):
        return ()
    return (vocab[int(code)],)


def _lookback_days(rt: Runtime, now: datetime, as_of: datetime) -> int:
    """Days of live contacts the guardrails need: the cap horizon and everything since as_of."""
    horizon = rt.base_caps.horizon.total_seconds() / 86400
    since_snapshot = to_days(now) - to_days(as_of)
    return math.ceil(max(horizon, since_snapshot, 1.0)) + 1


def _features(
    snapshot: Snapshot | None, ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    width = len(snapshot.feature_set.columns) if snapshot is not None else len(WINBACK_V1.columns)
    matrix = np.full((len(ids), width), np.nan)
    known = np.zeros(len(ids), dtype=bool)
    rows: list[np.ndarray | None] = []
    for i, cid in enumerate(ids):
        row = snapshot.get(cid) if snapshot is not None else None
        rows.append(row)
        if row is not None:
            matrix[i] = row
            known[i] = True
    return matrix, known, rows


def _scores(rt: Runtime, matrix: np.ndarray, snapshot: Snapshot | None) -> Scores | None:
    scorer = rt.scorer
    if scorer is None or snapshot is None:
        return None
    if scorer.feature_set_key != snapshot.feature_set.key:
        log.warning(
            "model %s expects feature set %s but the snapshot has %s: rules only",
            scorer.version,
            scorer.feature_set_key,
            snapshot.feature_set.key,
        )
        return None
    try:
        return align_scores(scorer, matrix, rt.options)
    except ModelUnavailableError as exc:
        log.warning("scoring failed, deciding by rules only: %s", exc)
        return None


def _caps_for(rt: Runtime, prefs: Preferences | None) -> ContactCaps:
    """The policy's caps tightened by the customer's own frequency and channel choices."""
    if prefs is None:
        return rt.base_caps
    off = [] if prefs.channels is None else [c for c in CHANNELS if c not in prefs.channels]
    return rt.base_caps.tightened(prefs.max_contacts, prefs.per_days, off)


def _record(d: Decision, decision_id: str, now: datetime, meta: _Meta) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        customer_id=d.customer_id,
        ts=now,
        action=d.action,
        offer_id=d.offer_id,
        channel=d.channel,
        stage=d.stage,
        propensity=d.propensity,
        expected_value=d.value,
        reasons=list(d.reasons),
        scores={k: (v if math.isfinite(v) else None) for k, v in d.scores.items()} or None,
        excluded=[{"offer_id": e.offer_id, "reason": e.reason} for e in d.excluded],
        model_version=d.model_version,
        policy_version=d.policy_version,
        request_id=meta.request_id,
        campaign_id=meta.campaign_id,
        dry_run=meta.dry_run,
    )


def decide_and_record(
    rt: Runtime,
    customer_ids: Sequence[str],
    channel: str,
    now: datetime | None = None,
    campaign_id: str | None = None,
    candidate_offer_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    request_id: str | None = None,
    decision_ids: Sequence[str] | None = None,
) -> list[Outcome]:
    """Decide for every customer and append the decisions to the log (unless `dry_run`).

    Raises:
        EngineInputError: an unknown candidate offer id or channel (names the field).
        StoreError: the store failed (the caller answers 503).
    """
    at = utc_naive(now) if now is not None else rt.clock()
    ids = list(customer_ids)
    snapshot = rt.snapshot()
    matrix, known, rows = _features(snapshot, ids)
    as_of = snapshot.as_of.to_pydatetime() if snapshot is not None else at
    live = rt.store.customer_states(ids, at, _lookback_days(rt, at, as_of))
    budgeted = [o for o, b in zip(rt.options.offer_ids, rt.options.budgets, strict=True) if b]
    usage = rt.store.budget_usage(budgeted, at.date()) if budgeted else None
    fs = snapshot.feature_set if snapshot is not None else WINBACK_V1
    batch = CustomerBatch.from_features(matrix, fs, ids, as_of, known, live)
    scores = _scores(rt, matrix, snapshot)
    rt.metrics.degraded.set(1 if scores is None or snapshot is None else 0)
    key = request_id or campaign_id or at.date().isoformat()
    result = decide(
        batch,
        rt.options,
        rt.policy,
        scores,
        at,
        channel=channel,
        decision_key=key,
        candidate_offer_ids=candidate_offer_ids,
        budget_usage=usage,
    )
    out: list[Outcome] = []
    for i in range(len(result)):
        did = decision_ids[i] if decision_ids is not None else new_decision_id()
        d = result.decision(i)
        state = live.get(d.customer_id)
        outcome = _commit(
            rt, d, did, at, state.preferences if state else None, request_id, campaign_id, dry_run
        )
        outcome = replace(outcome, top_categories=top_categories(snapshot, rows[i]))
        rt.metrics.count_decision(
            outcome.decision.action, outcome.decision.offer_id, outcome.decision.reasons
        )
        log.info(
            "decision",
            extra={
                "decision_id": outcome.decision_id,
                "request_id": request_id,
                "customer_id": d.customer_id,
                "action": outcome.decision.action,
                "offer_id": outcome.decision.offer_id,
                "channel": outcome.decision.channel,
                "reasons": list(outcome.decision.reasons),
                "recorded": outcome.recorded,
                "dry_run": dry_run,
                "model_version": d.model_version,
                "policy_version": d.policy_version,
            },
        )
        out.append(outcome)
    return out


def _commit(
    rt: Runtime,
    d: Decision,
    decision_id: str,
    at: datetime,
    prefs: Preferences | None,
    request_id: str | None,
    campaign_id: str | None,
    dry_run: bool,
) -> Outcome:
    meta = _Meta(request_id, campaign_id, dry_run)
    base = Outcome(decision_id, d, request_id, campaign_id, dry_run, False, ())
    if dry_run:
        return base
    try:
        if d.is_contact:
            res = rt.store.try_record_contact(
                _record(d, decision_id, at, meta), _caps_for(rt, prefs), now=at
            )
            if res.recorded:
                return replace(base, recorded=True)
            # A concurrent request took the cap first: no contact now, for the cap's reason.
            d = replace(
                d,
                action=NONE,
                offer_id=None,
                channel=None,
                value=None,
                reasons=(res.reason or "cap", *d.reasons),
            )
            base = replace(base, decision=d)
        rt.store.record_decision(_record(d, decision_id, at, meta))
        return replace(base, recorded=True)
    except DuplicateDecisionError:
        # The same deterministic id was recorded by a concurrent call: that one stands.
        return replace(base, duplicate_of=True)
