"""Stand-ins for the app's password hasher that watch or hold what it is asked, and delegate
every operation to the real one."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from auth_service.security.passwords import LOCAL_CLIENT, PasswordHasher


class DelegatingHasher(PasswordHasher):
    """The app's real hasher behind a subclass of its own type: override what to watch."""

    def __init__(self, inner: PasswordHasher) -> None:  # no super(): everything delegates
        self.inner = inner

    async def hash(self, password: str) -> str:
        return await self.inner.hash(password)

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        return await self.inner.verify(password, hashed)

    async def dummy_verify(self, password: str) -> None:
        await self.inner.dummy_verify(password)

    @asynccontextmanager
    async def turn(self, client: str = LOCAL_CLIENT) -> AsyncIterator[None]:
        async with self.inner.turn(client):
            yield

    def close(self) -> None:
        self.inner.close()
