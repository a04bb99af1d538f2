"""Refresh tokens (RFC 6749 §6, RFC 9700 §4.14): rotation, reuse detection, lifetimes,
scope narrowing, concurrency and the reuse interval, on SQLite and on PostgreSQL."""

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import (
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    bearer,
    register,
    request_token,
    sql,
)

pytestmark = pytest.mark.anyio

TOKEN_URL = "/oauth2/token"


async def sign_in(client: httpx.AsyncClient, email: str, **form: str) -> dict[str, Any]:
    response = await request_token(client, email, **form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str, **form: str) -> httpx.Response:
    return await client.post(
        TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": token, **form}
    )


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["cache-control"] == "no-store"


def claims_of(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


# --- issue and rotate ---------------------------------------------------------------------


async def test_a_sign_in_gets_an_opaque_refresh_token_stored_only_as_its_digest(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")

    body = await sign_in(client, "ann@example.com")

    token = body["refresh_token"]
    assert "." not in token  # opaque, not a JWT
    assert token.startswith("ast_rt_")  # for secret scanners
    assert len(token.removeprefix("ast_rt_")) >= 43  # 256 bits of base64url
    rows = await sql(client, "SELECT digest, scope FROM refresh_tokens")
    assert [(bytes(r[0]), r[1]) for r in rows] == [
        (hashlib.sha256(token.encode()).digest(), body["scope"])
    ]
    for table in ("refresh_tokens", "sessions"):
        for row in await sql(client, f"SELECT * FROM {table}"):  # noqa: S608 (our names)
            assert all(token not in str(value) for value in row)


async def test_a_refresh_spends_the_token_and_answers_its_successor(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "bob@example.com")
    first = await sign_in(client, "bob@example.com")

    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"]
    me = await client.get("/users/me", headers=bearer(second["access_token"]))
    assert me.status_code == 200
    # One sign-in, one session: the access tokens of both answers name it.
    assert claims_of(second["access_token"])["sid"] == claims_of(first["access_token"])["sid"]
    assert (await refresh(client, second["refresh_token"])).status_code == 200


async def test_presenting_a_spent_token_again_ends_the_whole_session(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "cat@example.com")
    stolen = (await sign_in(client, "cat@example.com"))["refresh_token"]
    other_session = (await sign_in(client, "cat@example.com"))["refresh_token"]
    newest = (await refresh(client, stolen)).json()["refresh_token"]

    replay = await refresh(client, stolen)

    assert_invalid_grant(replay)
    assert "used already" in replay.json()["error_description"]
    assert_invalid_grant(await refresh(client, newest))  # the legitimate newest one too
    assert (await refresh(client, other_session)).status_code == 200  # another sign-in lives


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "not-a-token",
        "A" * 43,
        "ast_rt_" + "A" * 43,
        "é" * 50,
        "a" * 5000,
        "Bearer abc.def.ghi",
    ],
)
async def test_unknown_tokens_are_invalid_grant_and_change_nothing(
    client: httpx.AsyncClient, token: str
) -> None:
    await register(client, "dan@example.com")
    live = (await sign_in(client, "dan@example.com"))["refresh_token"]

    response = await refresh(client, token)

    if token:
        assert_invalid_grant(response)
    else:
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"  # an empty value is a missing one
    assert (await refresh(client, live)).status_code == 200


async def test_an_access_token_is_no_refresh_token(client: httpx.AsyncClient) -> None:
    await register(client, "eve@example.com")
    body = await sign_in(client, "eve@example.com")

    assert_invalid_grant(await refresh(client, body["access_token"]))


# --- scope ----------------------------------------------------------------------------------


async def test_a_refresh_may_narrow_its_access_token_and_the_successor_keeps_the_grant(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "fay@example.com")
    first = await sign_in(client, "fay@example.com", scope="openid profile account")

    narrowed = await refresh(client, first["refresh_token"], scope="openid")

    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "openid"
    assert claims_of(narrowed.json()["access_token"])["scope"] == "openid"
    # RFC 6749 §6: the new refresh token's scope is identical to the presented one's.
    [(kept,)] = await sql(client, "SELECT scope FROM refresh_tokens WHERE spent_at IS NULL")
    assert kept == "account openid profile"
    again = await refresh(client, narrowed.json()["refresh_token"])
    assert again.json()["scope"] == "account openid profile"
    widened = await refresh(client, again.json()["refresh_token"], scope="openid email")
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"


async def test_a_refused_wider_scope_does_not_spend_the_token(client: httpx.AsyncClient) -> None:
    await register(client, "gus@example.com")
    first = await sign_in(client, "gus@example.com", scope="openid")

    refused = await refresh(client, first["refresh_token"], scope="openid email")
    assert refused.json()["error"] == "invalid_scope"

    assert (await refresh(client, first["refresh_token"])).status_code == 200


async def test_a_role_taken_away_takes_its_scope_out_of_the_next_refresh(
    client: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(client)
    user = await register(client, "hal@example.com")
    promoted = await client.patch(
        f"/admin/users/{user['id']}", json={"roles": ["admin"]}, headers=headers
    )
    assert promoted.status_code == 200
    first = await sign_in(client, "hal@example.com")
    assert "admin:users" in first["scope"].split()

    demoted = await client.patch(f"/admin/users/{user['id']}", json={"roles": []}, headers=headers)
    assert demoted.status_code == 200
    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    assert "admin:users" not in response.json()["scope"].split()


# --- the client -----------------------------------------------------------------------------


async def test_a_refresh_token_works_only_for_the_client_it_was_issued_to(
    make_client: ClientFactory,
) -> None:
    async with make_client(client_ids=["web", "mobile"]) as client:
        await register(client, "ida@example.com")
        form = {"grant_type": "password", "username": "ida@example.com"}
        signed_in = await client.post(
            TOKEN_URL, data={**form, "password": STRONG_PASSWORD, "client_id": "mobile"}
        )
        token = signed_in.json()["refresh_token"]

        assert_invalid_grant(await refresh(client, token))  # the default client: web
        assert_invalid_grant(await refresh(client, token, client_id="web"))
        answer = await refresh(client, token, client_id="mobile")  # not spent by the others
        assert answer.status_code == 200, answer.text
        assert claims_of(answer.json()["access_token"])["client_id"] == "mobile"


# --- lifetimes -----------------------------------------------------------------------------


async def test_an_idle_refresh_token_expires(client: httpx.AsyncClient) -> None:
    await register(client, "jon@example.com")
    token = (await sign_in(client, "jon@example.com"))["refresh_token"]
    await sql(
        client,
        "UPDATE refresh_tokens SET expires_at = :past",
        past=_ago(seconds=1),
    )

    assert_invalid_grant(await refresh(client, token))


async def test_a_session_ends_at_its_maximum_age_however_often_it_refreshes(
    make_client: ClientFactory,
) -> None:
    async with make_client(session_max_age=600, refresh_token_ttl=3600) as client:
        await register(client, "kim@example.com")
        token = (await sign_in(client, "kim@example.com"))["refresh_token"]
        token = (await refresh(client, token)).json()["refresh_token"]
        # Never past the session's end, whatever the idle lifetime says.
        [(expires, session_ends)] = await sql(
            client,
            "SELECT t.expires_at, s.expires_at FROM refresh_tokens t"
            " JOIN sessions s ON s.id = t.session_id WHERE t.spent_at IS NULL",
        )
        assert expires == session_ends
        await sql(client, "UPDATE sessions SET expires_at = :past", past=_ago(seconds=1))

        assert_invalid_grant(await refresh(client, token))


async def test_an_access_token_never_outlives_its_session(client: httpx.AsyncClient) -> None:
    await register(client, "lee@example.com")
    token = (await sign_in(client, "lee@example.com"))["refresh_token"]
    ends = datetime.now(UTC) + timedelta(seconds=60)  # sooner than an access token's TTL
    await sql(client, "UPDATE sessions SET expires_at = :ends", ends=ends)

    refreshed = await refresh(client, token)

    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["exp"] <= ends.timestamp()
    assert 0 < refreshed.json()["expires_in"] <= 60


def _ago(*, seconds: int) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# --- what ends every session -----------------------------------------------------------------


async def test_a_password_change_ends_every_session(client: httpx.AsyncClient) -> None:
    await register(client, "lea@example.com")
    first = await sign_in(client, "lea@example.com")
    second = await sign_in(client, "lea@example.com")

    changed = await client.post(
        "/users/me/password",
        json={"current_password": STRONG_PASSWORD, "new_password": "a new passphrase, long"},
        headers=bearer(first["access_token"]),
    )

    assert changed.status_code == 204, changed.text
    assert_invalid_grant(await refresh(client, first["refresh_token"]))
    assert_invalid_grant(await refresh(client, second["refresh_token"]))


@pytest.mark.parametrize("change", ["deactivate", "delete"])
async def test_deactivation_and_deletion_end_every_session(
    client: httpx.AsyncClient, change: str
) -> None:
    headers = await admin_headers(client)
    user = await register(client, f"{change}@example.com")
    token = (await sign_in(client, f"{change}@example.com"))["refresh_token"]

    if change == "deactivate":
        done = await client.patch(
            f"/admin/users/{user['id']}", json={"is_active": False}, headers=headers
        )
        assert done.status_code == 200
    else:
        assert (
            await client.delete(f"/admin/users/{user['id']}", headers=headers)
        ).status_code == 204

    assert_invalid_grant(await refresh(client, token))
    assert await sql(client, "SELECT id FROM sessions WHERE user_id = :id", id=user["id"]) == []


# --- at once --------------------------------------------------------------------------------


async def test_ten_concurrent_refreshes_of_one_token_spend_it_once(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "max@example.com")
    token = (await sign_in(client, "max@example.com"))["refresh_token"]

    answers = await asyncio.gather(*(refresh(client, token) for _ in range(10)))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 9, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json()["error"] == "invalid_grant"
    # Strict: the others were reuse, so the session ended, the winner's successor with it.
    winner = next(a for a in answers if a.status_code == 200).json()
    assert_invalid_grant(await refresh(client, winner["refresh_token"]))


async def test_with_a_reuse_interval_two_tabs_refreshing_at_once_share_one_successor(
    make_client: ClientFactory,
) -> None:
    async with make_client(refresh_reuse_interval=30) as client:
        await register(client, "ned@example.com")
        token = (await sign_in(client, "ned@example.com"))["refresh_token"]

        answers = await asyncio.gather(*(refresh(client, token) for _ in range(5)))

        assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
        assert len({a.content for a in answers}) == 1  # the very same pair, five times
        successor = answers[0].json()["refresh_token"]
        assert (await refresh(client, token)).content == answers[0].content  # a retry, later
        # The family did not fork: one live token, and it works.
        assert len(await sql(client, "SELECT 1 FROM refresh_tokens WHERE spent_at IS NULL")) == 1
        assert (await refresh(client, successor)).status_code == 200


async def test_the_kept_answer_is_sealed_and_reuse_after_the_interval_ends_the_session(
    make_client: ClientFactory,
) -> None:
    async with make_client(refresh_reuse_interval=10) as client:
        await register(client, "ola@example.com")
        token = (await sign_in(client, "ola@example.com"))["refresh_token"]
        successor = (await refresh(client, token)).json()
        [(kept,)] = await sql(
            client, "SELECT successor FROM refresh_tokens WHERE spent_at IS NOT NULL"
        )
        assert successor["refresh_token"].encode() not in bytes(kept)
        assert successor["access_token"].encode() not in bytes(kept)

        await sql(client, "UPDATE refresh_tokens SET spent_at = :then", then=_ago(seconds=11))

        assert_invalid_grant(await refresh(client, token))
        assert_invalid_grant(await refresh(client, successor["refresh_token"]))


async def test_without_a_reuse_interval_no_answer_is_kept(client: httpx.AsyncClient) -> None:
    await register(client, "pam@example.com")
    token = (await sign_in(client, "pam@example.com"))["refresh_token"]
    assert (await refresh(client, token)).status_code == 200

    assert await sql(client, "SELECT 1 FROM refresh_tokens WHERE successor IS NOT NULL") == []


async def test_a_session_records_where_its_sign_in_came_from(client: httpx.AsyncClient) -> None:
    await register(client, "quin@example.com")
    form = {"grant_type": "password", "username": "quin@example.com", "password": STRONG_PASSWORD}

    signed_in = await client.post(TOKEN_URL, data=form, headers={"User-Agent": "x" * 600})

    assert signed_in.status_code == 200, signed_in.text
    [(ip, user_agent, client_id)] = await sql(
        client, "SELECT ip, user_agent, client_id FROM sessions"
    )
    assert (ip, user_agent, client_id) == ("127.0.0.1", "x" * 512, "auth-service")


async def test_the_access_tokens_of_an_ended_session_are_refused_at_once(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ray@example.com")
    first = await sign_in(client, "ray@example.com")
    other = await sign_in(client, "ray@example.com")
    second = (await refresh(client, first["refresh_token"])).json()
    assert (
        await client.get("/users/me", headers=bearer(second["access_token"]))
    ).status_code == 200

    assert_invalid_grant(await refresh(client, first["refresh_token"]))  # reuse ends it

    for ended in (first["access_token"], second["access_token"]):
        refused = await client.get("/users/me", headers=bearer(ended))
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    still = await client.get("/users/me", headers=bearer(other["access_token"]))
    assert still.status_code == 200
