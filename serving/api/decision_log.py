"""Reads of the decision log the API needs: one decision by id, and the next-offer dedupe.

Template engines fetch content more than once per send (HTML and text parts, retries). A
next-offer call first looks for a decision of the same customer and campaign made by
next-offer within the configured window and returns it unchanged; otherwise it decides with
a decision id derived from (customer, campaign, window bucket), so two calls racing past the
lookup collide on the log's primary key and the loser returns the winner's decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from serving.engine import Decision, Excluded, Replaced
from serving.engine.decision import HOLDOUT
from serving.errors import StoreUnavailableError
from serving.policy import Policy
from serving.store import Store
from serving.store.models import Decision as DecisionRow

NEXT_OFFER = "next-offer"


def next_offer_request_id(campaign_id: str | None) -> str:
    """The request id next-offer decisions are logged under (the dedupe key with customer);
    a campaign id too long to fit the 128-character column beside the prefix is hashed."""
    rid = f"{NEXT_OFFER}:{campaign_id or '-'}"
    if len(rid) <= 128:
        return rid
    digest = hashlib.blake2b((campaign_id or "").encode(), digest_size=16).hexdigest()
    return f"{NEXT_OFFER}:#{digest}"


def next_offer_decision_id(customer_id: str, campaign_id: str | None, bucket: int) -> str:
    """Deterministic id of the next-offer decision of one customer, campaign and bucket."""
    key = f"{customer_id}\x00{campaign_id or ''}\x00{bucket}".encode()
    return f"{NEXT_OFFER}-{hashlib.blake2b(key, digest_size=12).hexdigest()}"


def _load(store: Store, stmt: object) -> DecisionRow | None:
    try:
        with Session(store.engine) as s:
            return s.execute(stmt).scalar_one_or_none()  # type: ignore[call-overload]
    except SQLAlchemyError as exc:
        raise StoreUnavailableError(f"store: cannot read the decision log: {exc}") from None


def get_decision(store: Store, decision_id: str) -> DecisionRow | None:
    return _load(store, select(DecisionRow).where(DecisionRow.decision_id == decision_id))


def get_decisions(store: Store, decision_ids: Sequence[str]) -> dict[str, DecisionRow]:
    """The logged decisions among `decision_ids`, by id (absent ids are left out)."""
    out: dict[str, DecisionRow] = {}
    try:
        with Session(store.engine) as s:
            for start in range(0, len(decision_ids), 500):
                part = list(decision_ids[start : start + 500])
                rows = s.scalars(select(DecisionRow).where(DecisionRow.decision_id.in_(part)))
                out.update((r.decision_id, r) for r in rows)
    except SQLAlchemyError as exc:
        raise StoreUnavailableError(f"store: cannot read the decision log: {exc}") from None
    return out


def recent_next_offer(
    store: Store, customer_id: str, campaign_id: str | None, now: datetime, window_s: int
) -> DecisionRow | None:
    """The latest next-offer decision of this customer and campaign within the window."""
    since = now - timedelta(seconds=window_s)
    stmt = (
        select(DecisionRow)
        .where(
            DecisionRow.customer_id == customer_id,
            DecisionRow.request_id == next_offer_request_id(campaign_id),
            DecisionRow.ts > since,
            DecisionRow.ts <= now,
            DecisionRow.dry_run.is_(False),
        )
        .order_by(DecisionRow.ts.desc())
        .limit(1)
    )
    return _load(store, stmt)


def decision_from_row(row: DecisionRow, policy: Policy) -> Decision:
    """The engine's `Decision` as it was logged (stage name from the current policy)."""
    stages = policy.journey.stages
    stage_name = stages[row.stage - 1].name if row.stage and row.stage <= len(stages) else None
    # a holdout row logs the contact it replaced; the decision itself sends nothing
    replaced = None
    if row.action == HOLDOUT and row.offer_id is not None and row.channel is not None:
        replaced = Replaced(
            row.offer_id,
            row.channel,
            row.expected_value,
            row.replaced_propensity or 0.0,
            row.p_convert,
        )
    held = replaced is not None
    return Decision(
        customer_id=row.customer_id,
        action=row.action,
        offer_id=None if held else row.offer_id,
        channel=None if held else row.channel,
        stage=row.stage,
        stage_name=stage_name,
        value=None if held else row.expected_value,
        propensity=row.propensity if row.propensity is not None else 1.0,
        scores=dict(row.scores or {}),
        excluded=tuple(Excluded(e["offer_id"], e["reason"]) for e in row.excluded or ()),
        reasons=tuple(row.reasons or ()),
        model_version=row.model_version or "",
        policy_version=row.policy_version or "",
        p_convert=None if held else row.p_convert,
        replaced=replaced,
    )
