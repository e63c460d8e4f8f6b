"""holdout rows keep the decision they replaced

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

The holdout is now drawn only among customers whose decision is a contact after every
guardrail, and a holdout row records the contact it replaced in the existing `offer_id`,
`channel`, `expected_value` and `p_convert` columns (action `holdout`, no contact row, so
nothing counts it against a cap). `propensity` stays the probability of the logged action
(the holdout share, which `export-log` relies on); the replaced option's own propensity goes
into the new nullable `replaced_propensity`. Rows written before keep NULL there.

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("replaced_propensity", sa.Float(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("replaced_propensity")
