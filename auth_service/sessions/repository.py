"""Sessions (sign-ins and their refresh tokens) in the database, as their owner sees them."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.kit import jobs
from auth_service.models import LoginSession, User


def _live(user_id: uuid.UUID, now: datetime) -> ColumnElement[bool]:
    """The user's sessions that have not ended: neither past their absolute end nor idle
    past their newest refresh token's (an ended one has no row at all)."""
    return and_(
        col(LoginSession.user_id) == user_id,
        col(LoginSession.expires_at) > now,
        col(LoginSession.idle_expires_at) > now,
    )


async def live(
    db: AsyncSession, *, user_id: uuid.UUID, now: datetime, limit: int, offset: int
) -> tuple[list[LoginSession], int]:
    """A page of the user's live sessions, newest first, and how many there are in all."""
    count = select(func.count()).select_from(LoginSession).where(_live(user_id, now))
    total = (await db.exec(count)).one()
    found = await db.exec(
        select(LoginSession)
        .where(_live(user_id, now))
        .order_by(col(LoginSession.created_at).desc(), col(LoginSession.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list(found.all()), total


async def delete_one(db: AsyncSession, session_id: uuid.UUID) -> None:
    """Delete the session `session_id` (its refresh tokens go with it), if it still exists."""
    await db.exec(delete(LoginSession).where(col(LoginSession.id) == session_id))


async def delete_live(
    db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> bool:
    """Delete the user's live session `session_id` (its refresh tokens go with it); False
    when the user has no such session."""
    result = await db.exec(
        delete(LoginSession).where(col(LoginSession.id) == session_id, _live(user_id, now))
    )
    return result.rowcount == 1


async def keep_newest(db: AsyncSession, *, user_id: uuid.UUID, new: uuid.UUID, keep: int) -> None:
    """End the user's sessions but `new` and the `keep - 1` newest others (by sign-in time)."""
    others = and_(col(LoginSession.user_id) == user_id, col(LoginSession.id) != new)
    newest = (
        select(LoginSession.id)
        .where(others)
        .order_by(col(LoginSession.created_at).desc(), col(LoginSession.id).desc())
        .limit(keep - 1)
    )
    await db.exec(delete(LoginSession).where(others, col(LoginSession.id).not_in(newest)))


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, reuse_interval: int
) -> int:
    """Delete every session past its absolute or idle end, and clear the refresh answers
    kept past the reuse interval (`reuse_interval` seconds), batch by batch; how many rows
    went or changed."""
    kept_since = now - timedelta(seconds=reuse_interval)
    ended = await jobs.in_batches(
        sessionmaker,
        key=col(LoginSession.id),
        matching=or_(col(LoginSession.expires_at) <= now, col(LoginSession.idle_expires_at) <= now),
        change=delete(LoginSession),
    )
    cleared = await jobs.in_batches(
        sessionmaker,
        key=col(LoginSession.id),
        matching=and_(
            col(LoginSession.refreshed_at) < kept_since, col(LoginSession.successor).is_not(None)
        ),
        change=update(LoginSession).values(successor=None),
    )
    return ended + cleared


async def lock_for_sign_in(db: AsyncSession, user_id: uuid.UUID) -> int | None:
    """The user's token version, if the account still exists and is active, read under a
    lock held until the transaction ends; else None.

    So a sign-in's last check and its new session commit as one step against a password
    change, a deactivation or a deletion, which wait for it (and then end the new session
    too) or come first (and the sign-in sees them). PostgreSQL: the row is locked
    (FOR NO KEY UPDATE, which concurrent sign-ins of the user queue on, but the key checks
    of other tables' inserts do not). SQLite: a write to the row takes the database's write
    lock first (its SELECTs would otherwise run outside the transaction).
    """
    statement: Any
    if db.get_bind().dialect.name == "sqlite":
        statement = (
            update(User)
            .where(col(User.id) == user_id)
            .values(token_version=User.token_version)
            .returning(col(User.token_version), col(User.is_active))
        )
    else:
        statement = (
            select(col(User.token_version), col(User.is_active))
            .where(col(User.id) == user_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
    row = (await db.exec(statement)).first()
    if row is None or not row[1]:
        return None
    return int(row[0])
