"""The ceilings every benchmark figure is divided by, served like the service itself.

    .venv/bin/python bench/baselines.py {hello,sqlite,postgresql} --port P [--workers N]
        [--database URL] [--user-id UUID]

- `hello`: a plain FastAPI app answering `GET /hello` with a small JSON object: the framework
  ceiling.
- `sqlite`: `GET /user` does one primary-key SELECT of the users table through the standard
  library's `sqlite3` (one connection per worker, on the event loop: a primary-key read from
  a warm file is microseconds, less than a thread hop): the SQLite ceiling.
- `postgresql`: the same SELECT through psycopg's async connection pool, as a prepared
  statement: the PostgreSQL ceiling.
- `verifier`: a downstream service using `auth_service_verifier`: `GET /hello` is its own
  hello world, `GET /verified` the same answer behind `verifier.require()` (local
  verification with the keys of the auth service at `--issuer`).

Each runs under `uvicorn.run` with `auth_service.web.server.uvicorn_options`, the options
`auth-service serve` uses (its protocol with the header limits and timeouts, uvloop, the
connection cap), so the only difference from the service is the app.
"""

import argparse
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException

from auth_service.config import Settings
from auth_service.web.server import uvicorn_options

SELECT = "SELECT id, email, name, is_active FROM users WHERE id = {placeholder}"
POOL_SIZE = 10  # the service's own pool size


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def _row(row: Any) -> dict[str, Any]:
    if row is None:
        raise HTTPException(404)
    return {"id": str(row[0]), "email": row[1], "name": row[2], "is_active": bool(row[3])}


def sqlite_app(path: str, user_id: uuid.UUID) -> FastAPI:
    state: dict[str, sqlite3.Connection] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["db"] = sqlite3.connect(path, check_same_thread=False)
        yield
        state["db"].close()

    app = FastAPI(lifespan=lifespan)
    statement = SELECT.format(placeholder="?")
    key = user_id.hex  # SQLAlchemy's Uuid type stores 32 hex digits on SQLite

    @app.get("/user")
    async def user() -> dict[str, Any]:
        return _row(state["db"].execute(statement, (key,)).fetchone())

    return app


def postgresql_app(url: str, user_id: uuid.UUID) -> FastAPI:
    from psycopg_pool import AsyncConnectionPool  # only this ceiling needs it

    pool = AsyncConnectionPool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)
    statement = SELECT.format(placeholder="%s")

    @app.get("/user")
    async def user() -> dict[str, Any]:
        async with pool.connection() as connection:
            cursor = await connection.execute(statement, (user_id,), prepare=True)
            return _row(await cursor.fetchone())

    return app


def verifier_app(issuer: str) -> FastAPI:
    from auth_service_verifier import TokenVerifier, VerifiedToken  # only this one needs it

    app = FastAPI()
    verifier = TokenVerifier(issuer=issuer, audience=issuer)
    Token = Annotated[VerifiedToken, Depends(verifier.require())]

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/verified")
    async def verified(token: Token) -> dict[str, str]:
        return {"hello": token.sub}

    return app


def app_from_environment() -> FastAPI:
    """The app `BENCH_KIND` names, for `uvicorn --factory` (each worker process calls it)."""
    kind = os.environ["BENCH_KIND"]
    if kind == "hello":
        return hello_app()
    if kind == "verifier":
        return verifier_app(os.environ["BENCH_ISSUER"])
    url, user_id = os.environ["BENCH_DATABASE"], uuid.UUID(os.environ["BENCH_USER_ID"])
    if kind == "sqlite":
        return sqlite_app(url.removeprefix("sqlite:///"), user_id)
    return postgresql_app(url, user_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["hello", "sqlite", "postgresql", "verifier"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", default="", help="a sqlite:/// path or a libpq URL")
    parser.add_argument("--user-id", default="", help="the row the endpoint reads")
    parser.add_argument("--issuer", default="", help="the auth service whose tokens to verify")
    args = parser.parse_args()
    os.environ.update(BENCH_KIND=args.kind, BENCH_DATABASE=args.database)
    os.environ.update(BENCH_USER_ID=args.user_id, BENCH_ISSUER=args.issuer)
    options = uvicorn_options(Settings(_env_file=None))  # type: ignore[call-arg]
    uvicorn.run(
        "baselines:app_from_environment",
        factory=True,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        **options,
    )


if __name__ == "__main__":
    main()
