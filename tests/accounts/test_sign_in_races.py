"""Sign-ins in flight when their account changes: a password change, a deactivation or a
deletion fired among old-password sign-ins leaves no session that works, however the
requests interleave, on SQLite and on PostgreSQL.

A password change is the one remedy a victim has (RFC 9700 §4.14.2; OWASP ASVS 5.0 7.4.2):
a thief signing in over and over with the old password must not keep a session through it.
Each race is run many times and must leave zero survivors every time.
"""

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.helpers.app import (
    STRONG_PASSWORD,
    admin_headers,
    bearer,
    register,
    request_token,
    sql,
)

pytestmark = pytest.mark.anyio

TRIALS = 6
SIGN_INS = 24  # per trial, started 1 ms apart, the change fired among them
NEW_PASSWORD = "a new passphrase, long enough"


async def _race(
    client: httpx.AsyncClient, email: str, change: Callable[[], Awaitable[httpx.Response]]
) -> tuple[list[httpx.Response], httpx.Response]:
    """The answers of SIGN_INS sign-ins with the old password, and of `change`, fired in
    the middle of them."""

    async def sign_in(delay: float) -> httpx.Response:
        await asyncio.sleep(delay)
        return await request_token(client, email)

    async def changed(delay: float) -> httpx.Response:
        await asyncio.sleep(delay)
        return await change()

    *sign_ins, answer = await asyncio.gather(
        *(sign_in(n / 1000) for n in range(SIGN_INS)), changed(SIGN_INS / 2000)
    )
    return sign_ins, answer


async def _survivors(client: httpx.AsyncClient, sign_ins: list[httpx.Response]) -> list[str]:
    """What still works of the sessions the sign-ins got: refreshes and access tokens."""
    survivors = []
    for answer in sign_ins:
        if answer.status_code != 200:
            assert answer.status_code == 400, answer.text  # never a 500
            assert answer.json()["error"] == "invalid_grant"
            continue
        body = answer.json()
        refreshed = await client.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        )
        if refreshed.status_code != 400:
            survivors.append(f"refresh: {refreshed.status_code}")
        me = await client.get("/users/me", headers=bearer(body["access_token"]))
        if me.status_code != 401:
            survivors.append(f"access token: {me.status_code}")
    return survivors


async def test_no_sign_in_in_flight_survives_a_password_change(client: httpx.AsyncClient) -> None:
    for trial in range(TRIALS):
        email = f"victim{trial}@example.com"
        await register(client, email)
        victim = await request_token(client, email)
        headers = bearer(victim.json()["access_token"])

        sign_ins, changed = await _race(
            client,
            email,
            lambda headers=headers: client.post(  # type: ignore[misc]
                "/users/me/password",
                json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
                headers=headers,
            ),
        )

        assert changed.status_code == 204, changed.text
        assert await _survivors(client, sign_ins) == [], f"trial {trial}"
        assert (await request_token(client, email, NEW_PASSWORD)).status_code == 200


async def test_no_sign_in_in_flight_survives_a_deactivation(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    for trial in range(TRIALS):
        email = f"thief{trial}@example.com"
        user = await register(client, email)

        sign_ins, deactivated = await _race(
            client,
            email,
            lambda user=user: client.patch(  # type: ignore[misc]
                f"/admin/users/{user['id']}", json={"is_active": False}, headers=admin
            ),
        )
        reactivated = await client.patch(
            f"/admin/users/{user['id']}", json={"is_active": True}, headers=admin
        )

        assert (deactivated.status_code, reactivated.status_code) == (200, 200)
        assert await _survivors(client, sign_ins) == [], f"trial {trial}"


async def test_sign_ins_racing_a_deletion_are_refused_and_leave_nothing(
    client: httpx.AsyncClient,
) -> None:
    admin = await admin_headers(client)
    for trial in range(TRIALS):
        email = f"gone{trial}@example.com"
        user = await register(client, email)

        sign_ins, deleted = await _race(
            client,
            email,
            lambda user=user: client.delete(  # type: ignore[misc]
                f"/admin/users/{user['id']}", headers=admin
            ),
        )

        assert deleted.status_code == 204, deleted.text
        assert await _survivors(client, sign_ins) == [], f"trial {trial}"
        assert await sql(client, "SELECT count(*) FROM sessions") == [(1,)]  # the admin's
