"""Where one request's time goes, in-process: the app called as ASGI, no network, no server.

    .venv/bin/python bench/hotpath.py [PATH ...] [--requests 5000] [--database URL]
        [--top 25] [--sort tottime|cumulative] [--log-level INFO]

It builds the real app (`create_app`) on a temporary SQLite file (or `--database`), runs its
start-up, registers one user, takes a token and registers a confidential client (with the
`introspect` scope and the client credentials grant), then calls each PATH (default:
/health/live and /users/me) `--requests` times, first plain to print microseconds per
request (against a bare FastAPI hello world), then 100 times counting the SQL statements it
sends through the engine (the ORM's; the guards' one-statement reads go around it), then
under cProfile to print the functions that take the time. A PATH is a GET, sent with the
user's bearer token, or one of the form POSTs by name:

- `introspect`: `POST /oauth2/introspect` of the user's access token, the client
  authenticated by HTTP Basic;
- `client_credentials`: `POST /oauth2/token`, `grant_type=client_credentials`, the same
  client by HTTP Basic;
- `refresh_token`: `POST /oauth2/token`, `grant_type=refresh_token`, each request
  presenting the refresh token the previous one answered (one session's chain of
  rotations: every token presented is valid and unspent).

The access log is written to a temporary file, as a deployment's goes to its log
collector. `make bench` measures real throughput; this says why a figure is what it is.
"""

import argparse
import asyncio
import base64
import cProfile
import io
import json
import logging.config
import pstats
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event

from auth_service.app import create_app
from auth_service.clients import service as clients
from auth_service.config import Settings
from auth_service.kit import migrate
from auth_service.kit.db import transaction
from auth_service.web.deps import state_of
from auth_service.web.observability import logging_config

PASSWORD = "correct horse battery staple"  # noqa: S105 (a sample password)


async def call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
    """One request through the ASGI app; the status and the body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


FORM = {"content-type": "application/x-www-form-urlencoded"}
FORM_POSTS = ("introspect", "client_credentials", "refresh_token")


@dataclass
class Case:
    """One request, made again and again: a GET, or a form POST. `refresh_token`, when
    set, is spent by each request and replaced by the successor its answer carries."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    refresh_token: str | None = None

    async def send(self, app: Any) -> tuple[int, bytes]:
        form = self.form
        if self.refresh_token is not None:
            form = {**form, "refresh_token": self.refresh_token}
        body = urllib.parse.urlencode(form).encode() if form else b""
        status, answer = await call(app, self.method, self.path, self.headers, body)
        if self.refresh_token is not None and status == 200:
            self.refresh_token = json.loads(answer)["refresh_token"]
        return status, answer


def cases(
    paths: list[str], *, bearer: dict[str, str], access_token: str, refresh_token: str, basic: str
) -> list[Case]:
    client = {**FORM, "authorization": basic}
    named = {
        "introspect": Case(
            "introspect", "POST", "/oauth2/introspect", client, {"token": access_token}
        ),
        "client_credentials": Case(
            "client_credentials",
            "POST",
            "/oauth2/token",
            client,
            {"grant_type": "client_credentials"},
        ),
        "refresh_token": Case(
            "refresh_token",
            "POST",
            "/oauth2/token",
            FORM,
            {"grant_type": "refresh_token"},
            refresh_token=refresh_token,
        ),
    }
    return [named.get(path) or Case(path, "GET", path, bearer, {}) for path in paths]


async def per_request(app: Any, case: Case, requests: int) -> float:
    for _ in range(min(200, requests)):  # warm-up
        await case.send(app)
    refused = 0
    started = time.perf_counter()
    for _ in range(requests):
        status, _ = await case.send(app)
        refused += status != 200
    spent = (time.perf_counter() - started) / requests * 1e6
    if refused:  # a broken chain of refresh tokens measures refusals
        sys.exit(f"{case.name}: {refused} of {requests} requests were refused")
    return spent


async def statements(app: Any, case: Case, requests: int = 100) -> str:
    """The SQL statements `case` sends through the app's engine, per request, by verb."""
    counted: Counter[str] = Counter()

    def count(*execution: Any) -> None:
        counted[execution[2].split(None, 1)[0].upper()] += 1

    engine = state_of(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(requests):
            await case.send(app)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return ", ".join(f"{verb} {n / requests:g}" for verb, n in sorted(counted.items())) or "none"


def hello_app() -> FastAPI:
    hello = FastAPI()

    @hello.get("/hello")
    async def answer() -> dict[str, str]:
        return {"hello": "world"}

    return hello


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths",
        nargs="*",
        default=["/health/live", "/users/me"],
        help=f"GET paths, or the form POSTs {', '.join(FORM_POSTS)}",
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--database", help="a database URL (default: a temporary SQLite file)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--sort", choices=["tottime", "cumulative"], default="tottime", help="own or with callees"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="auth-profile-"))
    config = logging_config(args.log_level)
    config["handlers"]["stderr"] = {
        "class": "logging.FileHandler",
        "formatter": "json",
        "filename": str(work / "access.log"),
    }
    logging.config.dictConfig(config)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=args.database or f"sqlite:///{work / 'auth.db'}",
        secret_key_file=work / "secret-key",
        bcrypt_rounds=4,
    )
    migrate.upgrade(settings.database_url)  # what `serve` does before its workers start
    app = create_app(settings)
    access_log = (work / "access.log").open("a")  # the access lines skip the logging module
    state_of(app).access_log.stream = access_log
    hello = hello_app()
    async with app.router.lifespan_context(app):
        json_headers = {"content-type": "application/json"}
        account = json.dumps({"email": "profile@example.com", "password": PASSWORD}).encode()
        await call(app, "POST", "/users", json_headers, account)
        form = f"grant_type=password&username=profile%40example.com&password={PASSWORD}"
        status, body = await call(app, "POST", "/oauth2/token", FORM, form.encode())
        assert status == 200, body
        tokens = json.loads(body)
        async with transaction(state_of(app).sessionmaker) as db:
            client, secret = await clients.create_client(
                db=db,
                name="profile",
                confidential=True,
                scopes=["introspect"],
                grant_types=["client_credentials"],
            )
        basic = "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
        chosen = cases(
            args.paths,
            bearer={"authorization": f"Bearer {tokens['access_token']}"},
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            basic=basic,
        )

        print(f"µs per request, {args.requests} requests each, in-process (no server):")
        hello_case = Case("/hello", "GET", "/hello", {}, {})
        hello_us = await per_request(hello, hello_case, args.requests)
        print(f"  {'FastAPI hello world':<32} {hello_us:8.1f}")
        for case in chosen:
            status, body = await case.send(app)
            if status != 200:
                sys.exit(f"{case.name}: {status} {body[:200]!r}")
            spent = await per_request(app, case, args.requests)
            print(f"  {case.name:<32} {spent:8.1f}  ({hello_us / spent:.2f}× hello)")
        print("statements per request through the engine (the guards' reads have their own):")
        for case in chosen:
            print(f"  {case.name:<32} {await statements(app, case)}")
        for case in chosen:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                await case.send(app)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats(args.sort)
            stats.print_stats(args.top)
            order = "own" if args.sort == "tottime" else "cumulative"
            print(f"\n--- {case.name}: functions by {order} time ---")
            print(out.getvalue().split("\n\n", 2)[-1].rstrip())


if __name__ == "__main__":
    asyncio.run(main())
