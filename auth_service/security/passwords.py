"""Password hashing: the only module that imports passlib.

bcrypt_sha256 pre-hashes with SHA-256 so every byte of a long password counts (plain bcrypt
ignores all past 72 bytes). Hashing runs in worker threads behind a bounded limiter, never on
the event loop, so a burst of logins cannot stall token verification.
"""

import unicodedata

import anyio
import anyio.to_thread
from passlib.context import CryptContext


def normalize(password: str) -> str:
    # NIST SP 800-63B §3.1.1.2: apply Unicode NFKC normalization before hashing.
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    def __init__(self, *, rounds: int, concurrency: int) -> None:
        self._context = CryptContext(
            schemes=["bcrypt_sha256"],
            bcrypt_sha256__rounds=rounds,
            bcrypt_sha256__ident="2b",
        )
        self._limiter = anyio.CapacityLimiter(concurrency)
        # Verifying against this costs what a real verify costs: unknown users take as long.
        self._dummy_hash = self._context.hash("dummy password for timing equalization")

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(
            self._context.hash, normalize(password), limiter=self._limiter
        )

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one uses outdated parameters, else None)."""
        return await anyio.to_thread.run_sync(
            self._context.verify_and_update, normalize(password), hashed, limiter=self._limiter
        )

    async def dummy_verify(self, password: str) -> None:
        await anyio.to_thread.run_sync(
            self._context.verify, normalize(password), self._dummy_hash, limiter=self._limiter
        )
