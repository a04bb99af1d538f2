"""A bounded queue for scarce work (bcrypt) that is fair between clients.

A few slots run at once; up to `max_waiting` requests wait for one. While there is room,
anyone may wait, however many places they already hold (a shared office address, a
benchmark). When the queue is full, the client holding the most places is refused: a newcomer
who already holds the most is turned away without entering, otherwise the newest waiter of
the heaviest client gives up its place. A client holding no place is never refused, so a
flood from a few addresses cannot lock out a user elsewhere. Freed slots go to clients in
turn (round robin), not in arrival order, so a newcomer does not wait behind a flood.

Per process by nature: the slots are this process's threads.
"""

from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio


class QueueRefused(Exception):
    """The queue is full and this client holds the most places in it."""


@dataclass(eq=False, slots=True)
class _Waiter:
    client: str
    woken: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False


class FairQueue:
    def __init__(self, *, slots: int, max_waiting: int) -> None:
        if slots < 1 or max_waiting < 0:
            raise ValueError("a queue needs a slot and a non-negative waiting room")
        self._free = slots
        self._max_waiting = max_waiting
        self._places: Counter[str] = Counter()  # running + waiting, per client
        # Waiters by client; the dict's order is the round-robin order of clients.
        self._waiters: dict[str, deque[_Waiter]] = {}
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def places(self, client: str) -> int:
        return self._places[client]

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        """Hold a slot for the block; wait for one in turn, or raise QueueRefused."""
        await self._acquire(client)
        try:
            yield
        finally:
            self._release(client)

    async def _acquire(self, client: str) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            self._places[client] += 1
            return
        if self._waiting >= self._max_waiting:
            self._make_room_for(client)
        waiter = _Waiter(client)
        self._waiters.setdefault(client, deque()).append(waiter)
        self._waiting += 1
        self._places[client] += 1
        try:
            await waiter.woken.wait()
        except BaseException:  # cancelled: leave the queue, or pass on a slot just granted
            if waiter.granted:
                self._release(client)
            elif not waiter.woken.is_set():
                self._remove(waiter)
            raise
        if not waiter.granted:
            raise QueueRefused

    def _make_room_for(self, client: str) -> None:
        """Refuse the client holding the most places: `client` itself, or evict a waiter."""
        heaviest = max(self._waiters, key=lambda c: self._places[c], default=None)
        if heaviest is None or self._places[client] >= self._places[heaviest]:
            raise QueueRefused
        evicted = self._waiters[heaviest][-1]  # its newest: its older requests keep their turn
        self._remove(evicted)
        evicted.woken.set()

    def _remove(self, waiter: _Waiter) -> None:
        queue = self._waiters[waiter.client]
        queue.remove(waiter)
        if not queue:
            del self._waiters[waiter.client]
        self._waiting -= 1
        self._drop_place(waiter.client)

    def _drop_place(self, client: str) -> None:
        self._places[client] -= 1
        if not self._places[client]:
            del self._places[client]

    def _release(self, client: str) -> None:
        self._drop_place(client)
        if not self._waiters:
            self._free += 1
            return
        # Round robin: the next client in line gets the slot, then goes to the back.
        next_client = next(iter(self._waiters))
        queue = self._waiters.pop(next_client)
        waiter = queue.popleft()
        if queue:
            self._waiters[next_client] = queue
        self._waiting -= 1
        waiter.granted = True
        waiter.woken.set()
