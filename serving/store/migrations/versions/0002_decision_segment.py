"""decision segment and predicted conversion

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Adds the customer's `value_tier` and `lapse_state` at decision time and the model's
`p_convert` of the chosen option to the decision log, all nullable: rows written before this
revision keep NULL there (the report falls back to what they recorded in `scores`/`reasons`).
SQLite cannot drop columns in place, so both directions go through `batch_alter_table`
(on PostgreSQL it issues plain ALTER TABLE statements).

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("value_tier", "lapse_state", "p_convert")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("value_tier", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("lapse_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("p_convert", sa.Float(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("decisions") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
