"""Accounts: registration and the owner's profile.

Functions take `session` and collaborators as keywords, raise `errors.DomainError`s and
never commit: the request's session dependency commits once or rolls back.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import EmailRefused, EmailTaken, NotFound
from auth_service.models import User, utcnow
from auth_service.security import emails
from auth_service.security.passwords import PasswordHasher
from auth_service.services import passwords
from auth_service.services.repositories import users as repository


def check_new_email(email: str, *, allow_unicode: bool) -> emails.Email:
    """The parsed address of a new account, or EmailRefused (see `emails.check_new_address`)."""
    try:
        parsed = emails.parse(email)
        emails.check_new_address(parsed, allow_unicode=allow_unicode)
    except emails.InvalidEmail as exc:
        raise EmailRefused(str(exc)) from None
    return parsed


async def get_by_email(*, session: AsyncSession, email: str) -> User | None:
    """The account of this address however it is spelled (case, width, ligatures), or None."""
    return await repository.by_email(session, email)


async def get_user(*, session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def create_user(
    *,
    session: AsyncSession,
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
        if await repository.by_email(session, address.address) is not None:
            raise EmailTaken
        hashed = await passwords.checked_hash(
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
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # A concurrent registration of this key won the unique constraint; the request
        # rolls back.
        raise EmailTaken from None
    return user


async def update_profile(*, session: AsyncSession, user: User, name: str | None) -> User:
    user.name = name
    user.updated_at = utcnow()
    session.add(user)
    return user
