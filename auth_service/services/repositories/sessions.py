"""Sessions (sign-ins and their refresh tokens) in the database, as their owner sees them."""

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import LoginSession


def _live(user_id: uuid.UUID, now: datetime) -> ColumnElement[bool]:
    """The user's sessions that have not ended: neither past their absolute end nor idle
    past their newest refresh token's (an ended one has no row at all)."""
    return and_(
        col(LoginSession.user_id) == user_id,
        col(LoginSession.expires_at) > now,
        col(LoginSession.idle_expires_at) > now,
    )


async def live(
    session: AsyncSession, *, user_id: uuid.UUID, now: datetime, limit: int, offset: int
) -> tuple[list[LoginSession], int]:
    """A page of the user's live sessions, newest first, and how many there are in all."""
    count = select(func.count()).select_from(LoginSession).where(_live(user_id, now))
    total = (await session.exec(count)).one()
    found = await session.exec(
        select(LoginSession)
        .where(_live(user_id, now))
        .order_by(col(LoginSession.created_at).desc(), col(LoginSession.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list(found.all()), total


async def delete_live(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> bool:
    """Delete the user's live session `session_id` (its refresh tokens go with it); False
    when the user has no such session."""
    result = await session.exec(
        delete(LoginSession).where(col(LoginSession.id) == session_id, _live(user_id, now))
    )
    return result.rowcount == 1


async def keep_newest(
    session: AsyncSession, *, user_id: uuid.UUID, new: uuid.UUID, keep: int
) -> None:
    """End the user's sessions but `new` and the `keep - 1` newest others (by sign-in time)."""
    others = and_(col(LoginSession.user_id) == user_id, col(LoginSession.id) != new)
    newest = (
        select(LoginSession.id)
        .where(others)
        .order_by(col(LoginSession.created_at).desc(), col(LoginSession.id).desc())
        .limit(keep - 1)
    )
    await session.exec(delete(LoginSession).where(others, col(LoginSession.id).not_in(newest)))
