"""Where one request's time goes, in-process: the app called as ASGI, no network, no server.

    .venv/bin/python bench/hotpath.py [PATH ...] [--requests 5000] [--database URL]
        [--top 25] [--log-level INFO]

It builds the real app (`create_app`) on a temporary SQLite file (or `--database`), runs its
start-up, registers one user and takes a token, then calls each PATH (default:
/health/live and /users/me; the bearer token is sent to every path) `--requests` times,
first plain to print microseconds per request (against a bare FastAPI hello world), then
under cProfile to print the functions that take the time. The access log is written to a
temporary file, as a deployment's goes to its log collector. `make bench` measures real
throughput; this says why a figure is what it is.
"""

import argparse
import asyncio
import cProfile
import io
import json
import logging.config
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from auth_service import migrate
from auth_service.app import create_app
from auth_service.config import Settings
from auth_service.deps import state_of
from auth_service.observability import logging_config

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


async def per_request(app: Any, path: str, headers: dict[str, str], requests: int) -> float:
    for _ in range(min(200, requests)):  # warm-up
        await call(app, "GET", path, headers, b"")
    started = time.perf_counter()
    for _ in range(requests):
        await call(app, "GET", path, headers, b"")
    return (time.perf_counter() - started) / requests * 1e6


def hello_app() -> FastAPI:
    hello = FastAPI()

    @hello.get("/hello")
    async def answer() -> dict[str, str]:
        return {"hello": "world"}

    return hello


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["/health/live", "/users/me"])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--database", help="a database URL (default: a temporary SQLite file)")
    parser.add_argument("--top", type=int, default=25)
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
        form_headers = {"content-type": "application/x-www-form-urlencoded"}
        status, body = await call(app, "POST", "/oauth2/token", form_headers, form.encode())
        assert status == 200, body
        headers = {"authorization": f"Bearer {json.loads(body)['access_token']}"}

        print(f"µs per request, {args.requests} requests each, in-process (no server):")
        hello_us = await per_request(hello, "/hello", {}, args.requests)
        print(f"  {'FastAPI hello world':<32} {hello_us:8.1f}")
        for path in args.paths:
            status, body = await call(app, "GET", path, headers, b"")
            if status != 200:
                sys.exit(f"{path}: {status} {body[:200]!r}")
            spent = await per_request(app, path, headers, args.requests)
            print(f"  {path:<32} {spent:8.1f}  ({hello_us / spent:.2f}× hello)")
        for path in args.paths:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                await call(app, "GET", path, headers, b"")
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
            stats.print_stats(args.top)
            print(f"\n--- {path}: functions by own time ---")
            print(out.getvalue().split("\n\n", 2)[-1].rstrip())


if __name__ == "__main__":
    asyncio.run(main())
