"""The verifier in a downstream service against the real auth service, over loopback HTTP.

`auth-service serve` (one worker, a SQLite file, `AUTH_AUDIENCE=orders-api`) and the
example in `examples/orders_service` (uvicorn) run as processes, the example twice: verifying
locally with the keys it found through the auth service's metadata, and in introspection
mode (RFC 7662) as a client registered through the admin API. Tokens come from the auth
service's password grant; its login client is given `orders:read` through the admin API.
The JWK Set requests the auth service answered are counted in its access log; the
synchronous introspection mode runs in the test itself, its requests counted as sent.
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from auth_service_verifier import (
    Introspection,
    IntrospectionUnavailableError,
    InvalidTokenError,
    TokenVerifier,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers.app import ADMIN_EMAIL, ADMIN_PASSWORD, STRONG_PASSWORD
from tests.helpers.forged_tokens import Signer
from tests.helpers.serve import REQUEST_TIMEOUT_SECONDS, Server, child_environment, free_port

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "orders-api"
STARTUP_TIMEOUT_SECONDS = 30.0
RANDOM_KIDS = 30


class AuthServer(Server):
    workers = 1

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "AUTH_AUDIENCE": AUDIENCE}

    def jwks_requests(self) -> int:
        return self.log_text().count("GET /.well-known/jwks.json ")


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    workdir = tmp_path_factory.mktemp("auth")
    server = AuthServer(f"sqlite:///{workdir / 'auth.db'}", workdir)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def admin(auth: AuthServer) -> dict[str, str]:
    """An admin's bearer header; the login client may now hand out `orders:read`."""
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    headers = _bearer(auth.http.post("/oauth2/token", data=form).json()["access_token"])
    login_client = auth.http.get("/admin/clients/auth-service", headers=headers).json()
    scopes = [*login_client["scopes"], "orders:read"]
    patched = auth.http.patch(
        "/admin/clients/auth-service", json={"scopes": scopes}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    return headers


@pytest.fixture(scope="module")
def service(auth: AuthServer, admin: dict[str, str]) -> tuple[str, str]:
    """A confidential client allowed to introspect, as the orders service's operator makes
    one: its id and its secret."""
    body = {"name": "orders", "scopes": ["introspect"]}
    created = auth.http.post("/admin/clients", json=body, headers=admin)
    assert created.status_code == 201, created.text
    return created.json()["client_id"], created.json()["client_secret"]


@contextmanager
def _example(log: Path, **environment: str) -> Iterator[httpx.Client]:
    """The example service on a free port, with `environment`, until the block ends."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "examples/orders_service"]
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=child_environment(**environment),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the example exited:\n{log.read_text(errors='replace')}")
            try:
                client.get("/whoami")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the example did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def orders(
    auth: AuthServer, admin: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The example verifying locally, trusting `auth`."""
    log = tmp_path_factory.mktemp("orders") / "uvicorn.log"
    with _example(log, ORDERS_ISSUER=auth.issuer, ORDERS_AUDIENCE=AUDIENCE) as client:
        yield client


@pytest.fixture(scope="module")
def introspecting_orders(
    auth: AuthServer, service: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The example in introspection mode, its answers not kept (each request asks)."""
    log = tmp_path_factory.mktemp("introspecting-orders") / "uvicorn.log"
    client_id, secret = service
    with _example(
        log,
        ORDERS_ISSUER=auth.issuer,
        ORDERS_AUDIENCE=AUDIENCE,
        ORDERS_INTROSPECTION_CLIENT_ID=client_id,
        ORDERS_INTROSPECTION_CLIENT_SECRET=secret,
        ORDERS_INTROSPECTION_CACHE_SECONDS="0",
    ) as client:
        yield client
    assert secret not in log.read_text(errors="replace")


def _sign_in(auth: AuthServer, email: str, scope: str | None = None) -> tuple[str, str]:
    """A new account's id and an access token from the password grant."""
    created = auth.http.post("/users", json={"email": email, "password": STRONG_PASSWORD})
    assert created.status_code == 201, created.text
    form = {"grant_type": "password", "username": email, "password": STRONG_PASSWORD}
    if scope is not None:
        form["scope"] = scope
    token = auth.http.post("/oauth2/token", data=form)
    assert token.status_code == 200, token.text
    return created.json()["id"], token.json()["access_token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_from_the_password_grant_is_accepted(
    auth: AuthServer, orders: httpx.Client
) -> None:
    user_id, token = _sign_in(auth, "live@example.com")

    whoami = orders.get("/whoami", headers=_bearer(token))
    profile = orders.get("/profile", headers=_bearer(token))

    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["sub"] == user_id
    assert "profile" in whoami.json()["scopes"]
    assert (profile.status_code, profile.json()) == (200, user_id)


def test_no_token_or_a_forged_one_gets_401_with_the_challenge(
    auth: AuthServer, orders: httpx.Client
) -> None:
    _, token = _sign_in(auth, "forger@example.com")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"

    missing = orders.get("/whoami")
    refused = orders.get("/whoami", headers=_bearer(forged))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert refused.json()["detail"]


def test_a_token_with_orders_read_gets_the_orders_in_either_mode(
    auth: AuthServer, orders: httpx.Client, introspecting_orders: httpx.Client
) -> None:
    user_id, token = _sign_in(auth, "reader@example.com", scope="orders:read")

    for example in (orders, introspecting_orders):
        response = example.get("/orders", headers=_bearer(token))

        assert response.status_code == 200, response.text
        assert response.json() == {"owner": user_id, "orders": []}


def test_a_token_without_the_scope_gets_403(auth: AuthServer, orders: httpx.Client) -> None:
    _, token = _sign_in(auth, "noscope@example.com", scope="openid profile")

    response = orders.get("/orders", headers=_bearer(token))

    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="orders:read"' in challenge


def test_tokens_with_random_kids_do_not_flood_the_auth_service(
    auth: AuthServer, orders: httpx.Client
) -> None:
    user_id, token = _sign_in(auth, "kids@example.com")
    assert orders.get("/whoami", headers=_bearer(token)).status_code == 200
    before = auth.jwks_requests()
    claims = jwt.decode(token, options={"verify_signature": False})
    signer = Signer(_rsa_pem(), "unused", auth.issuer, AUDIENCE, user_id)

    for _ in range(RANDOM_KIDS):
        forged = signer.token(claims, kid=uuid.uuid4().hex)
        response = orders.get("/whoami", headers=_bearer(forged))
        # 401 when a fetch just looked for the kid; else "not now" (503): never accepted
        assert response.status_code in (401, 503), response.text

    assert auth.jwks_requests() - before <= 1  # one refetch at most, not one per kid
    assert before >= 1  # the count is real: the example did fetch the key set


def test_while_the_auth_service_is_stopped_local_mode_accepts_and_introspection_refuses(
    auth: AuthServer, orders: httpx.Client, introspecting_orders: httpx.Client
) -> None:
    user_id, token = _sign_in(auth, "outage@example.com")
    assert introspecting_orders.get("/whoami", headers=_bearer(token)).status_code == 200
    auth.stop()
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(auth.url + "/health/live", timeout=2)

        response = orders.get("/whoami", headers=_bearer(token))
        unanswered = introspecting_orders.get("/whoami", headers=_bearer(token))

        assert response.status_code == 200, response.text
        assert response.json()["sub"] == user_id
        assert unanswered.status_code == 503, unanswered.text  # unknown is never "valid"
        assert "Retry-After" in unanswered.headers
    finally:
        auth.start()


# --- introspection mode (RFC 7662) ---------------------------------------------------------


def test_a_revoked_token_is_refused_by_introspection_at_once_but_locally_only_at_exp(
    auth: AuthServer, orders: httpx.Client, introspecting_orders: httpx.Client
) -> None:
    _, token = _sign_in(auth, "revoked@example.com", scope="orders:read")
    for example in (orders, introspecting_orders):
        assert example.get("/orders", headers=_bearer(token)).status_code == 200

    revoked = auth.http.post("/oauth2/revoke", data={"token": token})
    assert revoked.status_code == 200, revoked.text

    refused = introspecting_orders.get("/orders", headers=_bearer(token))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "not active" in refused.json()["detail"]
    # The trade-off of local verification: the signature stays good until the token's exp.
    assert orders.get("/orders", headers=_bearer(token)).status_code == 200


def test_a_deactivated_users_token_is_refused_by_introspection(
    auth: AuthServer,
    admin: dict[str, str],
    orders: httpx.Client,
    introspecting_orders: httpx.Client,
) -> None:
    user_id, token = _sign_in(auth, "leaver@example.com")
    assert introspecting_orders.get("/whoami", headers=_bearer(token)).status_code == 200

    deactivated = auth.http.patch(
        f"/admin/users/{user_id}", json={"is_active": False}, headers=admin
    )
    assert deactivated.status_code == 200, deactivated.text

    assert introspecting_orders.get("/whoami", headers=_bearer(token)).status_code == 401
    assert orders.get("/whoami", headers=_bearer(token)).status_code == 200  # until exp


class CountedHTTP(httpx.HTTPTransport):
    """Real HTTP, counting the introspection requests sent."""

    introspections = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/introspect":
            self.introspections += 1
        return super().handle_request(request)


@contextmanager
def _introspecting(
    auth: AuthServer, client_id: str, secret: str
) -> Iterator[tuple[TokenVerifier, CountedHTTP]]:
    """A verifier in introspection mode in this process (`verify`: the synchronous way)."""
    transport = CountedHTTP()
    verifier = TokenVerifier(
        issuer=auth.issuer,
        audience=AUDIENCE,
        transport=transport,
        introspection=Introspection(client_id=client_id, client_secret=secret),
    )
    try:
        yield verifier, transport
    finally:
        verifier.close()


def test_synchronous_introspection_asks_once_per_token_per_cache_window(
    auth: AuthServer, service: tuple[str, str]
) -> None:
    user_id, token = _sign_in(auth, "sync@example.com")
    with _introspecting(auth, *service) as (verifier, transport):
        first = verifier.verify(token)
        second = verifier.verify(token)  # within the default 5 s: the answer is kept

    assert first.sub == second.sub == user_id
    assert transport.introspections == 1


def test_synchronous_introspection_never_sends_a_forged_token(
    auth: AuthServer, service: tuple[str, str]
) -> None:
    user_id, token = _sign_in(auth, "forged@example.com")
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    forged = [
        Signer(_rsa_pem(), kid, auth.issuer, AUDIENCE, user_id).token(claims),  # wrong key
        token.rsplit(".", 1)[0] + ".",  # no signature
        "garbage",
    ]
    with _introspecting(auth, *service) as (verifier, transport):
        assert verifier.verify(token).sub == user_id
        for forgery in forged:
            with pytest.raises(InvalidTokenError):
                verifier.verify(forgery)

    assert transport.introspections == 1  # the genuine token's only


def test_a_wrong_client_secret_is_unavailability_not_acceptance(
    auth: AuthServer, service: tuple[str, str]
) -> None:
    _, token = _sign_in(auth, "wrongsecret@example.com")
    client_id, _ = service
    wrong = "ast_cs_" + uuid.uuid4().hex
    with _introspecting(auth, client_id, wrong) as (verifier, transport):
        with pytest.raises(IntrospectionUnavailableError) as refused:
            verifier.verify(token)
        with pytest.raises(IntrospectionUnavailableError):
            verifier.verify(token)  # a failure is not kept: the next request asks again

    assert transport.introspections == 2
    assert not isinstance(refused.value, InvalidTokenError)  # not the token's fault: 503
    assert wrong not in str(refused.value)
    assert wrong not in auth.log_text()


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
