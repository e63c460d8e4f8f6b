"""drop the index on decisions.request_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

No query filters decisions by `request_id` alone: a repeated request finds its decisions by
their ids (derived from the key), and the next-offer dedupe reads one customer's recent
decisions through `ix_decisions_customer_ts`. The index only cost a write: every recorded
decision dirtied one more page of a B-tree keyed by a random string, about 1.3 of the 12.5
WAL pages a lone recorded contact wrote (`bench/bench_wal.py`).

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_index(op.f("ix_decisions_request_id"), table_name="decisions")


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index(op.f("ix_decisions_request_id"), "decisions", ["request_id"])
