"""Credentials: signing in with a password, and changing it (which ends every session:
`sessions.end_all`).

Functions take `session` and collaborators as keywords, raise `errors.DomainError`s and
never commit: the request's session dependency commits once or rolls back.
"""

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import WrongPassword
from auth_service.models import User
from auth_service.security import emails, password_policy
from auth_service.security.passwords import PasswordHasher, normalize
from auth_service.services import passwords, sessions
from auth_service.services.repositories import users as repository
from auth_service.services.user_state import UserStates


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
    user = await repository.get(session, checked.id)
    # A password change or deactivation since the check raised the token version: it wins,
    # and this sign-in fails. (A concurrent hash upgrade leaves the version alone.)
    if user is None or not user.is_active or user.token_version != checked.token_version:
        return None
    if new_hash is not None:  # the cost changed: upgrade the hash
        await repository.replace_hash(session, user, new_hash)
    return user


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
        user.hashed_password = await passwords.checked_hash(
            new_password, email=user.email, min_length=min_length, hasher=hasher
        )
    session.add(user)
    await sessions.end_all(session, user.id)
