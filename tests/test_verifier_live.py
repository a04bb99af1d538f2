"""The verifier in a downstream service against the real auth service, over loopback HTTP.

`auth-service serve` (one worker, a SQLite file, `AUTH_AUDIENCE=orders-api`) and the
example in `examples/orders_service` (uvicorn) run as processes; tokens come from the auth
service's password grant and go to the example, which verifies them with the keys it
found through the auth service's metadata. The JWK Set requests the auth service answered
are counted in its access log.
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import STRONG_PASSWORD
from tests.forged_tokens import Signer
from tests.test_serve import REQUEST_TIMEOUT_SECONDS, Server, _child_environment, _free_port

ROOT = Path(__file__).resolve().parent.parent
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
def orders(auth: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The example service, on a free port, trusting `auth`."""
    port = _free_port()
    log = tmp_path_factory.mktemp("orders") / "uvicorn.log"
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "examples/orders_service"]
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=_child_environment(ORDERS_ISSUER=auth.issuer, ORDERS_AUDIENCE=AUDIENCE),
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


def _sign_in(auth: AuthServer, email: str) -> tuple[str, str]:
    """A new account's id and an access token from the password grant."""
    created = auth.http.post("/users", json={"email": email, "password": STRONG_PASSWORD})
    assert created.status_code == 201, created.text
    form = {"grant_type": "password", "username": email, "password": STRONG_PASSWORD}
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


def test_a_token_without_the_scope_gets_403(auth: AuthServer, orders: httpx.Client) -> None:
    _, token = _sign_in(auth, "noscope@example.com")

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
        assert response.status_code == 401
        assert "unknown key" in response.headers["www-authenticate"]

    assert auth.jwks_requests() - before <= 1  # one refetch at most, not one per kid
    assert before >= 1  # the count is real: the example did fetch the key set


def test_valid_tokens_are_still_accepted_while_the_auth_service_is_stopped(
    auth: AuthServer, orders: httpx.Client
) -> None:
    user_id, token = _sign_in(auth, "outage@example.com")
    auth.stop()
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(auth.url + "/health/live", timeout=2)

        response = orders.get("/whoami", headers=_bearer(token))

        assert response.status_code == 200, response.text
        assert response.json()["sub"] == user_id
    finally:
        auth.start()


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
