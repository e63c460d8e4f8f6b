"""Reading the decision store into the plain DataFrames the report is computed from.

Only this module touches SQLAlchemy; `serving.reporting.metrics` works on what it returns.

- decisions: the (non dry-run) decision log in the period, optionally of one campaign, with
  the status of the contact each one implied. The customer's value tier, lapse state and
  predicted conversion come from the log's own columns (`value_tier`, `lapse_state`,
  `p_convert`, since store revision 0002); for rows written before them (NULL there) they
  are read, when present, from the decision's recorded context: a mapping inside `reasons`
  (``{"value_tier": "mid"}``) or a key of `scores` (`value_tier`, `lapse_state`,
  `p_convert`).
- events: every event of those customers from the start of the period on (outcomes after
  `until` still count for decisions made before it).
- budget: incentive redemptions and cost per offer and day in the period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine, Executable, and_, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from serving.errors import StoreError, StoreUnavailableError
from serving.reporting.errors import ReportError
from serving.store import Store
from serving.store.models import BudgetUsage, Contact, Decision, Event
from serving.store.records import utc_naive

PREDICTION_KEYS: Final = ("p_convert", "predicted_conversion")
INCENTIVE_COST_KEYS: Final = ("incentive_cost",)

DECISION_COLUMNS: Final = (
    "decision_id",
    "customer_id",
    "ts",
    "action",
    "offer_id",
    "channel",
    "stage",
    "campaign_id",
    "propensity",
    "expected_value",
    "model_version",
    "excluded",
    "reasons",
    "contact_status",
    "value_tier",
    "lapse_state",
    "predicted_conversion",
)
EVENT_COLUMNS: Final = (
    "event_id",
    "customer_id",
    "ts",
    "type",
    "channel",
    "decision_id",
    "offer_id",
    "revenue",
    "margin",
    "incentive_cost",
)
BUDGET_COLUMNS: Final = ("offer_id", "day", "redemptions", "cost")


@dataclass(frozen=True)
class ReportFilter:
    """Which decisions a report covers: `since <= ts < until`, optionally one campaign."""

    since: datetime | None = None
    until: datetime | None = None
    campaign_id: str | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and utc_naive(self.until) <= utc_naive(self.since):
            raise ReportError(f"until: {self.until:%Y-%m-%d %H:%M} is not after since")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "campaign": self.campaign_id,
        }


@dataclass(frozen=True)
class ReportFrames:
    """What the report is computed from (see the module docstring for each frame)."""

    decisions: pd.DataFrame
    events: pd.DataFrame
    budget: pd.DataFrame


def _context(reasons: Any, scores: Any, keys: Sequence[str]) -> Any:
    """The first value recorded under one of `keys` in the reasons' mappings or the scores."""
    sources: list[Mapping[str, Any]] = [r for r in reasons or () if isinstance(r, Mapping)]
    if isinstance(scores, Mapping):
        sources.append(scores)
    for src in sources:
        for key in keys:
            if src.get(key) is not None:
                return src[key]
    return None


def _decision_context(reasons: Any, scores: Any) -> dict[str, Any]:
    """Value tier, lapse state and predicted conversion recorded with a decision, if any."""
    if not isinstance(scores, Mapping) and not any(isinstance(x, Mapping) for x in reasons or ()):
        return {"value_tier": None, "lapse_state": None, "predicted_conversion": None}
    return {
        "value_tier": _context(reasons, scores, ("value_tier",)),
        "lapse_state": _context(reasons, scores, ("lapse_state",)),
        "predicted_conversion": _float_or_none(_context(reasons, scores, PREDICTION_KEYS)),
    }


def _segment(row: Any) -> dict[str, Any]:
    """The logged columns, each falling back to the recorded context when NULL (old rows)."""
    logged = {
        "value_tier": row.value_tier,
        "lapse_state": row.lapse_state,
        "predicted_conversion": row.p_convert,
    }
    if all(v is not None for v in logged.values()):
        return logged
    old = _decision_context(row.reasons, row.scores)
    return {k: v if v is not None else old[k] for k, v in logged.items()}


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _decision_filter(f: ReportFilter) -> list[Any]:
    cond: list[Any] = [Decision.dry_run.is_(False)]
    if f.since is not None:
        cond.append(Decision.ts >= utc_naive(f.since))
    if f.until is not None:
        cond.append(Decision.ts < utc_naive(f.until))
    if f.campaign_id is not None:
        cond.append(Decision.campaign_id == f.campaign_id)
    return cond


def _decisions_stmt(f: ReportFilter) -> Executable:
    return (
        select(
            Decision.decision_id,
            Decision.customer_id,
            Decision.ts,
            Decision.action,
            Decision.offer_id,
            Decision.channel,
            Decision.stage,
            Decision.campaign_id,
            Decision.propensity,
            Decision.expected_value,
            Decision.model_version,
            Decision.excluded,
            Decision.reasons,
            Decision.scores,
            Decision.value_tier,
            Decision.lapse_state,
            Decision.p_convert,
            Contact.status,
        )
        .outerjoin(Contact, Contact.decision_id == Decision.decision_id)
        .where(and_(*_decision_filter(f)))
        .order_by(Decision.ts, Decision.decision_id)
    )


def _events_stmt(f: ReportFilter) -> Executable:
    customers = select(Decision.customer_id).where(and_(*_decision_filter(f))).distinct()
    stmt = select(
        Event.event_id,
        Event.customer_id,
        Event.ts,
        Event.type,
        Event.channel,
        Event.contact_id,
        Event.decision_id,
        Event.offer_id,
        Event.revenue,
        Event.margin,
        Event.payload,
    ).where(Event.customer_id.in_(customers))
    if f.since is not None:
        stmt = stmt.where(Event.ts >= utc_naive(f.since))
    return stmt.order_by(Event.ts, Event.event_id)


def _budget_stmt(f: ReportFilter) -> Executable:
    stmt = select(BudgetUsage.offer_id, BudgetUsage.day, BudgetUsage.redemptions, BudgetUsage.cost)
    if f.since is not None:
        stmt = stmt.where(BudgetUsage.day >= utc_naive(f.since).date())
    if f.until is not None:
        last = utc_naive(f.until) - timedelta(microseconds=1)
        stmt = stmt.where(BudgetUsage.day <= last.date())
    return stmt.order_by(BudgetUsage.offer_id, BudgetUsage.day)


def _decision_frame(rows: Sequence[Any]) -> pd.DataFrame:
    records = []
    for r in rows:
        records.append(
            {
                "decision_id": r.decision_id,
                "customer_id": r.customer_id,
                "ts": r.ts,
                "action": r.action,
                "offer_id": r.offer_id,
                "channel": r.channel,
                "stage": r.stage,
                "campaign_id": r.campaign_id,
                "propensity": r.propensity,
                "expected_value": r.expected_value,
                "model_version": r.model_version,
                "excluded": list(r.excluded or ()),
                "reasons": [x for x in r.reasons or () if isinstance(x, str)],
                "contact_status": r.status,
                **_segment(r),
            }
        )
    df = pd.DataFrame.from_records(records, columns=list(DECISION_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"])
    df["stage"] = df["stage"].astype("Int64")
    for col in ("propensity", "expected_value", "predicted_conversion"):
        df[col] = df[col].astype(float)
    return df


def _event_frame(rows: Sequence[Any]) -> pd.DataFrame:
    records = []
    for r in rows:
        payload = r.payload if isinstance(r.payload, Mapping) else {}
        records.append(
            {
                "event_id": r.event_id,
                "customer_id": r.customer_id,
                "ts": r.ts,
                "type": r.type,
                "channel": r.channel,
                # contacts share their decision's id, so either one names the decision
                "decision_id": r.decision_id or r.contact_id,
                "offer_id": r.offer_id,
                "revenue": r.revenue,
                "margin": r.margin,
                "incentive_cost": _float_or_none(_context((), payload, INCENTIVE_COST_KEYS)),
            }
        )
    df = pd.DataFrame.from_records(records, columns=list(EVENT_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"])
    for col in ("revenue", "margin", "incentive_cost"):
        df[col] = df[col].astype(float)
    return df


def _engine(source: Store | Engine) -> Engine:
    return source.engine if isinstance(source, Store) else source


def load_frames(source: Store | Engine, report_filter: ReportFilter) -> ReportFrames:
    """Read the decisions, events and budget usage a report over `report_filter` needs.

    Raises:
        StoreUnavailableError: the database cannot be reached or has no winback schema.
        StoreError: any other database failure.
    """
    engine = _engine(source)
    try:
        with engine.connect() as conn:
            decisions = conn.execute(_decisions_stmt(report_filter)).all()
            events = conn.execute(_events_stmt(report_filter)).all()
            budget = conn.execute(_budget_stmt(report_filter)).all()
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailableError(
            f"store: cannot read the decision log ({exc.orig}); is the database migrated "
            "(`upgrade_database`) and the URL right?"
        ) from None
    except SQLAlchemyError as exc:
        raise StoreError(f"store: {type(exc).__name__}: {exc}") from None
    budget_df = pd.DataFrame([tuple(r) for r in budget], columns=list(BUDGET_COLUMNS))
    return ReportFrames(_decision_frame(decisions), _event_frame(events), budget_df)
