"""New passwords: the policy's check, then the hash, both off the event loop."""

import anyio.to_thread

from auth_service.security import password_policy
from auth_service.security.passwords import PasswordHasher


async def checked_hash(
    password: str, *, email: str, min_length: int, hasher: PasswordHasher
) -> str:
    """The hash of `password` if the policy accepts it for this account, else PasswordRejected."""
    # zxcvbn's matchers are pure Python: keep them off the event loop like bcrypt.
    normalized = await anyio.to_thread.run_sync(
        lambda: password_policy.check(password, min_length=min_length, email=email)
    )
    return await hasher.hash(normalized)
