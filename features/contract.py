"""The data contract: what each table of a data directory must hold, declared as data.

A `TableSchema` lists its columns with a kind (id, text, timestamp, number, enumeration), whether
the column must be present, whether it may be empty, its allowed values or range, and the
table's unique key. `features.validation` checks a table against its schema; cross-table rules
(foreign keys, timestamp order) live there too.

Timestamps are read as ISO 8601 and held as timezone-naive UTC; a timezone-aware input is
converted to UTC first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from features import constants as c

Kind = Literal["id", "text", "ts", "float", "int", "enum"]


@dataclass(frozen=True)
class Column:
    """One column of a table."""

    name: str
    kind: Kind
    meaning: str
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    min_exclusive: bool = False
    max: float | None = None
    default: Any = None


@dataclass(frozen=True)
class TableSchema:
    """A table: its columns in order and its unique key."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required: bool = True

    def column(self, name: str) -> Column:
        return next(col for col in self.columns if col.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns)


CUSTOMERS = TableSchema(
    c.CUSTOMERS,
    (
        Column(c.CUSTOMER_ID, "id", "stable customer identifier"),
        Column(c.SIGNUP_TS, "ts", "when the customer signed up or first bought"),
        Column(c.REGION, "text", "region", required=False, nullable=True),
        Column(c.ACQUISITION_CHANNEL, "text", "how the customer was acquired", False, True),
    ),
    key=(c.CUSTOMER_ID,),
)

ORDERS = TableSchema(
    c.ORDERS,
    (
        Column(c.ORDER_ID, "id", "order identifier"),
        Column(c.CUSTOMER_ID, "id", "who ordered"),
        Column(c.ORDER_TS, "ts", "when the order was placed"),
        Column(c.REVENUE, "float", "order revenue after discounts", min=0.0),
        Column(
            c.MARGIN,
            "float",
            "gross margin of the order, in currency; absent or empty: revenue x the data's "
            "assumed margin rate (`dataset.json`), flagged in `margin_assumed`",
            required=False,
            nullable=True,
        ),
        Column(
            c.CATEGORY,
            "text",
            "main product category of the order",
            required=False,
            default=c.UNKNOWN_CATEGORY,
        ),
        Column(c.DISCOUNT_AMOUNT, "float", "discount given", required=False, min=0.0, default=0.0),
    ),
    key=(c.ORDER_ID,),
)

CONTACTS = TableSchema(
    c.CONTACTS,
    (
        Column(c.CONTACT_ID, "id", "contact identifier"),
        Column(c.CUSTOMER_ID, "id", "who was contacted (or held out)"),
        Column(c.TS, "ts", "when the contact was sent or the control assigned"),
        Column(
            c.CHANNEL, "enum", "channel; empty for a holdout", nullable=True, allowed=c.CHANNELS
        ),
        Column(c.CAMPAIGN_ID, "text", "campaign or wave"),
        Column(c.OFFER_ID, "text", "catalog offer, 'none' or 'holdout'"),
        Column(c.STAGE, "int", "journey step", min=1),
        Column(
            c.PROPENSITY,
            "float",
            "probability with which this option was chosen",
            required=False,
            nullable=True,
            min=0.0,
            min_exclusive=True,
            max=1.0,
        ),
    ),
    key=(c.CONTACT_ID,),
    required=False,
)

EVENTS = TableSchema(
    c.EVENTS,
    (
        Column(c.EVENT_ID, "id", "event identifier"),
        Column(c.CUSTOMER_ID, "id", "whose event"),
        Column(c.TS, "ts", "when it happened"),
        Column(c.EVENT_TYPE, "enum", "what happened", allowed=c.EVENT_TYPES),
        Column(c.CONTACT_ID, "id", "the contact it answers", required=False, nullable=True),
    ),
    key=(c.EVENT_ID,),
    required=False,
)

CONSENT = TableSchema(
    c.CONSENT,
    (
        Column(c.CUSTOMER_ID, "id", "whose consent"),
        Column(c.CHANNEL, "enum", "channel", allowed=c.CHANNELS),
        Column(c.STATUS, "enum", "opted_in or opted_out", allowed=c.CONSENT_STATUSES),
        Column(c.UPDATED_TS, "ts", "when this status was recorded"),
    ),
    key=(c.CUSTOMER_ID, c.CHANNEL, c.UPDATED_TS),
    required=False,
)

SCHEMAS: dict[str, TableSchema] = {
    s.name: s for s in (CUSTOMERS, ORDERS, CONTACTS, EVENTS, CONSENT)
}


@dataclass(frozen=True)
class Problem:
    """One broken rule: where, which rule, how many rows, and a few examples."""

    table: str
    column: str
    rule: str
    n_bad: int
    examples: tuple[str, ...] = ()
    detail: str = ""

    def message(self) -> str:
        ex = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"{where}: {self.rule}: {self.detail}; {self.n_bad} bad row(s){ex}"


@dataclass
class ValidationReport:
    """Everything wrong with a data directory; empty `problems` means it is valid."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "row_counts": self.row_counts,
            "problems": [
                {
                    "table": p.table,
                    "column": p.column,
                    "rule": p.rule,
                    "n_bad": p.n_bad,
                    "examples": list(p.examples),
                    "detail": p.detail,
                }
                for p in self.problems
            ],
        }
