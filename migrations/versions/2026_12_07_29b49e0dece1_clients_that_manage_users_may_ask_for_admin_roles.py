"""clients whose scopes hold admin:users may ask for admin:roles

Handing out roles used to come with admin:users; it is a scope of its own now
(`admin:roles`). A client that could ask for admin:users could, through it, hand out
roles: it keeps that power under the new name, so an upgrade takes nothing from the
admins signing in through it. An admin may take the scope away from any client later.

Revision ID: 29b49e0dece1
Revises: 7d3e2f1a9c58
Create Date: 2026-12-07 20:00:00.000000
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "29b49e0dece1"
down_revision: str | None = "7d3e2f1a9c58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_clients = sa.table("clients", sa.column("client_id", sa.String()), sa.column("scopes", sa.JSON()))


def _replace_scopes(change: Callable[[set[str]], set[str]]) -> None:
    connection = op.get_bind()
    for client_id, scopes in connection.execute(sa.select(_clients.c.client_id, _clients.c.scopes)):
        changed = sorted(change(set(scopes)))
        if changed != sorted(scopes):
            connection.execute(
                _clients.update().where(_clients.c.client_id == client_id).values(scopes=changed)
            )


def upgrade() -> None:
    _replace_scopes(lambda scopes: scopes | {"admin:roles"} if "admin:users" in scopes else scopes)


def downgrade() -> None:
    _replace_scopes(lambda scopes: scopes - {"admin:roles"})
