"""The verifier's introspection mode (RFC 7662) against the real auth service, in-process.

The verifier asks the auth app through httpx's ASGI transport, counted, as a confidential
client registered through the admin API; on SQLite and PostgreSQL. What local verification
cannot see (a revocation, a deactivation) introspection refuses at once; what it costs is a
request per token per cache window, and no answer from the auth service is never "valid".
`test_verifier_live.py` runs it over real loopback HTTP, the synchronous way included.
"""

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import jwt
import pytest
from auth_service_verifier import (
    Introspection,
    IntrospectionUnavailableError,
    InvalidTokenError,
    TokenVerifier,
    VerificationError,
    VerificationUnavailableError,
    VerifiedToken,
    _rules,
)
from fastapi import Depends, FastAPI

from tests.helpers.app import (
    STRONG_PASSWORD,
    admin_headers,
    app_of,
    app_state,
    bearer,
    login,
    new_client,
    register,
    request_token,
    revoke,
)
from tests.helpers.forged_tokens import Signer, b64url
from tests.helpers.issuer import HugeBody, public_jwk, rsa_pem

pytestmark = pytest.mark.anyio

ISSUER = "http://testserver"  # the in-process app's issuer, and its default audience
SIGNER = Signer(rsa_pem(0), "k", ISSUER, ISSUER, "user-1")


class Counted(httpx.AsyncBaseTransport):
    """The ASGI transport to the auth app, counting the introspection requests it carries."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.inner = httpx.ASGITransport(app=app_of(client))
        self.introspections = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/introspect":
            self.introspections += 1
        return await self.inner.handle_async_request(request)


def _introspecting(
    transport: httpx.AsyncBaseTransport,
    client_id: str,
    secret: str,
    clock: Callable[[], float] = time.time,
    **options: Any,
) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=ISSUER,
        async_transport=transport,
        introspection=Introspection(client_id=client_id, client_secret=secret, **options),
        clock=clock,
    )


class Clock:
    """The verifier's wall clock, which the test moves on (the service's is real)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _service(client: httpx.AsyncClient) -> tuple[str, str]:
    """A confidential client allowed to introspect: its id and secret."""
    created = await new_client(client)
    return created["client_id"], created["client_secret"]


async def _with_orders_read(client: httpx.AsyncClient) -> None:
    """The login client may hand `orders:read` to users (scopes are data)."""
    headers = await admin_headers(client)
    login_client = (await client.get("/admin/clients/auth-service", headers=headers)).json()
    scopes = [*login_client["scopes"], "orders:read"]
    patched = await client.patch(
        "/admin/clients/auth-service", json={"scopes": scopes}, headers=headers
    )
    assert patched.status_code == 200, patched.text


# --- what it accepts and refuses ---------------------------------------------------------


async def test_an_active_token_is_verified_as_local_mode_verifies_it(
    client: httpx.AsyncClient,
) -> None:
    await _with_orders_read(client)
    user = await register(client, "ann@example.com")
    token = await login(client, "ann@example.com", scope="profile orders:read")
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client))
    local = TokenVerifier(issuer=ISSUER, audience=ISSUER, async_transport=transport)

    verified = await introspecting.averify(token)
    locally = await local.averify(token)

    assert isinstance(verified, VerifiedToken)
    assert verified.sub == locally.sub == user["id"]
    assert verified.scopes == locally.scopes == {"profile", "orders:read"}
    assert verified.client_id == locally.client_id == "auth-service"
    assert verified.roles == ()  # introspection does not say a user's roles
    assert verified.claims["jti"] == locally.claims["jti"]
    assert verified.expires_at == locally.expires_at
    assert transport.introspections == 1
    status = introspecting.status()
    assert (status.introspection_requests, status.introspection_error) == (1, None)
    signing = app_state(client).keys.signing.kid
    assert (local.status().introspection_requests, local.status().key_ids) == (None, (signing,))


async def test_a_revoked_token_is_refused_at_once_while_local_mode_accepts_it_until_exp(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    tokens = (await request_token(client, "ann@example.com")).json()
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client), cache_seconds=0)
    local = TokenVerifier(issuer=ISSUER, audience=ISSUER, async_transport=transport)
    assert (await introspecting.averify(tokens["access_token"])).sub
    assert (await local.averify(tokens["access_token"])).sub

    assert (await revoke(client, tokens["access_token"])).status_code == 200

    with pytest.raises(InvalidTokenError, match="not active") as refused:
        await introspecting.averify(tokens["access_token"])
    assert not isinstance(refused.value, VerificationUnavailableError)
    # The trade-off: a signature stays valid until exp; only the auth service knows more.
    assert (await local.averify(tokens["access_token"])).sub


async def test_a_revocation_is_seen_at_most_one_cache_window_late(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    tokens = (await request_token(client, "ann@example.com")).json()
    transport = Counted(client)
    clock = Clock()
    introspecting = _introspecting(
        transport, *await _service(client), clock=clock, cache_seconds=60
    )
    await introspecting.averify(tokens["access_token"])
    await revoke(client, tokens["access_token"])

    kept = await introspecting.averify(tokens["access_token"])  # the answer of a moment ago
    clock.now = kept.expires_at - 1  # the window has passed (exp has not)

    with pytest.raises(InvalidTokenError, match="not active"):
        await introspecting.averify(tokens["access_token"])
    assert transport.introspections == 2


async def test_a_deactivated_users_token_is_refused(client: httpx.AsyncClient) -> None:
    user = await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    introspecting = _introspecting(Counted(client), *await _service(client), cache_seconds=0)
    assert (await introspecting.averify(token)).sub == user["id"]

    deactivated = await client.patch(
        f"/admin/users/{user['id']}",
        json={"is_active": False},
        headers=await admin_headers(client),
    )
    assert deactivated.status_code == 200, deactivated.text

    with pytest.raises(InvalidTokenError, match="not active"):
        await introspecting.averify(token)


async def test_a_token_for_another_audience_is_refused(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    client_id, secret = await _service(client)
    elsewhere = TokenVerifier(
        issuer=ISSUER,
        audience="billing-api",
        async_transport=Counted(client),
        introspection=Introspection(client_id=client_id, client_secret=secret),
    )

    with pytest.raises(InvalidTokenError, match="another audience"):
        await elsewhere.averify(token)


async def test_a_refresh_token_is_never_accepted_as_an_access_token(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    # A refresh token is described only to its own client: Ann signs in through the service.
    service = await new_client(client, grant_types=["password", "refresh_token"])
    credentials = (service["client_id"], service["client_secret"])
    form = {"grant_type": "password", "username": "ann@example.com", "password": STRONG_PASSWORD}
    tokens = (await client.post("/oauth2/token", data=form, auth=credentials)).json()
    transport = Counted(client)
    introspecting = _introspecting(transport, *credentials)
    source = introspecting.introspection
    assert source is not None

    with pytest.raises(InvalidTokenError, match="malformed") as refused:
        await introspecting.averify(tokens["refresh_token"])

    assert not isinstance(refused.value, VerificationUnavailableError)
    assert transport.introspections == 0  # not even sent: it is not a JWT
    # Had it been asked about, its answer (active, but `refresh_token`) fails the rules.
    answer = await source.aask(tokens["refresh_token"])
    assert (answer["active"], answer["token_type"]) == (True, "refresh_token")
    with pytest.raises(_rules.TokenRuleError, match="not an access token"):
        _rules.introspected(answer, issuer=ISSUER, audience=ISSUER, leeway=0, now=0)


@pytest.mark.parametrize(
    "members",
    [
        pytest.param({"alg": ["RS256"]}, id="alg a list"),
        pytest.param({"alg": {"RS256": 1}}, id="alg an object"),
        pytest.param({"typ": ["at+jwt"]}, id="typ a list"),
        pytest.param({"kid": ["k"]}, id="kid a list"),
    ],
)
async def test_a_header_of_the_wrong_types_is_refused_without_asking(
    client: httpx.AsyncClient, members: dict[str, Any]
) -> None:
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "k", **members}
    token = ".".join(b64url(json.dumps(part).encode()) for part in (header, {"sub": "x"}))
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client))

    with pytest.raises(InvalidTokenError) as refused:
        await introspecting.averify(token + "." + b64url(b"signature"))

    assert not isinstance(refused.value, VerificationUnavailableError)
    assert transport.introspections == 0  # refused by the rules: never sent anywhere


FORGERIES = [
    pytest.param(lambda kid: Signer(rsa_pem(0), kid, ISSUER, ISSUER, "x").token(), id="wrong key"),
    pytest.param(
        lambda kid: (
            f"{b64url(json.dumps({'alg': 'none', 'typ': 'at+jwt', 'kid': kid}).encode())}"
            f".{b64url(json.dumps(SIGNER.claims()).encode())}."
        ),
        id="alg none",
    ),
    pytest.param(lambda kid: SIGNER.token(kid="made-up"), id="unknown kid"),
    pytest.param(lambda kid: "garbage", id="garbage"),
]


@pytest.mark.parametrize("forge", FORGERIES)
async def test_a_forged_token_never_reaches_the_introspection_endpoint(
    client: httpx.AsyncClient, forge: Any
) -> None:
    # RFC 7662 §4: each request costs the auth service; a forgery is refused locally first.
    await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client))
    assert (await introspecting.averify(token)).sub  # the keys are in, the endpoint asked
    forged = forge(app_state(client).keys.signing.kid)

    for _ in range(5):  # refused (a made-up kid: "unknown key", then "not now"), never sent
        with pytest.raises(VerificationError):
            await introspecting.averify(forged)

    assert transport.introspections == 1  # the genuine token's, none for the forgery


# --- the cache: bounded, brief, never past exp -------------------------------------------


async def test_a_second_verify_within_the_window_asks_nothing(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    tokens = (await request_token(client, "ann@example.com")).json()
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client), cache_seconds=60)
    revoked = await login(client, "ann@example.com")
    await revoke(client, revoked)

    for _ in range(3):
        assert (await introspecting.averify(tokens["access_token"])).sub
        with pytest.raises(InvalidTokenError, match="not active"):
            await introspecting.averify(revoked)

    assert transport.introspections == 2  # one per token: the inactive answer is kept too


async def test_answers_are_kept_briefly_never_past_exp_and_bounded(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    first, second = [await login(client, "ann@example.com") for _ in range(2)]
    revoked = await login(client, "ann@example.com")
    await revoke(client, revoked)
    transport = Counted(client)
    clock = Clock()
    introspecting = _introspecting(
        transport,
        *await _service(client),
        clock=clock,
        cache_seconds=3600,
        inactive_cache_seconds=10,
        cache_size=2,
    )
    exp = jwt.decode(first, options={"verify_signature": False})["exp"]
    clock.now = exp - 20.0

    await introspecting.averify(first)  # kept until exp, not for an hour
    with pytest.raises(InvalidTokenError):
        await introspecting.averify(revoked)  # kept for 10 s
    clock.now = exp - 9.0
    await introspecting.averify(first)
    with pytest.raises(InvalidTokenError):
        await introspecting.averify(revoked)
    assert transport.introspections == 3

    clock.now = exp
    await introspecting.averify(first)
    await introspecting.averify(first)  # at its exp an answer is not kept at all
    assert transport.introspections == 5

    clock.now = exp - 100.0
    await introspecting.averify(second)
    await introspecting.averify(first)  # two answers kept at most: the oldest goes
    with pytest.raises(InvalidTokenError):
        await introspecting.averify(revoked)
    assert transport.introspections == 8


# --- when the auth service does not answer -----------------------------------------------


@pytest.mark.parametrize("caller", ["wrong secret", "unknown client", "no introspect scope"])
async def test_refused_client_credentials_are_unavailability_not_acceptance(
    client: httpx.AsyncClient, caller: str, caplog: pytest.LogCaptureFixture
) -> None:
    await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    client_id, secret = await _service(client)
    if caller == "wrong secret":
        secret = "ast_cs_" + "x" * 43
    elif caller == "unknown client":
        client_id = "svc_nobody"
    else:
        created = await new_client(client, scopes=["orders:read"])
        client_id, secret = created["client_id"], created["client_secret"]
    introspecting = _introspecting(Counted(client), client_id, secret)
    source = introspecting.introspection
    assert source is not None
    caplog.set_level(logging.DEBUG)

    with pytest.raises(IntrospectionUnavailableError) as refused:
        await introspecting.averify(token)

    status = introspecting.status()
    assert "HTTP 401" in (status.introspection_error or "")
    assert secret not in f"{refused.value!r} {status!r} {caplog.text}"
    assert secret not in repr(source.settings)


def _answering(metadata: dict[str, Any], answer: bytes) -> httpx.MockTransport:
    """An issuer whose metadata and introspection answer are these (sync and async), and
    whose JWK Set holds `SIGNER`'s key."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks", **metadata}
            )
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": [public_jwk(SIGNER.private_pem, "k")]})
        return httpx.Response(200, content=answer)

    return httpx.MockTransport(handle)


def _well_formed_token() -> str:
    """A token local verification lets through to the endpoint (whose say it then is)."""
    return SIGNER.token()


HOSTILE_ANSWERS = [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested deeply"),
    pytest.param(b'{"active": true, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="member"),
    pytest.param(b'{"active": tru', id="not JSON"),
]


async def _assert_unavailable(transport: httpx.MockTransport, reason: str) -> None:
    """Both drivers answer IntrospectionUnavailableError, and `last_error` names `reason`."""
    introspecting = TokenVerifier(
        issuer=ISSUER,
        audience=ISSUER,
        transport=transport,
        async_transport=transport,
        introspection=Introspection(client_id="svc", client_secret="s3cret"),
    )
    token = _well_formed_token()

    with pytest.raises(IntrospectionUnavailableError):
        introspecting.verify(token)
    with pytest.raises(IntrospectionUnavailableError):
        await introspecting.averify(token)
    assert reason in (introspecting.status().introspection_error or "")
    introspecting.close()
    await introspecting.aclose()


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS)
async def test_a_broken_answer_is_unavailability_not_an_error(answer: bytes) -> None:
    transport = _answering({"introspection_endpoint": ISSUER + "/oauth2/introspect"}, answer)
    await _assert_unavailable(transport, "introspection: not JSON")


@pytest.mark.parametrize("endpoint", ["http://a..b/introspect", "http://xn--/introspect", 7])
async def test_an_unusable_introspection_endpoint_is_unavailability(endpoint: object) -> None:
    transport = _answering({"introspection_endpoint": endpoint}, b"{}")
    await _assert_unavailable(transport, "introspection_endpoint")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["verify", "averify"])
async def test_an_answer_past_the_size_cap_is_not_read_further(asynchronous: bool) -> None:
    body = HugeBody()
    metadata = {"introspection_endpoint": ISSUER + "/oauth2/introspect"}
    small = _answering(metadata, b"")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/introspect":
            return httpx.Response(200, content=body.achunks() if asynchronous else body.chunks())
        return small.handle_request(request)

    transport = httpx.MockTransport(handle)
    introspecting = TokenVerifier(
        issuer=ISSUER,
        audience=ISSUER,
        transport=None if asynchronous else transport,
        async_transport=transport if asynchronous else None,
        introspection=Introspection(client_id="svc", client_secret="s3cret"),
    )
    token = _well_formed_token()

    with pytest.raises(IntrospectionUnavailableError):
        await introspecting.averify(token) if asynchronous else introspecting.verify(token)

    assert introspecting.status().introspection_error == "FetchError: introspection: too large"
    assert body.read <= (1 << 20) + len(HugeBody.CHUNK)  # the cap, and the chunk past it
    introspecting.close()
    await introspecting.aclose()


async def test_an_auth_service_that_is_gone_is_unavailability_not_acceptance(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    client_id, secret = await _service(client)
    introspecting = TokenVerifier(
        issuer="http://127.0.0.1:9",  # the discard port: nothing listens there
        audience=ISSUER,
        timeout=2,
        introspection=Introspection(client_id=client_id, client_secret=secret),
    )

    with pytest.raises(VerificationUnavailableError):  # its keys first: local rules go first
        await introspecting.averify(token)
    await introspecting.aclose()


async def test_an_auth_service_that_does_not_answer_in_time_is_unavailability(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    client_id, secret = await _service(client)
    with socket.socket() as silent:  # connections are accepted, nothing is ever answered
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        introspecting = TokenVerifier(
            issuer=f"http://127.0.0.1:{silent.getsockname()[1]}",
            audience=ISSUER,
            timeout=0.5,
            introspection=Introspection(client_id=client_id, client_secret=secret),
        )

        with pytest.raises(VerificationUnavailableError):
            await introspecting.averify(token)
        await introspecting.aclose()

    assert "timeout" in (introspecting.status().last_error or "").lower()


# --- the FastAPI dependency, unchanged ---------------------------------------------------


def _downstream(verifier: TokenVerifier) -> httpx.AsyncClient:
    app = FastAPI()

    @app.get("/orders")
    async def orders(
        token: Annotated[VerifiedToken, Depends(verifier.require("orders:read"))],
    ) -> dict[str, str]:
        return {"owner": token.sub}

    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://orders.test")


async def test_require_answers_401_403_and_503_in_introspection_mode(
    client: httpx.AsyncClient,
) -> None:
    await _with_orders_read(client)
    user = await register(client, "ann@example.com")
    reader = await login(client, "ann@example.com", scope="orders:read")
    other = await login(client, "ann@example.com", scope="profile")
    revoked = await login(client, "ann@example.com", scope="orders:read")
    await revoke(client, revoked)
    client_id, secret = await _service(client)
    good = _introspecting(Counted(client), client_id, secret)
    bad = _introspecting(Counted(client), client_id, "ast_cs_" + "x" * 43)

    async with _downstream(good) as orders, _downstream(bad) as misconfigured:
        ok = await orders.get("/orders", headers=bearer(reader))
        narrow = await orders.get("/orders", headers=bearer(other))
        refused = await orders.get("/orders", headers=bearer(revoked))
        unavailable = await misconfigured.get("/orders", headers=bearer(reader))

    assert (ok.status_code, ok.json()) == (200, {"owner": user["id"]})
    assert narrow.status_code == 403
    assert 'error="insufficient_scope"' in narrow.headers["www-authenticate"]
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "not active" in refused.json()["detail"]
    assert unavailable.status_code == 503
    assert "Retry-After" in unavailable.headers
    assert secret not in unavailable.text


async def test_requests_arriving_together_with_one_new_token_ask_once(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    transport = Counted(client)
    introspecting = _introspecting(transport, *await _service(client))

    verified = await asyncio.gather(*(introspecting.averify(token) for _ in range(10)))

    assert {token.sub for token in verified} == {user["id"]}
    assert transport.introspections == 1
