"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22

The decision log, contacts, events, consent and preferences history, budget usage.

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "budget_usage",
        sa.Column("offer_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("redemptions", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("offer_id", "day", name=op.f("pk_budget_usage")),
    )
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
    )
    op.create_index(
        "ix_consent_history_customer", "consent_history", ["customer_id", "channel", "ts"]
    )

    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("decision_id", sa.String(length=128), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("offer_id", sa.String(length=64), nullable=True),
        sa.Column("campaign_id", sa.String(length=128), nullable=True),
        sa.Column("stage", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_ts", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_contacts_decision_id")),
    )
    op.create_index("ix_contacts_customer_ts", "contacts", ["customer_id", "ts"])

    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("offer_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("stage", sa.Integer(), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=True),
        sa.Column("expected_value", sa.Float(), nullable=True),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("scores", JSON, nullable=True),
        sa.Column("excluded", JSON, nullable=True),
        sa.Column("model_version", sa.String(length=128), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("campaign_id", sa.String(length=128), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_decisions")),
    )
    op.create_index("ix_decisions_customer_ts", "decisions", ["customer_id", "ts"])
    op.create_index(op.f("ix_decisions_request_id"), "decisions", ["request_id"])

    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("contact_id", sa.String(length=128), nullable=True),
        sa.Column("decision_id", sa.String(length=128), nullable=True),
        sa.Column("offer_id", sa.String(length=64), nullable=True),
        sa.Column("revenue", sa.Float(), nullable=True),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("received_ts", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_customer_ts", "events", ["customer_id", "ts"])

    op.create_table(
        "preferences_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("channels", JSON, nullable=True),
        sa.Column("max_contacts", sa.Integer(), nullable=True),
        sa.Column("per_days", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences_history")),
    )
    op.create_index("ix_preferences_history_customer", "preferences_history", ["customer_id", "ts"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_preferences_history_customer", "preferences_history")

    op.drop_table("preferences_history")
    op.drop_index("ix_events_customer_ts", "events")

    op.drop_table("events")
    op.drop_index(op.f("ix_decisions_request_id"), "decisions")
    op.drop_index("ix_decisions_customer_ts", "decisions")

    op.drop_table("decisions")
    op.drop_index("ix_contacts_customer_ts", "contacts")

    op.drop_table("contacts")
    op.drop_index("ix_consent_history_customer", "consent_history")

    op.drop_table("consent_history")
    op.drop_table("budget_usage")
