"""email keys: accounts are unique by the folded address, not by its spelling

Revision ID: f01fdf40941d
Revises: b00a8f8014e8
Create Date: 2026-12-02 06:27:43.811935
"""

import logging
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from auth_service.accounts import emails

revision: str = "f01fdf40941d"
down_revision: str | None = "b00a8f8014e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger(__name__)

_users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("email_key", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _keys(rows: Sequence[sa.Row[tuple[uuid.UUID, str]]]) -> dict[uuid.UUID, str]:
    """Each account's key. Look-alikes registered before this revision share one: the
    account already spelled canonically keeps it (else the oldest); every other one gets a
    key no address folds to (it has no @-sign), so it can no longer sign in."""
    owners: dict[str, list[tuple[uuid.UUID, str]]] = {}
    for user_id, email in rows:  # oldest first
        key = emails.key_of(email) or emails.fold(email)
        owners.setdefault(key, []).append((user_id, email))
    keys: dict[uuid.UUID, str] = {}
    for key, accounts in owners.items():
        keeper = next((a for a in accounts if a[1] == key), accounts[0])
        for user_id, _ in accounts:
            if user_id == keeper[0]:
                keys[user_id] = key
                continue
            keys[user_id] = f"look-alike:{user_id}"
            logger.warning(
                "account %s is a look-alike of account %s and can no longer sign in",
                user_id,
                keeper[0],
            )
    return keys


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_key", sa.String(length=320), nullable=True))

    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_users.c.id, _users.c.email).order_by(_users.c.created_at, _users.c.id)
    ).all()
    for user_id, key in _keys(rows).items():
        connection.execute(_users.update().where(_users.c.id == user_id).values(email_key=key))

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("email_key", existing_type=sa.String(length=320), nullable=False)
        batch_op.drop_constraint(batch_op.f("uq_users_email"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_users_email_key"), ["email_key"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_email_key"), type_="unique")

    # The previous revision's code looks addresses up lower-cased.
    connection = op.get_bind()
    for user_id, email in connection.execute(sa.select(_users.c.id, _users.c.email)).all():
        if email != email.lower():
            connection.execute(
                _users.update().where(_users.c.id == user_id).values(email=email.lower())
            )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_users_email"), ["email"])
        batch_op.drop_column("email_key")
