"""Accounts: registration, the owner's profile and password, signing in with a password, and
the administration of other users' accounts (the rule that one active admin always remains,
the rule that only `admin:roles` hands out roles, the first admin from configuration or the
command line).

Functions take `db` and collaborators as keywords, raise `errors.DomainError`s and never
commit: the request's database dependency commits once or rolls back.
"""

import enum
import logging
import uuid
from collections.abc import Sequence

import anyio.to_thread
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access.scopes import Scope
from auth_service.accounts import emails, password_policy, repository
from auth_service.errors import (
    EmailRefused,
    EmailTaken,
    InsufficientScope,
    InvalidToken,
    LastAdmin,
    NotFound,
    WrongPassword,
)
from auth_service.kit.reads import Reads
from auth_service.kit.time import utcnow
from auth_service.models import ADMIN_ROLE, User
from auth_service.security.passwords import PasswordHasher, normalize
from auth_service.sessions import service as sessions


def check_new_email(email: str, *, allow_unicode: bool) -> emails.Email:
    """The parsed address of a new account, or EmailRefused (see `emails.check_new_address`)."""
    try:
        parsed = emails.parse(email)
        emails.check_new_address(parsed, allow_unicode=allow_unicode)
    except emails.InvalidEmail as exc:
        raise EmailRefused(str(exc)) from None
    return parsed


async def get_by_email(*, db: AsyncSession, email: str) -> User | None:
    """The account of this address however it is spelled (case, width, ligatures), or None."""
    return await repository.by_email(db, email)


async def find_user(*, db: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The account `user_id`, or None when there is none (any more)."""
    return await repository.get(db, user_id)


async def get_user(*, db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await find_user(db=db, user_id=user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def create_user(
    *,
    db: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    allow_unicode_email: bool,
    email: str,
    password: str,
    name: str | None = None,
    roles: Sequence[str] = (),
    is_active: bool = True,
    is_verified: bool = False,
) -> User:
    """Insert a user; EmailTaken when the address exists in any spelling (also under
    concurrent requests), EmailRefused when a new account may not have it, PasswordRejected
    when the policy refuses the password."""
    address = check_new_email(email, allow_unicode=allow_unicode_email)
    async with hasher.turn():
        if await repository.by_email(db, address.address) is not None:
            raise EmailTaken
        hashed = await checked_hash(
            password, email=address.address, min_length=min_length, hasher=hasher
        )
    user = User(
        email=address.address,
        email_key=address.key,
        hashed_password=hashed,
        name=name,
        is_active=is_active,
        is_verified=is_verified,
    )
    user.set_roles(list(roles))
    if not await repository.insert(db, user):
        # A concurrent registration of this key won the unique constraint; the request
        # rolls back.
        raise EmailTaken
    return user


async def own_account(*, db: AsyncSession, user_id: uuid.UUID) -> User:
    """The caller's own account, to change it in this request's transaction; InvalidToken
    when it was deleted since the guard read it."""
    account = await repository.get(db, user_id)
    if account is None:
        raise InvalidToken("The access token has been revoked.")
    return account


async def update_profile(*, db: AsyncSession, user: User, name: str | None) -> User:
    user.name = name
    user.updated_at = utcnow()
    await repository.save(db, user)
    return user


async def checked_hash(
    password: str, *, email: str, min_length: int, hasher: PasswordHasher
) -> str:
    """The hash of `password` if the policy accepts it for this account, else PasswordRejected."""
    # zxcvbn's matchers are pure Python: keep them off the event loop like bcrypt.
    normalized = await anyio.to_thread.run_sync(
        lambda: password_policy.check(password, min_length=min_length, email=email)
    )
    return await hasher.hash(normalized)


async def authenticate(
    *,
    db: AsyncSession,
    reads: Reads,
    hasher: PasswordHasher,
    email: str,
    password: str,
) -> User | None:
    """The active user with these credentials, else None.

    Every failure does the same work: one driver-level read of a few columns (microseconds,
    row or no row) and one failing bcrypt verify-and-update, against a dummy hash when no
    active account has the address (a right password would cost passlib a little more, in
    its rehash check). So neither the answer (callers answer every failure alike) nor its
    timing tells whether an address is registered, or whether its account is active. The
    account itself loads, in the request's transaction, only on success.
    """
    if len(normalize(password)) > password_policy.MAX_LENGTH:
        return None  # no password this long was ever accepted: refuse without hashing
    async with hasher.turn():
        # The account of this address however it is spelled; what is no address runs the
        # same read for a key nobody has.
        checked = await reads.credentials(emails.key_of(email) or "")
        if checked is None or not checked.is_active:
            await hasher.dummy_verify(password)
            return None
        ok, new_hash = await hasher.verify(password, checked.hashed_password)
    if not ok:
        return None
    user = await repository.get(db, checked.id)
    # A password change or deactivation since the check raised the token version: it wins,
    # and this sign-in fails. (A concurrent hash upgrade leaves the version alone.)
    if user is None or not user.is_active or user.token_version != checked.token_version:
        return None
    if new_hash is not None:  # the cost changed: upgrade the hash
        await repository.replace_hash(db, user, new_hash)
    return user


async def change_password(
    *,
    db: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    user: User,
    current_password: str,
    new_password: str,
) -> None:
    async with hasher.turn():
        ok, _ = await hasher.verify(current_password, user.hashed_password)
        if not ok:
            raise WrongPassword
        user.hashed_password = await checked_hash(
            new_password, email=user.email, min_length=min_length, hasher=hasher
        )
    await repository.save(db, user)
    await sessions.end_every_of_user(db, user.id)


logger = logging.getLogger(__name__)


class Keep(enum.Enum):
    """An argument left out: the value stays as it is (where None means something else)."""

    KEEP = enum.auto()


KEEP = Keep.KEEP


async def list_users(
    *, db: AsyncSession, limit: int, offset: int, q: str | None
) -> tuple[list[User], int]:
    return await repository.search(db, limit=limit, offset=offset, q=q)


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


async def _reread_under_admin_lock(*, db: AsyncSession, user: User) -> tuple[User, list[uuid.UUID]]:
    """Lock the active admins, then read `user` again: (the user as it is now, the ids of
    the active admins). NotFound when the user was deleted meanwhile.

    Whether a change takes away an active admin is decided on this copy, never on one
    loaded before the lock: meanwhile another admin may have made the user an admin and
    stepped down, leaving the user the last one.
    """
    admins = await repository.lock_active_admins(db)
    fresh = await repository.reread_locked(db, user)
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
    db: AsyncSession,
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
        user, admins = await _reread_under_admin_lock(db=db, user=user)
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
                await sessions.end_every_of_user(db, user.id)
    if name is not KEEP:
        user.name = name
    if is_verified is not None:
        user.is_verified = is_verified
    user.updated_at = utcnow()
    await repository.save(db, user)
    return user


async def delete_user(*, db: AsyncSession, user: User, manages_roles: bool) -> None:
    """Delete `user` for good (read again under the admin lock, as in `update_user`); an
    account holding the admin role only with `manages_roles`."""
    user, admins = await _reread_under_admin_lock(db=db, user=user)
    if ADMIN_ROLE in user.roles:
        _ensure_manages_roles(manages_roles)
    if _is_active_admin(user):
        _ensure_other_active_admin(user=user, admins=admins)
    await repository.delete(db, user)


async def _create_admin(
    *,
    db: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    allow_unicode_email: bool,
    email: str,
    password: str,
) -> User:
    # An admin created by the operator: the address is theirs to vouch for. The password
    # goes to the policy unvalidated: a refused one gets one clear error, never a message
    # that prints the value.
    return await create_user(
        db=db,
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
    db: AsyncSession,
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
    if await repository.any_admin(db):
        return None
    if await repository.by_email(db, email) is not None:
        logger.warning("not promoting the existing account named by AUTH_BOOTSTRAP_ADMIN_EMAIL")
        return None
    return await _create_admin(
        db=db,
        hasher=hasher,
        min_length=min_length,
        allow_unicode_email=allow_unicode_email,
        email=email,
        password=password,
    )


async def ensure_admin(
    *,
    db: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    email: str,
    password: str | None,
    allow_unicode_email: bool,
) -> tuple[User, bool]:
    """Create an admin, or make an existing user an active admin. (user, created)"""
    user = await repository.by_email(db, email)
    if user is not None:
        if ADMIN_ROLE not in user.roles or not user.is_active:
            user.set_roles([*user.roles, ADMIN_ROLE])
            user.is_active = True
            user.updated_at = utcnow()
            await repository.save(db, user)
        return user, False
    if password is None:
        raise ValueError("a password is needed to create a new admin")
    user = await _create_admin(
        db=db,
        hasher=hasher,
        min_length=min_length,
        allow_unicode_email=allow_unicode_email,
        email=email,
        password=password,
    )
    return user, True
