"""service clients, and the audience a session's access tokens are issued for

The public login clients of AUTH_CLIENT_IDS become rows of `clients` at start-up (the
migration does not know the settings); sessions of today keep the default audience (NULL).

Revision ID: 3cfca654699e
Revises: e9d80dc3ae16
Create Date: 2026-12-06 19:50:05.481101
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3cfca654699e"
down_revision: str | None = "e9d80dc3ae16"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("is_confidential", sa.Boolean(), nullable=False),
        sa.Column("secret_digest", sa.LargeBinary(length=32), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_clients")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("audience")

    op.drop_table("clients")
