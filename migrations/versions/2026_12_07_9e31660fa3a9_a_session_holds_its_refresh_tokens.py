"""sessions hold their refresh tokens: a numbered HMAC chain and the user's token version

Each refresh used to add a row to refresh_tokens, kept until it expired: one sign-in
refreshing in a loop grew the table without bound. A session now holds its refresh tokens
in its own row (`security.refresh_tokens`), and records the user's token version at
sign-in, so a password change refuses a sign-in that was in flight.

The refresh tokens issued before this revision were random values stored by digest; no
token of the new form can be made from a digest, so they stop working: their clients sign
in again (the sessions, and their access tokens, live on until they expire).

Revision ID: 9e31660fa3a9
Revises: 5c1e7a9d2b40
Create Date: 2026-12-07 20:00:00.000000
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e31660fa3a9"
down_revision: str | None = "5c1e7a9d2b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("refresh_seed", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("refresh_generation", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("successor", sa.LargeBinary(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_sessions_refreshed_at"), ["refreshed_at"], unique=False
        )

    connection = op.get_bind()
    sessions = sa.table(
        "sessions",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.Uuid()),
        sa.column("token_version", sa.Integer()),
        sa.column("refresh_seed", sa.LargeBinary()),
    )
    users = sa.table("users", sa.column("id", sa.Uuid()), sa.column("token_version", sa.Integer()))
    # A session begun before this revision counts as begun at the user's version now.
    connection.execute(
        sessions.update().values(
            token_version=sa.select(users.c.token_version)
            .where(users.c.id == sessions.c.user_id)
            .scalar_subquery()
        )
    )
    for (session_id,) in connection.execute(sa.select(sessions.c.id)).all():
        connection.execute(
            sessions.update().where(sessions.c.id == session_id).values(refresh_seed=os.urandom(32))
        )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "refresh_seed", existing_type=sa.LargeBinary(length=32), nullable=False
        )

    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_spent_at"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_session_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_expires_at"))
    op.drop_table("refresh_tokens")


def downgrade() -> None:
    # The refresh tokens of the new form cannot be turned back into rows: they stop working.
    op.create_table(
        "refresh_tokens",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("successor", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_refresh_tokens")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_refresh_tokens_spent_at"), ["spent_at"], unique=False)

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_refreshed_at"))
        batch_op.drop_column("successor")
        batch_op.drop_column("refreshed_at")
        batch_op.drop_column("refresh_generation")
        batch_op.drop_column("refresh_seed")
        batch_op.drop_column("token_version")
