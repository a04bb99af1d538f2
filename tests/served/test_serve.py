"""`auth-service serve --workers 2` over real HTTP: what an operator starts is what clients get.

Each backend (a SQLite file, a PostgreSQL database) gets one server for the whole module,
started by the real command line on an empty database, so migrations and start-up run as
in production. Starting one takes seconds, which is why the server is module-scoped rather
than built on conftest's per-test `database`; tests share it and each uses its own email
addresses. Requests use a new TCP connection each, so the kernel spreads them over both
workers; the per-worker metric files that `serve` sets up show which worker answered, and
tests that are about several workers check that both took part.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy
from alembic.script import ScriptDirectory
from prometheus_client.parser import text_string_to_metric_families

from auth_service.kit import migrate
from auth_service.kit.db import sync_url
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DATABASES,
    STRONG_PASSWORD,
    scratch_postgres,
)
from tests.helpers.serve import (
    MAX_REQUESTS,
    MIN_REQUESTS,
    REQUEST_TIMEOUT_SECONDS,
    WORKERS,
    Server,
    child_environment,
    free_port,
    workers_that_answered,
)


@pytest.fixture(scope="module", params=DATABASES)
def empty_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database nobody has migrated yet: `serve` must do everything itself."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('serve-sqlite') / 'auth.db'}"
        return
    with scratch_postgres("auth_serve") as (url, _):
        yield url


@pytest.fixture(scope="module")
def server(empty_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(empty_database, tmp_path_factory.mktemp("serve"))
    try:
        running.start()
        yield running
    finally:
        running.close()


def _email() -> str:
    return f"serve-{uuid.uuid4().hex[:12]}@example.com"


def _register(server: Server, email: str) -> dict[str, Any]:
    response = server.http.post("/users", json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _login(server: Server, email: str, password: str = STRONG_PASSWORD) -> str:
    form = {"grant_type": "password", "username": email, "password": password}
    response = server.http.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _successful_logins(server: Server) -> float:
    response = server.http.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "auth_logins_total" and sample.labels.get("outcome") == "success"
    )


def _until_both_workers(
    server: Server, step: Callable[[int], object], method: str, route: str
) -> int:
    """Run `step(i)` at least MIN_REQUESTS times, and on until both workers answered `route`."""
    before = server.requests_by_worker()
    for i in range(MAX_REQUESTS):
        step(i)
        if i + 1 >= MIN_REQUESTS:
            after = server.requests_by_worker()
            if len(workers_that_answered(before, after, method, route)) >= WORKERS:
                return i + 1
    answered = workers_that_answered(before, server.requests_by_worker(), method, route)
    pytest.fail(f"{MAX_REQUESTS} connections reached only workers {answered} for {route}")


def test_access_token_verifies_with_pyjwt_and_the_published_jwks(server: Server) -> None:
    email = _email()
    user = _register(server, email)
    token = _login(server, email)

    signing_key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key_from_jwt(
        token
    )
    claims = jwt.decode(
        token,
        signing_key,
        algorithms=["RS256"],
        audience=server.issuer,
        issuer=server.issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] == signing_key.key_id
    assert claims["sub"] == user["id"]
    assert claims["client_id"] == "auth-service"
    assert claims["exp"] - claims["iat"] == pytest.approx(900, abs=1)


def test_workers_publish_the_same_keys_and_accept_each_others_tokens(server: Server) -> None:
    email = _email()
    _register(server, email)
    tokens = [_login(server, email) for _ in range(4)]  # four connections: likely both workers
    jwks_bodies: set[bytes] = set()
    statuses: collections.Counter[int] = collections.Counter()

    def step(_: int) -> None:
        jwks_bodies.add(server.http.get("/.well-known/jwks.json").content)
        for token in tokens:
            statuses[server.http.get("/users/me", headers=_bearer(token)).status_code] += 1

    before = server.requests_by_worker()
    connections = _until_both_workers(server, step, "GET", "/users/me")
    after = server.requests_by_worker()

    assert len(jwks_bodies) == 1, jwks_bodies
    assert len(jwks_bodies.pop()) > 0
    assert statuses == {200: connections * len(tokens)}
    # Both workers served keys and both verified tokens: any disagreement would have shown.
    assert len(workers_that_answered(before, after, "GET", "/.well-known/jwks.json")) == WORKERS


def test_concurrent_registrations_across_workers_create_one_user(server: Server) -> None:
    attempts = 12
    admin = _bearer(_login(server, ADMIN_EMAIL, ADMIN_PASSWORD))
    spanned_both_workers = False
    for _ in range(5):  # a new race until one is served by both workers
        email = _email()
        barrier = threading.Barrier(attempts)

        def attempt(email: str = email, barrier: threading.Barrier = barrier) -> int:
            body = {"email": email, "password": STRONG_PASSWORD}
            with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
                barrier.wait(timeout=REQUEST_TIMEOUT_SECONDS)
                return client.post("/users", json=body).status_code

        before = server.requests_by_worker()
        with ThreadPoolExecutor(max_workers=attempts) as pool:
            statuses = collections.Counter(pool.map(lambda _: attempt(), range(attempts)))
        answered = workers_that_answered(before, server.requests_by_worker(), "POST", "/users")

        assert statuses == {201: 1, 409: attempts - 1}
        found = server.http.get("/admin/users", params={"q": email}, headers=admin)
        assert found.status_code == 200, found.text
        assert found.json()["count"] == 1
        if len(answered) == WORKERS:
            spanned_both_workers = True
            break
    assert spanned_both_workers, "every race was served by a single worker"


def test_migrations_and_bootstrap_ran_once(server: Server) -> None:
    revisions = [
        r.revision
        for r in ScriptDirectory.from_config(
            migrate.alembic_config(server.database_url)
        ).walk_revisions()
    ]
    engine = sqlalchemy.create_engine(sync_url(server.database_url))
    try:
        with engine.connect() as connection:
            applied = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
            versions = [row[0] for row in applied]
    finally:
        engine.dispose()
    logs = server.log_text()

    assert versions == [revisions[0]]  # walk_revisions starts at the head
    # Only the `serve` process migrates, each revision once, however many workers start.
    assert logs.count("Running upgrade") == len(revisions)
    assert logs.count("created bootstrap admin") == 1
    admin = _bearer(_login(server, ADMIN_EMAIL, ADMIN_PASSWORD))
    found = server.http.get("/admin/users", params={"q": ADMIN_EMAIL}, headers=admin)
    assert found.status_code == 200, found.text
    assert found.json()["count"] == 1
    assert [u["email"] for u in found.json()["data"]] == [ADMIN_EMAIL]
    keys = server.http.get("/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 1  # three processes started on an empty database: one signing key


def test_metrics_from_any_worker_add_up_logins_of_all_workers(server: Server) -> None:
    email = _email()
    _register(server, email)
    baseline = _successful_logins(server)
    logins = _until_both_workers(server, lambda _: _login(server, email), "POST", "/oauth2/token")

    readings: list[float] = []
    _until_both_workers(
        server, lambda _: readings.append(_successful_logins(server)), "GET", "/metrics"
    )

    assert set(readings) == {baseline + logins}, collections.Counter(readings)


def test_restart_keeps_the_keys_and_accepts_earlier_tokens(server: Server) -> None:
    email = _email()
    _register(server, email)
    token = _login(server, email)
    jwks_before = server.http.get("/.well-known/jwks.json").json()

    exit_code = server.restart()

    assert exit_code == 0  # SIGTERM is a clean shutdown
    jwks_after = [server.http.get("/.well-known/jwks.json").json() for _ in range(6)]
    assert jwks_after == [jwks_before] * 6
    me = [server.http.get("/users/me", headers=_bearer(token)) for _ in range(6)]
    assert [r.status_code for r in me] == [200] * 6, me[0].text
    assert server.log_text().count("created bootstrap admin") == 1


def test_invalid_configuration_stops_serve_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    command = Path(sys.executable).with_name("auth-service")
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "auth_service"]

    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [*argv, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=tmp_path,
        env=child_environment(
            AUTH_DATABASE_URL=f"sqlite:///{database}", AUTH_ACCESS_TOKEN_TTL="abc"
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "AUTH_ACCESS_TOKEN_TTL" in lines[0]
    assert not database.exists()  # stopped before touching the database


def test_serve_logs_the_issuer_apart_from_where_it_listens(tmp_path: Path) -> None:
    # A newcomer reads the URL uvicorn prints; other services must be given the issuer.
    server = Server(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path)
    server.workers = 1
    server.issuer = server.url.replace("127.0.0.1", "localhost")
    try:
        server.start()
    finally:
        server.close()

    messages = [
        json.loads(line)["msg"] for line in server.log_text().splitlines() if line.startswith("{")
    ]
    named = [message for message in messages if message.startswith("issuer ")]
    assert named == [
        f"issuer {server.issuer} (AUTH_ISSUER: the URL other services verify tokens against), "
        f"listening on {server.url}"
    ]


def test_the_readmes_try_it_block_works_pasted_into_a_shell(server: Server) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Try it:\n\n```sh\n", 1)[1].split("```", 1)[0]
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is required in CI")
        pytest.skip("the README's block needs curl")

    bash = shutil.which("bash")
    assert bash is not None
    ran = subprocess.run(  # noqa: S603 (our own README, against our own server)
        [bash, "-euo", "pipefail", "-c", block.replace("localhost:8000", server.url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    me = json.loads(ran.stdout.splitlines()[-1])
    assert (me["email"], me["name"]) == ("ada@example.com", "Ada")


@pytest.mark.parametrize("change", ["deactivation", "password change", "deletion"])
def test_a_token_both_workers_cached_is_refused_by_both_at_once(
    server: Server, change: str
) -> None:
    """Verified tokens are cached per worker; the user's state is not: a change made through
    one worker is refused by every worker on the very next request."""
    email = _email()
    user = _register(server, email)
    token = _login(server, email)
    admin = _bearer(_login(server, ADMIN_EMAIL, ADMIN_PASSWORD))

    def accepted(_: int) -> None:  # puts the token in each worker's cache
        response = server.http.get("/users/me", headers=_bearer(token))
        assert response.status_code == 200, response.text

    _until_both_workers(server, accepted, "GET", "/users/me")
    if change == "deactivation":
        changed = server.http.patch(
            f"/admin/users/{user['id']}", json={"is_active": False}, headers=admin
        )
    elif change == "password change":
        changed = server.http.post(
            "/users/me/password",
            json={"current_password": STRONG_PASSWORD, "new_password": STRONG_PASSWORD + " 2"},
            headers=_bearer(token),
        )
    else:
        changed = server.http.delete(f"/admin/users/{user['id']}", headers=admin)
    assert changed.status_code in (200, 204), changed.text

    def refused(_: int) -> None:
        response = server.http.get("/users/me", headers=_bearer(token))
        assert response.status_code == 401, response.text

    _until_both_workers(server, refused, "GET", "/users/me")
