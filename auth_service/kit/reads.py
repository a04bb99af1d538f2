"""The reads on the auth path: one statement each, straight through the driver.

Every guarded request reads the state its token depends on, never a cached copy: the user it
serves (active? which token version? which roles?), its session, whether its `jti` was
revoked, or, for a client's own token, the client; an introspection reads the client asking
in the same statement. So a deactivation, deletion, password change, sign-out or revocation
made through any worker or replica is refused on the very next request. That read is the hot
path, so it skips the ORM session and its transaction: a statement compiled once from the
tables, with SQLAlchemy's own type conversions, run by the driver.

A sign-in's credential check goes the same way, for its timing rather than its speed: found
or not, the read costs a few microseconds, so an address that has an account cannot be told
from one that has none by how long its failure takes (an ORM load of the found row costs
tens of microseconds more than no row).

- SQLite: on the event loop. A primary-key read from a WAL file is a few microseconds, far
  less than a thread hop, and WAL readers do not wait for writers. Should the file be busy
  all the same (a recovery, another journal mode), the read goes to a thread with the full
  busy timeout instead of stalling the loop.
- PostgreSQL: through psycopg on a few autocommit connections of its own (no BEGIN or
  COMMIT round trip). SQLAlchemy's async engine costs more than the query: its greenlet
  bridge, a pre-ping round trip per checkout, the isolation reset on return (one read:
  about 1,080 us through the engine, 300 us straight through psycopg, on this machine). No
  ping either: a connection the server dropped fails its next read, which then runs once
  more on a new connection (a read is safe to repeat).
"""

import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
import psycopg
from sqlalchemy import Column, Select, bindparam, exists, literal_column, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service.kit.db import postgres_connect_args
from auth_service.models import LoginSession, OAuthClient, RevokedAccessToken, User, UserRole

# A busy file waits this long on the event loop before the read moves to a thread.
ON_LOOP_BUSY_TIMEOUT_SECONDS = 0.02
# PostgreSQL connections of the reads, per worker (beside the engine's pool for the rest).
POSTGRES_CONNECTIONS = 10


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as the guards and the account routes see it (no password hash)."""

    id: uuid.UUID
    email: str
    name: str | None
    is_active: bool
    is_verified: bool
    token_version: int
    created_at: datetime
    updated_at: datetime
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A client as the token endpoint, the guards and introspection see it."""

    client_id: str
    is_active: bool
    is_confidential: bool
    secret_digest: bytes | None
    scopes: frozenset[str]
    grant_types: frozenset[str]
    audiences: frozenset[str]
    previous_secret_digest: bytes | None  # accepted too, until the time below
    previous_secret_expires_at: datetime | None
    token_version: int  # its own tokens must carry it


@dataclass(frozen=True, slots=True)
class TokenRow:
    """What `read` found: each part None where it was not asked for or does not exist."""

    user: UserRow | None
    session_alive: bool  # the session asked for exists (False when none was asked for)
    revoked: bool  # the `jti` asked for is on the denylist
    client: ClientRow | None  # the client asked for: a client's own token's `sub`
    caller: ClientRow | None  # the client asking, for introspection


_users, _roles = User.__table__, UserRole.__table__  # type: ignore[attr-defined]
_sessions = LoginSession.__table__  # type: ignore[attr-defined]
_revoked = RevokedAccessToken.__table__  # type: ignore[attr-defined]
_clients = OAuthClient.__table__  # type: ignore[attr-defined]
_client, _caller = _clients.alias("client"), _clients.alias("caller")
_CLIENT_COLUMNS = (
    "client_id",
    "is_active",
    "is_confidential",
    "secret_digest",
    "scopes",
    "grant_types",
    "audiences",
    "previous_secret_digest",
    "previous_secret_expires_at",
    "token_version",
)
_CLIENT, _CALLER = 10, 10 + len(_CLIENT_COLUMNS)  # where each client's columns start in a row
# One row whatever is found: every part joins a one-row anchor on its own key (a NULL key
# finds nothing), one row per role of the user.
_anchor = select(literal_column("1").label("one")).subquery("anchor")
_STATEMENT = select(
    _users.c.id,
    _users.c.email,
    _users.c.name,
    _users.c.is_active,
    _users.c.is_verified,
    _users.c.token_version,
    _users.c.created_at,
    _users.c.updated_at,
    exists().where(_sessions.c.id == bindparam("sid")).label("session_alive"),
    exists().where(_revoked.c.jti == bindparam("jti")).label("revoked"),
    *(_client.c[name] for name in _CLIENT_COLUMNS),
    *(_caller.c[name] for name in _CLIENT_COLUMNS),
    _roles.c.role,
).select_from(
    _anchor.outerjoin(_users, _users.c.id == bindparam("id"))
    .outerjoin(_roles, _roles.c.user_id == _users.c.id)
    .outerjoin(_client, _client.c.client_id == bindparam("client"))
    .outerjoin(_caller, _caller.c.client_id == bindparam("caller"))
)


_TOKEN_PARAMETERS = {
    "id": _users.c.id,
    "sid": _sessions.c.id,
    "jti": _revoked.c.jti,
    "client": _clients.c.client_id,
    "caller": _clients.c.client_id,
}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a sign-in checks before it loads the account."""

    id: uuid.UUID
    hashed_password: str
    is_active: bool
    token_version: int


_CREDENTIALS = select(
    _users.c.id, _users.c.hashed_password, _users.c.is_active, _users.c.token_version
).where(_users.c.email_key == bindparam("key"))
_CREDENTIAL_PARAMETERS = {"key": _users.c.email_key}


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None  # a driver may give a memoryview


def _client_row(columns: Sequence[Any]) -> ClientRow | None:
    (
        client_id,
        is_active,
        is_confidential,
        secret_digest,
        scopes,
        grant_types,
        audiences,
        previous_secret_digest,
        previous_secret_expires_at,
        token_version,
    ) = columns
    if client_id is None:
        return None
    return ClientRow(
        client_id=client_id,
        is_active=is_active,
        is_confidential=is_confidential,
        secret_digest=_bytes(secret_digest),
        scopes=frozenset(scopes),
        grant_types=frozenset(grant_types),
        audiences=frozenset(audiences),
        previous_secret_digest=_bytes(previous_secret_digest),
        previous_secret_expires_at=previous_secret_expires_at,
        token_version=token_version,
    )


def _token_row(rows: Sequence[Sequence[Any]]) -> TokenRow:
    """The token's row already converted to Python values (one row per role, or one)."""
    first = rows[0]
    id_, email, name, is_active, is_verified, token_version, created_at, updated_at = first[:8]
    user = None
    if id_ is not None:
        user = UserRow(
            id=id_,
            email=email,
            name=name,
            is_active=is_active,
            is_verified=is_verified,
            token_version=token_version,
            created_at=created_at,
            updated_at=updated_at,
            roles=tuple(sorted(row[-1] for row in rows if row[-1] is not None)),
        )
    return TokenRow(
        user=user,
        session_alive=bool(first[8]),
        revoked=bool(first[9]),
        client=_client_row(first[_CLIENT:_CALLER]),
        caller=_client_row(first[_CALLER : _CALLER + len(_CLIENT_COLUMNS)]),
    )


def _credentials(rows: Sequence[Sequence[Any]]) -> Credentials | None:
    return Credentials(*rows[0]) if rows else None


class _Compiled:
    """A statement in one dialect's SQL, with the type conversions SQLAlchemy would apply
    to its parameters (named by `parameters`, with the column each is compared to) and to
    each column."""

    def __init__(
        self, statement: Select[Any], parameters: Mapping[str, Column[Any]], dialect: Dialect
    ) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._order = compiled.positiontup  # positional styles (SQLite's ?); None: named
        self._binds = {
            name: column.type.dialect_impl(dialect).bind_processor(dialect)
            for name, column in parameters.items()
        }
        if set(compiled.params) != set(parameters):
            raise ValueError(f"the statement's parameters are {sorted(compiled.params)}")
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in statement.selected_columns
        ]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for these values."""
        bound = {
            name: value if (p := self._binds[name]) is None or value is None else p(value)
            for name, value in values.items()
        }
        return bound if self._order is None else tuple(bound[name] for name in self._order)

    def rows(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return [[p(v) if p else v for p, v in zip(self._results, row, strict=True)] for row in rows]


class Reads(ABC):
    """The reads, over a backend's `_fetch` of a compiled statement."""

    _token: _Compiled
    _credentials: _Compiled

    @abstractmethod
    async def _fetch(self, query: _Compiled, values: Mapping[str, Any]) -> list[list[Any]]:
        """The rows of `query` with `values`, converted to Python values."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connections the reads keep."""

    async def read(
        self,
        *,
        user_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        jti: str | None = None,
        client_id: str | None = None,
        caller_id: str | None = None,
    ) -> TokenRow:
        values = {
            "id": user_id,
            "sid": session_id,
            "jti": jti,
            "client": client_id,
            "caller": caller_id,
        }
        return _token_row(await self._fetch(self._token, values))

    async def credentials(self, email_key: str) -> Credentials | None:
        return _credentials(await self._fetch(self._credentials, {"key": email_key}))


class SQLiteReads(Reads):
    def __init__(self, path: str, *, timeout: float) -> None:
        self._path, self._timeout = path, timeout
        dialect = sqlite.dialect()
        self._token = _Compiled(_STATEMENT, _TOKEN_PARAMETERS, dialect)
        self._credentials = _Compiled(_CREDENTIALS, _CREDENTIAL_PARAMETERS, dialect)
        self._connection: sqlite3.Connection | None = None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA query_only = ON")
        return connection

    @staticmethod
    def _read(
        connection: sqlite3.Connection, query: _Compiled, values: Mapping[str, Any]
    ) -> list[list[Any]]:
        return query.rows(connection.execute(query.sql, query.bind(values)).fetchall())

    def _read_waiting(self, query: _Compiled, values: Mapping[str, Any]) -> list[list[Any]]:
        connection = self._connect(self._timeout)
        try:
            return self._read(connection, query, values)
        finally:
            connection.close()

    async def _fetch(self, query: _Compiled, values: Mapping[str, Any]) -> list[list[Any]]:
        try:
            if self._connection is None:
                self._connection = self._connect(ON_LOOP_BUSY_TIMEOUT_SECONDS)
            return self._read(self._connection, query, values)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                await self.close()  # the file moved or broke: the next read opens it afresh
                raise
        return await anyio.to_thread.run_sync(self._read_waiting, query, values)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PostgresReads(Reads):
    """Up to `size` autocommit psycopg connections, opened as reads need them and kept."""

    def __init__(
        self,
        conninfo: str,
        connect_args: dict[str, Any],
        *,
        dialect: Dialect,
        timeout: float,
        size: int,
    ) -> None:
        self._conninfo, self._connect_args, self._timeout = conninfo, connect_args, timeout
        self._token = _Compiled(_STATEMENT, _TOKEN_PARAMETERS, dialect)
        self._credentials = _Compiled(_CREDENTIALS, _CREDENTIAL_PARAMETERS, dialect)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = anyio.Semaphore(size)  # at most this many connections at once

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise psycopg.OperationalError("no database connection came free in time") from None
        try:
            yield
        finally:
            self._slots.release()

    async def _read_on(
        self, connection: psycopg.AsyncConnection[Any], query: _Compiled, values: Mapping[str, Any]
    ) -> list[list[Any]]:
        """The query's rows; the connection is kept if the read succeeds, else closed."""
        try:
            cursor = await connection.execute(query.sql, query.bind(values))
            rows = query.rows(await cursor.fetchall())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.close()
            raise
        self._idle.append(connection)
        return rows

    async def _fetch(self, query: _Compiled, values: Mapping[str, Any]) -> list[list[Any]]:
        async with self._slot():
            if self._idle:
                connection = self._idle.pop()
                try:
                    return await self._read_on(connection, query, values)
                except psycopg.OperationalError:
                    if not connection.broken:
                        raise
                    # The server dropped it while it was idle (a restart, a failover).
            connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, **self._connect_args
            )
            return await self._read_on(connection, query, values)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


def reads_for(engine: AsyncEngine, *, timeout: float) -> Reads:
    url = engine.url
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresReads(
            conninfo,
            postgres_connect_args(url, timeout=timeout),
            dialect=engine.dialect,  # psycopg's: its conversions are the ones SQLAlchemy uses
            timeout=timeout,
            size=POSTGRES_CONNECTIONS,
        )
    if not url.database or url.database == ":memory:":  # Settings refuses these already
        raise ValueError("the guards read a SQLite file: an in-memory database is not shared")
    return SQLiteReads(url.database, timeout=timeout)
