"""The reads on the auth path: one statement each, straight through the driver.

Every guarded request reads the user it serves (active? which token version? which roles?),
never a cached copy, so a deactivation, deletion or password change made through any worker
or replica is refused on the very next request. That read is the hot path, so it skips the
ORM session and its transaction: a statement compiled once from the tables, with
SQLAlchemy's own type conversions, run by the driver.

A sign-in's credential check goes the same way, for its timing rather than its speed: found
or not, the read costs a few microseconds, so an address that has an account cannot be told
from one that has none by how long its failure takes (an ORM load of the found row costs
tens of microseconds more than no row).

- SQLite: on the event loop. A primary-key read from a WAL file is a few microseconds, far
  less than a thread hop, and WAL readers do not wait for writers. Should the file be busy
  all the same (a recovery, another journal mode), the read goes to a thread with the full
  busy timeout instead of stalling the loop.
- PostgreSQL: a Core statement through the service's engine on an autocommit connection
  (no BEGIN or COMMIT round trip).
"""

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import Column, Select, bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service.models import User, UserRole

# A busy file waits this long on the event loop before the read moves to a thread.
ON_LOOP_BUSY_TIMEOUT_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class UserState:
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


_users, _roles = User.__table__, UserRole.__table__  # type: ignore[attr-defined]
_STATEMENT = (
    select(
        _users.c.id,
        _users.c.email,
        _users.c.name,
        _users.c.is_active,
        _users.c.is_verified,
        _users.c.token_version,
        _users.c.created_at,
        _users.c.updated_at,
        _roles.c.role,
    )
    .select_from(_users.outerjoin(_roles, _roles.c.user_id == _users.c.id))
    .where(_users.c.id == bindparam("id"))
)


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


def _state(rows: Sequence[Sequence[Any]]) -> UserState | None:
    """The user of rows already converted to Python values (one row per role, or one)."""
    if not rows:
        return None
    id_, email, name, is_active, is_verified, token_version, created_at, updated_at, _ = rows[0]
    return UserState(
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


def _credentials(rows: Sequence[Sequence[Any]]) -> Credentials | None:
    return Credentials(*rows[0]) if rows else None


class _Compiled:
    """A statement of one parameter in one dialect's SQL, with the type conversions
    SQLAlchemy would apply to the parameter and to each column."""

    def __init__(self, statement: Select[Any], parameter: Column[Any], dialect: Dialect) -> None:
        self.sql = str(statement.compile(dialect=dialect))
        bind = parameter.type.dialect_impl(dialect).bind_processor(dialect)
        self.bind: Callable[[Any], Any] = bind or (lambda value: value)
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in statement.selected_columns
        ]

    def rows(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return [[p(v) if p else v for p, v in zip(self._results, row, strict=True)] for row in rows]


class UserStates(Protocol):
    async def get(self, user_id: uuid.UUID) -> UserState | None: ...
    async def credentials(self, email_key: str) -> Credentials | None: ...
    async def close(self) -> None: ...


class SQLiteUserStates:
    def __init__(self, path: str, *, timeout: float) -> None:
        self._path, self._timeout = path, timeout
        dialect = sqlite.dialect()
        self._state = _Compiled(_STATEMENT, _users.c.id, dialect)
        self._credentials = _Compiled(_CREDENTIALS, _users.c.email_key, dialect)
        self._connection: sqlite3.Connection | None = None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA query_only = ON")
        return connection

    @staticmethod
    def _read(connection: sqlite3.Connection, query: _Compiled, value: Any) -> list[list[Any]]:
        return query.rows(connection.execute(query.sql, (query.bind(value),)).fetchall())

    def _read_waiting(self, query: _Compiled, value: Any) -> list[list[Any]]:
        connection = self._connect(self._timeout)
        try:
            return self._read(connection, query, value)
        finally:
            connection.close()

    async def _fetch(self, query: _Compiled, value: Any) -> list[list[Any]]:
        try:
            if self._connection is None:
                self._connection = self._connect(ON_LOOP_BUSY_TIMEOUT_SECONDS)
            return self._read(self._connection, query, value)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                await self.close()  # the file moved or broke: the next read opens it afresh
                raise
        return await anyio.to_thread.run_sync(self._read_waiting, query, value)

    async def get(self, user_id: uuid.UUID) -> UserState | None:
        return _state(await self._fetch(self._state, user_id))

    async def credentials(self, email_key: str) -> Credentials | None:
        return _credentials(await self._fetch(self._credentials, email_key))

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class EngineUserStates:
    """Through the service's engine: a Core statement on an autocommit connection (no BEGIN,
    no COMMIT round trip), its pool's pre-ping and reconnection as for every other query."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _fetch(self, statement: Select[Any], **parameters: Any) -> Sequence[Any]:
        async with self._engine.connect() as connection:
            rows: Sequence[Any] = (await connection.execute(statement, parameters)).all()
        return rows

    async def get(self, user_id: uuid.UUID) -> UserState | None:
        return _state(await self._fetch(_STATEMENT, id=user_id))

    async def credentials(self, email_key: str) -> Credentials | None:
        return _credentials(await self._fetch(_CREDENTIALS, key=email_key))

    async def close(self) -> None:
        return None  # the engine is the app's, disposed with it


def user_states_for(engine: AsyncEngine, *, timeout: float) -> UserStates:
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteUserStates(url.database, timeout=timeout)
    return EngineUserStates(engine)
