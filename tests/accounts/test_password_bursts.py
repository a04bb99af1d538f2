"""Bursts of password work: queued without holding database connections, fair between clients.

bcrypt runs in a few worker threads; requests waiting for one must not hold a pooled
connection (or token verification and readiness checks starve). The queue is bounded, and
when it is full the client holding the most places is refused, never one holding none
(tests/unit/test_fair_queue.py has the rules step by step).
"""

import os
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from sqlalchemy.pool import QueuePool

from auth_service.security.passwords import HASHING_NICENESS, PasswordHasher
from tests.helpers.app import (
    BCRYPT_TEST_ROUNDS,
    STRONG_PASSWORD,
    ClientFactory,
    app_state,
    auth_headers,
    peer,
    register,
    request_token,
)

pytestmark = pytest.mark.anyio

SLOW_ROUNDS = 10  # ~70 ms a hash here: a burst of 16 lasts about a second
BURST = 16


@dataclass
class Burst:
    statuses: list[int]
    ready: int  # /health/ready's status while the burst ran
    most_checked_out: int  # pooled connections in use at once, at the most


async def _burst(client: httpx.AsyncClient, send: Callable[[], Awaitable[httpx.Response]]) -> Burst:
    """Send BURST requests at once; meanwhile ask for readiness and watch the pool."""
    pool = app_state(client).engine.pool
    assert isinstance(pool, QueuePool)
    statuses: list[int] = []
    most_checked_out = 0

    async def one() -> None:
        statuses.append((await send()).status_code)

    async with anyio.create_task_group() as tasks:
        for _ in range(BURST):
            tasks.start_soon(one)
        await anyio.sleep(0.05)
        ready = (await client.get("/health/ready")).status_code
        while len(statuses) < BURST:
            most_checked_out = max(most_checked_out, pool.checkedout())
            await anyio.sleep(0.01)
    return Burst(statuses=statuses, ready=ready, most_checked_out=most_checked_out)


async def test_a_login_burst_queues_without_holding_database_connections(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=SLOW_ROUNDS, password_hash_concurrency=1) as client:
        await register(client, "burst@example.com")
        headers = await auth_headers(client, "burst@example.com")

        burst = await _burst(client, lambda: request_token(client, "burst@example.com"))
        me = await client.get("/users/me", headers=headers)

    assert burst.statuses == [200] * BURST
    assert burst.ready == 200
    assert me.status_code == 200
    # One login at a time holds a connection (plus, at most, one finishing its commit).
    assert burst.most_checked_out <= 2


async def test_a_password_change_burst_queues_without_holding_database_connections(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=SLOW_ROUNDS, password_hash_concurrency=1) as client:
        await register(client, "guesser@example.com")
        headers = await auth_headers(client, "guesser@example.com")
        wrong = {"current_password": "not the password at all", "new_password": "x" * 20}

        burst = await _burst(
            client, lambda: client.post("/users/me/password", json=wrong, headers=headers)
        )

    assert burst.statuses == [400] * BURST
    assert burst.ready == 200
    # Waiting requests hold no pooled connection: only the one in the slot uses its session.
    # (The guard's read takes a connection of its own for the read alone, never while waiting.)
    assert burst.most_checked_out <= 2


def _use_hasher(client: httpx.AsyncClient, *, max_waiting: int) -> PasswordHasher:
    """One slow hashing slot with `max_waiting` places to wait in."""
    hasher = PasswordHasher(rounds=SLOW_ROUNDS, concurrency=1, max_waiting=max_waiting)
    state = app_state(client)
    state.hasher.close()  # the app closes the one it holds when it stops: this one
    state.hasher = hasher
    return hasher


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (10 s at most) until `condition()` holds."""
    for _ in range(2000):
        if condition():
            return
        await anyio.sleep(0.005)
    pytest.fail(f"never: {what}")


async def _queue_full(hasher: PasswordHasher, max_waiting: int) -> None:
    await _until(lambda: hasher.queue.waiting >= max_waiting, "the password queue filled")


async def _queued(hasher: PasswordHasher, client: str, places: int) -> None:
    await _until(lambda: hasher.queue.places(client) >= places, f"{client} queued")


# Each flood below starts with the hasher's one slot held in the flooding client's name, as if
# its first request were hashing, and lets it go only once every request is in the queue: the
# queue is full however slowly requests arrive, and nobody leaves it before the test is ready.


async def test_one_clients_concurrent_logins_all_succeed_while_the_queue_has_room(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await register(client, "office@example.com")
        _use_hasher(client, max_waiting=7)
        responses: list[httpx.Response] = []

        async def log_in() -> None:
            responses.append(await request_token(client, "office@example.com"))

        async with anyio.create_task_group() as office:
            for _ in range(8):  # one hashing, seven waiting: everyone fits
                office.start_soon(log_in)

    assert [r.status_code for r in responses] == [200] * 8


async def test_a_flood_from_one_address_cannot_refuse_a_login_from_another(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await register(client, "alice@example.com")
        hasher = _use_hasher(client, max_waiting=4)
        flood: list[httpx.Response] = []
        answers: list[httpx.Response] = []
        async with peer(client, "203.0.113.7") as attacker, peer(client, "198.51.100.2") as alice:

            async def junk() -> None:  # no credentials worth anything
                flood.append(await request_token(attacker, "nobody@example.com", "x" * 20))

            async def log_in() -> None:
                answers.append(await request_token(alice, "alice@example.com"))

            async with anyio.create_task_group() as tasks:
                async with hasher.queue.slot("203.0.113.7"):
                    for _ in range(11):
                        tasks.start_soon(junk)
                    await _until(lambda: len(flood) == 7, "seven of the flood refused")
                    await _queue_full(hasher, 4)
                    tasks.start_soon(log_in)
                    await _queued(hasher, "198.51.100.2", 1)
        metrics = (await client.get("/metrics")).text

    [legitimate] = answers
    assert legitimate.status_code == 200, legitimate.text
    # One hashing and four waiting; seven refused at once, and one waiter gave up its place
    # to alice. The rest were checked, and failed.
    refused = [r for r in flood if r.status_code == 429]
    assert sorted(r.status_code for r in flood) == [400] * 3 + [429] * 8
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.headers["cache-control"] == "no-store"
        assert response.json()["error"] == "temporarily_unavailable"
        assert set(response.json()) == {"error", "error_description"}
    assert 'auth_logins_total{outcome="busy"} 8.0' in metrics


async def test_ipv6_clients_are_grouped_by_their_64_bit_prefix(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await register(client, "v6@example.com")
        hasher = _use_hasher(client, max_waiting=2)
        flood: list[httpx.Response] = []
        answers: list[httpx.Response] = []

        async def junk(host: str) -> None:
            async with peer(client, host) as attacker:
                flood.append(await request_token(attacker, "nobody@example.com", "x" * 20))

        async def log_in(host: str) -> None:
            async with peer(client, host) as user:
                answers.append(await request_token(user, "v6@example.com"))

        async with anyio.create_task_group() as tasks:
            # Three addresses, one /64: one client holding every place.
            async with hasher.queue.slot("2001:db8:0:1::/64"):
                for i in range(2):
                    tasks.start_soon(junk, f"2001:db8:0:1::{i + 1}")
                await _queue_full(hasher, 2)
                async with peer(client, "2001:db8:0:1:ffff::9") as same:
                    same_prefix = await request_token(same, "v6@example.com")
                tasks.start_soon(log_in, "2001:db8:0:2::1")
                await _queued(hasher, "2001:db8:0:2::/64", 1)

    [other_prefix] = answers
    assert same_prefix.status_code == 429
    assert other_prefix.status_code == 200
    assert sorted(r.status_code for r in flood) == [400, 429]


async def test_registration_and_password_change_wait_in_the_same_fair_queue(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_min_length=15) as client:
        await register(client, "bob@example.com")
        headers = await auth_headers(client, "bob@example.com")
        hasher = _use_hasher(client, max_waiting=2)
        change = {"current_password": STRONG_PASSWORD, "new_password": "another long passphrase"}
        answers: dict[str, httpx.Response] = {}
        async with peer(client, "203.0.113.7") as attacker, peer(client, "198.51.100.2") as bob:

            async def junk() -> None:
                await request_token(attacker, "nobody@example.com", "x" * 20)

            async def register_carol() -> None:
                carol = {"email": "carol@example.com", "password": STRONG_PASSWORD}
                answers["registered"] = await bob.post("/users", json=carol)

            async def change_password() -> None:
                answers["changed"] = await bob.post(
                    "/users/me/password", json=change, headers=headers
                )

            async with anyio.create_task_group() as tasks:
                async with hasher.queue.slot("203.0.113.7"):
                    for _ in range(2):
                        tasks.start_soon(junk)
                    await _queue_full(hasher, 2)
                    refused = await attacker.post(
                        "/users", json={"email": "mallory@example.com", "password": STRONG_PASSWORD}
                    )
                    # Bob holds no place, then one against the flood's two: both get in.
                    tasks.start_soon(register_carol)
                    await _queued(hasher, "198.51.100.2", 1)
                    tasks.start_soon(change_password)
                    await _queued(hasher, "198.51.100.2", 2)

    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "Too many password checks from this address are waiting; retry in a moment."
    }
    assert refused.headers["retry-after"] == "1"
    assert answers["registered"].status_code == 201, answers["registered"].text
    assert answers["changed"].status_code == 204, answers["changed"].text


def _nice_values_of_threads() -> dict[int, int]:
    """Each thread of this process and its nice value (proc(5): stat field 19)."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # a thread that ended after the directory was listed
            continue
        found[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hashing_threads_run_below_the_event_loops_priority() -> None:
    hasher = PasswordHasher(rounds=BCRYPT_TEST_ROUNDS, concurrency=2)
    loop_thread = threading.get_native_id()
    own = os.getpriority(os.PRIO_PROCESS, loop_thread)
    before = _nice_values_of_threads()
    try:
        await hasher.hash(STRONG_PASSWORD)

        after = _nice_values_of_threads()
        hashing = {tid: nice for tid, nice in after.items() if tid not in before}
        assert hashing, "the hash ran in no new thread"
        assert set(hashing.values()) == {min(own + HASHING_NICENESS, 19)}
        assert after[loop_thread] == own  # the event loop keeps its priority
    finally:
        hasher.close()


async def test_a_cancelled_hash_keeps_its_slot_until_the_hash_is_done() -> None:
    # Otherwise a client that disconnects mid-hash frees its slot while its bcrypt still
    # runs, and the queue admits more hashes than there are slots.
    hasher = PasswordHasher(rounds=BCRYPT_TEST_ROUNDS, concurrency=1)
    started, release = threading.Event(), threading.Event()
    events: list[str] = []
    real_hash: Callable[[str], str] = hasher._context.hash

    def held_hash(secret: str) -> str:
        started.set()
        release.wait(10)  # released by the test, long before this
        events.append("first hash done")
        return real_hash(secret)

    hasher._context.hash = held_hash
    first = anyio.CancelScope()

    async def hash_first() -> None:
        with first:
            await hasher.hash(STRONG_PASSWORD)

    async def take_a_turn() -> None:
        async with hasher.turn("someone else"):
            events.append("second turn")

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hash_first)
            await anyio.to_thread.run_sync(started.wait)
            first.cancel()  # the client went away while its hash runs
            tasks.start_soon(take_a_turn)
            await anyio.sleep(0.1)
            assert events == []  # the slot is still the cancelled hash's
            release.set()
        assert events == ["first hash done", "second turn"]
    finally:
        release.set()
        hasher.close()
