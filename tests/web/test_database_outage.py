"""The database goes away under a running service.

Every request that needs it answers 503 with a JSON body and `Retry-After` within a bounded
time (RFC 6749 §5.2 `temporarily_unavailable` on the token endpoint), never a 500 or a hang;
once the database is back the service serves again by itself. PostgreSQL is taken away by a
TCP proxy this test runs in front of the suite's server (never by stopping that server);
SQLite by moving its file away or holding its write lock from another connection.
"""

import asyncio
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url

from auth_service.kit.db import STARTUP_LOCK_ID, create_engine, is_unavailable
from auth_service.kit.reads import POSTGRES_CONNECTIONS, PostgresReads, reads_for
from auth_service.web.deps import DbDep
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DATABASES,
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    app_of,
    app_state,
    drop_connections,
    make_settings,
    started_client,
)
from tests.helpers.outage import (
    BOUND_SECONDS,
    DATABASE_TIMEOUT,
    answered_while_locked,
    assert_unavailable,
)

pytestmark = pytest.mark.anyio

# The service's database timeout in these tests (PostgreSQL's connect timeout is at least 2 s).
# A generous bound on an answer while the database is away; without a timeout a connect
# hangs for 130 s and a pool checkout or a locked SQLite file for 30 s.
only_postgresql = pytest.mark.parametrize(
    "database", [d for d in DATABASES if d == "postgresql"], indirect=True
)
only_sqlite = pytest.mark.parametrize(
    "database", [d for d in DATABASES if d == "sqlite"], indirect=True
)
TOKEN_FORM = {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}


class TCPProxy:
    """A loopback TCP proxy that forwards to `target`, or refuses, or accepts and hangs."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0  # chosen by the first start, kept by every restart
        self.forwarding = True
        self.cut_on: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, *, forwarding: bool = True) -> None:
        self.forwarding = forwarding
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones, as a stopped server does."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._drop()
        await asyncio.gather(*self._tasks)
        if server is not None:
            await server.wait_closed()

    def _drop(self) -> None:
        # Aborted transports end every read at once, so each connection's task returns.
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if not self.forwarding:
                await reader.read()  # accepted, never answered: the connect hangs
                return
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            await asyncio.gather(
                self._pipe(reader, upstream, watch=True), self._pipe(upstream_reader, writer)
            )
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool = False
    ) -> None:
        while data := await reader.read(65536):
            if watch and self.cut_on is not None and self.cut_on in data:
                # The connection is lost just as this statement goes out (once).
                self.cut_on = None
                self._drop()
                return
            writer.write(data)
            await writer.drain()
        writer.close()


@pytest.fixture
async def proxy(database: str) -> AsyncIterator[TCPProxy]:
    url = make_url(database)
    proxy = TCPProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


def _through(proxy: TCPProxy, database: str) -> str:
    return make_url(database).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


async def _bounded(call: Awaitable[httpx.Response]) -> httpx.Response:
    """The answer, which must come within the bound: a hang fails the test, not the suite."""
    with anyio.fail_after(BOUND_SECONDS):
        return await call


async def _assert_serving(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.get("/users/me", headers=headers)).status_code == 200
    assert (await client.post("/oauth2/token", data=TOKEN_FORM)).status_code == 200
    renamed = await client.patch("/users/me", json={"name": "Back"}, headers=headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Back"


async def _assert_every_request_unavailable(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert_unavailable(await _bounded(client.get("/users/me", headers=headers)))
    assert_unavailable(await _bounded(client.post("/oauth2/token", data=TOKEN_FORM)), oauth=True)
    assert (await _bounded(client.get("/health/ready"))).status_code == 503


# --- unreachable ---------------------------------------------------------------------------


@only_postgresql
async def test_a_stopped_postgresql_answers_503_and_the_service_recovers(
    proxy: TCPProxy, database: str
) -> None:
    settings = make_settings(_through(proxy, database), database_timeout_seconds=DATABASE_TIMEOUT)
    async with started_client(settings) as client:
        headers = await admin_headers(client)

        await proxy.stop()
        await _assert_every_request_unavailable(client, headers)
        await proxy.start()

        await _assert_serving(client, headers)


@only_postgresql
async def test_a_guard_connection_the_server_dropped_is_replaced_without_a_failed_request(
    proxy: TCPProxy, database: str
) -> None:
    settings = make_settings(_through(proxy, database), database_timeout_seconds=DATABASE_TIMEOUT)
    async with started_client(settings) as client:
        headers = await admin_headers(client)
        assert (await client.get("/users/me", headers=headers)).status_code == 200

        await proxy.stop()  # the idle connection the read used is dropped...
        await proxy.start()  # ...and the server is back before the next request

        me = await _bounded(client.get("/users/me", headers=headers))
        assert me.status_code == 200, me.text


@only_postgresql
async def test_guard_reads_wait_for_a_free_connection_no_longer_than_the_timeout(
    database: str,
) -> None:
    engine = create_engine(database)
    reads = reads_for(engine, timeout=0.2)
    assert isinstance(reads, PostgresReads)
    try:
        async with AsyncExitStack() as stack:
            for _ in range(POSTGRES_CONNECTIONS):
                await stack.enter_async_context(reads._slot())  # every read in flight
            with anyio.fail_after(BOUND_SECONDS), pytest.raises(psycopg.Error) as refused:
                await reads.read(user_id=uuid.uuid4())
        assert is_unavailable(refused.value)  # answered 503
        assert (await reads.read(user_id=uuid.uuid4())).user is None  # a free one serves at once
    finally:
        await reads.close()
        await engine.dispose()


@only_sqlite
async def test_a_missing_sqlite_file_answers_503_and_the_service_recovers(
    database: str, tmp_path: Path
) -> None:
    home, away = tmp_path / "db-home", tmp_path / "db-away"
    home.mkdir()
    shutil.copy(database.removeprefix("sqlite:///"), home / "auth.db")
    settings = make_settings(
        f"sqlite:///{home / 'auth.db'}", database_timeout_seconds=DATABASE_TIMEOUT
    )
    async with started_client(settings) as client:
        headers = await admin_headers(client)

        home.rename(away)
        # Pooled connections keep the moved file open (and working): new ones cannot open it.
        await drop_connections(client)
        await _assert_every_request_unavailable(client, headers)
        away.rename(home)

        await _assert_serving(client, headers)


# --- stalled -------------------------------------------------------------------------------


@only_postgresql
async def test_a_connect_that_hangs_is_cut_off_by_the_connect_timeout(
    proxy: TCPProxy, database: str
) -> None:
    settings = make_settings(_through(proxy, database), database_timeout_seconds=DATABASE_TIMEOUT)
    async with started_client(settings) as client:
        headers = await admin_headers(client)

        await proxy.stop()
        await proxy.start(forwarding=False)  # accepts, never answers
        await _assert_every_request_unavailable(client, headers)
        await proxy.stop()
        await proxy.start()

        await _assert_serving(client, headers)


@only_sqlite
async def test_a_locked_sqlite_file_answers_503_to_writes_after_the_busy_timeout(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client(database_timeout_seconds=DATABASE_TIMEOUT) as client:
        await _assert_locked_file_refuses_writes(client, database)


async def _assert_locked_file_refuses_writes(client: httpx.AsyncClient, database: str) -> None:
    headers = await admin_headers(client)
    # Another process (a backup, a long script) holds the write lock.
    other = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)

    async def release() -> None:
        if other.in_transaction:
            other.execute("ROLLBACK")

    try:
        other.execute("BEGIN EXCLUSIVE")
        # WAL: readers do not wait for the writer.
        read = await _bounded(client.get("/users/me", headers=headers))
        renamed, registered, token = await answered_while_locked(
            asyncio.gather(
                # The UPDATE goes out when the request's session commits, after the route.
                client.patch("/users/me", json={"name": "X"}, headers=headers),
                # Registration writes inside the service (a flush, to see a taken email).
                client.post(
                    "/users", json={"email": "new@example.com", "password": STRONG_PASSWORD}
                ),
                # A sign-in writes its session and refresh token.
                client.post("/oauth2/token", data=TOKEN_FORM),
            ),
            release,
        )
    finally:
        await release()
        other.close()

    assert_unavailable(renamed)
    assert_unavailable(registered)
    assert_unavailable(token, oauth=True)
    assert read.status_code == 200
    assert read.json()["name"] is None  # the failed PATCH changed nothing
    await _assert_serving(client, headers)


@only_postgresql
async def test_a_connection_lost_while_the_session_commits_answers_503(
    proxy: TCPProxy, database: str
) -> None:
    settings = make_settings(_through(proxy, database), database_timeout_seconds=DATABASE_TIMEOUT)
    async with started_client(settings) as client:
        headers = await admin_headers(client)

        # PATCH /users/me reads the user in its guard; its UPDATE goes out at commit.
        proxy.cut_on = b"UPDATE users"
        renamed = await _bounded(client.patch("/users/me", json={"name": "X"}, headers=headers))
        me = await client.get("/users/me", headers=headers)

        assert_unavailable(renamed)
        assert proxy.cut_on is None  # the connection was cut at the UPDATE
        assert me.status_code == 200
        assert me.json()["name"] is None
        await _assert_serving(client, headers)


# --- overloaded ----------------------------------------------------------------------------


async def _hold_every_connection(stack: AsyncExitStack, engine: Any) -> None:
    """Check out pooled connections, as that many slow requests would, until none is left."""
    while True:
        try:
            await stack.enter_async_context(engine.connect())
        except exc.TimeoutError:
            return


async def test_an_exhausted_pool_answers_503_after_the_pool_timeout(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client(database_timeout_seconds=DATABASE_TIMEOUT) as client:
        headers = await admin_headers(client)
        engine = app_state(client).engine

        async with AsyncExitStack() as stack:
            await _hold_every_connection(stack, engine)
            me = await _bounded(client.get("/users/me", headers=headers))
            token = await _bounded(client.post("/oauth2/token", data=TOKEN_FORM))

        # The guards read through connections of their own, not from the engine's pool.
        assert me.status_code == 200, me.text
        assert_unavailable(token, oauth=True)
        await _assert_serving(client, headers)


@only_postgresql
async def test_a_row_locked_elsewhere_answers_503_after_the_statement_timeout(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client(database_timeout_seconds=DATABASE_TIMEOUT) as client:
        headers = await admin_headers(client)
        # Another transaction (a long migration, a stuck script) holds the user's row.
        async with await psycopg.AsyncConnection.connect(database) as other:
            await other.execute("SELECT 1 FROM users WHERE email = %s FOR UPDATE", [ADMIN_EMAIL])
            read = await _bounded(client.get("/users/me", headers=headers))  # reads do not wait
            renamed = await answered_while_locked(
                client.patch("/users/me", json={"name": "X"}, headers=headers), other.rollback
            )

        assert_unavailable(renamed)
        assert read.status_code == 200
        assert read.json()["name"] is None
        await _assert_serving(client, headers)


@only_postgresql
async def test_start_up_waits_for_another_replica_longer_than_the_statement_timeout(
    database: str,
) -> None:
    settings = make_settings(database, database_timeout_seconds=DATABASE_TIMEOUT)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as other:
        # Another replica is starting up (migrating, creating the signing key).
        await other.execute("SELECT pg_advisory_lock(%s)", [STARTUP_LOCK_ID])

        async def finish_its_start_up() -> None:
            await asyncio.sleep(3 * DATABASE_TIMEOUT)
            await other.execute("SELECT pg_advisory_unlock(%s)", [STARTUP_LOCK_ID])

        other_replica = asyncio.ensure_future(finish_its_start_up())
        async with started_client(settings) as client:
            assert other_replica.done()  # this one waited for it, then started
            assert (await client.get("/health/ready")).status_code == 200


# --- bugs stay bugs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM no_such_table",  # on SQLite an OperationalError, like a locked file
        "INSERT INTO users (email) VALUES (NULL)",  # an IntegrityError
        "SELEC 1",  # a syntax error
    ],
)
async def test_a_database_error_that_is_a_bug_is_a_500_not_a_503(
    client: httpx.AsyncClient, statement: str
) -> None:
    app = app_of(client)

    @app.get("/probe/bad-sql")
    async def bad_sql(db: DbDep) -> None:
        connection = await db.connection()
        await connection.execute(text(statement))

    response = await client.get("/probe/bad-sql")

    assert response.status_code == 500
    assert response.json()["detail"] == "Internal server error."
