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


async def save(db: AsyncSession, login: LoginSession) -> None:
    """Write a new session, or the changes made to one."""
    db.add(login)
    await db.flush()


async def locked(db: AsyncSession, session_id: uuid.UUID) -> LoginSession | None:
    """The session's row as it is now, locked until the transaction ends (PostgreSQL:
    FOR UPDATE)."""
    found = await db.exec(
        select(LoginSession)
        .where(LoginSession.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.first()


async def spend_generation(
    db: AsyncSession, session_id: uuid.UUID, *, generation: int, now: datetime
) -> bool:
    """Move the session from refresh token `generation` to the next, if that is still its
    live one: one conditional UPDATE, so of concurrent calls exactly one is True."""
    spent = await db.exec(
        update(LoginSession)
        .where(
            col(LoginSession.id) == session_id,
            col(LoginSession.refresh_generation) == generation,
        )
        .values(refresh_generation=generation + 1, refreshed_at=now, successor=None)
    )
    return spent.rowcount == 1


async def with_user(db: AsyncSession, session_id: uuid.UUID) -> tuple[LoginSession, User] | None:
    """The session `session_id` and its user, or None when it has ended."""
    found = await db.exec(
        select(LoginSession, User)
        .join(User, col(User.id) == LoginSession.user_id)
        .where(LoginSession.id == session_id)
    )
    row = found.first()
    return None if row is None else (row[0], row[1])


async def delete_one(db: AsyncSession, session_id: uuid.UUID) -> None:
    """Delete the session `session_id` (its refresh tokens go with it)."""
    await db.exec(delete(LoginSession).where(col(LoginSession.id) == session_id))


async def delete_of_user(db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Delete the session `session_id` if it is the user's, live or not."""
    await db.exec(
        delete(LoginSession).where(
            col(LoginSession.id) == session_id, col(LoginSession.user_id) == user_id
        )
    )


async def delete_every_of_user(db: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete every session of the user."""
    await db.exec(delete(LoginSession).where(col(LoginSession.user_id) == user_id))


async def delete_every_of_client(db: AsyncSession, client_id: str) -> None:
    """Delete every session signed in through the client."""
    await db.exec(delete(LoginSession).where(col(LoginSession.client_id) == client_id))


async def raise_token_version(db: AsyncSession, user_id: uuid.UUID, *, now: datetime) -> None:
    """Add one to the user's token version, in SQL (concurrent calls both count); this takes
    the user's row lock until the transaction ends."""
    await db.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(token_version=User.token_version + 1, updated_at=now)
    )


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
