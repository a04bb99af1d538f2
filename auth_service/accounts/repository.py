"""Users and their roles in the database."""

import uuid

from sqlalchemy import func, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.accounts import emails
from auth_service.models import ADMIN_ROLE, User, UserRole


async def get(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


async def insert(db: AsyncSession, user: User) -> bool:
    """Insert `user`; False when the database refuses it (a concurrent registration of its
    email key won the unique constraint), and the transaction must then roll back."""
    db.add(user)
    try:
        await db.flush()
    except IntegrityError:
        return False
    return True


async def save(db: AsyncSession, user: User) -> None:
    """Write the changes made to `user`."""
    db.add(user)
    await db.flush()


async def delete(db: AsyncSession, user: User) -> None:
    """Delete `user`: its roles go with it (the relationship's cascade), its sessions by
    their foreign key's ON DELETE CASCADE."""
    await db.delete(user)
    await db.flush()


async def by_email(db: AsyncSession, email: str) -> User | None:
    """The account of this address however it is spelled (case, width, ligatures), or None."""
    key = emails.key_of(email)
    if key is None:
        return None
    result = await db.exec(select(User).where(User.email_key == key))
    return result.first()


async def search(
    db: AsyncSession, *, limit: int, offset: int, q: str | None
) -> tuple[list[User], int]:
    """A page of users, oldest first, and how many match in all; `q` is searched in the
    address (by its key, so any spelling of one finds it) and in the name."""
    query = select(User)
    count = select(func.count()).select_from(User)
    if q:
        condition = or_(
            col(User.email_key).like(f"%{_escape_like(emails.fold(q))}%", escape="\\"),
            func.lower(col(User.name)).like(f"%{_escape_like(q.lower())}%", escape="\\"),
        )
        query = query.where(condition)
        count = count.where(condition)
    total = (await db.exec(count)).one()
    found = await db.exec(
        query.order_by(col(User.created_at), col(User.id)).limit(limit).offset(offset)
    )
    return list(found.all()), total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def any_admin(db: AsyncSession) -> bool:
    """Does any account, active or not, hold the admin role?"""
    found = await db.exec(select(UserRole.user_id).where(UserRole.role == ADMIN_ROLE))
    return found.first() is not None


async def lock_active_admins(db: AsyncSession) -> list[uuid.UUID]:
    """The active admins' ids, locked until the transaction ends.

    So that a check of the admins and the change after it are one serialized step.
    PostgreSQL: every active admin row is locked, in id order (so two such transactions
    queue instead of deadlocking). SQLite: a write that matches nothing takes the
    database's write lock first (its SELECTs would otherwise run outside the transaction).
    """
    if db.get_bind().dialect.name == "sqlite":
        await (await db.connection()).execute(
            text("UPDATE users SET is_active = is_active WHERE 1 = 0")
        )
    admins = await db.exec(
        select(User.id)
        .join(UserRole, col(UserRole.user_id) == col(User.id))
        .where(UserRole.role == ADMIN_ROLE, col(User.is_active))
        .order_by(col(User.id))
        .with_for_update()  # both tables: a role row deleted meanwhile drops out
    )
    return list(admins.all())


async def reread_locked(db: AsyncSession, user: User) -> User | None:
    """`user` read again from the database, roles included, over what the session holds;
    None when it was deleted meanwhile. PostgreSQL: its row stays locked until the
    transaction ends.

    After `lock_active_admins`, what it returns is what the admin rule must decide on: the
    copy loaded before the lock may be stale (promoted, demoted or deactivated meanwhile).
    """
    found = await db.exec(
        select(User)
        .where(col(User.id) == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.first()


async def replace_hash(db: AsyncSession, user: User, new_hash: str) -> None:
    """Store `new_hash` for `user`, but only if the hash is still the one `user` holds, so a
    password change that landed meanwhile is never undone."""
    await db.exec(
        update(User)
        .where(col(User.id) == user.id, col(User.hashed_password) == user.hashed_password)
        .values(hashed_password=new_hash)
    )
