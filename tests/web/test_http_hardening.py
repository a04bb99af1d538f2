"""Headers every answer carries, and answers built outside the routes.

Browsers must not sniff a JSON error into HTML; the docs pages run only their own scripts and
cannot be framed; answers that middleware builds (413, 400, the JSON 500) reach a browser
with CORS headers and, on the token endpoint, `Cache-Control: no-store`; no redirect is ever
built from the client's `Host`.
"""

import re

import httpx
import pytest

from tests.helpers.app import ClientFactory, app_of, bearer

pytestmark = pytest.mark.anyio

ORIGIN = "https://app.example.com"
LARGE = b"x" * (65 * 1024)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health/live"),
        ("GET", "/no/such/page"),
        ("GET", "/users/me"),
        ("POST", "/oauth2/token"),
        ("GET", "/docs"),
        ("GET", "/redoc"),
        ("GET", "/openapi.json"),
    ],
)
async def test_every_answer_forbids_content_sniffing(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_allow_only_their_own_scripts_and_no_framing(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "http" not in directives["script-src"]  # no CDN
    assert response.headers["x-frame-options"] == "DENY"
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", directives["script-src"])) == len(inline)


@pytest.mark.parametrize("path", ["/users", "/oauth2/token"])
async def test_a_refused_large_body_carries_cors_headers(
    make_client: ClientFactory, path: str
) -> None:
    async with make_client(cors_origins=[ORIGIN]) as client:
        response = await client.post(
            path,
            content=LARGE,
            headers={"Origin": ORIGIN, "Content-Type": "application/json"},
        )

    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == ORIGIN
    if path == "/oauth2/token":
        assert response.headers["cache-control"] == "no-store"
        assert response.json()["error"] == "invalid_request"


async def test_a_malformed_content_length_answer_carries_cors_headers(
    make_client: ClientFactory,
) -> None:
    async with make_client(cors_origins=[ORIGIN]) as client:
        response = await client.post(
            "/oauth2/token", content=b"{}", headers={"Origin": ORIGIN, "Content-Length": "abc"}
        )

    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["cache-control"] == "no-store"


async def test_an_unhandled_error_answer_carries_cors_headers(make_client: ClientFactory) -> None:
    async with make_client(cors_origins=[ORIGIN]) as client:
        app = app_of(client)

        @app.get("/probe/broken")
        async def broken() -> None:
            raise RuntimeError("a bug")

        response = await client.get("/probe/broken", headers={"Origin": ORIGIN})

    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["detail"] == "Internal server error."


@pytest.mark.parametrize("path", ["/users/me/", "/health/live/", "/admin/users/"])
async def test_a_trailing_slash_is_not_redirected_to_a_foreign_host(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(
        path, headers={"Host": "evil.example", **bearer("x")}, follow_redirects=False
    )

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json() == {"detail": "Not Found"}
