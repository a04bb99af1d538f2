"""Administration: other users' accounts, the rule that one active admin always remains,
and the first admin from configuration or the command line.

Functions take `session` and collaborators as keywords, raise `errors.DomainError`s and
never commit: the request's session dependency commits once or rolls back.
"""

import enum
import logging
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import LastAdmin
from auth_service.models import ADMIN_ROLE, User, utcnow
from auth_service.security.passwords import PasswordHasher
from auth_service.services import users
from auth_service.services.authentication import end_every_session
from auth_service.services.repositories import users as repository

logger = logging.getLogger(__name__)


class Keep(enum.Enum):
    """An argument left out: the value stays as it is (where None means something else)."""

    KEEP = enum.auto()


KEEP = Keep.KEEP


async def list_users(
    *, session: AsyncSession, limit: int, offset: int, q: str | None
) -> tuple[list[User], int]:
    return await repository.search(session, limit=limit, offset=offset, q=q)


async def _ensure_other_active_admin(*, session: AsyncSession, user: User) -> None:
    """Refuse a change to `user` that would leave no active admin (see
    `repository.lock_active_admins`: two admins demoting each other at once cannot both win)."""
    if not [admin for admin in await repository.lock_active_admins(session) if admin != user.id]:
        raise LastAdmin


async def update_user(
    *,
    session: AsyncSession,
    user: User,
    name: str | None | Keep = KEEP,
    roles: Sequence[str] | None = None,
    is_active: bool | None = None,
    is_verified: bool | None = None,
) -> User:
    """Change what is given (None: unchanged; for the name, KEEP, as None clears it).
    Deactivation ends every session of the user at once."""
    roles = list(roles) if roles is not None else user.roles
    is_active = is_active if is_active is not None else user.is_active
    if ADMIN_ROLE in user.roles and user.is_active and not (ADMIN_ROLE in roles and is_active):
        await _ensure_other_active_admin(session=session, user=user)
    if name is not KEEP:
        user.name = name
    user.set_roles(roles)
    if is_verified is not None:
        user.is_verified = is_verified
    if is_active != user.is_active:
        user.is_active = is_active
        if not is_active:
            await end_every_session(session, user)
    user.updated_at = utcnow()
    session.add(user)
    await session.flush()
    return user


async def delete_user(*, session: AsyncSession, user: User) -> None:
    if ADMIN_ROLE in user.roles and user.is_active:
        await _ensure_other_active_admin(session=session, user=user)
    await session.delete(user)
    await session.flush()


async def _create_admin(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    allow_unicode_email: bool,
    email: str,
    password: str,
) -> User:
    # An admin created by the operator: the address is theirs to vouch for. The password
    # goes to the policy unvalidated: a refused one gets one clear error, never a message
    # that prints the value.
    return await users.create_user(
        session=session,
        hasher=hasher,
        min_length=min_length,
        allow_unicode_email=allow_unicode_email,
        email=email,
        password=password,
        roles=[ADMIN_ROLE],
        is_verified=True,
    )


async def bootstrap_admin(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    email: str,
    password: str,
    allow_unicode_email: bool,
) -> User | None:
    """Create the first admin from configuration; None when there is nothing to do.

    Only while no account holds the admin role and the email is free: configuration never
    promotes or revives an existing account (whoever registered that address, or an admin
    another admin deactivated). `auth-service create-admin` is the explicit way to do that.
    """
    if await repository.any_admin(session):
        return None
    if await repository.by_email(session, email) is not None:
        logger.warning("not promoting the existing account named by AUTH_BOOTSTRAP_ADMIN_EMAIL")
        return None
    return await _create_admin(
        session=session,
        hasher=hasher,
        min_length=min_length,
        allow_unicode_email=allow_unicode_email,
        email=email,
        password=password,
    )


async def ensure_admin(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    email: str,
    password: str | None,
    allow_unicode_email: bool,
) -> tuple[User, bool]:
    """Create an admin, or make an existing user an active admin. (user, created)"""
    user = await repository.by_email(session, email)
    if user is not None:
        if ADMIN_ROLE not in user.roles or not user.is_active:
            user.set_roles([*user.roles, ADMIN_ROLE])
            user.is_active = True
            user.updated_at = utcnow()
            session.add(user)
            await session.flush()
        return user, False
    if password is None:
        raise ValueError("a password is needed to create a new admin")
    user = await _create_admin(
        session=session,
        hasher=hasher,
        min_length=min_length,
        allow_unicode_email=allow_unicode_email,
        email=email,
        password=password,
    )
    return user, True
