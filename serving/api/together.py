"""Deciding several single-customer requests together: one state read, one engine call,
one write transaction (group commit).

`serving.api.microbatch` collects the `POST /v1/recommendations` requests that arrive while
a worker is busy and hands each group to `decide_together`. Every request gets what it
would get decided alone at that moment (`decide_once` / `decide_and_record`):

- the same decision: the engine is row-wise, each customer keeps its own exploration key
  (its `request_id`, else the campaign, else the day: `decision_key`), the same decision
  id (keyed by `request_id`, else a new one), the same model and policy versions;
- the same guardrails: each contact's consent and caps are checked in the write
  transaction under the customer's lock (`Store.record_group`); a group never holds one
  customer or one `request_id` twice, so each cap check sees every earlier decision;
- the same idempotency: each key is claimed in the transaction that records its
  decision; a key that exists takes the repeat path (`repeat`) for that request alone;
- the same log line and metrics per decision, emitted only once the group committed.

A group shares what the engine call shares: the runtime, the channel, the campaign, the
candidate offers, and the decision time (the server's clock when the group is decided; the
requests carry no `context.timestamp` and are not dry runs: others are decided alone).
If anything fails before the commit, nothing was written and `DecisionBatcher` decides
each request of the group alone, so each one gets exactly its own answer or error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

from serving.api.runtime import Runtime
from serving.api.schemas import RecommendationRequest
from serving.api.service import (
    Meta,
    Outcome,
    Segment,
    announce,
    decide_now,
    from_log_where_duplicate,
    keyed_decision_id,
    new_decision_id,
    record_of,
    repeat,
    request_fingerprint,
    top_categories,
    withdrawn,
)
from serving.decide import decision_key
from serving.engine import Decision
from serving.store import DecisionRecord, IdempotencyClaim
from serving.store.repository import (
    DUPLICATE,
    KEY_TAKEN,
    WITHDRAWN,
    GroupEntry,
)

ENDPOINT = "recommendations"


def group_key(body: RecommendationRequest) -> tuple[object, ...] | None:
    """What requests decided together must share, or None: decided alone (a dry run, or a
    caller's timestamp, which is checked against the clock or asks about another time)."""
    if body.dry_run or body.context.timestamp is not None:
        return None
    offers = tuple(body.candidate_offer_ids) if body.candidate_offer_ids is not None else None
    return (body.channel, body.context.campaign_id, offers)


def decide_together(
    rt: Runtime, bodies: Sequence[RecommendationRequest]
) -> list[Outcome | Exception]:
    """The outcome of each request (or the error it answers with), decided as one group.

    The bodies share `group_key` and hold distinct customers and request ids.

    Raises:
        Exception: anything that fails before the group committed (nothing was written,
            no decision announced); the caller then decides each request alone.
    """
    first = bodies[0]
    channel, campaign_id = first.channel, first.context.campaign_id
    offers = first.candidate_offer_ids
    at = rt.clock()
    ids = [b.customer_id for b in bodies]
    keys = [b.request_id for b in bodies]
    dids = [
        keyed_decision_id(k, cid, at) if k is not None else new_decision_id()
        for k, cid in zip(keys, ids, strict=True)
    ]
    prints = [request_fingerprint(ENDPOINT, b) if b.request_id else None for b in bodies]
    engine_out = decide_now(
        rt, ids, at, channel, [decision_key(at, k, campaign_id) for k in keys], offers
    )
    decided = engine_out.decided
    result, live = decided.batch, decided.live
    made: list[Decision] = []
    entries: list[GroupEntry] = []
    for i in range(len(result)):
        d = result.decision(i)
        meta = Meta(keys[i], campaign_id, False)
        segment = decided.segment(i)
        key, fingerprint = keys[i], prints[i]
        claim = (
            IdempotencyClaim(key, fingerprint, ENDPOINT, at)
            if key is not None and fingerprint is not None
            else None
        )
        caps = None
        if d.is_contact:
            state = live.get(d.customer_id)
            caps = rt.base_caps.for_preferences(state.preferences if state else None)
        entries.append(
            GroupEntry(
                record_of(d, dids[i], at, meta, segment),
                caps=caps,
                claim=claim,
                withdrawn=partial(_withdrawn_record, d, dids[i], at, meta, segment),
            )
        )
        made.append(d)
    results = rt.store.record_group(entries)  # raises: nothing written, decide each alone
    out: list[Outcome | Exception] = []
    for i, res in enumerate(results):
        body, d = bodies[i], made[i]
        try:
            if res.status == KEY_TAKEN:  # as `decide_once`: the repeat path, this one alone
                out.append(_repeat_alone(rt, body, prints[i] or ""))
                continue
            decision = withdrawn(d, res.reason or "cap") if res.status == WITHDRAWN else d
            outcome = Outcome(
                dids[i],
                decision,
                keys[i],
                campaign_id,
                False,
                res.status != DUPLICATE,
                top_categories(engine_out.snapshot, engine_out.features(i)),
                duplicate_of=res.status == DUPLICATE,
            )
            announce(rt, outcome, d)  # as `decide_and_record`, a twin's too
            if keys[i] is not None:  # as `decide_once`: a twin's decision from the log
                [outcome] = from_log_where_duplicate(rt, [dids[i]], {0: outcome}, {})
            out.append(outcome)
        except Exception as exc:  # this request's own error (after the commit)
            out.append(exc)
    return out


def _withdrawn_record(
    d: Decision, decision_id: str, at: datetime, meta: Meta, segment: Segment, code: str
) -> DecisionRecord:
    """The record written when consent or a cap blocks the contact `d` (as `_commit`)."""
    return record_of(withdrawn(d, code), decision_id, at, meta, segment)


def _repeat_alone(rt: Runtime, body: RecommendationRequest, fingerprint: str) -> Outcome:
    key = body.request_id or ""  # only keyed requests claim a key
    [outcome] = repeat(
        rt,
        ENDPOINT,
        fingerprint,
        key,
        [body.customer_id],
        body.channel,
        body.context.timestamp,
        body.context.campaign_id,
        body.candidate_offer_ids,
    )
    return outcome
