"""The fair queue in front of password work: room for anyone, refusal for the heaviest client.

These drive `FairQueue` directly with events, so each step (who holds a slot, who waits, who
is refused) is exact; tests/accounts/test_password_bursts.py shows the same rules through HTTP.
"""

import anyio
import anyio.lowlevel
import pytest

from auth_service.kit.fair_queue import FairQueue, QueueRefused

pytestmark = pytest.mark.anyio


class Crowd:
    """Tasks that each take a slot and hold it until released; records what happened."""

    def __init__(self, queue: FairQueue, tasks: anyio.abc.TaskGroup) -> None:
        self.queue = queue
        self.tasks = tasks
        self.started: list[str] = []  # names, in the order they got a slot
        self.refused: list[str] = []
        self._release: dict[str, anyio.Event] = {}

    def arrive(self, client: str, name: str) -> None:
        self._release[name] = anyio.Event()
        self.tasks.start_soon(self._hold, client, name)

    async def _hold(self, client: str, name: str) -> None:
        try:
            async with self.queue.slot(client):
                self.started.append(name)
                await self._release[name].wait()
        except QueueRefused:
            self.refused.append(name)

    def release(self, name: str) -> None:
        self._release[name].set()


async def _settle() -> None:
    for _ in range(5):  # let every ready task run to its next wait
        await anyio.lowlevel.checkpoint()


async def test_while_there_is_room_one_client_may_take_every_place() -> None:
    queue = FairQueue(slots=1, max_waiting=7)
    async with anyio.create_task_group() as tasks:
        crowd = Crowd(queue, tasks)
        for i in range(8):
            crowd.arrive("office", f"r{i}")
        await _settle()
        assert (crowd.started, crowd.refused, queue.waiting) == (["r0"], [], 7)
        for i in range(8):
            crowd.release(f"r{i}")
            await _settle()
    assert crowd.started == [f"r{i}" for i in range(8)]
    assert crowd.refused == []
    assert queue.waiting == 0


async def test_a_full_queue_refuses_the_newcomer_who_holds_the_most() -> None:
    queue = FairQueue(slots=1, max_waiting=2)
    async with anyio.create_task_group() as tasks:
        crowd = Crowd(queue, tasks)
        for i in range(3):
            crowd.arrive("flood", f"f{i}")
        await _settle()
        crowd.arrive("flood", "f3")
        await _settle()
        assert crowd.refused == ["f3"]
        assert queue.places("flood") == 3
        tasks.cancel_scope.cancel()


async def test_a_full_queue_never_refuses_a_client_holding_no_place() -> None:
    queue = FairQueue(slots=1, max_waiting=3)
    async with anyio.create_task_group() as tasks:
        crowd = Crowd(queue, tasks)
        for i in range(4):
            crowd.arrive("flood", f"f{i}")
        await _settle()
        crowd.arrive("alice", "a0")
        await _settle()
        # The flood's newest waiter gave up its place; its older ones keep theirs.
        assert crowd.refused == ["f3"]
        assert (queue.places("flood"), queue.places("alice"), queue.waiting) == (3, 1, 3)
        tasks.cancel_scope.cancel()


async def test_the_heaviest_client_is_evicted_not_a_lighter_one() -> None:
    queue = FairQueue(slots=1, max_waiting=4)
    async with anyio.create_task_group() as tasks:
        crowd = Crowd(queue, tasks)
        crowd.arrive("bob", "b0")  # runs
        for i in range(3):
            crowd.arrive("flood", f"f{i}")
        crowd.arrive("bob", "b1")
        await _settle()
        crowd.arrive("carol", "c0")  # flood holds 3 places, bob 2: flood gives one up
        await _settle()
        assert crowd.refused == ["f2"]
        crowd.arrive("bob", "b2")  # bob (2) now ties the flood (2): bob holds the most
        await _settle()
        assert crowd.refused == ["f2", "b2"]
        tasks.cancel_scope.cancel()


async def test_freed_slots_go_to_clients_in_turn_not_in_arrival_order() -> None:
    queue = FairQueue(slots=1, max_waiting=10)
    async with anyio.create_task_group() as tasks:
        crowd = Crowd(queue, tasks)
        for i in range(4):
            crowd.arrive("flood", f"f{i}")
        await _settle()
        crowd.arrive("alice", "a0")
        await _settle()
        for name in ("f0", "f1", "a0", "f2", "f3"):
            crowd.release(name)
            await _settle()
    # f0 ran first; f1 had waited longest; then alice's turn came before the flood's next.
    assert crowd.started == ["f0", "f1", "a0", "f2", "f3"]


async def test_a_cancelled_waiter_gives_back_its_place() -> None:
    queue = FairQueue(slots=1, max_waiting=1)
    release = anyio.Event()

    async def hold() -> None:
        async with queue.slot("a"):
            await release.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hold)
        await _settle()
        with anyio.move_on_after(0.05):
            async with queue.slot("b"):
                pytest.fail("b must still be waiting")
        assert (queue.waiting, queue.places("b")) == (0, 0)
        release.set()
    async with queue.slot("c"):  # the slot was returned: taken at once
        assert queue.places("c") == 1
    assert queue.places("a") == 0
