"""The request path: snapshot rows + live state -> engine -> decision log, for n customers.

No DataFrame is built here: feature rows are numpy views out of the snapshot matrix, the
live overlay comes from one batched store read, and the engine runs once for the whole
request. A contact decision is recorded through `Store.try_record_contact`, whose cap check, live
consent check and write share one transaction; if a concurrent request took the cap first
(or an opt-out arrived meanwhile), the decision becomes `none` with that reason code and is
logged as such. Dry runs record nothing.

Time: a recorded decision is made at the server's clock, whatever the caller says
(`decision_time`), so caps and consent are always judged on the times contacts are recorded
at. A caller's `request_id` is an idempotency key (`decide_once`): the decisions recorded
under it are returned again instead of deciding twice. A decision returned from the log (a
repeat) is checked again against the live consent and preferences (`recheck`): a repeat
never says "send" after an opt-out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

import numpy as np
from pydantic import BaseModel

from features.featureset import FeatureSet
from features.snapshot import Snapshot
from serving.api.decision_log import decision_from_row, get_decision, get_decisions
from serving.api.errors import ApiError
from serving.api.runtime import Runtime
from serving.api.schemas import BatchRecommendationRequest, RecommendationRequest
from serving.decide import Decided, decide_rows, decision_fields, decision_key, gather_rows
from serving.engine import Decision
from serving.engine.choose import DecisionKey
from serving.engine.decision import NONE
from serving.errors import DuplicateDecisionError, IdempotencyKeyTakenError
from serving.precomputed import precomputed_scores
from serving.store import DecisionRecord, IdempotencyClaim, Preferences
from serving.store.models import Decision as DecisionRow
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
class Meta:
    request_id: str | None
    campaign_id: str | None
    dry_run: bool


_EPOCH: Final = datetime(1970, 1, 1)
_MICROSECOND: Final = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    """Microseconds since the Unix epoch of a naive UTC time (0 before it)."""
    return max(0, (utc_naive(at) - _EPOCH) // _MICROSECOND)


def new_decision_id() -> str:
    """A new decision id: a UUIDv7 (RFC 9562) as 32 hex digits.

    Its first 12 digits are the time in milliseconds, so ids recorded close together sort
    together: each B-tree keyed by decision id (`decisions`, `contacts`) takes them into the
    same page, instead of one random page per decision (`bench/bench_wal.py`).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 74 random bits used
    value = (
        (ms & (2**48 - 1)) << 80
        | 0x7 << 76  # version 7
        | (rand >> 62 & 0xFFF) << 64
        | 0b10 << 62  # RFC 9562 variant
        | rand & (2**62 - 1)
    )
    return f"{value:032x}"


def top_categories(snapshot: Snapshot | None, row: np.ndarray | None) -> tuple[str, ...]:
    """The customer's favourite category from the snapshot (empty when not known)."""
    if snapshot is None or row is None:
        return ()
    where = _favourite_column(snapshot.feature_set)
    if where is None:
        return ()
    j, vocab = where
    code = row[j]
    if math.isnan(code) or not 0 <= int(code) < len(vocab):
        return ()
    return (vocab[int(code)],)


_FAVOURITE: dict[int, tuple[FeatureSet, tuple[int, tuple[str, ...]] | None]] = {}


def _favourite_column(fs: FeatureSet) -> tuple[int, tuple[str, ...]] | None:
    """(column, vocabulary) of `favourite_category` in `fs`, or None (cached by identity:
    a feature set is immutable and one serves every request until a reload)."""
    hit = _FAVOURITE.get(id(fs))
    if hit is not None and hit[0] is fs:
        return hit[1]
    try:
        j = fs.columns.index("favourite_category")
        found = (j, fs.feature("favourite_category").vocabulary)
    except ValueError:
        found = None
    if len(_FAVOURITE) > 32:
        _FAVOURITE.clear()
    _FAVOURITE[id(fs)] = (fs, found)
    return found


@dataclass(frozen=True)
class Decisions:
    """What `decide_now` decided: the engine's result and the snapshot rows it read."""

    snapshot: Snapshot | None
    matrix: np.ndarray
    pos: np.ndarray  # snapshot row per customer, -1 if unknown
    decided: Decided

    def features(self, i: int) -> np.ndarray | None:
        """Customer i's feature row, or None if the snapshot does not know them."""
        return self.matrix[i] if self.pos[i] >= 0 else None


def decide_now(
    rt: Runtime,
    ids: Sequence[str],
    at: datetime,
    channel: str,
    key: DecisionKey,
    candidate_offer_ids: Sequence[str] | None,
) -> Decisions:
    """The engine's decisions for `ids` at `at` from the runtime's snapshot, live state and
    budgets (nothing recorded); `key` seeds the exploration draws (one, or one per customer)."""
    snapshot = rt.snapshot()
    matrix, pos = gather_rows(snapshot, ids)
    as_of = snapshot.as_of.to_pydatetime() if snapshot is not None else at
    budgeted = rt.budgeted_offers
    # cached for a second: see `Store.budget_usage_cached`
    usage = rt.store.budget_usage_cached(budgeted, at.date()) if budgeted else None
    decided = decide_rows(
        rt.decider,
        matrix,
        pos >= 0,
        ids,
        snapshot.feature_set if snapshot is not None else None,
        as_of,
        at,
        channel,
        key,
        store=rt.store,
        candidate_offer_ids=candidate_offer_ids,
        budget_usage=usage,
        stored=precomputed_scores(snapshot),
        rows=pos,
    )
    rt.metrics.set_degraded(not decided.scored or snapshot is None)
    return Decisions(snapshot, matrix, pos, decided)


Segment = tuple[str | None, str | None]
"""(value tier, lapse state) of a customer when decided (see `Decided.segment`)."""


def record_of(
    d: Decision, decision_id: str, now: datetime, meta: Meta, segment: Segment
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        ts=now,
        request_id=meta.request_id,
        campaign_id=meta.campaign_id,
        dry_run=meta.dry_run,
        **decision_fields(d, segment),
    )


def decision_time(rt: Runtime, requested: datetime | None, dry_run: bool) -> datetime:
    """The time a decision is made at: the server's clock for a recorded decision (a caller's
    time only within `clock_tolerance_seconds` of it, else 409: the request conflicts with
    the server's clock, however valid its form), any time for a dry run."""
    now = rt.clock()
    if requested is None:
        return now
    at = utc_naive(requested)
    if dry_run:
        return at
    tolerance = rt.settings.clock_tolerance_seconds
    off = (at - now).total_seconds()
    if abs(off) > tolerance:
        raise ApiError(
            409,
            "timestamp_out_of_tolerance",
            f"context.timestamp: a recorded decision is made at the server's clock "
            f"({now.isoformat()}Z); {at.isoformat()}Z is {off:+,.0f} s from it, more than "
            f"the {tolerance:,} s allowed. Leave it out, or send dry_run: true to ask about "
            "another time",
            "context.timestamp",
        )
    return now


def withdrawn(d: Decision, code: str) -> Decision:
    """`d` turned into no contact now, for reason `code` (first among its reasons)."""
    return replace(
        d,
        action=NONE,
        offer_id=None,
        channel=None,
        value=None,
        p_convert=None,
        reasons=(code, *d.reasons),
    )


def recheck(rt: Runtime, outcome: Outcome, now: datetime) -> Outcome:
    """A decision returned again (from the log), checked against today's live consent and
    preferences: a contact the customer has since opted out of becomes `none`."""
    d = outcome.decision
    if not d.is_contact or d.channel is None:
        return outcome
    blocked = rt.store.contact_guard(d.customer_id, d.channel, now)
    if blocked is None:
        return outcome
    return replace(outcome, decision=withdrawn(d, blocked[0]))


def outcome_from_log(rt: Runtime, row: DecisionRow, now: datetime) -> Outcome:
    """The outcome of a logged decision, as a repeat returns it (`recheck`ed)."""
    snap = rt.snapshot()
    cats = top_categories(snap, snap.get(row.customer_id) if snap is not None else None)
    outcome = Outcome(
        decision_id=row.decision_id,
        decision=decision_from_row(row, rt.policy),
        request_id=row.request_id,
        campaign_id=row.campaign_id,
        dry_run=False,
        recorded=True,
        top_categories=cats,
        duplicate_of=True,
    )
    return recheck(rt, outcome, now)


def keyed_decision_id(key: str, customer_id: str, claimed: datetime) -> str:
    """The decision id of `customer_id` under idempotency key `key` claimed at `claimed`.

    Deterministic: a repeat of the request recomputes it from the stored claim
    (`Store.idempotency_claim`). It starts with the claim time in microseconds (14 hex
    digits), so the decisions of one moment sort together in the store's B-trees (as
    `new_decision_id`), and ends with a hash of key and customer.
    """
    digest = hashlib.blake2b(f"{key}\x00{customer_id}".encode(), digest_size=8).hexdigest()
    return f"req-{_micros(claimed):014x}{digest}"


def legacy_keyed_decision_id(key: str, customer_id: str) -> str:
    """The id `keyed_decision_id` gave before it held the claim time (store revision 0004
    and earlier): a repeat of a request recorded then finds its decisions under it."""
    digest = hashlib.blake2b(f"{key}\x00{customer_id}".encode(), digest_size=12).hexdigest()
    return f"req-{digest}"


def request_fingerprint(endpoint: str, body: BaseModel) -> str:
    """What makes two requests under one key "the same": endpoint and validated body."""
    return hashlib.sha256(f"{endpoint}\n{body.model_dump_json()}".encode()).hexdigest()


def _key_reused(key: str) -> ApiError:
    return ApiError(
        409,
        "idempotency_key_reused",
        f"request_id: {key!r} was already used with a different request (body or endpoint); "
        "send a new request_id for a new request",
        "request_id",
    )


def decide_once(
    rt: Runtime,
    endpoint: str,
    body: BaseModel,
    key: str,
    customer_ids: Sequence[str],
    channel: str,
    requested: datetime | None,
    campaign_id: str | None = None,
    candidate_offer_ids: Sequence[str] | None = None,
) -> list[Outcome]:
    """Recorded decisions under idempotency key `key`: decided and recorded once; a repeat
    of the same request returns them from the log (re-checked), a different request under
    the same key is a 409.

    A new key (the common case) costs no extra read nor transaction: it is stored in the
    transaction that records the request's first decision (`IdempotencyClaim`), so key and
    decision commit together. If the key exists, that transaction writes nothing and the
    request takes the repeat path (`repeat`).
    """
    fingerprint = request_fingerprint(endpoint, body)
    args = (customer_ids, channel, requested, campaign_id, candidate_offer_ids)
    try:
        at = decision_time(rt, requested, dry_run=False)
    except ApiError:
        # out of the clock's tolerance: refused unless it repeats a recorded request
        return repeat(rt, endpoint, fingerprint, key, *args)
    ids = [keyed_decision_id(key, cid, at) for cid in customer_ids]  # claimed at `at`
    try:
        outcomes = decide_and_record(
            rt,
            customer_ids,
            channel,
            now=at,
            campaign_id=campaign_id,
            candidate_offer_ids=candidate_offer_ids,
            request_id=key,
            decision_ids=ids,
            claim=IdempotencyClaim(key, fingerprint, endpoint, at),
        )
    except IdempotencyKeyTakenError:
        return repeat(rt, endpoint, fingerprint, key, *args)
    return from_log_where_duplicate(rt, ids, dict(enumerate(outcomes)), {})


def repeat(
    rt: Runtime,
    endpoint: str,
    fingerprint: str,
    key: str,
    customer_ids: Sequence[str],
    channel: str,
    requested: datetime | None,
    campaign_id: str | None,
    candidate_offer_ids: Sequence[str] | None,
) -> list[Outcome]:
    """`decide_once` for a key that may exist: its logged decisions, re-checked.

    The decision ids come from the stored claim (`keyed_decision_id`); a key that does not
    exist yet is claimed first (a request out of the clock's tolerance is refused then). A
    request that failed half-way (some customers recorded) is completed by its repeat: only
    the customers without a logged decision are decided.
    """
    stored = rt.store.idempotency_claim(key)
    claimed_now = False
    if stored is None:
        at = decision_time(rt, requested, dry_run=False)
        if rt.store.claim_idempotency_key(key, fingerprint, endpoint, at) is None:
            stored, claimed_now = IdempotencyClaim(key, fingerprint, endpoint, at), True
        else:  # a concurrent request claimed it first: its claim holds
            stored = rt.store.idempotency_claim(key)
            if stored is None:
                raise ApiError(503, "store_unavailable", "idempotency key: claim not visible")
    if stored.fingerprint != fingerprint:
        raise _key_reused(key)
    ids = [keyed_decision_id(key, cid, stored.ts) for cid in customer_ids]
    legacy = [legacy_keyed_decision_id(key, cid) for cid in customer_ids]
    # a key claimed just now has no decisions yet (they commit with or after the claim)
    logged = {} if claimed_now else get_decisions(rt.store, [*ids, *legacy])
    # a decision recorded under a revision-0004 id is found under it
    ids = [
        old if new not in logged and old in logged else new
        for new, old in zip(ids, legacy, strict=True)
    ]
    todo = [i for i, did in enumerate(ids) if did not in logged]
    fresh: dict[int, Outcome] = {}
    if todo:
        at = decision_time(rt, requested, dry_run=False)
        outcomes = decide_and_record(
            rt,
            [customer_ids[i] for i in todo],
            channel,
            now=at,
            campaign_id=campaign_id,
            candidate_offer_ids=candidate_offer_ids,
            request_id=key,
            decision_ids=[ids[i] for i in todo],
        )
        fresh = dict(zip(todo, outcomes, strict=True))
    return from_log_where_duplicate(rt, ids, fresh, logged)


def from_log_where_duplicate(
    rt: Runtime, ids: Sequence[str], fresh: dict[int, Outcome], logged: dict[str, DecisionRow]
) -> list[Outcome]:
    """The outcome of each id: the one just recorded, else the logged one (re-checked)."""
    now = rt.clock()
    out: list[Outcome] = []
    for i, did in enumerate(ids):
        o = fresh.get(i)
        if o is not None and not o.duplicate_of:
            out.append(o)
            continue
        row = logged.get(did) or get_decision(rt.store, did)  # a concurrent twin recorded it
        if row is None:
            raise ApiError(503, "store_unavailable", "decision log: concurrent write not visible")
        out.append(outcome_from_log(rt, row, now))
    return out


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
    claim: IdempotencyClaim | None = None,
) -> list[Outcome]:
    """Decide for every customer and append the decisions to the log (unless `dry_run`).

    `claim`: an idempotency key stored with the first decision recorded.

    Raises:
        IdempotencyKeyTakenError: the claimed key exists (nothing was recorded).
        EngineInputError: an unknown candidate offer id or channel (names the field).
        StoreError: the store failed (the caller answers 503).
    """
    at = utc_naive(now) if now is not None else rt.clock()
    ids = list(customer_ids)
    made = decide_now(
        rt, ids, at, channel, decision_key(at, request_id, campaign_id), candidate_offer_ids
    )
    decided = made.decided
    result, live = decided.batch, decided.live
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
            Meta(request_id, campaign_id, dry_run),
            decided.segment(i),
            claim,
        )
        if outcome.recorded:  # the key is stored with it
            claim = None
        outcome = replace(outcome, top_categories=top_categories(made.snapshot, made.features(i)))
        announce(rt, outcome, d)
        out.append(outcome)
    return out


def announce(rt: Runtime, outcome: Outcome, d: Decision) -> None:
    """The metrics and the JSON log line of one decision made (`d`: as the engine made it)."""
    rt.metrics.count_decision(
        outcome.decision.action, outcome.decision.offer_id, outcome.decision.reasons
    )
    log.info(
        "decision",
        extra={
            "decision_id": outcome.decision_id,
            "request_id": outcome.request_id,
            "customer_id": d.customer_id,
            "action": outcome.decision.action,
            "offer_id": outcome.decision.offer_id,
            "channel": outcome.decision.channel,
            "reasons": list(outcome.decision.reasons),
            "recorded": outcome.recorded,
            "dry_run": outcome.dry_run,
            "model_version": d.model_version,
            "policy_version": d.policy_version,
        },
    )


def _commit(
    rt: Runtime,
    d: Decision,
    decision_id: str,
    at: datetime,
    prefs: Preferences | None,
    meta: Meta,
    segment: Segment,
    claim: IdempotencyClaim | None = None,
) -> Outcome:
    base = Outcome(decision_id, d, meta.request_id, meta.campaign_id, meta.dry_run, False, ())
    if meta.dry_run:
        return base
    try:
        if d.is_contact:
            caps = rt.base_caps.for_preferences(prefs)
            res = rt.store.try_record_contact(
                record_of(d, decision_id, at, meta, segment), caps, now=at, claim=claim
            )
            if res.recorded:
                return replace(base, recorded=True)
            claim = None  # stored by that transaction, which recorded nothing else
            # A concurrent request took the cap first, or an opt-out arrived since the state
            # was read: no contact now, for that reason.
            d = withdrawn(d, res.reason or "cap")
            base = replace(base, decision=d)
        rt.store.record_decision(record_of(d, decision_id, at, meta, segment), claim=claim)
        return replace(base, recorded=True)
    except DuplicateDecisionError:
        # The same deterministic id was recorded by a concurrent call: that one stands.
        return replace(base, duplicate_of=True)


def decide_body(
    rt: Runtime,
    endpoint: str,
    body: RecommendationRequest | BatchRecommendationRequest,
    customer_ids: list[str],
) -> list[Outcome]:
    """A decision request's outcomes, decided now for `customer_ids`: recorded once per
    `request_id` (idempotency key), else decided and recorded; dry runs as asked."""
    if body.request_id is not None and not body.dry_run:
        return decide_once(
            rt,
            endpoint,
            body,
            body.request_id,
            customer_ids,
            body.channel,
            body.context.timestamp,
            campaign_id=body.context.campaign_id,
            candidate_offer_ids=body.candidate_offer_ids,
        )
    return decide_and_record(
        rt,
        customer_ids,
        body.channel,
        now=decision_time(rt, body.context.timestamp, body.dry_run),
        campaign_id=body.context.campaign_id,
        candidate_offer_ids=body.candidate_offer_ids,
        dry_run=body.dry_run,
        request_id=body.request_id,
    )
