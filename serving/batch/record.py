"""`--record`: write a wave's decisions to the store, in batches, one transaction each.

Decision ids derive from the wave id and the customer id (`columns.wave_decision_ids`), so a
rerun of the same wave finds the decisions it already wrote and counts them once: a recorded
decision is skipped and the output row shows what the store holds. A contact decision is
checked against the caps inside its transaction, as the API does (`Store.try_record_contact`):
if a contact recorded since the chunk was decided fills a cap, the decision becomes `none`
with the cap's reason code. A holdout (which replaces a contact) goes through the same check,
so the control group stays among customers a contact could really be sent to: if a cap now
blocks its replaced contact, it becomes `none` too. Each decision row carries the customer's
value tier and lapse state (holdouts too: the report compares every segment with its own
holdouts) and the model's P(convert) of the chosen option.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from serving.batch.columns import REASON_SEP
from serving.decide import Decided, decision_fields
from serving.engine.decision import NONE
from serving.errors import StoreError, StoreUnavailableError
from serving.store import ContactCaps, CustomerState, Preferences, Store, check_caps, queries
from serving.store.engine import WRITE_OPTION
from serving.store.models import ACTION_HOLDOUT, CONTACT_ACTIONS, SENT, Contact, Decision

_CHECKED: tuple[str, ...] = (*CONTACT_ACTIONS, ACTION_HOLDOUT)
"""Actions checked against the caps when recorded (a holdout stands for a contact)."""

Columns = dict[str, list[Any]]
RECORD_BATCH = 2_000
"""Decisions per transaction."""


@dataclass
class RecordCounts:
    """What recording a wave did."""

    recorded: int = 0
    contacts: int = 0
    already_recorded: int = 0
    blocked_by_cap: int = 0

    def add(self, other: RecordCounts) -> None:
        self.recorded += other.recorded
        self.contacts += other.contacts
        self.already_recorded += other.already_recorded
        self.blocked_by_cap += other.blocked_by_cap


def _prefs(state: CustomerState | None) -> Preferences | None:
    return state.preferences if state is not None else None


def _decision_row(
    decided: Decided, i: int, decision_id: str, at: datetime, wave_id: str
) -> Decision:
    fields = decision_fields(decided.batch.decision(i), decided.segment(i))
    return Decision(
        decision_id=decision_id,
        request_id=None,
        ts=at,
        campaign_id=wave_id,
        dry_run=False,
        **fields,
    )


def _show_stored(cols: Columns, j: int, row: Decision) -> None:
    """Make output row j say what the store holds for its decision id (a holdout: nothing
    sent; the contact it replaced stays in the log)."""
    held = row.action == ACTION_HOLDOUT
    cols["action"][j] = row.action
    cols["offer_id"][j] = None if held else row.offer_id
    cols["channel"][j] = None if held else row.channel
    cols["stage"][j] = row.stage
    cols["expected_incremental_margin"][j] = None if held else row.expected_value
    cols["propensity"][j] = row.propensity
    cols["reasons"][j] = REASON_SEP.join(map(str, row.reasons))
    cols["model_version"][j] = row.model_version
    cols["policy_version"][j] = row.policy_version


def _block(cols: Columns, j: int, row: Decision, code: str) -> None:
    row.reasons = [code, *row.reasons]
    row.action, row.offer_id, row.channel, row.expected_value = NONE, None, None, None
    row.p_convert = None  # nothing is sent, so there is no predicted conversion to check
    row.replaced_propensity = None
    _show_stored(cols, j, row)
    for col in ("offer_title", "offer_description"):
        cols[col][j] = None


def record_rows(
    store: Store,
    cols: Columns,
    decided: Decided,
    at: datetime,
    wave_id: str,
    caps: ContactCaps,
    rows: range,
) -> RecordCounts:
    """Record `rows` of `decided` (and of its output columns `cols`) in one transaction.

    `cols` (the output table as lists, `pa.Table.to_pydict()`) is updated in place where the
    store's answer differs: an already recorded decision, or a contact a cap blocked.
    """
    counts = RecordCounts()
    ids = dict(zip(rows, cols["decision_id"][rows.start : rows.stop], strict=True))
    try:
        with Session(store.engine, expire_on_commit=False) as s, s.begin():
            s.connection(execution_options={WRITE_OPTION: True})
            existing = {
                d.decision_id: d
                for d in s.scalars(
                    select(Decision).where(Decision.decision_id.in_(list(ids.values())))
                )
            }
            action, customer = cols["action"], cols["customer_id"]
            contact_customers = sorted(
                {
                    str(customer[j])
                    for j, did in ids.items()
                    if action[j] in _CHECKED and did not in existing
                }
            )
            if store.dialect == "postgresql" and contact_customers:
                s.execute(
                    text(
                        "SELECT pg_advisory_xact_lock(hashtextextended(cid, 0)) "
                        "FROM unnest(CAST(:ids AS text[])) AS cid"
                    ),
                    {"ids": contact_customers},
                )
            past = queries.counted_contacts(s, contact_customers, at - caps.horizon)
            contacts: list[Contact] = []
            for j, did in ids.items():
                if did in existing:
                    _show_stored(cols, j, existing[did])
                    counts.already_recorded += 1
                    continue
                row = _decision_row(decided, j, did, at, wave_id)
                if row.action in _CHECKED and row.channel:
                    cid = row.customer_id
                    blocked = check_caps(  # exempts the plain message `none` from "no repeat"
                        past.get(cid, []),
                        caps.for_preferences(_prefs(decided.live.get(cid))),
                        at,
                        row.channel,
                        row.offer_id,
                    )
                    if blocked is not None:
                        _block(cols, j, row, blocked[0])
                        counts.blocked_by_cap += 1
                    elif row.action in CONTACT_ACTIONS:
                        s.add(row)
                        contacts.append(
                            Contact(
                                contact_id=did,
                                decision_id=did,
                                customer_id=cid,
                                ts=at,
                                channel=row.channel,
                                offer_id=row.offer_id,
                                campaign_id=wave_id,
                                stage=row.stage,
                                status=SENT,
                            )
                        )
                        counts.contacts += 1
                        counts.recorded += 1
                        continue
                s.add(row)
                counts.recorded += 1
            s.flush()  # the contacts refer to their decisions
            s.add_all(contacts)
    except OperationalError as exc:
        raise StoreUnavailableError(f"store: database error: {exc.orig}") from None
    except SQLAlchemyError as exc:
        raise StoreError(
            f"store: recording wave {wave_id!r}: {type(exc).__name__}: {exc}"
        ) from None
    return counts
