"""Discovery metadata: RFC 8414 and OpenID Connect Discovery 1.0."""

import re

import httpx
import pytest

from auth_service.oauth.discovery import WellKnownFastPath
from tests.helpers.app import ClientFactory, app_of

pytestmark = pytest.mark.anyio


def _same(one: object, other: object) -> bool:
    """Identity between a middleware entry's factory and a class, whatever their declared types."""
    return one is other


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
    assert metadata["revocation_endpoint"] == "http://testserver/oauth2/revoke"
    assert metadata["introspection_endpoint"] == "http://testserver/oauth2/introspect"
    assert metadata["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert metadata["grant_types_supported"] == [
        "password",
        "refresh_token",
        "client_credentials",
    ]
    assert set(metadata["scopes_supported"]) == {
        "openid",
        "profile",
        "email",
        "account",
        "admin:users",
        "admin:roles",
        "admin:clients",
        "introspect",
        "admin:keys",
    }
    assert metadata["token_endpoint_auth_methods_supported"] == [
        "none",
        "client_secret_basic",
        "client_secret_post",
    ]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_metadata_follows_the_configured_issuer_and_algorithm(
    make_client: ClientFactory,
) -> None:
    async with make_client(issuer="https://id.example.com/", signing_alg="ES256") as client:
        metadata = (await client.get("/.well-known/openid-configuration")).json()

    assert metadata["issuer"] == "https://id.example.com"
    assert metadata["jwks_uri"] == "https://id.example.com/.well-known/jwks.json"
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256"]


DOCUMENTS = [
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/.well-known/jwks.json",
]


@pytest.mark.parametrize("path", DOCUMENTS)
async def test_documents_carry_an_etag_and_answer_304_to_it(
    client: httpx.AsyncClient, path: str
) -> None:
    first = await client.get(path)
    etag = first.headers["etag"]

    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "public, max-age=300"
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag), etag
    assert (await client.get(path)).content == first.content  # the same bytes every time
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(path, headers={"If-None-Match": sent})
        assert again.status_code == 304, sent
        assert again.content == b""
        assert again.headers["etag"] == etag
    changed = await client.get(path, headers={"If-None-Match": '"not-this-one"'})
    assert changed.status_code == 200
    assert changed.content == first.content


async def test_each_key_set_and_each_configuration_has_its_own_etag(
    make_client: ClientFactory,
) -> None:
    async with make_client(signing_alg="RS256") as rsa, make_client(signing_alg="ES256") as ec:
        rsa_jwks, ec_jwks = await rsa.get(DOCUMENTS[2]), await ec.get(DOCUMENTS[2])
        rsa_meta, ec_meta = await rsa.get(DOCUMENTS[0]), await ec.get(DOCUMENTS[0])

    assert rsa_jwks.json() != ec_jwks.json()
    assert rsa_jwks.headers["etag"] != ec_jwks.headers["etag"]
    assert rsa_meta.headers["etag"] != ec_meta.headers["etag"]


@pytest.mark.parametrize("path", DOCUMENTS)
async def test_the_fast_path_answers_exactly_what_the_route_answers(
    client: httpx.AsyncClient, path: str
) -> None:
    etag = (await client.get(path)).headers["etag"]
    sent: list[dict[str, str]] = [{}] + [
        {"If-None-Match": tag} for tag in (etag, f"W/{etag}", '"not-this', "*")
    ]

    async def answers() -> list[tuple[int, dict[str, str], bytes]]:
        found = []
        for headers in sent:
            response = await client.get(path, headers=headers)
            response.headers.pop("x-request-id")
            found.append((response.status_code, dict(response.headers), response.content))
        return found

    fast = await answers()
    metrics = (await client.get("/metrics")).text
    app = app_of(client)
    routes = list(app.router.routes)
    app.router.routes[:] = [route for route in routes if getattr(route, "path", "") != path]
    assert await answers() == fast  # answered before routing
    app.router.routes[:] = routes
    app.user_middleware = [m for m in app.user_middleware if not _same(m.cls, WellKnownFastPath)]
    app.middleware_stack = None  # rebuilt, without it, on the next request

    assert await answers() == fast
    assert f'method="GET",route="{path}",status="200"' in metrics
    assert f'method="GET",route="{path}",status="304"' in metrics


async def test_what_the_fast_path_does_not_answer_goes_to_the_routes(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/.well-known/jwks.json/")).status_code == 404
    refused = await client.post("/.well-known/jwks.json")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
    assert (await client.get("/.well-known/jwks.json?x=1")).status_code == 200
