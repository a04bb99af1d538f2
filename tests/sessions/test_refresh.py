"""Refresh tokens (RFC 6749 §6, RFC 9700 §4.14): rotation, reuse detection, lifetimes,
scope narrowing, concurrency and the reuse interval, on SQLite and on PostgreSQL."""

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from auth_service.security.refresh_tokens import RefreshTokens
from tests.helpers.app import (
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    b64url,
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


async def test_a_sign_in_gets_an_opaque_refresh_token_that_is_stored_nowhere(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")

    body = await sign_in(client, "ann@example.com")

    token = body["refresh_token"]
    assert "." not in token  # opaque, not a JWT
    assert token.startswith("ast_rt_")  # for secret scanners
    assert len(token.removeprefix("ast_rt_")) >= 43  # 256 bits of base64url, and more
    [row] = await sql(client, "SELECT * FROM sessions")
    tag = base64.urlsafe_b64decode(token.removeprefix("ast_rt_") + "==")[-32:]
    for value in row:
        assert token not in str(value)
        assert not isinstance(value, bytes | memoryview) or tag not in bytes(value)


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


async def test_refreshing_adds_no_rows_and_every_earlier_token_is_known_as_reuse(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "abe@example.com")
    tokens = [(await sign_in(client, "abe@example.com"))["refresh_token"]]
    rows_before = await _row_counts(client)

    for _ in range(20):
        answer = await refresh(client, tokens[-1])
        assert answer.status_code == 200, answer.text
        tokens.append(answer.json()["refresh_token"])

    assert await _row_counts(client) == rows_before  # storage grows with sessions only
    replay = await refresh(client, tokens[3])  # long spent, yet recognized
    assert_invalid_grant(replay)
    assert "used already" in replay.json()["error_description"]
    assert await sql(client, "SELECT 1 FROM sessions") == []
    assert_invalid_grant(await refresh(client, tokens[-1]))


async def _row_counts(client: httpx.AsyncClient) -> dict[str, int]:
    tables = ("sessions", "users", "user_roles", "clients", "revoked_access_tokens")
    return {
        table: (await sql(client, f"SELECT count(*) FROM {table}"))[0][0]  # noqa: S608
        for table in tables
    }


async def test_a_token_made_without_the_servers_key_is_unknown_and_ends_nothing(
    client: httpx.AsyncClient,
) -> None:
    """Nobody holding a session id (every access token carries it as `sid`), nor the
    database's copy of the session, can make one of its tokens, not even a spent one that
    would end the session as reuse."""
    await register(client, "bea@example.com")
    body = await sign_in(client, "bea@example.com")
    session_id = uuid.UUID(claims_of(body["access_token"])["sid"])
    live = (await refresh(client, body["refresh_token"])).json()["refresh_token"]
    [(seed,)] = await sql(client, "SELECT refresh_seed FROM sessions")
    other_key = RefreshTokens("another secret key")
    forged = [
        other_key.make(session_id, 0, bytes(seed)),  # the database leaked, not the key
        other_key.make(session_id, 0, bytes(32)),
        "ast_rt_" + b64url(session_id.bytes + bytes(4) + bytes(32)),
    ]

    for token in forged:  # each would be the spent token 0, reuse, were it genuine
        refused = await refresh(client, token)
        assert_invalid_grant(refused)
        assert "used already" not in refused.json()["error_description"]

    assert (await refresh(client, live)).status_code == 200


def test_a_refresh_token_has_one_spelling() -> None:
    made = RefreshTokens("key")
    token = made.make(uuid.uuid4(), 7, bytes(32))
    presented = made.read(token)
    assert presented is not None
    assert presented.generation == 7
    assert made.genuine(presented, bytes(32))
    assert not made.genuine(presented, bytes(31) + b"\x01")
    # The last character carries two bits of the tag and four unused ones (A, Q, g or w
    # when those are 0): the next character decodes to the same bytes, and is refused.
    assert token[-1] in "AQgw"
    respelled = token[:-1] + chr(ord(token[-1]) + 1)
    assert base64.urlsafe_b64decode(respelled[7:] + "==") == base64.urlsafe_b64decode(
        token[7:] + "=="
    )
    for bad in (
        respelled,
        token + "A",
        token[:-1],
        "ast_xx_" + token[7:],
        token[:-2] + "==",
        token[:-1] + "+",
        "ast_rt_" + "é" * 70,
    ):
        assert made.read(bad) is None, bad


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
    [(kept,)] = await sql(client, "SELECT scope FROM sessions")
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
        "UPDATE sessions SET idle_expires_at = :past",
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
            client, "SELECT idle_expires_at, expires_at FROM sessions"
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
    # Only the admin's own session is left (a UUID parameter would not match SQLite's hex).
    assert await sql(client, "SELECT count(*) FROM sessions") == [(1,)]


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
        # The family did not fork: one spend, one live token, and it works.
        assert await sql(client, "SELECT refresh_generation FROM sessions") == [(1,)]
        assert (await refresh(client, successor)).status_code == 200


async def test_the_kept_answer_is_sealed_and_reuse_after_the_interval_ends_the_session(
    make_client: ClientFactory,
) -> None:
    async with make_client(refresh_reuse_interval=10) as client:
        await register(client, "ola@example.com")
        token = (await sign_in(client, "ola@example.com"))["refresh_token"]
        successor = (await refresh(client, token)).json()
        [(kept,)] = await sql(client, "SELECT successor FROM sessions")
        assert successor["refresh_token"].encode() not in bytes(kept)
        assert successor["access_token"].encode() not in bytes(kept)

        await sql(client, "UPDATE sessions SET refreshed_at = :then", then=_ago(seconds=11))

        assert_invalid_grant(await refresh(client, token))
        assert_invalid_grant(await refresh(client, successor["refresh_token"]))


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"scope": "account admin:keys"}, "invalid_scope"),
        ({"scope": "not:granted"}, "invalid_scope"),
        ({"audience": "orders-api"}, "invalid_target"),
        ({"resource": "https://elsewhere.example"}, "invalid_target"),
    ],
)
async def test_a_replay_within_the_interval_is_judged_as_a_fresh_refresh_would_be(
    make_client: ClientFactory, form: dict[str, str], error: str
) -> None:
    async with make_client(refresh_reuse_interval=30, allowed_audiences=["orders-api"]) as client:
        await register(client, "oda@example.com")
        token = (await sign_in(client, "oda@example.com", scope="account"))["refresh_token"]
        first = await refresh(client, token)
        assert first.status_code == 200, first.text

        fresh = await refresh(client, first.json()["refresh_token"], **form)
        replay = await refresh(client, token, **form)

        assert (fresh.status_code, fresh.json()["error"]) == (400, error)
        assert (replay.status_code, replay.json()["error"]) == (400, error)
        assert (await refresh(client, token)).content == first.content  # still kept


async def test_a_session_begun_before_a_password_change_cannot_refresh(
    client: httpx.AsyncClient,
) -> None:
    """Should a sign-in's session outlive the password change it raced, its version
    refuses it (the race itself is in test_sign_in_races.py)."""
    await register(client, "ora@example.com")
    token = (await sign_in(client, "ora@example.com"))["refresh_token"]
    await sql(client, "UPDATE users SET token_version = 1 WHERE email = 'ora@example.com'")

    assert_invalid_grant(await refresh(client, token))
    assert await sql(client, "SELECT 1 FROM sessions") == []  # and it is ended


async def test_without_a_reuse_interval_no_answer_is_kept(client: httpx.AsyncClient) -> None:
    await register(client, "pam@example.com")
    token = (await sign_in(client, "pam@example.com"))["refresh_token"]
    assert (await refresh(client, token)).status_code == 200

    assert await sql(client, "SELECT 1 FROM sessions WHERE successor IS NOT NULL") == []


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
