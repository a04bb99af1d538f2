"""Bursts of password work: bounded, queued without holding database connections, shed early.

bcrypt runs in a few worker threads; requests waiting for one must not hold a pooled
connection (or token verification and readiness checks starve), and the queue is bounded.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import httpx
import pytest

from auth_service.security.passwords import PasswordHasher
from tests.conftest import ClientFactory, auth_headers, register, request_token

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
    pool = client._transport.app.state.engine.pool  # type: ignore[attr-defined]
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
    # The slot is taken before the guard reads the user: one request at a time holds one.
    assert burst.most_checked_out <= 2


async def test_logins_beyond_the_queue_limit_are_turned_away_with_503(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await register(client, "crowd@example.com")
        app = client._transport.app  # type: ignore[attr-defined]
        app.state.hasher = PasswordHasher(rounds=SLOW_ROUNDS, concurrency=1, max_waiting=2)
        responses: list[httpx.Response] = []

        async def log_in() -> None:
            responses.append(await request_token(client, "crowd@example.com"))

        async with anyio.create_task_group() as crowd:
            for _ in range(8):
                crowd.start_soon(log_in)
        metrics = (await client.get("/metrics")).text

    shed = [r for r in responses if r.status_code == 503]
    # One hashing, two queued; the rest were refused at once (the stored hash uses cost 4,
    # and the hasher now verifies it whatever its cost).
    assert sorted(r.status_code for r in responses) == [200] * 3 + [503] * 5
    assert shed[0].json()["error"] == "temporarily_unavailable"
    assert shed[0].headers["retry-after"] == "1"
    assert 'auth_logins_total{outcome="busy"} 5.0' in metrics
