"""The app in-process and its databases: settings, clients, and the calls most tests make.

Every test module imports these from here; `tests/conftest.py` builds its fixtures on them.
`TEST_DATABASES=sqlite` (or `postgresql`) narrows the databases; `TEST_POSTGRES_URL` names the
server.
"""

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.sql import SQL, Identifier
from sqlalchemy import text

from auth_service import startup
from auth_service.app import create_app
from auth_service.config import Settings
from auth_service.state import AppState
from auth_service.web.deps import state_of

BCRYPT_TEST_ROUNDS = 4
STRONG_PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin passphrase that is long"
DATABASES = [d for d in os.environ.get("TEST_DATABASES", "sqlite,postgresql").split(",") if d]
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET_KEY = "test secret key"


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def seed(database_url: str) -> None:
    """Create the signing key and bootstrap admin once, as a first start would.

    RSA key generation is the slowest part of a start; tests that are about the first start
    use `empty_database`.
    """
    with ThreadPoolExecutor(1) as executor:  # a loop of its own, away from the tests' loop
        executor.submit(
            asyncio.run,
            startup.prepare_database(make_settings(database_url), secret_key=SECRET_KEY),
        ).result()


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A new, empty PostgreSQL database, dropped afterwards: (its URL, an admin connection).

    Without a server this skips the test, or fails it under CI=true.
    """
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
        try:
            yield with_database(POSTGRES_URL, name), admin
        finally:
            admin.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET_KEY,
        "issuer": "http://testserver",
        "bcrypt_rounds": BCRYPT_TEST_ROUNDS,
        "password_hash_concurrency": 4,
        "bootstrap_admin_email": ADMIN_EMAIL,
        "bootstrap_admin_password": ADMIN_PASSWORD,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def started_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling a freshly created and started app in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def app_of(client: httpx.AsyncClient) -> FastAPI:
    """The app an in-process client calls."""
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    return app


def app_state(client: httpx.AsyncClient) -> AppState:
    """The state of the app an in-process client calls: its engine, hasher, keys..."""
    return state_of(app_of(client))


async def sql(client: httpx.AsyncClient, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the app's database, committed; the rows it returns, if any."""
    async with app_state(client).engine.begin() as connection:
        result = await connection.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def drop_connections(client: httpx.AsyncClient) -> None:
    """Close every database connection the app holds, as a restart would: pooled ones and
    the guards' own (an open SQLite file keeps working after it is moved)."""
    state = app_state(client)
    await state.reads.close()
    await state.engine.dispose()


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2), as a JWS segment is spelled."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def peer(client: httpx.AsyncClient, host: str) -> httpx.AsyncClient:
    """Another client of `client`'s app, whose requests come from the address `host`."""
    transport = httpx.ASGITransport(app=app_of(client), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def register(
    client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD, **extra: Any
) -> dict[str, Any]:
    response = await client.post("/users", json={"email": email, "password": password, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def request_token(
    client: httpx.AsyncClient,
    email: str,
    password: str = STRONG_PASSWORD,
    scope: str | None = None,
) -> httpx.Response:
    """The token endpoint's answer to a password grant, whatever it is."""
    form = {"grant_type": "password", "username": email, "password": password}
    if scope is not None:
        form["scope"] = scope
    return await client.post("/oauth2/token", data=form)


async def login(
    client: httpx.AsyncClient,
    email: str,
    password: str = STRONG_PASSWORD,
    scope: str | None = None,
) -> str:
    response = await request_token(client, email, password, scope)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def auth_headers(
    client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD
) -> dict[str, str]:
    return bearer(await login(client, email, password))


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await auth_headers(client, ADMIN_EMAIL, ADMIN_PASSWORD)


REVOKE = "/oauth2/revoke"


async def new_client(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "orders", "scopes": ["introspect", "orders:read"], **fields}
    response = await client.post("/admin/clients", json=body, headers=await admin_headers(client))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def revoke(client: httpx.AsyncClient, token: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    return await client.post(REVOKE, data={"token": token, **extra}, headers=headers)
