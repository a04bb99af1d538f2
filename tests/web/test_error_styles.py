"""A router declares how its errors are answered (`web/styles.py`): the API's JSON, RFC 6749
§5.2 bodies, a redirect back to the client (RFC 6749 §4.1.2.1 with RFC 9207 `iss`), or a
page. Answers built before routing follow the route the path belongs to.

The redirect and page styles have no route in the service yet: the routes here are the
test's own, added to the real app."""

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from auth_service.app import add_routes, create_app
from auth_service.errors import (
    ClientRedirect,
    ErrorStyle,
    InvalidRequest,
    InvalidScope,
    NotFound,
    RedirectToClient,
)
from auth_service.web import styles
from auth_service.web.middleware import MAX_BODY_BYTES
from tests.helpers.app import make_settings

pytestmark = pytest.mark.anyio

ISSUER = "http://testserver"
TARGET = ClientRedirect("https://client.example/callback?keep=1", state="a b&c", issuer=ISSUER)


def _routes() -> list[APIRouter]:
    redirecting = styles.router(ErrorStyle.REDIRECT)

    @redirecting.get("/test/authorize")
    async def authorize(client: str) -> None:
        if client != "known":
            # Before the redirect_uri is validated: never redirect (RFC 6749 §4.1.2.1).
            raise InvalidRequest("The client is not registered.")
        raise RedirectToClient(InvalidScope("The scope x is not allowed."), to=TARGET)

    @redirecting.get("/test/authorize-without-state")
    async def without_state() -> None:
        target = ClientRedirect("https://client.example/cb", state=None, issuer=ISSUER)
        raise RedirectToClient(InvalidScope("No."), to=target)

    pages = styles.router(ErrorStyle.HTML)

    @pages.get("/test/pages/{name}")
    async def page(name: str) -> None:
        raise NotFound(f"No page <{name}> here.")

    @pages.post("/test/pages/{name}")
    async def post_page(name: str) -> None:
        raise NotFound("Nothing to post to.")

    @pages.get("/test/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    api = APIRouter()

    @api.get("/test/api")
    async def api_route() -> None:
        raise RedirectToClient(InvalidScope("The scope x is not allowed."), to=TARGET)

    return [redirecting, pages, api]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(make_settings(f"sqlite:///{tmp_path / 'app.db'}", issuer=ISSUER))
    for router in _routes():
        add_routes(app, router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_a_redirect_route_sends_the_error_back_to_the_client(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/authorize", params={"client": "known"})

    assert response.status_code == 302
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert "content-type" not in response.headers
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "https",
        "client.example",
        "/callback",
    )
    # The registered query stays (RFC 6749 §3.1.2); state comes back as sent; iss: RFC 9207.
    assert parse_qsl(location.query) == [
        ("keep", "1"),
        ("error", "invalid_scope"),
        ("error_description", "The scope x is not allowed."),
        ("state", "a b&c"),
        ("iss", ISSUER),
    ]


async def test_a_request_without_state_gets_none_back(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/authorize-without-state")

    query = dict(parse_qsl(urlsplit(response.headers["location"]).query))
    assert response.status_code == 302
    assert query == {"error": "invalid_scope", "error_description": "No.", "iss": ISSUER}


async def test_a_redirect_route_shows_a_page_when_it_knows_no_target(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/authorize", params={"client": "stranger"})
    missing = await client.get("/test/authorize")  # a validation error: no target either

    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Bad Request</h1>" in response.text
    assert "The client is not registered." in response.text
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "text/html; charset=utf-8"
    assert "client: Field required" in missing.text


async def test_an_error_for_the_client_elsewhere_answers_as_that_route_does(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/api")

    # As the error itself is answered there: an OAuth2Error keeps its RFC 6749 §5.2 body.
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "The scope x is not allowed.",
    }


async def test_a_page_route_answers_its_errors_as_escaped_pages(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/pages/<script>")

    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "No page &lt;&lt;script&gt;&gt; here." in response.text
    assert "<script>" not in response.text


async def test_a_wrong_method_on_a_page_route_is_a_page_naming_the_methods(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/test/pages/home")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Method Not Allowed</h1>" in response.text


async def test_a_bug_on_a_page_route_is_a_page_with_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/broken")

    assert response.status_code == 500
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-request-id"] in response.text
    assert "a bug" not in response.text


async def test_before_routing_the_path_s_route_gives_the_style(
    client: httpx.AsyncClient,
) -> None:
    too_large = b"x" * (MAX_BODY_BYTES + 1)

    page = await client.post("/test/pages/home", content=too_large)
    token = await client.post("/oauth2/token", content=too_large)
    api = await client.post("/users", content=too_large)
    nowhere = await client.get("/test/pages")  # no route: the API's 404

    assert page.status_code == 413
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "The request body is too large." in page.text
    assert token.status_code == 413
    assert token.json() == {
        "error": "invalid_request",
        "error_description": "The request body is too large.",
    }
    assert token.headers["cache-control"] == "no-store"
    assert api.json() == {"detail": "The request body is too large."}
    assert "cache-control" not in api.headers
    assert nowhere.status_code == 404
    assert nowhere.json() == {"detail": "Not Found"}


def test_the_oauth_endpoints_and_no_other_route_declare_the_oauth_style(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'app.db'}"))

    declared = sorted(
        getattr(route, "path", "")
        for route in app.routes
        if styles.style_of(route) is not ErrorStyle.API
    )

    assert declared == ["/oauth2/introspect", "/oauth2/revoke", "/oauth2/token"]
