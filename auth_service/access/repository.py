"""The access-token denylist (RFC 7009) in the database. The one-statement read of a token's
state is `kit.reads`."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.kit import jobs
from auth_service.models import RevokedAccessToken


async def deny(db: AsyncSession, *, jti: str, until: datetime) -> None:
    """Put `jti` on the denylist until `until`; already there, it changes nothing."""
    dialect = db.get_bind().dialect.name
    statement: Any = (
        postgresql.insert(RevokedAccessToken)
        if dialect == "postgresql"
        else sqlite.insert(RevokedAccessToken)
    )
    await db.exec(statement.values(jti=jti, expires_at=until).on_conflict_do_nothing())


async def purge(sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Delete the denylist entries of tokens that have expired anyway; how many went."""
    return await jobs.in_batches(
        sessionmaker,
        key=col(RevokedAccessToken.jti),
        matching=col(RevokedAccessToken.expires_at) <= now,
        change=delete(RevokedAccessToken),
    )
