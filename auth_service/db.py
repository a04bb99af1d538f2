"""Engine and sessions. Plain `sqlite:///` and `postgresql://` URLs pick their drivers here."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SQLITE_BUSY_TIMEOUT_SECONDS = 30


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


def create_engine(database_url: str) -> AsyncEngine:
    """The async engine. Statement parameters (hashes, emails) never appear in errors or logs."""
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        # A local file has no connection to lose: no pre-ping round trip per checkout.
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, hide_parameters=True
        )
    else:
        engine = create_async_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
        )
    configure_sqlite(engine.sync_engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block succeeds, roll back when it raises."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


STARTUP_LOCK_ID = 0x61757468  # "auth"


async def lock_for_startup(session: AsyncSession) -> None:
    """Serialize start-up work (key creation, bootstrap admin) across processes and replicas.

    PostgreSQL: a transaction-level advisory lock. SQLite: a write that matches no row takes
    the database's write lock until the transaction ends.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.exec(text("SELECT pg_advisory_xact_lock(:id)").bindparams(id=STARTUP_LOCK_ID))
    else:
        await session.exec(text("UPDATE signing_keys SET kid = kid WHERE 1 = 0"))


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
