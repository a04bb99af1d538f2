"""clients: the secret a rotation replaced, accepted until a set time; a token version

Revision ID: 5c1e7a9d2b40
Revises: bdcfbee60eb9
Create Date: 2026-12-06 22:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e7a9d2b40"
down_revision: str | None = "bdcfbee60eb9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_secret_digest", sa.LargeBinary(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("token_version")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_digest")
