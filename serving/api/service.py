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

from features.snapshot import Snapshot
from serving.api.runtime import Runtime
from serving.decide import Decider, decide_rows, decision_fields, decision_key, gather_rows
from serving.engine import Decision
from serving.engine.decision import NONE
from serving.errors import DuplicateDecisionError
from serving.precomputed import precomputed_scores
from serving.store import DecisionRecord, Preferences
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


def _features(
    snapshot: Snapshot | None, ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """(matrix, snapshot row per id or -1, the feature row per id or None)."""
    matrix, pos = gather_rows(snapshot, ids)
    rows: list[np.ndarray | None] = [matrix[i] if pos[i] >= 0 else None for i in range(len(ids))]
    return matrix, pos, rows


Segment = tuple[str | None, str | None]
"""(value tier, lapse state) of a customer when decided (see `Decided.segment`)."""


def _record(
    d: Decision, decision_id: str, now: datetime, meta: _Meta, segment: Segment
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        ts=now,
        request_id=meta.request_id,
        campaign_id=meta.campaign_id,
        dry_run=meta.dry_run,
        **decision_fields(d, segment),
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
    matrix, pos, rows = _features(snapshot, ids)
    as_of = snapshot.as_of.to_pydatetime() if snapshot is not None else at
    budgeted = [o for o, b in zip(rt.options.offer_ids, rt.options.budgets, strict=True) if b]
    # cached for a second: see `Store.budget_usage_cached`
    usage = rt.store.budget_usage_cached(budgeted, at.date()) if budgeted else None
    decided = decide_rows(
        Decider(rt.options, rt.policy, rt.scorer, rt.base_caps),
        matrix,
        pos >= 0,
        ids,
        snapshot.feature_set if snapshot is not None else None,
        as_of,
        at,
        channel,
        decision_key(at, request_id, campaign_id),
        store=rt.store,
        candidate_offer_ids=candidate_offer_ids,
        budget_usage=usage,
        stored=precomputed_scores(snapshot),
        rows=pos,
    )
    result, live = decided.batch, decided.live
    rt.metrics.set_degraded(not decided.scored or snapshot is None)
    out: list[Outcome] = []
    for i in range(len(result)):
        did = decision_ids[i] if decision_ids is not None else new_decision_id()
        d = result.decision(i)
        state = live.get(d.customer_id)
        outcome = _commit(
            rt,
            d,
            did,
            at,
            state.preferences if state else None,
            _Meta(request_id, campaign_id, dry_run),
            decided.segment(i),
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
    meta: _Meta,
    segment: Segment,
) -> Outcome:
    base = Outcome(decision_id, d, meta.request_id, meta.campaign_id, meta.dry_run, False, ())
    if meta.dry_run:
        return base
    try:
        if d.is_contact:
            caps = rt.base_caps.for_preferences(prefs)
            res = rt.store.try_record_contact(
                _record(d, decision_id, at, meta, segment), caps, now=at
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
                p_convert=None,
                reasons=(res.reason or "cap", *d.reasons),
            )
            base = replace(base, decision=d)
        rt.store.record_decision(_record(d, decision_id, at, meta, segment))
        return replace(base, recorded=True)
    except DuplicateDecisionError:
        # The same deterministic id was recorded by a concurrent call: that one stands.
        return replace(base, duplicate_of=True)
