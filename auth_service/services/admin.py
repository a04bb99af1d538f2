"""Administration: other users' accounts, the rule that one active admin always remains,
the rule that only `admin:roles` hands out roles, and the first admin from configuration or
the command line.

Functions take `session` and collaborators as keywords, raise `errors.DomainError`s and
never commit: the request's session dependency commits once or rolls back.
"""

import enum
import logging
import uuid
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import InsufficientScope, LastAdmin, NotFound
from auth_service.models import ADMIN_ROLE, User, utcnow
from auth_service.scopes import Scope
from auth_service.security.passwords import PasswordHasher
from auth_service.services import sessions, users
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


def _ensure_manages_roles(manages_roles: bool) -> None:
    """Refuse a change only `admin:roles` may make (RFC 6750 §3: naming the scopes needed).

    Without it a token for managing users could make an admin, or take over one, sign in as
    it and so hold every admin scope.
    """
    if not manages_roles:
        raise InsufficientScope(
            f"This requires the scope {Scope.ADMIN_ROLES}.",
            scope=f"{Scope.ADMIN_USERS} {Scope.ADMIN_ROLES}",
        )


def check_new_user(*, roles: Sequence[str], manages_roles: bool) -> None:
    """A new user with roles needs `admin:roles`."""
    if roles:
        _ensure_manages_roles(manages_roles)


def _is_active_admin(user: User) -> bool:
    return ADMIN_ROLE in user.roles and user.is_active


async def _reread_under_admin_lock(
    *, session: AsyncSession, user: User
) -> tuple[User, list[uuid.UUID]]:
    """Lock the active admins, then read `user` again: (the user as it is now, the ids of
    the active admins). NotFound when the user was deleted meanwhile.

    Whether a change takes away an active admin is decided on this copy, never on one
    loaded before the lock: meanwhile another admin may have made the user an admin and
    stepped down, leaving the user the last one.
    """
    admins = await repository.lock_active_admins(session)
    fresh = await repository.reread_locked(session, user)
    if fresh is None:
        raise NotFound("No such user.")
    return fresh, admins


def _ensure_other_active_admin(*, user: User, admins: list[uuid.UUID]) -> None:
    """Refuse a change that takes `user` out of the active `admins` (locked by
    `repository.lock_active_admins`: two admins demoting each other at once cannot both win)."""
    if not [admin for admin in admins if admin != user.id]:
        raise LastAdmin


async def update_user(
    *,
    session: AsyncSession,
    user: User,
    manages_roles: bool,
    name: str | None | Keep = KEEP,
    roles: Sequence[str] | None = None,
    is_active: bool | None = None,
    is_verified: bool | None = None,
) -> User:
    """Change what is given (None: unchanged; for the name, KEEP, as None clears it).
    Deactivation ends every session of the user at once. Without `manages_roles` (the
    caller's `admin:roles`), a change of roles or any change to an account holding the admin
    role is refused.

    `user` may have been loaded before a concurrent change: a change of roles or of
    activity reads it again under the admin lock, and what is returned is that copy.
    """
    locked = roles is not None or is_active is not None
    admins: list[uuid.UUID] = []
    if locked:
        user, admins = await _reread_under_admin_lock(session=session, user=user)
    # Judged on the copy read under the lock wherever the change could make or revive an
    # admin; a name or a verified flag alone cannot.
    changes = name is not KEEP or locked or is_verified is not None
    if (roles is not None and set(roles) != set(user.roles)) or (
        changes and ADMIN_ROLE in user.roles
    ):
        _ensure_manages_roles(manages_roles)
    if locked:
        new_roles = list(roles) if roles is not None else user.roles
        active = is_active if is_active is not None else user.is_active
        if _is_active_admin(user) and not (ADMIN_ROLE in new_roles and active):
            _ensure_other_active_admin(user=user, admins=admins)
        user.set_roles(new_roles)
        if active != user.is_active:
            user.is_active = active
            if not active:
                await sessions.end_all(session, user.id)
    if name is not KEEP:
        user.name = name
    if is_verified is not None:
        user.is_verified = is_verified
    user.updated_at = utcnow()
    session.add(user)
    await session.flush()
    return user


async def delete_user(*, session: AsyncSession, user: User, manages_roles: bool) -> None:
    """Delete `user` for good (read again under the admin lock, as in `update_user`); an
    account holding the admin role only with `manages_roles`."""
    user, admins = await _reread_under_admin_lock(session=session, user=user)
    if ADMIN_ROLE in user.roles:
        _ensure_manages_roles(manages_roles)
    if _is_active_admin(user):
        _ensure_other_active_admin(user=user, admins=admins)
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
