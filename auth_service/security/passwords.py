"""Password hashing: the only module that imports passlib.

bcrypt_sha256 pre-hashes with SHA-256 so every byte of a long password counts (plain bcrypt
ignores all past 72 bytes). Hashing runs in worker threads behind a bounded queue that is fair
between clients (`fair_queue`), never on the event loop, so a burst of logins cannot stall
token verification and a flood from one client cannot lock out everybody else.

The hashing threads run at a lower scheduling priority (Linux: nice +10) than the event loop:
while logins keep every core busy, the loop still gets a core at once when a request comes
in, so verification stays fast, and the hashes use every cycle the loop leaves.
"""

import asyncio
import os
import sys
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

import anyio
from passlib.context import CryptContext

from auth_service.kit.fair_queue import FairQueue

T = TypeVar("T")

# How many requests may queue for each hashing slot before the heaviest client is refused.
QUEUE_PER_SLOT = 32
# The client of password work that no request asked for (start-up, the command line).
LOCAL_CLIENT = "local"
# Added to the hashing threads' nice value: the scheduler then prefers the event loop.
HASHING_NICENESS = 10


def _lower_priority() -> None:
    if sys.platform == "linux":  # a thread's own nice value: per thread only on Linux
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


def normalize(password: str) -> str:
    # NIST SP 800-63B §3.1.1.2: apply Unicode NFKC normalization before hashing.
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    def __init__(self, *, rounds: int, concurrency: int, max_waiting: int | None = None) -> None:
        self._context = CryptContext(
            schemes=["bcrypt_sha256"],
            bcrypt_sha256__rounds=rounds,
            bcrypt_sha256__ident="2b",
        )
        self.queue = FairQueue(
            slots=concurrency,
            max_waiting=QUEUE_PER_SLOT * concurrency if max_waiting is None else max_waiting,
        )
        self._holding: ContextVar[bool] = ContextVar(f"password-turn-{id(self)}", default=False)
        # One thread per slot: the queue admits no more hashes than that at once.
        self._threads = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="password-hashing",
            initializer=_lower_priority,
        )
        # Verifying against this costs what a real verify costs: unknown users take as long.
        self._dummy_hash = self._context.hash("dummy password for timing equalization")

    def close(self) -> None:
        """Let the hashing threads go once the work queued for them is done."""
        self._threads.shutdown(wait=False)

    @asynccontextmanager
    async def turn(self, client: str = LOCAL_CLIENT) -> AsyncIterator[None]:
        """A slot for one password operation of `client`; every bcrypt computation runs in one.

        Take it before the operation touches the database: requests queued behind a burst
        then hold no connection, so the pool stays free for token verification and readiness
        checks. Re-entrant within a task (an inner `turn()` joins the outer one, whatever its
        client). Raises `QueueRefused` when the queue is full and `client` holds the most places
        in it.
        """
        if self._holding.get():
            yield
            return
        async with self.queue.slot(client):
            holding = self._holding.set(True)
            try:
                yield
            finally:
                self._holding.reset(holding)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        async with self.turn():
            # Shielded: a cancelled request keeps its slot until its hash is done, so no more
            # hashes run at once than there are slots.
            with anyio.CancelScope(shield=True):
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._threads, function, *args)
        return result

    async def hash(self, password: str) -> str:
        return await self._run(self._context.hash, normalize(password))

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one uses outdated parameters, else None)."""
        return await self._run(self._context.verify_and_update, normalize(password), hashed)

    async def dummy_verify(self, password: str) -> None:
        """Exactly the work of a failed `verify`, against a fixed hash: for unknown users."""
        await self._run(self._context.verify_and_update, normalize(password), self._dummy_hash)
