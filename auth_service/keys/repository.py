"""Signing keys in the database. Rows are never deleted: a retired or revoked key stays for
the record."""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import SigningKey


async def get(db: AsyncSession, kid: str) -> SigningKey | None:
    return await db.get(SigningKey, kid)


async def usable(db: AsyncSession, now: datetime) -> Sequence[SigningKey]:
    """The keys neither revoked nor retired at `now`, oldest first."""
    return (
        await db.exec(
            select(SigningKey)
            .where(
                col(SigningKey.revoked_at).is_(None),
                or_(col(SigningKey.retires_at).is_(None), col(SigningKey.retires_at) > now),
            )
            .order_by(col(SigningKey.created_at), col(SigningKey.kid))
        )
    ).all()


async def every_newest_first(db: AsyncSession) -> Sequence[SigningKey]:
    """Every key ever stored, newest first."""
    return (
        await db.exec(
            select(SigningKey).order_by(col(SigningKey.created_at).desc(), col(SigningKey.kid))
        )
    ).all()


async def retire(db: AsyncSession, kids: Collection[str], *, at: datetime) -> None:
    """Set the retirement time of the keys `kids` to `at`."""
    await db.exec(update(SigningKey).where(col(SigningKey.kid).in_(kids)).values(retires_at=at))


async def retire_unscheduled(db: AsyncSession, *, at: datetime) -> None:
    """Give every key still without a retirement time (and not revoked) the time `at`."""
    await db.exec(
        update(SigningKey)
        .where(col(SigningKey.retires_at).is_(None), col(SigningKey.revoked_at).is_(None))
        .values(retires_at=at)
    )


async def save(db: AsyncSession, *keys: SigningKey) -> None:
    """Write `keys`, new or changed, in this order."""
    db.add_all(keys)
    await db.flush()


async def reload(db: AsyncSession, key: SigningKey) -> None:
    """Read `key` again from the database, over what the session holds."""
    await db.refresh(key)


_FINGERPRINT = core_select(
    func.count(),
    func.count(col(SigningKey.retires_at)),
    func.count(col(SigningKey.revoked_at)),
    func.max(col(SigningKey.created_at)),
    func.max(col(SigningKey.signs_from)),
    func.min(col(SigningKey.retires_at)),
    func.max(col(SigningKey.retires_at)),
    func.max(col(SigningKey.revoked_at)),
)


async def fingerprint(db: AsyncSession) -> tuple[Any, ...]:
    """One row that changes whenever a key is added, rotated out or revoked, or the next key
    is made to sign at once."""
    connection = await db.connection()
    return tuple((await connection.execute(_FINGERPRINT)).one())
