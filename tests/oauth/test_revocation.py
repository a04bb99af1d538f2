"""Revocation (RFC 7009), introspection (RFC 7662) and the purge of expired tokens, on
SQLite and PostgreSQL; what one worker revokes, another refuses at once."""

import asyncio
import base64
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from auth_service.access import repository as denylist
from auth_service.kit import jobs
from auth_service.kit.time import utcnow
from auth_service.sessions import repository as sessions_repository
from tests.helpers.app import (
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    app_state,
    bearer,
    new_client,
    register,
    request_token,
    revoke,
    sql,
)

pytestmark = pytest.mark.anyio

REVOKE, INTROSPECT, TOKEN = "/oauth2/revoke", "/oauth2/introspect", "/oauth2/token"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def sign_in(client: httpx.AsyncClient, email: str = "ann@example.com") -> dict[str, Any]:
    response = await request_token(client, email)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class Introspector:
    """A resource server that asks the auth service about tokens."""

    def __init__(self, registered: dict[str, Any]) -> None:
        self.headers = basic(registered["client_id"], registered["client_secret"])

    async def ask(self, client: httpx.AsyncClient, token: str) -> dict[str, Any]:
        response = await client.post(INTROSPECT, data={"token": token}, headers=self.headers)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
async def introspector(client: httpx.AsyncClient) -> Introspector:
    return Introspector(await new_client(client))


# --- revocation --------------------------------------------------------------------------


async def test_revoking_a_refresh_token_ends_its_session(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)

    response = await revoke(client, tokens["refresh_token"], token_type_hint="refresh_token")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    refreshed = await client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"
    me = await client.get("/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401


async def test_revoking_an_access_token_refuses_it_but_not_its_session(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)
    assert (
        await client.get("/users/me", headers=bearer(tokens["access_token"]))
    ).status_code == 200

    # A wrong hint is only a hint (RFC 7009 §2.1).
    response = await revoke(client, tokens["access_token"], token_type_hint="refresh_token")

    assert response.status_code == 200
    me = await client.get("/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    assert "revoked" in me.headers["www-authenticate"]
    assert await introspector.ask(client, tokens["access_token"]) == {"active": False}
    refreshed = await client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    me = await client.get("/users/me", headers=bearer(refreshed.json()["access_token"]))
    assert me.status_code == 200


async def test_a_revocation_through_one_worker_is_refused_by_another_at_once(
    make_client: ClientFactory,
) -> None:
    async with make_client() as first, make_client() as second:
        await register(first, "ann@example.com")
        tokens = await sign_in(first)
        introspector = Introspector(await new_client(first))
        # The other worker has verified the token and keeps its signature check.
        assert (
            await second.get("/users/me", headers=bearer(tokens["access_token"]))
        ).status_code == 200
        assert (await introspector.ask(second, tokens["access_token"]))["active"] is True

        assert (await revoke(first, tokens["access_token"])).status_code == 200

        me = await second.get("/users/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 401
        assert await introspector.ask(second, tokens["access_token"]) == {"active": False}


@pytest.mark.parametrize(
    "token",
    ["unknown-refresh-token", "not.a.jwt", "a" * 5000, "eyJhbGciOiJub25lIn0.e30.", "é"],
)
async def test_unknown_or_malformed_tokens_answer_200_and_change_nothing(
    client: httpx.AsyncClient, token: str
) -> None:
    before = await sql(client, "SELECT count(*) FROM revoked_access_tokens")

    response = await revoke(client, token)

    assert response.status_code == 200
    assert await sql(client, "SELECT count(*) FROM revoked_access_tokens") == before


async def test_revoking_twice_or_at_once_is_harmless(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)

    answers = await asyncio.gather(*(revoke(client, tokens["access_token"]) for _ in range(8)))
    again = await asyncio.gather(*(revoke(client, tokens["refresh_token"]) for _ in range(4)))

    assert {r.status_code for r in [*answers, *again]} == {200}
    assert len(await sql(client, "SELECT jti FROM revoked_access_tokens")) == 1


async def test_nobody_revokes_another_clients_tokens(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)  # issued to auth-service
    mobile = await new_client(
        client,
        name="mobile",
        confidential=False,
        scopes=["orders:read"],
        grant_types=["password", "refresh_token"],
    )
    service = await new_client(client)

    for presented in (
        {"client_id": mobile["client_id"]},
        {"headers": basic(service["client_id"], service["client_secret"])},
    ):
        for token in (tokens["access_token"], tokens["refresh_token"]):
            response = await revoke(client, token, **presented)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_grant"
    assert (
        await client.get("/users/me", headers=bearer(tokens["access_token"]))
    ).status_code == 200
    assert await sql(client, "SELECT count(*) FROM revoked_access_tokens") == [(0,)]


async def test_a_confidential_client_must_authenticate_to_revoke(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    service = await new_client(client)
    token = (
        await client.post(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers=basic(service["client_id"], service["client_secret"]),
        )
    ).json()["access_token"]

    unauthenticated = await revoke(client, token, client_id=service["client_id"])
    wrong = await revoke(client, token, headers=basic(service["client_id"], "ast_cs_wrong"))
    authenticated = await revoke(
        client, token, headers=basic(service["client_id"], service["client_secret"])
    )

    for refused in (unauthenticated, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert authenticated.status_code == 200
    assert await introspector.ask(client, token) == {"active": False}


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ({}, None),
        ({"token": ["a", "b"]}, None),
        ({"token": "x"}, "application/json"),
    ],
)
async def test_a_malformed_revocation_request_is_invalid_request(
    client: httpx.AsyncClient, data: dict[str, Any], content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if content_type:
        response = await client.post(REVOKE, content=b'{"token": "x"}', headers=headers)
    else:
        response = await client.post(REVOKE, data=data)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert (await client.get(REVOKE)).status_code == 405


# --- introspection -----------------------------------------------------------------------


async def test_an_active_access_token_is_described(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    user = await register(client, "ann@example.com")
    tokens = await sign_in(client)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})

    answer = await introspector.ask(client, tokens["access_token"])

    # Not for the introspecting client (its `aud` is the service's): no user's email (§5).
    assert answer == {
        "active": True,
        "token_type": "Bearer",
        "sub": user["id"],
        "client_id": "auth-service",
        "scope": tokens["scope"],
        **{name: claims[name] for name in ("exp", "iat", "aud", "iss", "jti")},
    }


async def test_the_users_email_goes_only_to_the_client_the_token_is_for(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    orders, gateway = await new_client(client), await new_client(client, name="gateway")
    await client.patch(
        "/admin/clients/auth-service",
        json={"audiences": [orders["client_id"]]},
        headers=await admin_headers(client),
    )
    form = {"grant_type": "password", "username": "ann@example.com", "password": STRONG_PASSWORD}
    signed_in = await client.post(TOKEN, data={**form, "audience": orders["client_id"]})
    token = signed_in.json()["access_token"]

    for_it = await Introspector(orders).ask(client, token)
    for_another = await Introspector(gateway).ask(client, token)

    assert for_it["aud"] == orders["client_id"]
    assert for_it["username"] == "ann@example.com"
    assert for_another == {k: v for k, v in for_it.items() if k != "username"}


async def test_a_refresh_token_is_introspected_only_by_its_client_until_it_is_spent(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    user = await register(client, "ann@example.com")
    app = await new_client(
        client,
        name="app",
        scopes=["introspect", "openid"],
        grant_types=["password", "refresh_token"],
    )
    own = Introspector(app)
    form = {"grant_type": "password", "username": "ann@example.com", "password": STRONG_PASSWORD}
    tokens = (await client.post(TOKEN, data=form, headers=own.headers)).json()

    live = await own.ask(client, tokens["refresh_token"])
    another = await introspector.ask(client, tokens["refresh_token"])
    await client.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=own.headers,
    )
    spent = await own.ask(client, tokens["refresh_token"])

    assert live["active"] is True
    assert live["token_type"] == "refresh_token"
    assert live["sub"] == user["id"]
    assert live["client_id"] == app["client_id"]
    assert live["exp"] > time.time()
    assert "username" not in live  # its `aud` is the service's, not the client's
    assert another == {"active": False}
    assert spent == {"active": False}


async def _forged(client: httpx.AsyncClient, **claims: Any) -> str:
    signing = app_state(client).keys.signing
    now = int(time.time())
    payload = {
        "iss": "http://testserver",
        "sub": "00000000-0000-4000-8000-000000000000",
        "aud": "http://testserver",
        "iat": now,
        "exp": now + 600,
        "jti": "forged",
        "client_id": "auth-service",
        **claims,
    }
    return jwt.encode(
        payload,
        signing.private.to_pem(),
        algorithm="RS256",
        headers={"kid": signing.kid, "typ": "at+jwt"},
    )


async def test_every_token_that_is_not_active_gets_active_false_and_nothing_else(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    await register(client, "ann@example.com")
    await register(client, "bob@example.com")
    await register(client, "cid@example.com")
    ann, bob, cid = [await sign_in(client, f"{n}@example.com") for n in ("ann", "bob", "cid")]
    admin = await admin_headers(client)
    bob_id = (await client.get("/users/me", headers=bearer(bob["access_token"]))).json()["id"]
    await client.patch(f"/admin/users/{bob_id}", json={"is_active": False}, headers=admin)
    await client.post(
        "/users/me/password",
        json={"current_password": STRONG_PASSWORD, "new_password": "another horse battery"},
        headers=bearer(cid["access_token"]),
    )
    await revoke(client, ann["access_token"])
    expired = await _forged(client, exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)
    other_issuer = await _forged(client, iss="https://elsewhere.example.com")

    for token in (
        ann["access_token"],  # revoked
        bob["access_token"],  # its user deactivated
        cid["access_token"],  # issued before a password change
        expired,
        other_issuer,
        await _forged(client),  # a user who does not exist
        "garbage",
        "a.b.c",
    ):
        assert await introspector.ask(client, token) == {"active": False}, token


async def test_a_token_for_another_audience_is_active(make_client: ClientFactory) -> None:
    async with make_client(allowed_audiences=["orders-api"]) as client:
        await register(client, "ann@example.com")
        introspector = Introspector(await new_client(client))
        token = (
            await client.post(
                TOKEN,
                data={
                    "grant_type": "password",
                    "username": "ann@example.com",
                    "password": STRONG_PASSWORD,
                    "audience": "orders-api",
                },
            )
        ).json()["access_token"]

        answer = await introspector.ask(client, token)

    assert answer["active"] is True
    assert answer["aud"] == "orders-api"


async def test_a_client_credentials_token_is_active_while_its_client_is(
    client: httpx.AsyncClient, introspector: Introspector
) -> None:
    service = await new_client(client, name="billing", scopes=["billing:read"])
    token = (
        await client.post(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers=basic(service["client_id"], service["client_secret"]),
        )
    ).json()["access_token"]

    active = await introspector.ask(client, token)
    await client.patch(
        f"/admin/clients/{service['client_id']}",
        json={"is_active": False},
        headers=await admin_headers(client),
    )
    deactivated = await introspector.ask(client, token)

    assert active["active"] is True
    assert active["sub"] == active["client_id"] == service["client_id"]
    assert "username" not in active
    assert deactivated == {"active": False}


async def test_only_authenticated_clients_with_the_introspect_scope_may_ask(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)
    allowed = await new_client(client)
    without_scope = await new_client(client, name="plain", scopes=["orders:read"])

    for headers, data in (
        ({}, {}),
        ({}, {"client_id": "auth-service"}),  # a public client proves nothing
        (basic(allowed["client_id"], "ast_cs_wrong"), {}),
        (basic("svc_nobody", allowed["client_secret"]), {}),
        (basic(without_scope["client_id"], without_scope["client_secret"]), {}),
    ):
        # Authentication comes first: without it, even a missing token is not told.
        for token in (tokens["access_token"], tokens["refresh_token"], "junk", None):
            form = {"token": token, **data} if token else {"token_type_hint": "x", **data}
            response = await client.post(INTROSPECT, data=form, headers=headers)
            assert response.status_code == 401, (headers, data, response.text)
            assert response.json()["error"] == "invalid_client"
            assert "active" not in response.text


async def test_a_bearer_token_with_the_introspect_scope_may_ask(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    tokens = await sign_in(client)
    service = await new_client(client)
    service_token = (
        await client.post(
            TOKEN,
            data={"grant_type": "client_credentials", "scope": "introspect"},
            headers=basic(service["client_id"], service["client_secret"]),
        )
    ).json()["access_token"]

    allowed = await client.post(
        INTROSPECT, data={"token": tokens["access_token"]}, headers=bearer(service_token)
    )
    as_user = await client.post(
        INTROSPECT, data={"token": tokens["access_token"]}, headers=bearer(tokens["access_token"])
    )
    forged = await client.post(
        INTROSPECT, data={"token": tokens["access_token"]}, headers=bearer(service_token + "x")
    )

    assert allowed.json()["active"] is True
    assert as_user.status_code == 403
    assert as_user.json()["error"] == "insufficient_scope"
    assert forged.status_code == 401
    assert forged.json()["error"] == "invalid_token"
    assert forged.headers["www-authenticate"].startswith("Bearer")


# --- the purge ---------------------------------------------------------------------------


async def test_the_purge_deletes_what_expired_in_batches_and_keeps_the_rest(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client, "ann@example.com")
    live = await sign_in(client)
    await revoke(client, live["access_token"])  # a denylist entry still needed
    now = utcnow()
    long_ago = now - timedelta(days=400)
    user_id = (await sql(client, "SELECT id FROM users WHERE email = 'ann@example.com'"))[0][0]
    # Years of traffic: sessions that ended by age or idleness, old revocations.
    for n in range(23):
        await sql(
            client,
            "INSERT INTO sessions (id, user_id, client_id, scope, refresh_seed, created_at,"
            " last_used_at, expires_at, idle_expires_at) VALUES (:id, :user, 'auth-service',"
            " 'account', :seed, :then, :then, :expires, :idle)",
            id=f"00000000-0000-4000-8000-{n:012d}",
            user=user_id,
            seed=bytes(32),
            then=long_ago,
            expires=now - timedelta(seconds=1) if n % 2 else now + timedelta(days=1),
            idle=now - timedelta(seconds=1) if not n % 2 else now + timedelta(days=1),
        )
        await sql(
            client,
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES (:jti, :then)",
            jti=f"old-{n}",
            then=long_ago,
        )
    # A refresh's answer kept in ann's live session, from before the reuse interval.
    await sql(
        client, "UPDATE sessions SET successor = :kept, refreshed_at = :then", kept=b"x", then=now
    )
    monkeypatch.setattr(jobs, "PURGE_BATCH", 5)

    sessionmaker = app_state(client).sessionmaker

    async def purge(now: datetime) -> tuple[int, int]:
        return (
            await sessions_repository.purge(sessionmaker, now=now, reuse_interval=10),
            await denylist.purge(sessionmaker, now=now),
        )

    assert await purge(now) == (23, 23)  # the sessions, the revocations
    assert await sql(client, "SELECT count(*) FROM sessions") == [(1,)]  # ann's live one
    assert await sql(client, "SELECT count(*) FROM revoked_access_tokens") == [(1,)]
    assert await sql(client, "SELECT successor FROM sessions") == [(b"x",)]  # still wanted
    later = now + timedelta(seconds=11)
    assert await purge(later) == (1, 0)  # the kept answer cleared
    assert await sql(client, "SELECT successor FROM sessions") == [(None,)]
    refreshed = await client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": live["refresh_token"]}
    )
    assert refreshed.status_code == 200
    me = await client.get("/users/me", headers=bearer(live["access_token"]))
    assert me.status_code == 401  # still revoked


async def test_every_worker_purges_in_the_background(make_client: ClientFactory) -> None:
    async with make_client() as first:
        await sql(
            first,
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ('old', :then)",
            then=utcnow() - timedelta(days=1),
        )
    async with make_client(purge_interval_seconds=1) as client:
        for _ in range(300):  # a wide bound for a busy machine: a working purge ends it at once
            if await sql(client, "SELECT count(*) FROM revoked_access_tokens") == [(0,)]:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the purge did not run within 30 s")
