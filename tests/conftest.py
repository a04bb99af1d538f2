"""Shared fixtures: a real database per test (SQLite file or PostgreSQL), the real app.

The database is chosen by the `database` parameter: every test that touches data runs on
SQLite and on PostgreSQL. `TEST_DATABASES=sqlite` (or `postgresql`) narrows the run;
`TEST_POSTGRES_URL` names the server. Outside CI a missing PostgreSQL skips its half of
the suite; with CI=true it fails. The helpers the tests call live in `tests/helpers/`.

Each test is marked by the folder it lives in (docs/contributing/testing.md): `unit` (no app,
no database), `app` plus its capability (the app in-process), or `served` (real processes).
A test module outside those folders is a collection error, so no test goes unmarked.
"""

import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from auth_service.kit import migrate
from tests.helpers.app import (
    DATABASES,
    ClientFactory,
    make_settings,
    scratch_postgres,
    seed,
    started_client,
)

HERE = Path(__file__).parent
CAPABILITIES = ("accounts", "sessions", "clients", "keys", "access", "oauth", "web")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test of this folder by its tier (and capability): `-m unit`, `-m "not served"`,
    `-m keys` select by them."""
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue  # verifier/tests marks its own
        folder = item.path.relative_to(HERE).parts[0]
        if folder in ("unit", "served"):
            item.add_marker(folder)
        elif folder in CAPABILITIES:
            item.add_marker("app")
            item.add_marker(folder)
        else:
            raise pytest.UsageError(
                f"{item.path.relative_to(HERE.parent)}: a test lives in tests/unit/, "
                f"tests/served/ or tests/<capability>/ ({', '.join(CAPABILITIES)})"
            )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A command run in-process configures logging for its process; give the tests theirs
    back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer AUTH_* variable or .env file leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("AUTH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated once with Alembic."""
    with scratch_postgres("auth_test") as (url, _):
        migrate.upgrade(url)
        seed(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "auth.db"
    migrate.upgrade(f"sqlite:///{path}")
    seed(f"sqlite:///{path}")
    return path


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database URL for one test, holding only the signing key and the admin."""
    if request.param == "sqlite":
        path = tmp_path / "auth.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_database")
    yield url
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("TRUNCATE sessions, revoked_access_tokens, clients, user_roles, users")
        connection.execute(
            "DELETE FROM signing_keys WHERE created_at > (SELECT min(created_at) FROM signing_keys)"
        )
        connection.execute(
            "UPDATE signing_keys SET signs_from = created_at, retires_at = NULL, revoked_at = NULL"
        )


@pytest.fixture(params=DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no tables, not even Alembic's, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_postgres("auth_empty") as (url, _):
        yield url


@pytest.fixture
def make_client(database: str) -> ClientFactory:
    """`async with make_client(**settings_overrides) as client:` a started app on `database`."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return started_client(make_settings(overrides.pop("database_url", database), **overrides))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c
