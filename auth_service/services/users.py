"""Users: registration, authentication, own account and administration.

Functions take `session` and collaborators as keywords, raise `errors.DomainError`s and
never commit: the request's session dependency commits once or rolls back.
"""

import logging
import uuid
from collections.abc import Sequence

import anyio.to_thread
from sqlalchemy import func, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import EmailRefused, EmailTaken, LastAdmin, NotFound, WrongPassword
from auth_service.models import ADMIN_ROLE, User, UserRole, utcnow
from auth_service.schemas import AdminUserCreate, AdminUserUpdate, UserCreate, normalize_email
from auth_service.security import emails, password_policy
from auth_service.security.passwords import PasswordHasher, normalize
from auth_service.services.user_state import UserStates

logger = logging.getLogger(__name__)


async def _checked_hash(
    password: str, *, email: str, min_length: int, hasher: PasswordHasher
) -> str:
    # zxcvbn's matchers are pure Python: keep them off the event loop like bcrypt.
    normalized = await anyio.to_thread.run_sync(
        lambda: password_policy.check(password, min_length=min_length, email=email)
    )
    return await hasher.hash(normalized)


async def get_by_email(*, session: AsyncSession, email: str) -> User | None:
    """The account of this address however it is spelled (case, width, ligatures), or None."""
    key = emails.key_of(email)
    if key is None:
        return None
    result = await session.exec(select(User).where(User.email_key == key))
    return result.first()


def check_new_email(email: str, *, allow_unicode: bool) -> emails.Email:
    """The parsed address of a new account, or EmailRefused (see `emails.check_new_address`)."""
    try:
        parsed = emails.parse(email)
        emails.check_new_address(parsed, allow_unicode=allow_unicode)
    except emails.InvalidEmail as exc:
        raise EmailRefused(str(exc)) from None
    return parsed


async def get_user(*, session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def create_user(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    data: UserCreate,
    allow_unicode_email: bool,
    roles: Sequence[str] = (),
    is_active: bool = True,
    is_verified: bool = False,
) -> User:
    """Insert a user; EmailTaken when the address exists in any spelling (also under
    concurrent requests), EmailRefused when a new account may not have it."""
    address = check_new_email(data.email, allow_unicode=allow_unicode_email)
    async with hasher.turn():
        if await get_by_email(session=session, email=data.email) is not None:
            raise EmailTaken
        hashed = await _checked_hash(
            data.password, email=data.email, min_length=min_length, hasher=hasher
        )
    user = User(
        email=address.address,
        email_key=address.key,
        hashed_password=hashed,
        name=data.name,
        is_active=is_active,
        is_verified=is_verified,
    )
    user.set_roles(list(roles))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # A concurrent registration of this key won the unique constraint; the request
        # rolls back.
        raise EmailTaken from None
    return user


async def admin_create_user(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    data: AdminUserCreate,
    allow_unicode_email: bool,
) -> User:
    return await create_user(
        session=session,
        hasher=hasher,
        min_length=min_length,
        data=data,
        allow_unicode_email=allow_unicode_email,
        roles=data.roles,
        is_active=data.is_active,
        is_verified=data.is_verified,
    )


async def authenticate(
    *,
    session: AsyncSession,
    states: UserStates,
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
    account itself loads, in the session, only on success.
    """
    if len(normalize(password)) > password_policy.MAX_LENGTH:
        return None  # no password this long was ever accepted: refuse without hashing
    async with hasher.turn():
        # The account of this address however it is spelled; what is no address runs the
        # same read for a key nobody has.
        checked = await states.credentials(emails.key_of(email) or "")
        if checked is None or not checked.is_active:
            await hasher.dummy_verify(password)
            return None
        ok, new_hash = await hasher.verify(password, checked.hashed_password)
    if not ok:
        return None
    user = await session.get(User, checked.id)
    # A password change or deactivation since the check raised the token version: it wins,
    # and this sign-in fails. (A concurrent hash upgrade leaves the version alone.)
    if user is None or not user.is_active or user.token_version != checked.token_version:
        return None
    if new_hash is not None:
        # The cost changed: upgrade the hash, but only if it is still the one just checked,
        # so a password change that landed meanwhile is never undone.
        await session.exec(
            update(User)
            .where(col(User.id) == user.id, col(User.hashed_password) == user.hashed_password)
            .values(hashed_password=new_hash)
        )
    return user


def invalidate_tokens(user: User) -> None:
    """Make every access token issued to `user` so far fail verification."""
    # Incremented in SQL, so two concurrent invalidations both count.
    user.token_version = User.token_version + 1
    user.updated_at = utcnow()


async def change_password(
    *,
    session: AsyncSession,
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
        user.hashed_password = await _checked_hash(
            new_password, email=user.email, min_length=min_length, hasher=hasher
        )
    invalidate_tokens(user)
    session.add(user)


async def update_profile(*, session: AsyncSession, user: User, name: str | None) -> User:
    user.name = name
    user.updated_at = utcnow()
    session.add(user)
    return user


async def list_users(
    *, session: AsyncSession, limit: int, offset: int, q: str | None
) -> tuple[list[User], int]:
    query = select(User)
    count = select(func.count()).select_from(User)
    if q:
        # Addresses are searched by their key, so any spelling of one finds it.
        condition = or_(
            col(User.email_key).like(f"%{_escape_like(emails.fold(q))}%", escape="\\"),
            func.lower(col(User.name)).like(f"%{_escape_like(q.lower())}%", escape="\\"),
        )
        query = query.where(condition)
        count = count.where(condition)
    total = (await session.exec(count)).one()
    users = await session.exec(
        query.order_by(col(User.created_at), col(User.id)).limit(limit).offset(offset)
    )
    return list(users.all()), total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _ensure_other_active_admin(*, session: AsyncSession, user: User) -> None:
    """Refuse a change that would leave no active admin.

    The check and the change must be one serialized step, or two admins demoting each other
    at once both succeed. PostgreSQL: lock every active admin row, in id order (so two such
    requests queue instead of deadlocking). SQLite: a write that matches nothing takes the
    database's write lock first (its SELECTs would otherwise run outside the transaction).
    """
    if session.get_bind().dialect.name == "sqlite":
        await (await session.connection()).execute(
            text("UPDATE users SET is_active = is_active WHERE 1 = 0")
        )
    admins = await session.exec(
        select(User.id)
        .join(UserRole, col(UserRole.user_id) == col(User.id))
        .where(UserRole.role == ADMIN_ROLE, col(User.is_active))
        .order_by(col(User.id))
        .with_for_update()  # both tables: a role row deleted meanwhile drops out
    )
    if not [admin_id for admin_id in admins.all() if admin_id != user.id]:
        raise LastAdmin


async def update_user(*, session: AsyncSession, user: User, data: AdminUserUpdate) -> User:
    # `null` means "leave as is", except for the name, which it clears.
    roles = data.roles if data.roles is not None else user.roles
    is_active = data.is_active if data.is_active is not None else user.is_active
    if ADMIN_ROLE in user.roles and user.is_active and not (ADMIN_ROLE in roles and is_active):
        await _ensure_other_active_admin(session=session, user=user)
    if "name" in data.model_fields_set:
        user.name = data.name
    user.set_roles(list(roles))
    if data.is_verified is not None:
        user.is_verified = data.is_verified
    if is_active != user.is_active:
        user.is_active = is_active
        if not is_active:
            invalidate_tokens(user)
    user.updated_at = utcnow()
    session.add(user)
    await session.flush()
    return user


async def delete_user(*, session: AsyncSession, user: User) -> None:
    if ADMIN_ROLE in user.roles and user.is_active:
        await _ensure_other_active_admin(session=session, user=user)
    await session.delete(user)
    await session.flush()


def _new_account(email: str, password: str) -> UserCreate:
    """An account from configuration or the command line, its email normalized as
    registration does. The password is left unvalidated: a refused one must reach the
    policy (one clear error), never a ValidationError that prints the value."""
    normalized = normalize_email(email)
    if normalized is None:
        raise ValueError(f"not a valid email address: {email}")
    return UserCreate.model_construct(email=normalized, password=password, name=None)


async def _create_admin(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    min_length: int,
    data: UserCreate,
    allow_unicode_email: bool,
) -> User:
    # An admin created by the operator: the address is theirs to vouch for.
    return await create_user(
        session=session,
        hasher=hasher,
        min_length=min_length,
        data=data,
        allow_unicode_email=allow_unicode_email,
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
    any_admin = await session.exec(select(UserRole.user_id).where(UserRole.role == ADMIN_ROLE))
    if any_admin.first() is not None:
        return None
    data = _new_account(email, password)
    if await get_by_email(session=session, email=data.email) is not None:
        logger.warning("not promoting the existing account named by AUTH_BOOTSTRAP_ADMIN_EMAIL")
        return None
    return await _create_admin(
        session=session,
        hasher=hasher,
        min_length=min_length,
        data=data,
        allow_unicode_email=allow_unicode_email,
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
    data = _new_account(email, password or "")
    user = await get_by_email(session=session, email=data.email)
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
        data=data,
        allow_unicode_email=allow_unicode_email,
    )
    return user, True
