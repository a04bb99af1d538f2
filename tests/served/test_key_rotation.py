"""Signing key rotation and emergency revocation reach every worker of a running `serve`.

The rules themselves, in-process on both databases: tests/keys/test_key_rotation.py.
"""

import collections
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DATABASES,
    STRONG_PASSWORD,
    bearer,
    scratch_postgres,
)
from tests.helpers.keys import CLI_ROTATED, kid_of, now_signing
from tests.helpers.serve import WORKERS, RouteCounts, Server, workers_that_answered

pytestmark = pytest.mark.anyio

# Bounds on the waits for a change to reach a worker (a poll every AUTH_KEY_REFRESH_SECONDS).
SERVE_WAIT_SECONDS = 45.0


class CountingServer(Server):
    """A server that knows how many requests the test sent it, by (method, route): a worker
    counts a request in its metrics only after it has answered, so the test must know how
    many to wait for."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        super().__init__(database_url, workdir)
        self.sent: collections.Counter[tuple[str, str]] = collections.Counter()

    def environment(self) -> dict[str, str]:
        # The tests sign one user in until every worker has answered: more sessions than
        # the default cap, which would end the first, whose token must stay valid.
        return {**super().environment(), "AUTH_MAX_SESSIONS_PER_USER": "10000"}


@pytest.fixture(scope="module", params=DATABASES)
def serving(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CountingServer]:
    """A real `auth-service serve --workers 2` on a database of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('keys-serve-sqlite') / 'auth.db'}"
        yield from _serve(url, tmp_path_factory)
        return
    with scratch_postgres("auth_keys_serve") as (url, _):
        yield from _serve(url, tmp_path_factory)


def _serve(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountingServer]:
    running = CountingServer(url, tmp_path_factory.mktemp("keys-serve"))
    try:
        running.start()
        yield running
    finally:
        running.close()


def _serve_login(server: CountingServer, email: str, password: str = STRONG_PASSWORD) -> str:
    form = {"grant_type": "password", "username": email, "password": password}
    server.sent["POST", "/oauth2/token"] += 1
    response = server.http.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _me(server: CountingServer, token: str) -> int:
    server.sent["GET", "/users/me"] += 1
    return server.http.get("/users/me", headers=bearer(token)).status_code


def _counted(
    server: CountingServer, method: str, route: str, deadline: float
) -> dict[str, RouteCounts]:
    """The workers' counts once every request sent so far for `method route` is in them."""
    while True:
        counts = server.requests_by_worker()
        if sum(c[method, route] for c in counts.values()) >= server.sent[method, route]:
            return counts
        if time.monotonic() > deadline:
            pytest.fail(f"the workers never counted {server.sent[method, route]} {method} {route}")
        time.sleep(0.01)


def _until_every_worker(
    server: CountingServer, holds: Callable[[], bool], method: str, route: str, what: str
) -> None:
    """Wait until `holds()` is true for a run of calls that reached every worker with
    `method route`; any false call starts the run again. Bounded by SERVE_WAIT_SECONDS.

    A run starts from counts that include every earlier request: a refused request counted
    late must not pass for a worker that answered within the run.
    """
    deadline = time.monotonic() + SERVE_WAIT_SECONDS
    before, run = _counted(server, method, route, deadline), 0
    while time.monotonic() < deadline:
        if not holds():
            before, run = _counted(server, method, route, deadline), 0
            continue
        run += 1
        after = server.requests_by_worker()
        if run >= 10 and len(workers_that_answered(before, after, method, route)) >= WORKERS:
            return
    pytest.fail(f"not on every worker within {SERVE_WAIT_SECONDS} s: {what}")


def test_every_worker_of_a_running_serve_follows_a_rotation_and_a_revocation(
    serving: CountingServer,
) -> None:
    email = f"keys-{uuid.uuid4().hex[:12]}@example.com"
    registered = serving.http.post("/users", json={"email": email, "password": STRONG_PASSWORD})
    assert registered.status_code == 201, registered.text
    old = _serve_login(serving, email)
    # Every worker has verified the old token, and keeps it in its cache.
    _until_every_worker(serving, lambda: _me(serving, old) == 200, "GET", "/users/me", "warm-up")

    rotated = subprocess.run(
        [sys.executable, "-m", "auth_service", "rotate-keys"],
        cwd=serving.workdir,
        env=serving.environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stderr.decode()
    found = CLI_ROTATED.fullmatch(rotated.stdout.decode())
    assert found, rotated.stdout.decode()
    new_kid = found[1]

    def publishes_the_next_key() -> bool:
        assert _me(serving, old) == 200
        published = serving.http.get("/.well-known/jwks.json").json()["keys"]
        return new_kid in {k["kid"] for k in published} and kid_of(
            _serve_login(serving, email)
        ) == kid_of(old)

    _until_every_worker(
        serving, publishes_the_next_key, "POST", "/oauth2/token", "publishing the next key"
    )
    now_signing(serving.database_url, new_kid)

    def signs_with_the_new_key() -> bool:
        assert _me(serving, old) == 200  # never refused while the old key verifies
        return kid_of(_serve_login(serving, email)) == new_kid

    _until_every_worker(
        serving, signs_with_the_new_key, "POST", "/oauth2/token", "signing with the new key"
    )
    kids = {key["kid"] for key in serving.http.get("/.well-known/jwks.json").json()["keys"]}
    assert kids == {kid_of(old), new_kid}

    new = _serve_login(serving, email)
    admin = bearer(_serve_login(serving, ADMIN_EMAIL, ADMIN_PASSWORD))
    revoked = serving.http.post(f"/admin/keys/{kid_of(old)}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text

    def refuses_the_old_token() -> bool:
        assert _me(serving, new) == 200
        published = serving.http.get("/.well-known/jwks.json").json()["keys"]
        return _me(serving, old) == 401 and [k["kid"] for k in published] == [new_kid]

    _until_every_worker(
        serving, refuses_the_old_token, "GET", "/users/me", "refusing the revoked key's tokens"
    )
    assert "Traceback" not in serving.log_text()
