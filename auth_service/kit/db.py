"""Engine and sessions. Plain `sqlite:///` and `postgresql://` URLs pick their drivers here."""

import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

T = TypeVar("T")

# How long a request waits for the database (a connection, a pooled one, SQLite's write lock)
# before it gives up; `AUTH_DATABASE_TIMEOUT_SECONDS` sets it for the service.
DEFAULT_TIMEOUT_SECONDS = 5.0


def _driver_url(url: str, *, sqlite_driver: str) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername=f"sqlite+{sqlite_driver}")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")


def async_url(url: str) -> URL:
    return _driver_url(url, sqlite_driver="aiosqlite")


def sync_url(url: str) -> URL:
    """The URL Alembic and the CLI use (blocking drivers)."""
    return _driver_url(url, sqlite_driver="pysqlite")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and one writer (in any worker process) proceed together.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def configure_sqlite(engine: Any) -> None:
    """Pragmas for every new SQLite connection (sync engine or an async engine's sync side)."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def postgres_connect_args(url: URL, *, timeout: float) -> dict[str, Any]:
    """libpq parameters that bound every wait on a PostgreSQL connection by `timeout`."""
    # A statement waiting past the timeout (on a row lock another transaction holds, on an
    # overloaded server) is cancelled: SQLSTATE 57014, answered 503. Options in the URL come
    # after ours, so the URL's own statement_timeout wins.
    options = f"-c statement_timeout={math.ceil(timeout * 1000)}"
    if isinstance(from_url := url.query.get("options"), str):
        options = f"{options} {from_url}"
    connect_args: dict[str, Any] = {"options": options}
    if "connect_timeout" not in url.query:
        # libpq counts whole seconds, and psycopg reads 0 as "its default of 130 s".
        connect_args["connect_timeout"] = math.ceil(timeout)
    return connect_args


def create_engine(database_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> AsyncEngine:
    """The async engine. Statement parameters (hashes, emails) never appear in errors or logs.

    `timeout` bounds every wait for the database: a connect that hangs, a pool with no free
    connection (SQLAlchemy waits 30 s by default), SQLite's busy wait for the write lock,
    a PostgreSQL statement (its `statement_timeout`, lock waits included).
    """
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        # A local file has no connection to lose: no pre-ping round trip per checkout.
        engine = create_async_engine(
            url, connect_args={"timeout": timeout}, pool_timeout=timeout, hide_parameters=True
        )
    else:
        engine = create_async_engine(
            url,
            connect_args=postgres_connect_args(url, timeout=timeout),
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            pool_timeout=timeout,
            hide_parameters=True,
        )
    configure_sqlite(engine.sync_engine)
    return engine


# SQLite result codes (the primary code, the low byte) that mean the file cannot be used
# now: busy or locked past the busy timeout, moved or replaced, unreadable, full.
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,  # SQLITE_READONLY_DBMOVED: the file was renamed or deleted
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
# PostgreSQL SQLSTATE classes (Appendix A of its manual) that mean the server cannot serve
# now: 08 connection exception, 53 insufficient resources (too many connections, disk full,
# out of memory), 57 operator intervention (shutting down, starting up, statement timeout),
# 58 system error (I/O). Every other class (syntax, constraint, data) is a bug or bad input.
_POSTGRES_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})


def is_unavailable(error: BaseException) -> bool:
    """True when `error` means "the database is unreachable or overloaded", not a bug."""
    if isinstance(error, exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, sqlite3.Error | psycopg.Error):  # the driver's own (user_state)
        return _driver_error_is_unavailable(error)
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:  # the dialect recognised a lost connection
        return True
    return error.orig is not None and _driver_error_is_unavailable(error.orig)


def _driver_error_is_unavailable(cause: BaseException) -> bool:
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)  # absent on the driver's own errors
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    if isinstance(cause, psycopg.Error):
        if cause.sqlstate is None:
            # Raised by the client, not the server: a failed or timed-out connect, a dropped
            # connection. Other client-side errors (misuse of the driver) are bugs.
            return isinstance(cause, psycopg.OperationalError)
        return cause.sqlstate[:2] in _POSTGRES_UNAVAILABLE_CLASSES
    return False


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


# Where `transaction` keeps, in its session's `info`, the side writes queued to run once it
# has ended (`SideWrites.after`).
_AFTERWARDS = "auth_service.side_writes"


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block succeeds, roll back when it raises.

    Once it has ended, committed or rolled back because the block raised an error, the side
    writes queued on it (`SideWrites.after`) run, in order, each in a transaction of its
    own; should one fail, its error is what the block raises (a request then answers 503
    for an unavailable database, not its refusal). A cancelled block runs none.
    """
    afterwards: list[Callable[[], Awaitable[object]]] = []
    async with sessionmaker() as db:
        db.info[_AFTERWARDS] = afterwards
        try:
            yield db
        except Exception:
            await db.rollback()
            await _run_all(afterwards)
            raise
        except BaseException:
            await db.rollback()  # cancelled: nothing more runs
            raise
        await db.commit()
    await _run_all(afterwards)


async def _run_all(afterwards: list[Callable[[], Awaitable[object]]]) -> None:
    while afterwards:
        await afterwards.pop(0)()


class SideWrites:
    """Writes that outlive the request that makes them: a failed sign-in's count, a security
    event, the end of a session whose refresh token was reused. A refused request's own
    transaction is rolled back (a failed request leaves the database as it was); what must
    stay is written here instead, in a short transaction of its own, never in the request's.

    `run(work)` calls `work(db)` at once with a session of its own, from its own pooled
    connection, and commits as soon as the work returns (rolls back if it raises). The
    contract: never call it while the request's transaction holds a lock the work needs.
    The work would wait on its own request until the database timeout, then fail (503):
    on PostgreSQL, a row the request has locked (`FOR UPDATE`) or written and the work
    writes; on SQLite, any write at all, since a write takes the database's one write lock
    until the request's transaction ends. Call it before the request's first lock or write,
    or use `after`.

    `after(db, work)` queues the work on the request's transaction `db` (one made by
    `transaction`, as every request's is: `web.deps.get_db`), to `run` once that
    transaction has ended, committed or rolled back, and so holds no lock. For a decision
    taken under a lock, such as a refresh token found spent by the request that waited on
    its session's row lock. With the request's dependency scoped to the route, it runs
    before the answer is sent.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work(db)` in a transaction of its own, committed at once; what it returns."""
        async with transaction(self._sessionmaker) as db:
            return await work(db)

    def after(self, db: AsyncSession, work: Callable[[AsyncSession], Awaitable[object]]) -> None:
        """Run `work(db)` in a transaction of its own once the transaction `db` has ended."""
        afterwards = db.info.get(_AFTERWARDS)
        if afterwards is None:
            raise RuntimeError("side writes queue only on a transaction made by `transaction`")
        afterwards.append(lambda: self.run(work))


STARTUP_LOCK_ID = 0x61757468  # "auth"


async def lock_for_startup(db: AsyncSession) -> None:
    """Serialize start-up work (key creation, bootstrap admin) across processes and replicas.

    PostgreSQL: a transaction-level advisory lock, which migrations take too; start-up waits
    for it as long as another replica's start-up or migration takes. SQLite: a write that
    matches no row takes the database's write lock until the transaction ends.
    """
    await _serialize(db, wait_without_limit=True)


async def lock_for_change(db: AsyncSession) -> None:
    """The start-up lock, taken by a request that changes what start-up creates (a signing
    key rotation or revocation): one at a time with start-up, migrations and each other.

    The wait is bounded like any statement's (`statement_timeout`; SQLite's busy timeout):
    past it the request fails as on an unavailable database, with a 503, never a hang.
    """
    await _serialize(db, wait_without_limit=False)


async def _serialize(db: AsyncSession, *, wait_without_limit: bool) -> None:
    connection = await db.connection()  # the session's transaction
    if connection.dialect.name == "postgresql":
        if wait_without_limit:
            # Waiting for another replica's start-up is not a request: no statement timeout.
            await connection.execute(text("SET LOCAL statement_timeout = 0"))
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:id)").bindparams(id=STARTUP_LOCK_ID)
        )
    else:
        await connection.execute(text("UPDATE signing_keys SET kid = kid WHERE 1 = 0"))


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
