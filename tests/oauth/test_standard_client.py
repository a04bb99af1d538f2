"""A standard OAuth 2.0 client library (Authlib's `AsyncOAuth2Client`) against every grant
and endpoint, with no special handling: what a team's own client code would do."""

import warnings
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and says so on import, through an "always"
    # filter its `deprecate` module installs; its httpx client works. Ours goes in front.
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.helpers.app import STRONG_PASSWORD, admin_headers, app_of, bearer, register

pytestmark = pytest.mark.anyio

BASE = "http://testserver"
TOKEN_URL, REVOKE_URL, INTROSPECT_URL = (
    f"{BASE}/oauth2/token",
    f"{BASE}/oauth2/revoke",
    f"{BASE}/oauth2/introspect",
)


def oauth_client(client: httpx.AsyncClient, **options: Any) -> AsyncOAuth2Client:
    """Authlib's client, talking to the app `client` calls."""
    return AsyncOAuth2Client(transport=httpx.ASGITransport(app=app_of(client)), **options)


@pytest.fixture
async def service(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/admin/clients",
        json={"name": "orders", "scopes": ["introspect", "orders:read"]},
        headers=await admin_headers(client),
    )
    assert response.status_code == 201, response.text
    registered: dict[str, Any] = response.json()
    return registered


async def test_a_login_form_signs_in_refreshes_and_revokes(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    async with oauth_client(
        client, client_id="auth-service", token_endpoint_auth_method="none"
    ) as login_form:
        token = await login_form.fetch_token(
            TOKEN_URL, username="ann@example.com", password=STRONG_PASSWORD, scope="account"
        )
        refreshed = await login_form.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
        me = await login_form.get(f"{BASE}/users/me")  # Authlib sends the refreshed token
        revoked = await login_form.revoke_token(
            REVOKE_URL, token=refreshed["refresh_token"], token_type_hint="refresh_token"
        )

    assert token["token_type"] == "Bearer"
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert me.status_code == 200
    assert me.json()["email"] == "ann@example.com"
    assert revoked.status_code == 200
    after = await client.get("/users/me", headers=bearer(refreshed["access_token"]))
    assert after.status_code == 401  # its session ended with the refresh token


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_a_service_gets_tokens_introspects_and_revokes(
    client: httpx.AsyncClient, service: dict[str, Any], method: str
) -> None:
    await register(client, "ann@example.com")
    async with oauth_client(
        client, client_id="auth-service", token_endpoint_auth_method="none"
    ) as login_form:
        user_token = await login_form.fetch_token(
            TOKEN_URL, username="ann@example.com", password=STRONG_PASSWORD
        )

    async with oauth_client(
        client,
        client_id=service["client_id"],
        client_secret=service["client_secret"],
        token_endpoint_auth_method=method,
    ) as backend:
        own = await backend.fetch_token(
            TOKEN_URL, grant_type="client_credentials", scope="orders:read"
        )
        introspected = await backend.introspect_token(
            INTROSPECT_URL, token=user_token["access_token"]
        )
        revoked = await backend.revoke_token(REVOKE_URL, token=own["access_token"])
        after = await backend.introspect_token(INTROSPECT_URL, token=own["access_token"])

    assert own["scope"] == "orders:read"
    assert "refresh_token" not in own
    assert introspected.json()["active"] is True
    # The user's token is for this service, not for the backend: no email for it.
    assert introspected.json()["client_id"] == "auth-service"
    assert "username" not in introspected.json()
    assert revoked.status_code == 200
    assert after.json() == {"active": False}
