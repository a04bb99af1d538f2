"""Bursts of password work: bounded, queued without holding database connections, shed early.

bcrypt runs in a few worker threads; requests waiting for one must not hold a pooled
connection (or token verification and readiness checks starve), and the queue is bounded.
"""

import anyio
import httpx
import pytest

from auth_service.security.passwords import PasswordHasher
from tests.conftest import STRONG_PASSWORD, ClientFactory, auth_headers, register

pytestmark = pytest.mark.anyio

SLOW_ROUNDS = 10  # ~70 ms a hash here: a burst of 16 lasts about a second


def _form(email: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": STRONG_PASSWORD}


async def test_a_login_burst_queues_without_holding_database_connections(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=SLOW_ROUNDS, password_hash_concurrency=1) as client:
        await register(client, "burst@example.com")
        headers = await auth_headers(client, "burst@example.com")
        pool = client._transport.app.state.engine.pool  # type: ignore[attr-defined]
        most_checked_out = 0
        statuses: list[int] = []

        async def log_in() -> None:
            statuses.append(
                (await client.post("/oauth2/token", data=_form("burst@example.com"))).status_code
            )

        async with anyio.create_task_group() as burst:
            for _ in range(16):
                burst.start_soon(log_in)
            await anyio.sleep(0.05)
            ready = await client.get("/health/ready")
            me = await client.get("/users/me", headers=headers)
            while len(statuses) < 16:
                most_checked_out = max(most_checked_out, pool.checkedout())
                await anyio.sleep(0.01)

    assert statuses == [200] * 16
    assert ready.status_code == 200
    assert me.status_code == 200
    # One login at a time holds a connection (plus, at most, one finishing its commit).
    assert most_checked_out <= 2


async def test_logins_beyond_the_queue_limit_are_turned_away_with_503(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await register(client, "crowd@example.com")
        app = client._transport.app  # type: ignore[attr-defined]
        app.state.hasher = PasswordHasher(rounds=SLOW_ROUNDS, concurrency=1, max_waiting=2)
        responses: list[httpx.Response] = []

        async def log_in() -> None:
            responses.append(await client.post("/oauth2/token", data=_form("crowd@example.com")))

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


async def test_a_password_change_burst_queues_without_holding_database_connections(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=SLOW_ROUNDS, password_hash_concurrency=1) as client:
        await register(client, "guesser@example.com")
        headers = await auth_headers(client, "guesser@example.com")
        pool = client._transport.app.state.engine.pool  # type: ignore[attr-defined]
        most_checked_out = 0
        statuses: list[int] = []
        wrong = {"current_password": "not the password at all", "new_password": "x" * 20}

        async def guess() -> None:
            response = await client.post("/users/me/password", json=wrong, headers=headers)
            statuses.append(response.status_code)

        async with anyio.create_task_group() as burst:
            for _ in range(16):
                burst.start_soon(guess)
            await anyio.sleep(0.05)
            ready = await client.get("/health/ready")
            while len(statuses) < 16:
                most_checked_out = max(most_checked_out, pool.checkedout())
                await anyio.sleep(0.01)

    assert statuses == [400] * 16
    assert ready.status_code == 200
    # The slot is taken before the guard reads the user: one request at a time holds one.
    assert most_checked_out <= 2
