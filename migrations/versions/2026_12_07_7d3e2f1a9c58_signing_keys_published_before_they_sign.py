"""signing keys: when each one signs from, so a rotation publishes the next key first

Revision ID: 7d3e2f1a9c58
Revises: 9e31660fa3a9
Create Date: 2026-12-07 19:25:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d3e2f1a9c58"
down_revision: str | None = "9e31660fa3a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signs_from", sa.DateTime(timezone=True), nullable=True))
    # Every existing key signed from its creation, as rotations did until now.
    op.execute(sa.text("UPDATE signing_keys SET signs_from = created_at"))
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.alter_column(
            "signs_from", existing_type=sa.DateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("signs_from")
