"""The admin's view: Swagger UI and ReDoc that work offline, and an OpenAPI document whose
OAuth2 password flow lets "Authorize" in Swagger UI sign in against this service."""

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ClientFactory,
    bearer,
)

pytestmark = pytest.mark.anyio

ASSETS = "/docs-assets/"
# What a user may hold (introspect is for service clients only).
SCOPES = {
    "openid",
    "profile",
    "email",
    "account",
    "admin:users",
    "admin:roles",
    "admin:clients",
    "admin:keys",
}
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Links(HTMLParser):
    """Every URL a page makes the browser load or follow: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def _links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


async def _assert_offline_page(client: httpx.AsyncClient, path: str, *needed: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "cdn" not in page.lower()
    assert "http://" not in page
    assert "https://" not in page
    urls = _links(page)
    for name in needed:
        assert ASSETS + name in urls, (name, urls)
    for url in urls:
        assert url.startswith(ASSETS), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
        expected = CONTENT_TYPES[Path(url).suffix]
        assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])


async def test_swagger_ui_loads_every_asset_from_the_service(client: httpx.AsyncClient) -> None:
    await _assert_offline_page(
        client, "/docs", "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"
    )


async def test_redoc_loads_every_asset_from_the_service(client: httpx.AsyncClient) -> None:
    await _assert_offline_page(client, "/redoc", "redoc.standalone.js")


async def test_the_bundled_scripts_are_the_real_libraries(client: httpx.AsyncClient) -> None:
    swagger = await client.get(ASSETS + "swagger-ui-bundle.js")
    redoc = await client.get(ASSETS + "redoc.standalone.js")

    assert len(swagger.content) > 500_000
    assert "SwaggerUIBundle" in swagger.text
    assert len(redoc.content) > 500_000
    assert "Redoc" in redoc.text


async def test_docs_pages_read_this_services_openapi_document(client: httpx.AsyncClient) -> None:
    swagger = (await client.get("/docs")).text
    redoc = (await client.get("/redoc")).text

    assert "url: '/openapi.json'" in swagger
    assert 'spec-url="/openapi.json"' in redoc
    assert (await client.get("/openapi.json")).status_code == 200


def _init_oauth(page: str) -> dict[str, Any]:
    match = re.search(r"ui\.initOAuth\((\{.*?\})\)", page, flags=re.S)
    assert match, "Swagger UI is not initialised for OAuth"
    config: dict[str, Any] = json.loads(match.group(1))
    return config


async def test_swagger_ui_authorizes_as_the_default_public_client(
    client: httpx.AsyncClient,
) -> None:
    config = _init_oauth((await client.get("/docs")).text)

    assert config["clientId"] == "auth-service"
    # A public client: Swagger UI must not be handed a secret to put in the page.
    assert "clientSecret" not in config


async def test_swagger_ui_uses_the_first_configured_client(make_client: ClientFactory) -> None:
    async with make_client(client_ids=["admin-console", "auth-service"]) as client:
        config = _init_oauth((await client.get("/docs")).text)

    assert config["clientId"] == "admin-console"


async def _openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_openapi_declares_the_oauth2_password_flow(client: httpx.AsyncClient) -> None:
    schemes = (await _openapi(client))["components"]["securitySchemes"]

    oauth2 = [s for s in schemes.values() if s["type"] == "oauth2"]
    assert len(oauth2) == 1
    flows = oauth2[0]["flows"]
    assert set(flows) == {"password"}
    assert flows["password"]["tokenUrl"] == "/oauth2/token"
    assert set(flows["password"]["scopes"]) == SCOPES
    assert all(flows["password"]["scopes"].values())  # each scope is described


async def test_admin_routes_require_the_admin_scope_in_openapi(client: httpx.AsyncClient) -> None:
    document = await _openapi(client)
    (scheme,) = [
        k for k, s in document["components"]["securitySchemes"].items() if s["type"] == "oauth2"
    ]

    admin_operations = [
        (path, method, operation)
        for path, operations in document["paths"].items()
        if path.startswith("/admin/")
        for method, operation in operations.items()
    ]
    assert {(p, m) for p, m, _ in admin_operations} >= {
        ("/admin/users", "get"),
        ("/admin/users", "post"),
        ("/admin/users/{user_id}", "get"),
        ("/admin/users/{user_id}", "patch"),
        ("/admin/users/{user_id}", "delete"),
        ("/admin/clients", "get"),
        ("/admin/clients", "post"),
        ("/admin/clients/{client_id}", "patch"),
        ("/admin/clients/{client_id}/secret", "post"),
        ("/admin/keys", "get"),
        ("/admin/keys/rotate", "post"),
        ("/admin/keys/{kid}/revoke", "post"),
    }
    for path, method, operation in admin_operations:
        resource = path.split("/")[2]  # users, clients, keys: each has its own admin scope
        assert {scheme: [f"admin:{resource}"]} in operation.get("security", []), (path, method)


async def test_public_routes_require_nothing_in_openapi(client: httpx.AsyncClient) -> None:
    paths = (await _openapi(client))["paths"]

    for path, method in [
        ("/oauth2/token", "post"),
        ("/users", "post"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/.well-known/jwks.json", "get"),
    ]:
        assert not paths[path][method].get("security"), (path, method)


async def test_the_client_authenticated_endpoints_offer_http_basic(
    client: httpx.AsyncClient,
) -> None:
    document = await _openapi(client)

    scheme = document["components"]["securitySchemes"]["ClientSecretBasic"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    paths = document["paths"]
    assert paths["/oauth2/introspect"]["post"]["security"] == [{"ClientSecretBasic": []}]
    # Revocation: a public client authenticates with nothing.
    assert paths["/oauth2/revoke"]["post"]["security"] == [{}, {"ClientSecretBasic": []}]


async def test_the_token_endpoint_is_documented_as_a_form(client: httpx.AsyncClient) -> None:
    operation = (await _openapi(client))["paths"]["/oauth2/token"]["post"]

    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["grant_type"]
    assert form["properties"]["grant_type"]["enum"] == [
        "password",
        "refresh_token",
        "client_credentials",
    ]
    assert {"username", "password", "refresh_token", "scope", "client_id"} <= set(
        form["properties"]
    )
    assert form["properties"]["password"]["format"] == "password"
    assert form["properties"]["refresh_token"]["format"] == "password"
    assert "password: username, password" in form["description"]


@pytest.mark.parametrize("client_auth", ["basic", "request-body"])
async def test_the_token_request_swagger_ui_sends_is_accepted(
    client: httpx.AsyncClient, client_auth: str
) -> None:
    """Swagger UI's password flow: the client id in a Basic header with an empty secret,
    or in the form; every scope ticked; then "Try it out" on an admin route."""
    form = {
        "grant_type": "password",
        "username": ADMIN_EMAIL,
        "password": ADMIN_PASSWORD,
        "scope": " ".join(sorted(SCOPES)),
    }
    headers = {}
    if client_auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(b"auth-service:").decode()
    else:
        form["client_id"] = "auth-service"

    token = await client.post("/oauth2/token", data=form, headers=headers)
    assert token.status_code == 200, token.text
    users = await client.get("/admin/users", headers=bearer(token.json()["access_token"]))

    assert set(token.json()["scope"].split()) == SCOPES
    assert users.status_code == 200
