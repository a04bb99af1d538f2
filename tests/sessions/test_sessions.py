"""Sessions over HTTP: a user lists their sign-ins and ends one, signs out here or
everywhere; an admin lists and ends a user's sessions. Ending a session kills its refresh
token (RFC 6749 §6, RFC 9700 §4.14.2) and its access tokens at once (RFC 6750 §3)."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from auth_service.models import LoginSession
from tests.helpers.app import (
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    app_state,
    bearer,
    peer,
    register,
    request_token,
    sql,
)

pytestmark = pytest.mark.anyio

SESSIONS = "/users/me/sessions"


async def sign_in(
    client: httpx.AsyncClient, email: str, *, user_agent: str | None = None
) -> dict[str, Any]:
    """A password grant's answer, sent with `user_agent` when given."""
    if user_agent is None:
        response = await request_token(client, email)
    else:
        form = {"grant_type": "password", "username": email, "password": STRONG_PASSWORD}
        response = await client.post("/oauth2/token", data=form, headers={"User-Agent": user_agent})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def assert_refused(client: httpx.AsyncClient, access_token: str) -> None:
    response = await client.get("/users/me", headers=bearer(access_token))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def assert_accepted(client: httpx.AsyncClient, access_token: str) -> None:
    response = await client.get("/users/me", headers=bearer(access_token))
    assert response.status_code == 200, response.text


def sid_of(tokens: dict[str, Any]) -> str:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    sid: str = claims["sid"]
    return sid


async def listed(
    client: httpx.AsyncClient, tokens: dict[str, Any], **params: Any
) -> dict[str, Any]:
    response = await client.get(SESSIONS, params=params, headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def expire(client: httpx.AsyncClient, tokens: dict[str, Any], **ends: datetime) -> None:
    """Set the session's absolute (`expires_at`) or idle (`idle_expires_at`) end."""
    async with app_state(client).engine.begin() as connection:
        sessions = LoginSession.__table__  # type: ignore[attr-defined]
        await connection.execute(
            update(sessions).where(sessions.c.id == uuid.UUID(sid_of(tokens))).values(**ends)
        )


def _ago(*, seconds: int) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# --- listing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded_for", "recorded"),
    [
        ("2001:DB8:0:0::7", "2001:db8::7"),  # the canonical form
        ("[2001:db8::7]:8443, 10.0.0.2", "2001:db8::7"),
        ("198.51.100.4:51234", "198.51.100.4"),
        ("<script>alert(1)</script>", "127.0.0.1"),  # not an address: the socket peer
        ("a" * 65, "127.0.0.1"),
        ("fe80::1%" + "x" * 64, "127.0.0.1"),
        ("198.51.100.4, proxy.internal", "127.0.0.1"),
    ],
)
async def test_a_session_records_only_an_address_as_forwarded_by_a_trusted_proxy(
    make_client: ClientFactory, forwarded_for: str, recorded: str
) -> None:
    async with make_client(trusted_proxies="*") as client:
        await register(client, "ann@example.com")
        form = {
            "grant_type": "password",
            "username": "ann@example.com",
            "password": STRONG_PASSWORD,
        }
        signed_in = await client.post(
            "/oauth2/token", data=form, headers={"X-Forwarded-For": forwarded_for}
        )
        assert signed_in.status_code == 200, signed_in.text

        body = await listed(client, signed_in.json())

    assert [s["ip"] for s in body["data"]] == [recorded]


async def test_the_list_shows_what_each_sign_in_recorded_and_marks_the_current_one(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    laptop = await sign_in(client, "ann@example.com", user_agent="Laptop/1.0")
    async with peer(client, "203.0.113.7") as phone_client:
        phone = await sign_in(phone_client, "ann@example.com", user_agent="Phone/2.0")

    body = await listed(client, phone)

    assert body["count"] == 2
    newest, oldest = body["data"]  # newest first
    assert set(newest) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "client_id",
        "ip",
        "user_agent",
        "current",
    }
    assert (newest["id"], newest["ip"], newest["user_agent"]) == (
        sid_of(phone),
        "203.0.113.7",
        "Phone/2.0",
    )
    assert (oldest["id"], oldest["ip"], oldest["user_agent"]) == (
        sid_of(laptop),
        "127.0.0.1",
        "Laptop/1.0",
    )
    assert [s["current"] for s in body["data"]] == [True, False]
    assert {s["client_id"] for s in body["data"]} == {"auth-service"}
    for session in body["data"]:
        created = datetime.fromisoformat(session["created_at"])
        assert created <= datetime.fromisoformat(session["last_used_at"])
        assert created < datetime.fromisoformat(session["expires_at"])
    # From the other session, the other one is current.
    assert [s["current"] for s in (await listed(client, laptop))["data"]] == [False, True]


async def test_a_refresh_moves_last_used_and_keeps_the_session(client: httpx.AsyncClient) -> None:
    await register(client, "bea@example.com")
    first = await sign_in(client, "bea@example.com")
    await sql(client, "UPDATE sessions SET last_used_at = :then", then=_ago(seconds=60))

    refreshed = (await refresh(client, first["refresh_token"])).json()

    [session] = (await listed(client, refreshed))["data"]
    assert session["id"] == sid_of(first)
    assert session["current"] is True
    assert datetime.fromisoformat(session["last_used_at"]) > _ago(seconds=30)


async def test_other_users_sessions_never_appear(client: httpx.AsyncClient) -> None:
    await register(client, "cal@example.com")
    await register(client, "dee@example.com")
    cal = await sign_in(client, "cal@example.com")
    dee = await sign_in(client, "dee@example.com")
    await sign_in(client, "dee@example.com")

    cals = await listed(client, cal)
    dees = await listed(client, dee)

    assert [s["id"] for s in cals["data"]] == [sid_of(cal)]
    assert cals["count"] == 1
    assert dees["count"] == 2
    assert sid_of(cal) not in {s["id"] for s in dees["data"]}


async def test_the_list_is_paginated_with_the_total_count(client: httpx.AsyncClient) -> None:
    await register(client, "eli@example.com")
    signed_in = [await sign_in(client, "eli@example.com") for _ in range(5)]
    newest_first = [sid_of(tokens) for tokens in reversed(signed_in)]

    pages = [await listed(client, signed_in[0], limit=2, offset=o) for o in (0, 2, 4, 6)]

    assert [page["count"] for page in pages] == [5, 5, 5, 5]
    assert [s["id"] for page in pages for s in page["data"]] == newest_first
    assert pages[3]["data"] == []


async def test_expired_sessions_are_not_listed(client: httpx.AsyncClient) -> None:
    await register(client, "fin@example.com")
    aged_out = await sign_in(client, "fin@example.com")
    idle = await sign_in(client, "fin@example.com")
    live = await sign_in(client, "fin@example.com")
    past = _ago(seconds=1)
    await expire(client, aged_out, expires_at=past)
    await expire(client, idle, idle_expires_at=past)

    body = await listed(client, live)

    assert [s["id"] for s in body["data"]] == [sid_of(live)]
    assert body["count"] == 1
    # Nor can they be ended: to their owner they are gone already.
    for gone in (aged_out, idle):
        response = await client.delete(
            f"{SESSIONS}/{sid_of(gone)}", headers=bearer(live["access_token"])
        )
        assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "many"}]
)
async def test_bad_pagination_is_a_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    await register(client, "gia@example.com")
    tokens = await sign_in(client, "gia@example.com")

    response = await client.get(SESSIONS, params=params, headers=bearer(tokens["access_token"]))

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


# --- ending one ----------------------------------------------------------------------------


async def test_ending_a_session_kills_its_tokens_and_no_others(client: httpx.AsyncClient) -> None:
    await register(client, "hal@example.com")
    doomed = await sign_in(client, "hal@example.com")
    kept = await sign_in(client, "hal@example.com")

    response = await client.delete(
        f"{SESSIONS}/{sid_of(doomed)}", headers=bearer(kept["access_token"])
    )

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_invalid_grant(await refresh(client, doomed["refresh_token"]))
    await assert_refused(client, doomed["access_token"])
    await assert_accepted(client, kept["access_token"])
    assert [s["id"] for s in (await listed(client, kept))["data"]] == [sid_of(kept)]
    assert (await refresh(client, kept["refresh_token"])).status_code == 200
    again = await client.delete(
        f"{SESSIONS}/{sid_of(doomed)}", headers=bearer(kept["access_token"])
    )
    assert again.status_code == 404


async def test_ending_the_current_session_ends_the_callers_own_token(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ivy@example.com")
    tokens = await sign_in(client, "ivy@example.com")

    response = await client.delete(
        f"{SESSIONS}/{sid_of(tokens)}", headers=bearer(tokens["access_token"])
    )

    assert response.status_code == 204
    await assert_refused(client, tokens["access_token"])


async def test_another_users_session_is_not_found_and_stays(client: httpx.AsyncClient) -> None:
    await register(client, "jay@example.com")
    await register(client, "kay@example.com")
    jay = await sign_in(client, "jay@example.com")
    kay = await sign_in(client, "kay@example.com")

    theirs = await client.delete(f"{SESSIONS}/{sid_of(kay)}", headers=bearer(jay["access_token"]))
    unknown = await client.delete(f"{SESSIONS}/{uuid.uuid4()}", headers=bearer(jay["access_token"]))

    # One answer for both: a session id never tells whether it exists.
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json() == {"detail": "No such session."}
    await assert_accepted(client, kay["access_token"])
    assert (await listed(client, kay))["count"] == 1
    assert (await refresh(client, kay["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "session_id", ["not-a-uuid", "1", "0" * 33, "x" * 2000, "%00", "6ba7b810-9dad-11d1-80b4"]
)
async def test_a_malformed_session_id_is_a_422(client: httpx.AsyncClient, session_id: str) -> None:
    await register(client, "lou@example.com")
    tokens = await sign_in(client, "lou@example.com")

    response = await client.delete(
        f"{SESSIONS}/{session_id}", headers=bearer(tokens["access_token"])
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)
    await assert_accepted(client, tokens["access_token"])


async def test_the_session_routes_need_the_account_scope(client: httpx.AsyncClient) -> None:
    await register(client, "max@example.com")
    response = await request_token(client, "max@example.com", scope="openid")
    tokens = response.json()
    headers = bearer(tokens["access_token"])

    answers = [
        await client.get(SESSIONS, headers=headers),
        await client.delete(f"{SESSIONS}/{sid_of(tokens)}", headers=headers),
        await client.post("/users/me/logout", headers=headers),
        await client.post("/users/me/logout-all", headers=headers),
    ]

    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


# --- signing out -----------------------------------------------------------------------------


async def test_logout_ends_this_session_only(client: httpx.AsyncClient) -> None:
    await register(client, "ned@example.com")
    here = await sign_in(client, "ned@example.com")
    elsewhere = await sign_in(client, "ned@example.com")

    response = await client.post("/users/me/logout", headers=bearer(here["access_token"]))

    assert response.status_code == 204, response.text
    assert_invalid_grant(await refresh(client, here["refresh_token"]))
    await assert_refused(client, here["access_token"])
    again = await client.post("/users/me/logout", headers=bearer(here["access_token"]))
    assert again.status_code == 401
    await assert_accepted(client, elsewhere["access_token"])
    assert (await refresh(client, elsewhere["refresh_token"])).status_code == 200


async def test_logout_after_a_refresh_kills_the_whole_family(client: httpx.AsyncClient) -> None:
    await register(client, "oda@example.com")
    first = await sign_in(client, "oda@example.com")
    second = (await refresh(client, first["refresh_token"])).json()

    response = await client.post("/users/me/logout", headers=bearer(second["access_token"]))

    assert response.status_code == 204
    await assert_refused(client, first["access_token"])
    assert_invalid_grant(await refresh(client, second["refresh_token"]))


async def test_logout_all_ends_every_session_of_the_caller_only(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "pat@example.com")
    await register(client, "quy@example.com")
    mine = [await sign_in(client, "pat@example.com") for _ in range(3)]
    theirs = await sign_in(client, "quy@example.com")

    response = await client.post("/users/me/logout-all", headers=bearer(mine[0]["access_token"]))

    assert response.status_code == 204, response.text
    for tokens in mine:
        assert_invalid_grant(await refresh(client, tokens["refresh_token"]))
        await assert_refused(client, tokens["access_token"])
    await assert_accepted(client, theirs["access_token"])
    assert (await refresh(client, theirs["refresh_token"])).status_code == 200
    # Signing in again works, and starts the only session there is.
    fresh = await sign_in(client, "pat@example.com")
    assert [s["id"] for s in (await listed(client, fresh))["data"]] == [sid_of(fresh)]


async def test_a_sign_in_beyond_the_cap_ends_the_users_oldest_session(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_sessions_per_user=3) as client:
        await register(client, "cap@example.com")
        await register(client, "other@example.com")
        theirs = await sign_in(client, "other@example.com")
        mine = [await sign_in(client, "cap@example.com") for _ in range(5)]

        for ended in mine[:2]:
            assert_invalid_grant(await refresh(client, ended["refresh_token"]))
            await assert_refused(client, ended["access_token"])
        newest = [sid_of(tokens) for tokens in reversed(mine[2:])]
        assert [s["id"] for s in (await listed(client, mine[-1]))["data"]] == newest
        for kept in mine[2:]:
            assert (await refresh(client, kept["refresh_token"])).status_code == 200
        await assert_accepted(client, theirs["access_token"])  # another user's stay


async def test_concurrent_sign_ins_never_leave_more_sessions_than_the_cap(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_sessions_per_user=2) as client:
        await register(client, "many@example.com")

        answers = await asyncio.gather(
            *(request_token(client, "many@example.com") for _ in range(12))
        )

        assert [a.status_code for a in answers] == [200] * 12
        assert await sql(client, "SELECT count(*) FROM sessions") == [(2,)]


async def test_a_logout_racing_refreshes_of_its_session_leaves_nothing_alive(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "rex@example.com")
    tokens = await sign_in(client, "rex@example.com")

    answers = await asyncio.gather(
        refresh(client, tokens["refresh_token"]),
        client.post("/users/me/logout", headers=bearer(tokens["access_token"])),
        refresh(client, tokens["refresh_token"]),
    )

    assert answers[1].status_code == 204, answers[1].text
    for answer in (answers[0], answers[2]):
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200:  # it won the race: its successor died with the session
            assert_invalid_grant(await refresh(client, answer.json()["refresh_token"]))
            await assert_refused(client, answer.json()["access_token"])
        else:
            assert answer.json()["error"] == "invalid_grant"
    assert await sql(client, "SELECT id FROM sessions") == []


def _token_without_session(client: httpx.AsyncClient, user_id: str) -> str:
    """An access token we signed that names no session (no `sid`), as service clients'
    tokens will; today's sign-ins always name one."""
    signing = app_state(client).keys.signing
    now = int(time.time())
    claims = {
        "iss": "http://testserver",
        "sub": user_id,
        "aud": "http://testserver",
        "exp": now + 300,
        "iat": now,
        "jti": "no-session-jti-0001",
        "client_id": "auth-service",
        "scope": "account openid",
        "roles": [],
        "token_version": 0,
    }
    return jwt.encode(
        claims,
        signing.private.to_pem(),
        algorithm="RS256",
        headers={"kid": signing.kid, "typ": "at+jwt"},
    )


async def test_logout_with_a_token_of_no_session_is_a_clear_400(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "ria@example.com")
    signed_in = await sign_in(client, "ria@example.com")
    unbound = _token_without_session(client, user["id"])

    response = await client.post("/users/me/logout", headers=bearer(unbound))
    sessions = await client.get(SESSIONS, headers=bearer(unbound))

    assert response.status_code == 400, response.text
    assert response.json() == {
        "detail": "This access token belongs to no session: there is none to end."
    }
    await assert_accepted(client, signed_in["access_token"])
    assert sessions.status_code == 200
    assert [s["current"] for s in sessions.json()["data"]] == [False]


# --- the admin's view ------------------------------------------------------------------------


async def test_an_admin_lists_a_users_sessions(client: httpx.AsyncClient) -> None:
    headers = await admin_headers(client)
    user = await register(client, "sam@example.com")
    await register(client, "tia@example.com")
    first = await sign_in(client, "sam@example.com", user_agent="Sam's browser")
    second = await sign_in(client, "sam@example.com")
    await sign_in(client, "tia@example.com")

    response = await client.get(f"/admin/users/{user['id']}/sessions", headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2
    assert [s["id"] for s in body["data"]] == [sid_of(second), sid_of(first)]
    assert body["data"][1]["user_agent"] == "Sam's browser"
    assert not any(s["current"] for s in body["data"])  # none is the admin's
    page = await client.get(
        f"/admin/users/{user['id']}/sessions", params={"limit": 1, "offset": 1}, headers=headers
    )
    assert page.json() == {"data": body["data"][1:], "count": 2}


async def test_an_admin_revokes_a_users_sessions(client: httpx.AsyncClient) -> None:
    headers = await admin_headers(client)
    user = await register(client, "uma@example.com")
    await register(client, "vic@example.com")
    revoked = [await sign_in(client, "uma@example.com") for _ in range(2)]
    bystander = await sign_in(client, "vic@example.com")

    response = await client.post(f"/admin/users/{user['id']}/revoke-sessions", headers=headers)

    assert response.status_code == 204, response.text
    for tokens in revoked:
        assert_invalid_grant(await refresh(client, tokens["refresh_token"]))
        await assert_refused(client, tokens["access_token"])
    listing = await client.get(f"/admin/users/{user['id']}/sessions", headers=headers)
    assert listing.json() == {"data": [], "count": 0}
    await assert_accepted(client, bystander["access_token"])
    await assert_accepted(client, headers["Authorization"].removeprefix("Bearer "))
    # The user may sign in again.
    assert (await request_token(client, "uma@example.com")).status_code == 200


async def test_the_admin_sees_their_own_current_session(client: httpx.AsyncClient) -> None:
    headers = await admin_headers(client)
    me = (await client.get("/users/me", headers=headers)).json()

    response = await client.get(f"/admin/users/{me['id']}/sessions", headers=headers)

    assert [s["current"] for s in response.json()["data"]] == [True]


@pytest.mark.parametrize(("method", "suffix"), [("GET", "sessions"), ("POST", "revoke-sessions")])
async def test_admin_session_routes_answer_404_for_an_unknown_user(
    client: httpx.AsyncClient, method: str, suffix: str
) -> None:
    headers = await admin_headers(client)

    response = await client.request(
        method, f"/admin/users/{uuid.uuid4()}/{suffix}", headers=headers
    )
    malformed = await client.request(method, f"/admin/users/nobody/{suffix}", headers=headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "No such user."}
    assert malformed.status_code == 422
    assert isinstance(malformed.json()["detail"], str)


@pytest.mark.parametrize(("method", "suffix"), [("GET", "sessions"), ("POST", "revoke-sessions")])
async def test_admin_session_routes_refuse_a_non_admin(
    client: httpx.AsyncClient, method: str, suffix: str
) -> None:
    user = await register(client, "wes@example.com")
    tokens = await sign_in(client, "wes@example.com")

    response = await client.request(
        method, f"/admin/users/{user['id']}/{suffix}", headers=bearer(tokens["access_token"])
    )

    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert (await listed(client, tokens))["count"] == 1


# --- the OpenAPI document --------------------------------------------------------------------


async def test_the_session_routes_are_documented_with_their_scopes(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]

    for path, method, scope in [
        (SESSIONS, "get", "account"),
        (SESSIONS + "/{session_id}", "delete", "account"),
        ("/users/me/logout", "post", "account"),
        ("/users/me/logout-all", "post", "account"),
        ("/admin/users/{user_id}/sessions", "get", "admin:users"),
        ("/admin/users/{user_id}/revoke-sessions", "post", "admin:users"),
    ]:
        operation = paths[path][method]
        assert {"OAuth2PasswordBearer": [scope]} in operation["security"], (path, method)
        assert {"401", "403", "503"} <= set(operation["responses"]), (path, method)
        assert operation.get("description"), (path, method)
    assert "404" in paths[SESSIONS + "/{session_id}"]["delete"]["responses"]
    assert "400" in paths["/users/me/logout"]["post"]["responses"]
    assert "404" in paths["/admin/users/{user_id}/revoke-sessions"]["post"]["responses"]
    listed_schema = paths[SESSIONS]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed_schema["schema"]["$ref"].endswith("/SessionsPublic")
    session_schema = document["components"]["schemas"]["SessionPublic"]
    assert "current" in session_schema["properties"]
