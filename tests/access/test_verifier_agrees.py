"""The verifier agrees with the service: it verifies the service's own tokens, in-process, and its
FastAPI dependency answers as the service's guards do (RFC 6750 §3).

The verifier's own rules, against a fake issuer: verifier/tests/.
"""

import json
from collections.abc import Iterator

import httpx
import pytest
from auth_service_verifier import (
    TokenVerifier,
)

from auth_service.errors import ErrorStyle, InsufficientScope, InvalidToken, MissingToken
from tests.helpers.app import app_of, app_state, bearer, login, register
from tests.helpers.issuer import (
    Issuer,
    downstream,
    verifier_for,
)


@pytest.mark.anyio
async def test_a_token_from_the_services_password_grant_is_verified_in_process(
    client: httpx.AsyncClient,
) -> None:
    # The auth app itself as the issuer, reached through httpx's ASGI transport.
    user = await register(client, "verified@example.com")
    token = await login(client, "verified@example.com", scope="openid profile")
    verifier = TokenVerifier(
        issuer="http://testserver",
        audience="http://testserver",
        async_transport=httpx.ASGITransport(app=app_of(client)),
    )

    verified = await verifier.averify(token)

    assert verified.sub == user["id"]
    assert verified.scopes == {"openid", "profile"}
    assert verified.client_id == verified.claims["client_id"]
    assert verifier.status().key_ids == (app_state(client).keys.signing.kid,)


@pytest.mark.anyio
async def test_require_answers_like_the_services_guards(issuer: Issuer) -> None:
    verifier = verifier_for(issuer)
    reader = issuer.signer.token(issuer.signer.claims(scope="orders:read"))
    writer = issuer.signer.token(issuer.signer.claims(scope="orders:write"))
    forged = issuer.signer.token(typ="JWT")
    async with downstream(verifier) as client:
        ok = await client.get("/orders", headers=bearer(reader))
        missing = await client.get("/orders")
        basic = await client.get("/orders", headers={"Authorization": "Basic dXNlcjpwdw=="})
        invalid = await client.get("/orders", headers=bearer(forged))
        narrow = await client.get("/orders", headers=bearer(writer))
        any_token = await client.get("/anything", headers=bearer(writer))
        none_at_all = await client.get("/anything")

    assert (ok.status_code, ok.json()) == (200, {"owner": "user-1"})
    expected = [
        (missing, MissingToken("An access token is required.", scope="orders:read")),
        (basic, MissingToken("An access token is required.", scope="orders:read")),
        (invalid, InvalidToken("The token is not an access token.")),
        (
            narrow,
            InsufficientScope("The access token lacks the scope orders:read.", scope="orders:read"),
        ),
        (none_at_all, MissingToken("An access token is required.")),
    ]
    for response, error in expected:
        answer = error.answer(ErrorStyle.API)
        assert response.status_code == answer.status
        assert response.json() == json.loads(answer.body)
        assert response.headers["www-authenticate"] == answer.headers["WWW-Authenticate"]
    assert (any_token.status_code, any_token.json()) == (200, "user-1")


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.stop()
