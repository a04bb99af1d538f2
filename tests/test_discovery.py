"""Discovery metadata: RFC 8414 and OpenID Connect Discovery 1.0."""

import httpx
import pytest

from tests.conftest import ClientFactory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
async def test_metadata_names_our_endpoints_grants_and_algorithms(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == "http://testserver"
    assert metadata["token_endpoint"] == "http://testserver/oauth2/token"
    assert metadata["jwks_uri"] == "http://testserver/.well-known/jwks.json"
    assert metadata["userinfo_endpoint"] == "http://testserver/userinfo"
    assert metadata["grant_types_supported"] == ["password"]
    assert set(metadata["scopes_supported"]) == {
        "openid",
        "profile",
        "email",
        "account",
        "admin:users",
    }
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_metadata_follows_the_configured_issuer_and_algorithm(
    make_client: ClientFactory,
) -> None:
    async with make_client(issuer="https://id.example.com/", signing_alg="ES256") as client:
        metadata = (await client.get("/.well-known/openid-configuration")).json()

    assert metadata["issuer"] == "https://id.example.com"
    assert metadata["jwks_uri"] == "https://id.example.com/.well-known/jwks.json"
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256"]
