"""signing key rotation: when a superseded key retires, when a compromised one was revoked

Revision ID: bdcfbee60eb9
Revises: ca9952cff200
Create Date: 2026-12-06 19:51:57.786895
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bdcfbee60eb9"
down_revision: str | None = "ca9952cff200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both empty for existing keys: they keep signing and verifying as before.
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("retires_at")
