"""Service clients: registration by an admin or the command line, client authentication
(RFC 6749 §2.3.1), the client credentials grant (§4.4), audiences (RFC 8707), and the
public login clients of AUTH_CLIENT_IDS as rows of the same table."""

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import anyio
import anyio.to_thread
import httpx
import jwt
import pytest

from auth_service.accounts import service as accounts
from auth_service.clients import repository as client_repository
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SECRET_KEY,
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    auth_headers,
    bearer,
    login,
    register,
    request_token,
    sql,
)

pytestmark = pytest.mark.anyio

TOKEN_URL = "/oauth2/token"
# A client through which an admin can sign in with the scope that repairs clients.
ADMIN_LOGIN: dict[str, Any] = {"grant_types": ["password"], "scopes": ["admin:clients"]}


async def new_client(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "orders", "scopes": ["orders:read", "orders:write"], **fields}
    response = await client.post("/admin/clients", json=body, headers=await admin_headers(client))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def basic_of(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return basic_of(f"{client_id}:{secret}")


async def client_token(
    client: httpx.AsyncClient, registered: dict[str, Any], **form: str
) -> httpx.Response:
    return await client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", **form},
        headers=basic(registered["client_id"], registered["client_secret"]),
    )


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


# --- registration ------------------------------------------------------------------------


async def test_a_new_confidential_client_gets_its_secret_once_and_only_its_digest_is_kept(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/admin/clients",
        json={"name": "orders", "scopes": ["orders:read"]},
        headers=await admin_headers(client),
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    secret = created["client_secret"]
    assert secret.startswith("ast_cs_")
    assert len(secret) >= 7 + 43
    assert created["is_confidential"] is True
    assert created["grant_types"] == ["client_credentials"]
    [(digest,)] = await sql(
        client, "SELECT secret_digest FROM clients WHERE secret_digest IS NOT NULL"
    )
    assert bytes(digest) == hashlib.sha256(secret.encode()).digest()
    listed = await client.get("/admin/clients", headers=await admin_headers(client))
    shown = await client.get(
        f"/admin/clients/{created['client_id']}", headers=await admin_headers(client)
    )
    assert secret not in listed.text
    assert secret not in shown.text
    assert "client_secret" not in shown.json()
    assert {c["client_id"] for c in listed.json()["data"]} == {"auth-service", created["client_id"]}


async def test_the_configured_public_clients_are_rows_created_at_start(
    make_client: ClientFactory,
) -> None:
    async with make_client(client_ids=["web", "mobile"]) as client:
        listed = await client.get("/admin/clients", headers=await admin_headers(client))

    found = {c["client_id"]: c for c in listed.json()["data"]}
    assert {"web", "mobile"} <= set(found)
    assert found["web"]["is_confidential"] is False
    assert found["web"]["grant_types"] == ["password", "refresh_token"]
    assert "admin:users" in found["web"]["scopes"]
    assert "introspect" not in found["web"]["scopes"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["two words"]},
        {"name": "x", "grant_types": ["implicit"]},
        {"name": "x", "grant_types": []},
        {"name": "x", "audiences": ["has space"]},
        {"name": "x", "confidential": "yes"},
        {"name": "x", "confidential": False, "grant_types": ["client_credentials"]},
        # No user signs in through it: a user's scopes could never be granted.
        {"name": "x", "scopes": ["orders:read", "admin:users"]},
        # No secret to act for itself with: introspect could never be used.
        {"name": "x", "confidential": False, "grant_types": ["password"], "scopes": ["introspect"]},
        {"name": "", "scopes": []},
        {"name": "x", "client_secret": "chosen"},
    ],
)
async def test_a_client_that_cannot_work_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/admin/clients", json=body, headers=await admin_headers(client))

    assert response.status_code == 422, response.text
    assert await sql(client, "SELECT client_id FROM clients") == [("auth-service",)]


def _scopes_joining_to(length: int) -> list[str]:
    """23 distinct scope-tokens whose space-joined list is `length` characters (2000 or so)."""
    scopes = [f"s{n:02d}:" + "x" * 82 for n in range(23)]  # 23 x 86 + 22 spaces = 2000
    scopes[-1] += "x" * (length - 2000)
    return scopes


async def test_a_scope_list_longer_than_a_session_can_hold_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    admin = await admin_headers(client)
    await new_client(client, name="admin-login", confidential=False, **ADMIN_LOGIN)
    fits = await client.patch(
        "/admin/clients/auth-service", json={"scopes": _scopes_joining_to(2000)}, headers=admin
    )
    signed_in = await request_token(client, "ann@example.com")

    too_long = [
        await client.patch(
            "/admin/clients/auth-service", json={"scopes": _scopes_joining_to(2001)}, headers=admin
        ),
        await client.post(
            "/admin/clients",
            json={"name": "wide", "scopes": _scopes_joining_to(2001)},
            headers=admin,
        ),
    ]

    assert fits.status_code == 200, fits.text
    assert signed_in.status_code == 200, signed_in.text
    assert len(signed_in.json()["scope"]) == 2000
    for response in too_long:
        assert response.status_code == 422, response.text
        assert "longer than 2000 characters" in response.json()["detail"]
    assert await sql(client, "SELECT count(*) FROM clients") == [(2,)]  # no "wide"
    [(stored,)] = await sql(client, "SELECT scopes FROM clients WHERE client_id = 'auth-service'")
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored == sorted(_scopes_joining_to(2000))


async def test_only_an_admin_with_the_clients_scope_manages_clients(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "plain@example.com")
    plain = await auth_headers(client, "plain@example.com")
    admin_without_scope = bearer(
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="account admin:users")
    )

    for headers in (plain, admin_without_scope):
        response = await client.post("/admin/clients", json={"name": "x"}, headers=headers)
        assert response.status_code == 403
        assert 'scope="admin:clients"' in response.headers["www-authenticate"]
    assert (await client.get("/admin/clients")).status_code == 401


async def test_unknown_clients_are_404_and_the_configured_one_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(client)

    assert (await client.get("/admin/clients/nope", headers=headers)).status_code == 404
    assert (await client.delete("/admin/clients/nope", headers=headers)).status_code == 404
    refused = await client.delete("/admin/clients/auth-service", headers=headers)
    assert refused.status_code == 409
    assert "AUTH_CLIENT_IDS" in refused.json()["detail"]
    public_secret = await client.post("/admin/clients/auth-service/secret", headers=headers)
    assert public_secret.status_code == 409


# --- client credentials ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_issue_a_token_for_the_client_itself(
    client: httpx.AsyncClient, method: str
) -> None:
    registered = await new_client(client)
    form = {"grant_type": "client_credentials", "scope": "orders:read"}
    headers = {}
    if method == "client_secret_basic":
        headers = basic(registered["client_id"], registered["client_secret"])
    else:
        form |= {"client_id": registered["client_id"], "client_secret": registered["client_secret"]}

    response = await client.post(TOKEN_URL, data=form, headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body  # RFC 6749 §4.4.3
    assert body["scope"] == "orders:read"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == claims["client_id"] == registered["client_id"]
    assert claims["aud"] == "http://testserver"
    assert "sid" not in claims
    assert "roles" not in claims
    assert await sql(client, "SELECT client_id FROM sessions") == [("auth-service",)]  # admin


async def test_nothing_requested_grants_every_scope_of_the_client(
    client: httpx.AsyncClient,
) -> None:
    registered = await new_client(client)

    response = await client_token(client, registered)

    assert response.json()["scope"] == "orders:read orders:write"


@pytest.mark.parametrize("scope", ["orders:delete", "account", "orders:read admin:users"])
async def test_a_scope_outside_the_clients_own_is_invalid_scope(
    client: httpx.AsyncClient, scope: str
) -> None:
    registered = await new_client(client, scopes=["orders:read"])

    assert_oauth_error(await client_token(client, registered, scope=scope), 400, "invalid_scope")


async def test_a_wrong_or_missing_secret_is_invalid_client_with_a_basic_challenge(
    client: httpx.AsyncClient,
) -> None:
    registered = await new_client(client)
    wrong = {**registered, "client_secret": registered["client_secret"][:-1] + "x"}
    unknown = {**registered, "client_id": "svc_unknown"}

    for presented in (wrong, unknown):
        response = await client_token(client, presented)
        assert_oauth_error(response, 401, "invalid_client")
        assert response.headers["www-authenticate"].startswith("Basic")
    no_secret = await client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": registered["client_id"]},
    )
    assert_oauth_error(no_secret, 401, "invalid_client")


# No client could have these ids (RFC 6749 Appendix A.1: VSCHAR), and PostgreSQL refuses NUL
# in text: refused before any lookup, at each endpoint that authenticates clients.
@pytest.mark.parametrize("client_id", ["svc\x00x", "svc\x1bx", "svc\u00e9", "s" * 256])
@pytest.mark.parametrize(
    ("path", "form"),
    [
        (TOKEN_URL, {"grant_type": "client_credentials"}),
        ("/oauth2/revoke", {"token": "ast_rt_unknown"}),
        ("/oauth2/introspect", {"token": "a.b.c"}),
    ],
)
@pytest.mark.parametrize("where", ["form", "basic"])
async def test_a_client_id_no_client_could_have_is_invalid_client(
    client: httpx.AsyncClient, client_id: str, path: str, form: dict[str, str], where: str
) -> None:
    credentials = {"client_id": client_id, "client_secret": "ast_cs_whatever"}
    if where == "form":
        response = await client.post(path, data={**form, **credentials})
    else:
        encoded = f"{quote_plus(client_id)}:ast_cs_whatever"
        response = await client.post(path, data=form, headers=basic_of(encoded))

    assert_oauth_error(response, 401, "invalid_client")


async def test_basic_credentials_must_name_their_client(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)

    # RFC 6749 §2.3.1: the id is Basic's user-id; one from the form would mix two methods.
    response = await client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": registered["client_id"]},
        headers=basic_of(":" + registered["client_secret"]),
    )

    assert_oauth_error(response, 401, "invalid_client")


async def test_a_public_client_cannot_use_client_credentials(client: httpx.AsyncClient) -> None:
    named = await client.post(
        TOKEN_URL, data={"grant_type": "client_credentials", "client_id": "auth-service"}
    )
    unnamed = await client.post(TOKEN_URL, data={"grant_type": "client_credentials"})
    # Even one whose grant list an admin widened: RFC 6749 §4.4 is for confidential clients.
    await sql(
        client,
        "UPDATE clients SET grant_types = :g WHERE client_id = 'auth-service'",
        g='["client_credentials", "password", "refresh_token"]',
    )
    widened = await client.post(
        TOKEN_URL, data={"grant_type": "client_credentials", "client_id": "auth-service"}
    )

    for response in (named, unnamed, widened):
        assert_oauth_error(response, 400, "unauthorized_client")


async def test_a_client_may_use_only_its_own_grant_types(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    registered = await new_client(client)

    response = await client.post(
        TOKEN_URL,
        data={"grant_type": "password", "username": "ann@example.com", "password": "x"},
        headers=basic(registered["client_id"], registered["client_secret"]),
    )

    assert_oauth_error(response, 400, "unauthorized_client")


async def test_a_rotated_secret_replaces_the_old_one_at_once(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)

    rotated = await client.post(
        f"/admin/clients/{registered['client_id']}/secret", headers=await admin_headers(client)
    )

    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    assert_oauth_error(await client_token(client, registered), 401, "invalid_client")
    assert rotated.json()["previous_secret_expires_at"] is None
    renewed = {**registered, "client_secret": rotated.json()["client_secret"]}
    assert (await client_token(client, renewed)).status_code == 200


async def rotate(
    client: httpx.AsyncClient, registered: dict[str, Any], **body: Any
) -> dict[str, Any]:
    """Rotate the client's secret (with `body`, if any); `registered` with the new one."""
    rotated = await client.post(
        f"/admin/clients/{registered['client_id']}/secret",
        json=body or None,
        headers=await admin_headers(client),
    )
    assert rotated.status_code == 200, rotated.text
    answer: dict[str, Any] = rotated.json()
    return {**registered, **answer}


async def test_a_grace_period_keeps_the_replaced_secret_working_until_it_ends(
    client: httpx.AsyncClient,
) -> None:
    first = await new_client(client, scopes=["introspect", "orders:read"])
    before = datetime.now(UTC)

    second = await rotate(client, first, grace_seconds=3600)

    ends = datetime.fromisoformat(second["previous_secret_expires_at"])
    assert before + timedelta(seconds=3600) <= ends <= datetime.now(UTC) + timedelta(seconds=3600)
    shown = await client.get(
        f"/admin/clients/{first['client_id']}", headers=await admin_headers(client)
    )
    assert datetime.fromisoformat(shown.json()["previous_secret_expires_at"]) == ends
    # Both secrets work meanwhile, at the token endpoint and as introspection's caller.
    for registered in (first, second):
        issued = await client_token(client, registered)
        assert issued.status_code == 200, issued.text
        introspected = await client.post(
            "/oauth2/introspect",
            data={"token": issued.json()["access_token"]},
            headers=basic(registered["client_id"], registered["client_secret"]),
        )
        assert introspected.status_code == 200, introspected.text
        assert introspected.json()["active"] is True

    await sql(
        client,
        "UPDATE clients SET previous_secret_expires_at = :ended",
        ended=datetime.now(UTC) - timedelta(seconds=1),
    )

    assert_oauth_error(await client_token(client, first), 401, "invalid_client")
    assert (await client_token(client, second)).status_code == 200


async def test_a_grace_period_is_a_json_integer_and_60_0_is_one(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)

    rotated = await rotate(client, registered, grace_seconds=60.0)

    assert rotated["previous_secret_expires_at"] is not None
    assert (await client_token(client, registered)).status_code == 200


async def test_a_rotation_ends_any_earlier_secret_at_once(client: httpx.AsyncClient) -> None:
    first = await new_client(client)
    second = await rotate(client, first, grace_seconds=3600)

    third = await rotate(client, second, grace_seconds=3600)  # the second is the one kept
    fourth = await rotate(client, third)  # no grace: an emergency, after a leak

    assert third["previous_secret_expires_at"] is not None
    assert fourth["previous_secret_expires_at"] is None
    for replaced in (first, second, third):
        assert_oauth_error(await client_token(client, replaced), 401, "invalid_client")
    assert (await client_token(client, fourth)).status_code == 200
    assert await sql(client, "SELECT previous_secret_digest FROM clients") == [(None,)] * 2


async def introspected(
    client: httpx.AsyncClient, token: str, caller: dict[str, Any]
) -> dict[str, Any]:
    """What introspection answers `caller` (a registered client) about `token`."""
    response = await client.post(
        "/oauth2/introspect",
        data={"token": token},
        headers=basic(caller["client_id"], caller["client_secret"]),
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_rotation_after_a_leak_refuses_the_clients_tokens_and_a_planned_one_keeps_them(
    client: httpx.AsyncClient,
) -> None:
    gateway = await new_client(client, name="gateway", scopes=["introspect"])
    leaky = await new_client(client)
    before = (await client_token(client, leaky)).json()["access_token"]

    planned = await rotate(client, leaky, grace_seconds=60)
    kept = await introspected(client, before, gateway)
    during = (await client_token(client, planned)).json()["access_token"]
    await rotate(client, planned)  # no grace: the secret leaked

    assert kept["active"] is True
    assert await introspected(client, before, gateway) == {"active": False}
    assert await introspected(client, during, gateway) == {"active": False}


async def test_a_deactivated_clients_tokens_stay_refused_when_it_comes_back(
    client: httpx.AsyncClient,
) -> None:
    gateway = await new_client(client, name="gateway", scopes=["introspect"])
    registered = await new_client(client)
    stolen = (await client_token(client, registered)).json()["access_token"]
    path, admin = f"/admin/clients/{registered['client_id']}", await admin_headers(client)

    for active in (False, True):
        patched = await client.patch(path, json={"is_active": active}, headers=admin)
        assert patched.status_code == 200, patched.text

    assert await introspected(client, stolen, gateway) == {"active": False}
    fresh = (await client_token(client, registered)).json()["access_token"]
    assert (await introspected(client, fresh, gateway))["active"] is True


async def test_a_scope_taken_from_a_client_is_refused_to_its_tokens_at_once(
    client: httpx.AsyncClient,
) -> None:
    gateway = await new_client(client, name="gateway", scopes=["introspect"])
    registered = await new_client(client, scopes=["introspect", "orders:read"])
    token = (await client_token(client, registered)).json()["access_token"]

    patched = await client.patch(
        f"/admin/clients/{registered['client_id']}",
        json={"scopes": ["orders:read"]},
        headers=await admin_headers(client),
    )

    assert patched.status_code == 200, patched.text
    assert (await introspected(client, token, gateway))["scope"] == "orders:read"
    # Its token no longer lets it introspect, as its secret no longer does.
    by_token = await client.post("/oauth2/introspect", data={"token": token}, headers=bearer(token))
    assert by_token.status_code == 403
    assert 'scope="introspect"' in by_token.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"audiences": []}, {"orders-api"}),
        ({"audiences": ["billing-api"]}, {"orders-api"}),
        ({"grant_types": ["password"]}, {"default", "orders-api"}),
    ],
)
async def test_a_grant_or_audience_taken_from_a_client_is_refused_to_its_tokens_at_once(
    client: httpx.AsyncClient, change: dict[str, Any], refused: set[str]
) -> None:
    gateway = await new_client(client, name="gateway", scopes=["introspect"])
    registered = await new_client(client, scopes=["introspect"], audiences=["orders-api"])
    issued = {
        "default": (await client_token(client, registered)).json()["access_token"],
        "orders-api": (await client_token(client, registered, audience="orders-api")).json()[
            "access_token"
        ],
    }
    assert all([(await introspected(client, t, gateway))["active"] for t in issued.values()])

    patched = await client.patch(
        f"/admin/clients/{registered['client_id']}",
        json=change,
        headers=await admin_headers(client),
    )

    assert patched.status_code == 200, patched.text
    active = {
        name for name, t in issued.items() if (await introspected(client, t, gateway))["active"]
    }
    assert active == set(issued) - refused
    # Nor does a refused token let it introspect: the guards judge it alike.
    by_token = await client.post(
        "/oauth2/introspect", data={"token": "x"}, headers=bearer(issued["default"])
    )
    assert by_token.status_code == (401 if "default" in refused else 200), by_token.text


@pytest.mark.parametrize(
    "body",
    [
        {"grace_seconds": -1},
        {"grace_seconds": 30 * 24 * 3600 + 1},
        {"grace_seconds": "an hour"},
        {"grace_seconds": 1.5},
        {"grace_seconds": "60"},
        {"grace_seconds": True},
        {"grace_seconds": 1e20},
        {"grace_seconds": 60, "keep": True},
        ["grace_seconds"],
    ],
)
async def test_a_bad_grace_period_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, body: Any
) -> None:
    registered = await new_client(client)

    refused = await client.post(
        f"/admin/clients/{registered['client_id']}/secret",
        json=body,
        headers=await admin_headers(client),
    )

    assert refused.status_code == 422, refused.text
    assert "client_secret" not in refused.text
    assert (await client_token(client, registered)).status_code == 200


async def test_a_deactivated_client_gets_no_tokens(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)

    patched = await client.patch(
        f"/admin/clients/{registered['client_id']}",
        json={"is_active": False},
        headers=await admin_headers(client),
    )

    assert patched.status_code == 200
    assert patched.json()["is_active"] is False
    assert_oauth_error(await client_token(client, registered), 401, "invalid_client")


async def test_deleting_a_login_client_ends_the_sessions_signed_in_through_it(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    mobile = await new_client(
        client, name="mobile", confidential=False, grant_types=["password", "refresh_token"]
    )
    assert mobile["client_secret"] is None
    form = {"username": "ann@example.com", "password": "correct horse battery staple"}
    on_mobile = await client.post(
        TOKEN_URL, data={"grant_type": "password", "client_id": mobile["client_id"], **form}
    )
    on_web = await request_token(client, "ann@example.com")  # the default client

    deleted = await client.delete(
        f"/admin/clients/{mobile['client_id']}", headers=await admin_headers(client)
    )

    assert deleted.status_code == 204, deleted.text
    me = await client.get("/users/me", headers=bearer(on_mobile.json()["access_token"]))
    assert me.status_code == 401
    web = await client.get("/users/me", headers=bearer(on_web.json()["access_token"]))
    assert web.status_code == 200
    assert {row[0] for row in await sql(client, "SELECT client_id FROM sessions")} == {
        "auth-service"
    }


@pytest.mark.parametrize("change", ["deactivate", "delete"])
async def test_a_login_client_removed_during_a_sign_in_leaves_no_session(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    await register(client, "bob@example.com")
    web = await new_client(
        client,
        name="web",
        confidential=False,
        scopes=["openid", "account"],
        grant_types=["password", "refresh_token"],
    )
    path, admin = f"/admin/clients/{web['client_id']}", await admin_headers(client)
    check_password = accounts.authenticate

    async def removed_meanwhile(**arguments: Any) -> Any:
        # The client was read; while the password is checked, an admin removes it.
        if change == "delete":
            assert (await client.delete(path, headers=admin)).status_code == 204
        else:
            patched = await client.patch(path, json={"is_active": False}, headers=admin)
            assert patched.status_code == 200
        return await check_password(**arguments)

    monkeypatch.setattr(accounts, "authenticate", removed_meanwhile)
    form = {"grant_type": "password", "username": "bob@example.com", "password": STRONG_PASSWORD}
    signed_in = await client.post(TOKEN_URL, data={**form, "client_id": web["client_id"]})

    assert_oauth_error(signed_in, 401, "invalid_client")
    left = await sql(client, "SELECT id FROM sessions WHERE client_id = :c", c=web["client_id"])
    assert left == []


async def test_a_login_client_may_hand_out_service_scopes_to_users(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    await client.patch(
        "/admin/clients/auth-service",
        json={"scopes": ["openid", "account", "admin:clients", "orders:read"]},
        headers=await admin_headers(client),
    )

    token = await request_token(client, "ann@example.com", scope="orders:read account")
    refused = await request_token(client, "ann@example.com", scope="email")

    assert token.json()["scope"] == "account orders:read"
    assert_oauth_error(refused, 400, "invalid_scope")


# --- what a client may list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "change", "refused"),
    [
        ("backend", {"grant_types": ["client_credentials"]}, "can never be granted account"),
        ("auth-service", {"scopes": ["introspect", "openid"]}, "can never be granted introspect"),
    ],
)
async def test_a_change_to_scopes_a_client_can_never_be_granted_is_refused(
    client: httpx.AsyncClient, target: str, change: dict[str, list[str]], refused: str
) -> None:
    backend = await new_client(
        client, scopes=["account", "orders:read"], grant_types=["password", "refresh_token"]
    )
    admin = await admin_headers(client)
    path = f"/admin/clients/{backend['client_id'] if target == 'backend' else target}"
    before = (await client.get(path, headers=admin)).json()

    response = await client.patch(path, json=change, headers=admin)

    assert response.status_code == 422, response.text
    assert refused in response.json()["detail"]
    assert (await client.get(path, headers=admin)).json() == before


# --- the client an admin signs in through ------------------------------------------------

LAST_ADMIN_CLIENT = (
    "no active client through which an admin can sign in with the scope admin:clients"
)


@pytest.mark.parametrize(
    "change",
    [
        {"scopes": ["openid", "reports:read"]},
        {"grant_types": ["refresh_token"]},
        {"is_active": False},
    ],
)
async def test_a_change_that_leaves_no_client_for_admins_to_sign_in_is_refused(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    admin = await admin_headers(client)
    path = "/admin/clients/auth-service"
    before = (await client.get(path, headers=admin)).json()

    refused = await client.patch(path, json=change, headers=admin)

    assert refused.status_code == 409, refused.text
    assert LAST_ADMIN_CLIENT in refused.json()["detail"]
    assert (await client.get(path, headers=admin)).json() == before
    signed_in = await request_token(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:clients")
    assert signed_in.status_code == 200, signed_in.text


async def test_the_last_client_for_admins_to_sign_in_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    web = await new_client(client, name="web", confidential=False, **ADMIN_LOGIN)
    admin = await admin_headers(client)
    await client.patch("/admin/clients/auth-service", json={"scopes": ["openid"]}, headers=admin)
    admin = await _admin_through(client, web["client_id"])

    refused = await client.delete(f"/admin/clients/{web['client_id']}", headers=admin)

    assert refused.status_code == 409, refused.text
    assert LAST_ADMIN_CLIENT in refused.json()["detail"]
    assert (
        await client.get(f"/admin/clients/{web['client_id']}", headers=admin)
    ).status_code == 200


async def test_with_another_client_for_admins_a_login_client_may_drop_the_admin_scopes(
    client: httpx.AsyncClient,
) -> None:
    web = await new_client(client, name="web", confidential=False, **ADMIN_LOGIN)
    admin = await _admin_through(client, web["client_id"])

    patched = await client.patch(
        "/admin/clients/auth-service", json={"scopes": ["openid", "reports:read"]}, headers=admin
    )

    assert patched.status_code == 200, patched.text
    assert patched.json()["scopes"] == ["openid", "reports:read"]


async def test_two_admins_taking_the_admin_scope_from_two_clients_at_once_leave_one(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = await new_client(client, name="web", confidential=False, **ADMIN_LOGIN)
    # The admins' tokens come through a third client that signs no one in any more, so
    # neither change can make the other's token lose its scope: only the rule decides.
    console = await new_client(client, name="console", confidential=False, **ADMIN_LOGIN)
    first = await _admin_through(client, console["client_id"])
    second = await _admin_through(client, console["client_id"])
    to_refresh_only = {"grant_types": ["refresh_token"]}
    path = f"/admin/clients/{console['client_id']}"
    assert (await client.patch(path, json=to_refresh_only, headers=first)).status_code == 200

    # Both changes reach the rule's lock before either goes on: a race every time.
    arrived, both_arrived = 0, anyio.Event()
    lock = client_repository.lock_admin_sign_in_clients

    async def together(db: Any, **kwargs: str) -> list[str]:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_arrived.set()
        await both_arrived.wait()
        return await lock(db, **kwargs)

    monkeypatch.setattr(client_repository, "lock_admin_sign_in_clients", together)

    def drop(client_id: str, headers: dict[str, str]) -> Awaitable[httpx.Response]:
        body = {"scopes": ["openid"]}
        return client.patch(f"/admin/clients/{client_id}", json=body, headers=headers)

    results = await asyncio.gather(drop("auth-service", first), drop(web["client_id"], second))

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409], [r.text for r in results]
    rows = await sql(client, "SELECT grant_types, scopes FROM clients")
    lists = [[json.loads(v) if isinstance(v, str) else v for v in row] for row in rows]
    assert len([s for g, s in lists if "password" in g and "admin:clients" in s]) == 1


async def _admin_through(client: httpx.AsyncClient, client_id: str) -> dict[str, str]:
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    response = await client.post(TOKEN_URL, data={**form, "client_id": client_id})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


# --- audiences (RFC 8707) ----------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["audience", "resource"])
async def test_a_token_may_be_for_an_audience_the_client_is_allowed(
    client: httpx.AsyncClient, parameter: str
) -> None:
    registered = await new_client(client, audiences=["https://orders.example.com"])

    allowed = await client_token(client, registered, **{parameter: "https://orders.example.com"})
    other = await client_token(client, registered, **{parameter: "https://billing.example.com"})

    assert claims_of(allowed.json()["access_token"])["aud"] == "https://orders.example.com"
    assert_oauth_error(other, 400, "invalid_target")


async def test_audience_and_resource_must_agree(client: httpx.AsyncClient) -> None:
    registered = await new_client(client, audiences=["a", "b"])

    response = await client_token(client, registered, audience="a", resource="b")

    assert_oauth_error(response, 400, "invalid_request")


async def test_a_users_session_keeps_the_audience_it_signed_in_for(
    make_client: ClientFactory,
) -> None:
    async with make_client(allowed_audiences=["orders-api"]) as client:
        await register(client, "ann@example.com")
        signed_in = await client.post(
            TOKEN_URL,
            data={
                "grant_type": "password",
                "username": "ann@example.com",
                "password": "correct horse battery staple",
                "audience": "orders-api",
            },
        )
        refreshed = await client.post(
            TOKEN_URL,
            data={
                "grant_type": "refresh_token",
                "refresh_token": signed_in.json()["refresh_token"],
            },
        )
        elsewhere = await client.post(
            TOKEN_URL,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refreshed.json()["refresh_token"],
                "resource": "http://testserver",
            },
        )
        # A token for the orders API is not one for this service.
        me = await client.get("/users/me", headers=bearer(signed_in.json()["access_token"]))

    assert claims_of(signed_in.json()["access_token"])["aud"] == "orders-api"
    assert claims_of(refreshed.json()["access_token"])["aud"] == "orders-api"
    assert_oauth_error(elsewhere, 400, "invalid_target")
    assert me.status_code == 401


async def test_a_session_loses_an_audience_its_client_no_longer_has(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "amy@example.com")
    admin, path = await admin_headers(client), "/admin/clients/auth-service"
    await client.patch(path, json={"audiences": ["orders-api"]}, headers=admin)
    form = {"grant_type": "password", "username": "amy@example.com", "password": STRONG_PASSWORD}
    signed_in = await client.post(TOKEN_URL, data={**form, "audience": "orders-api"})
    assert signed_in.status_code == 200, signed_in.text

    await client.patch(path, json={"audiences": []}, headers=admin)
    refreshed = await client.post(
        TOKEN_URL,
        data={"grant_type": "refresh_token", "refresh_token": signed_in.json()["refresh_token"]},
    )

    assert_oauth_error(refreshed, 400, "invalid_target")
    # Refused: nothing changed, the token may be presented again.
    spent = "SELECT s.refresh_generation FROM sessions s JOIN users u ON u.id = s.user_id"
    assert await sql(client, f"{spent} WHERE u.email = 'amy@example.com'") == [(0,)]


async def test_an_audience_nobody_allowed_is_refused_before_the_password_is_checked(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")

    response = await client.post(
        TOKEN_URL,
        data={
            "grant_type": "password",
            "username": "ann@example.com",
            "password": "wrong",
            "audience": "orders-api",
        },
    )

    assert_oauth_error(response, 400, "invalid_target")


# --- the command line --------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
async def test_create_client_prints_the_secret_once_and_it_works(
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
) -> None:
    from auth_service import cli

    monkeypatch.setenv("AUTH_DATABASE_URL", database)
    monkeypatch.setenv("AUTH_SECRET_KEY", SECRET_KEY)
    argv = ["create-client", "--name", "billing", "--scope", "billing:read"]

    code = await anyio.to_thread.run_sync(lambda: cli.main(argv))

    assert code == 0
    printed = dict(
        line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line
    )
    async with make_client() as client:
        registered = {"client_id": printed["client_id"], "client_secret": printed["client_secret"]}
        response = await client_token(client, registered)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "billing:read"


@pytest.mark.usefixtures("restore_logging")
def test_create_client_refuses_bad_input_in_one_line(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from auth_service import cli

    monkeypatch.setenv("AUTH_DATABASE_URL", database)
    monkeypatch.setenv("AUTH_SECRET_KEY", SECRET_KEY)

    public_service = cli.main(
        ["create-client", "--name", "x", "--public", "--grant-type", "client_credentials"]
    )
    bad_scope = cli.main(["create-client", "--name", "x", "--scope", 'say "hi"'])
    too_many = [arg for scope in _scopes_joining_to(2001) for arg in ("--scope", scope)]
    too_long = cli.main(["create-client", "--name", "x", *too_many])
    for_users = cli.main(["create-client", "--name", "x", "--scope", "admin:users"])
    public_introspect = cli.main(
        ["create-client", "--name", "x", "--public", "--grant-type", "password"]
        + ["--scope", "introspect"]
    )

    assert (public_service, bad_scope, too_long, for_users, public_introspect) == (1,) * 5
    errors = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "Traceback" in line or not line.startswith("{")
    ]
    assert len(errors) == 5
    assert all(line.startswith("auth-service: ") for line in errors)
    assert "longer than 2000 characters" in errors[2]
    assert "can never be granted admin:users" in errors[3]
    assert "can never be granted introspect" in errors[4]


async def test_token_requests_are_counted_by_grant_type(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)
    await client_token(client, registered)
    await client_token(client, {**registered, "client_secret": "wrong"})

    metrics = (await client.get("/metrics")).text

    assert (
        'auth_token_requests_total{grant_type="client_credentials",outcome="success"} 1.0'
        in metrics
    )
    assert (
        'auth_token_requests_total{grant_type="client_credentials",outcome="invalid_client"} 1.0'
        in metrics
    )
    assert 'auth_logins_total{outcome="success"} 1.0' in metrics  # the admin's, not the client's


def test_the_grant_types_a_client_may_have_are_those_the_token_endpoint_serves() -> None:
    from typing import get_args

    from auth_service.clients.schemas import GrantType
    from auth_service.oauth.server import token_endpoint

    assert set(get_args(GrantType)) == set(token_endpoint.grant_types)


async def test_a_clients_own_token_acts_for_no_user(client: httpx.AsyncClient) -> None:
    registered = await new_client(client)
    token = (await client_token(client, registered)).json()["access_token"]

    for path in ("/users/me", "/userinfo", "/users/me/sessions"):
        response = await client.get(path, headers=bearer(token))
        assert response.status_code == 403, (path, response.text)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
