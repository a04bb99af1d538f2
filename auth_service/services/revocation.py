"""Revoked access tokens (RFC 7009) and the purge that keeps the token tables small.

An access token is a signed JWT that needs no lookup to verify, so revoking one puts its
`jti` on a denylist until the token would have expired anyway; the guards and introspection
read that list in their one statement. Refresh tokens are revoked by ending their session.

What has expired is deleted (and a refresh's kept answer cleared once the reuse interval
has passed) in bounded batches, each its own short transaction: the tables
stay as small as the live tokens in them, and a purge never holds the write lock long
enough to stall a sign-in (ORY Hydra's token table grew to 16-18 GB without one, hydra #1574).
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, or_
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import LoginSession, RevokedAccessToken, utcnow
from auth_service.security.jwt import LEEWAY_SECONDS

logger = logging.getLogger(__name__)

PURGE_BATCH = 500


async def revoke_access_token(session: AsyncSession, *, jti: str, exp: float) -> None:
    """Refuse the token `jti` from now until it expires (its `exp`, and the leeway the
    guards allow past it). Revoking it again changes nothing."""
    values = {
        "jti": jti,
        "expires_at": datetime.fromtimestamp(exp, tz=UTC) + timedelta(seconds=LEEWAY_SECONDS),
    }
    dialect = session.get_bind().dialect.name
    statement: Any = (
        postgresql.insert(RevokedAccessToken)
        if dialect == "postgresql"
        else sqlite.insert(RevokedAccessToken)
    )
    await session.exec(statement.values(values).on_conflict_do_nothing())


async def _purge_batch(
    sessionmaker: async_sessionmaker[AsyncSession], key: Any, matching: Any, change: Any
) -> int:
    """Apply `change` (a DELETE or UPDATE of `key`'s table) to up to PURGE_BATCH rows
    `matching`, in a transaction of their own; how many rows it changed."""
    # Shielded: a shutdown waits for the batch rather than cancel a transaction midway,
    # which can leave its connection unusable and the pool's disposal waiting on it.
    with anyio.CancelScope(shield=True):
        async with sessionmaker() as session, session.begin():
            batch = select(key).where(matching).limit(PURGE_BATCH)
            result = await session.exec(change.where(key.in_(batch)))
    return int(result.rowcount or 0)


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, reuse_interval: int
) -> int:
    """Delete every expired denylist entry and session, and clear the refresh answers kept
    past the reuse interval (`reuse_interval` seconds), batch by batch; how many rows went
    or changed."""
    kept_since = now - timedelta(seconds=reuse_interval)
    work = [
        (
            col(RevokedAccessToken.jti),
            col(RevokedAccessToken.expires_at) <= now,
            delete(RevokedAccessToken),
        ),
        (
            col(LoginSession.id),
            or_(col(LoginSession.expires_at) <= now, col(LoginSession.idle_expires_at) <= now),
            delete(LoginSession),
        ),
        (
            col(LoginSession.id),
            and_(
                col(LoginSession.refreshed_at) < kept_since,
                col(LoginSession.successor).is_not(None),
            ),
            update(LoginSession).values(successor=None),
        ),
    ]
    total = 0
    for key, matching, change in work:
        while (changed := await _purge_batch(sessionmaker, key, matching, change)) > 0:
            total += changed
            await anyio.lowlevel.checkpoint()  # this worker's requests go between batches
    return total


async def purge_every(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    interval_seconds: float,
    reuse_interval: int,
) -> None:
    """Purge every `interval_seconds`, until cancelled. A failure (the database briefly
    away) is logged and the next round tries again. Not at once: a worker's start is busy
    enough, and what expired waits a round harmlessly."""
    while True:
        await anyio.sleep(interval_seconds)
        try:
            deleted = await purge(sessionmaker, now=utcnow(), reuse_interval=reuse_interval)
        except SQLAlchemyError as exc:
            logger.warning("purge of expired tokens failed: %s", type(exc).__name__)
        else:
            if deleted:
                logger.info("purged expired tokens", extra={"rows": deleted})
