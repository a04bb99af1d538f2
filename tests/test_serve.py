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
import signal
import socket
import subprocess
import sys
import threading
import time
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
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from auth_service.kit import migrate
from auth_service.kit.db import sync_url
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, DATABASES, STRONG_PASSWORD, scratch_postgres

WORKERS = 2
STARTUP_TIMEOUT_SECONDS = 45.0
STOP_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 15.0
MIN_REQUESTS = 30
MAX_REQUESTS = 150  # bound on the loops that go on until both workers have answered
SERVE = [sys.executable, "-m", "auth_service", "serve"]

RouteCounts = collections.Counter[tuple[str, str]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _child_environment(**values: str) -> dict[str, str]:
    """The test runner's environment without any AUTH_* or metrics setting, plus `values`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("AUTH_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(values)
    return env


class Server:
    """One `auth-service serve` process tree on loopback; restartable on the same port."""

    workers = WORKERS

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.logs: list[Path] = []
        self.metrics_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # Connection: close makes every request a new TCP connection, whichever worker accepts.
        self.http = httpx.Client(
            base_url=self.url, headers={"Connection": "close"}, timeout=REQUEST_TIMEOUT_SECONDS
        )
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        return _child_environment(
            AUTH_DATABASE_URL=self.database_url,
            AUTH_SECRET_KEY="serve test secret key",
            AUTH_ISSUER=self.issuer,
            AUTH_BCRYPT_ROUNDS="4",
            AUTH_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
            AUTH_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
            AUTH_LOG_LEVEL="INFO",
            # `serve` creates its metrics directory with mkdtemp: keep it where we can see it.
            TMPDIR=str(self.workdir / "tmp"),
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        log = self.workdir / f"serve-{len(self.logs) + 1}.log"
        self.logs.append(log)
        metrics_before = set((self.workdir / "tmp").glob("auth-service-metrics-*"))
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                [*SERVE, "--host", "127.0.0.1", "--port", str(self.port)]
                + ["--workers", str(self.workers)],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: teardown can reach the workers
            )
        try:
            self._wait_until_ready(log)
        except BaseException:
            self.stop()
            raise
        created = set((self.workdir / "tmp").glob("auth-service-metrics-*")) - metrics_before
        self.metrics_dir = created.pop() if len(created) == 1 else None

    def _wait_until_ready(self, log: Path) -> None:
        """Every worker has finished its start-up and /health/ready answers 200."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{_tail(log)}")
            started = log.read_text(errors="replace").count("Application startup complete")
            if started >= self.workers:
                try:
                    if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in {STARTUP_TIMEOUT_SECONDS} s:\n{_tail(log)}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL the whole group when it does not stop in time."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def restart(self) -> int | None:
        code = self.stop()
        self.start()
        return code

    def close(self) -> None:
        self.stop()
        self.http.close()

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def requests_by_worker(self) -> dict[str, RouteCounts]:
        """(method, route) -> requests answered, per worker pid, from the metric files."""
        assert self.metrics_dir is not None, "serve --workers 2 set no PROMETHEUS_MULTIPROC_DIR"
        by_worker: dict[str, RouteCounts] = {}
        for path in self.metrics_dir.glob("counter_*.db"):
            counts: RouteCounts = collections.Counter()
            for family in MultiProcessCollector.merge([str(path)], accumulate=True):
                for sample in family.samples:
                    if sample.name == "auth_http_requests_total":
                        key = (sample.labels["method"], sample.labels["route"])
                        counts[key] += int(sample.value)
            by_worker[path.stem.removeprefix("counter_")] = counts
        return by_worker


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _workers_that_answered(
    before: dict[str, RouteCounts], after: dict[str, RouteCounts], method: str, route: str
) -> set[str]:
    return {
        pid
        for pid, counts in after.items()
        if counts[(method, route)] > before.get(pid, collections.Counter())[(method, route)]
    }


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
    server: Server, step: Callable[[int], None], method: str, route: str
) -> int:
    """Run `step(i)` at least MIN_REQUESTS times, and on until both workers answered `route`."""
    before = server.requests_by_worker()
    for i in range(MAX_REQUESTS):
        step(i)
        if i + 1 >= MIN_REQUESTS:
            after = server.requests_by_worker()
            if len(_workers_that_answered(before, after, method, route)) >= WORKERS:
                return i + 1
    answered = _workers_that_answered(before, server.requests_by_worker(), method, route)
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
    assert len(_workers_that_answered(before, after, "GET", "/.well-known/jwks.json")) == WORKERS


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
        answered = _workers_that_answered(before, server.requests_by_worker(), "POST", "/users")

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
        [*argv, "serve", "--host", "127.0.0.1", "--port", str(_free_port())],
        cwd=tmp_path,
        env=_child_environment(
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
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
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
