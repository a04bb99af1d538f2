"""What an operator relies on: health probes, Prometheus metrics, request ids, CORS, JSON logs."""

import asyncio
import io
import json
import logging
import re
import shutil
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from sqlalchemy import text

from auth_service.kit import migrate
from auth_service.web.middleware import _OncePerInterval
from auth_service.web.observability import AccessLog, JSONFormatter, logging_config, request_id_var
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    app_of,
    app_state,
    auth_headers,
    bearer,
    drop_connections,
    login,
    make_settings,
    register,
    scratch_postgres,
    started_client,
)

pytestmark = pytest.mark.anyio

HEX32 = re.compile(r"^[0-9a-f]{32}$")
APP_ORIGIN = "https://app.example"


# --- health -------------------------------------------------------------------------------


async def test_liveness_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_answers_ok_while_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@dataclass
class BreakableDatabase:
    """A database of this test's own that can be made unreachable and brought back."""

    url: str
    cut: Callable[[], object]
    restore: Callable[[], object]


@pytest.fixture
def breakable_database(database: str, tmp_path: Path) -> Iterator[BreakableDatabase]:
    if database.startswith("sqlite"):
        # Moving the directory away makes every new connection fail to open the file.
        home = tmp_path / "db-home"
        away = tmp_path / "db-away"
        home.mkdir()
        shutil.copy(database.removeprefix("sqlite:///"), home / "auth.db")
        yield BreakableDatabase(
            url=f"sqlite:///{home / 'auth.db'}",
            cut=lambda: home.rename(away),
            restore=lambda: away.rename(home),
        )
        return
    # PostgreSQL: a fresh database that stops accepting connections, its sessions killed.
    with scratch_postgres("auth_ready") as (url, admin):
        migrate.upgrade(url)
        name = url.rpartition("/")[2]
        ident = sql.Identifier(name)

        def cut() -> None:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

        def restore() -> None:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))

        yield BreakableDatabase(url=url, cut=cut, restore=restore)


async def test_readiness_is_503_while_the_database_is_unreachable_and_recovers(
    breakable_database: BreakableDatabase,
) -> None:
    async with started_client(make_settings(breakable_database.url)) as client:
        assert (await client.get("/health/ready")).status_code == 200

        breakable_database.cut()
        # Pooled connections may outlive the cut (an open SQLite file still reads): drop them.
        await drop_connections(client)
        down = await client.get("/health/ready")
        live = await client.get("/health/live")
        breakable_database.restore()
        back = await client.get("/health/ready")

    assert down.status_code == 503
    assert down.headers["content-type"].startswith("application/json")
    assert down.json()["status"] != "ok"
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert back.status_code == 200


# --- metrics ------------------------------------------------------------------------------


def _samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _metrics(client: httpx.AsyncClient) -> tuple[httpx.Response, dict]:  # type: ignore[type-arg]
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response, _samples(response.text)


async def test_metrics_are_prometheus_text_labelled_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(client)
    bob = await register(client, "bob@example.com")
    unknown = str(uuid.uuid4())
    assert (await client.get(f"/admin/users/{bob['id']}", headers=headers)).status_code == 200
    assert (await client.get(f"/admin/users/{unknown}", headers=headers)).status_code == 404
    assert (await client.get(f"/no/such/{unknown}")).status_code == 404

    response, samples = await _metrics(client)

    content_type = response.headers["content-type"]
    assert content_type.startswith("text/plain")
    assert "version=" in content_type
    route = "/admin/users/{user_id}"
    requests = "auth_http_requests_total"
    assert _value(samples, requests, method="GET", route=route, status="200") == 1
    assert _value(samples, requests, method="GET", route=route, status="404") == 1
    assert _value(samples, requests, method="POST", route="/users", status="201") == 1
    # Raw ids would make a time series per user: they never become label values.
    assert bob["id"] not in response.text
    assert unknown not in response.text
    assert "/no/such" not in response.text
    buckets = [
        labels
        for (name, labels), _ in samples.items()
        if name == "auth_http_request_duration_seconds_bucket"
        and ("route", route) in labels
        and ("le", "+Inf") in labels
    ]
    assert buckets
    assert samples[("auth_http_request_duration_seconds_count", buckets[0] - {("le", "+Inf")})] == 2


async def test_metrics_label_every_served_route_not_only_api_routes(
    client: httpx.AsyncClient,
) -> None:
    """`<unmatched>` is for 404s; a route that answered 200 is labelled by its own name."""
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs-assets/swagger-ui.css")).status_code == 200
    assert (await client.get("/health/live")).status_code == 200

    _, samples = await _metrics(client)

    served = {
        dict(labels)["route"]
        for (name, labels), value in samples.items()
        if name == "auth_http_requests_total" and dict(labels)["status"] == "200" and value
    }
    assert "/health/live" in served
    assert "<unmatched>" not in served, served


async def test_login_metrics_count_real_outcomes(client: httpx.AsyncClient) -> None:
    await register(client, "carol@example.com")
    await login(client, "carol@example.com")
    await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    failures = [
        {"username": "carol@example.com", "password": "wrong password entirely"},
        {"username": "nobody@example.com", "password": STRONG_PASSWORD},
        {"username": "carol@example.com", "password": "x" * 200},
    ]
    for form in failures:
        response = await client.post("/oauth2/token", data={"grant_type": "password", **form})
        assert response.status_code == 400
    malformed = await client.post("/oauth2/token", data={"grant_type": "password"})
    assert malformed.status_code == 400
    unknown_scope = await client.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "carol@example.com",
            "password": "x",
            "scope": "x",
        },
    )
    assert unknown_scope.status_code == 400

    _, samples = await _metrics(client)

    # Every outcome is counted under its RFC 6749 §5.2 error code.
    assert _value(samples, "auth_logins_total", outcome="success") == 2
    assert _value(samples, "auth_logins_total", outcome="invalid_grant") == 3
    assert _value(samples, "auth_logins_total", outcome="invalid_request") == 1
    assert _value(samples, "auth_logins_total", outcome="invalid_scope") == 1


# --- request ids --------------------------------------------------------------------------


async def test_a_request_id_is_generated_when_none_is_sent(client: httpx.AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/no/such/page")

    assert HEX32.match(first.headers["x-request-id"])
    assert HEX32.match(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


# The last: a UUID as hex, fixed so that every xdist worker collects the same test ids.
@pytest.mark.parametrize(
    "sent",
    ["abc-123.DEF_4", "a", "x" * 128, "6f1c0e4d2b8a4f7e9c3d5a1b0e2f4c6d"],
)
async def test_a_safe_client_request_id_is_logged_beside_ours(
    client: httpx.AsyncClient, json_logs: "_JSONLines", sent: str
) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": sent})

    ours = response.headers["x-request-id"]
    assert HEX32.fullmatch(ours)
    [entry] = _access_entries(json_logs.lines)
    assert (entry["request_id"], entry["client_request_id"]) == (ours, sent)


@pytest.mark.parametrize(
    "sent",
    [
        b"has spaces in it",
        b"x" * 500,
        b"x" * 129,
        b"a;b",
        b"a\tb",
        b"<script>",
        b"caf\xc3\xa9",
        b"",
        b"abc\n",
        b"abc\nforged log line",
    ],
    ids=[
        "spaces",
        "500 chars",
        "129 chars",
        "semicolon",
        "tab",
        "markup",
        "utf-8",
        "empty",
        "newline",
        "injection",
    ],
)
async def test_an_unsafe_client_request_id_is_not_logged(
    client: httpx.AsyncClient, json_logs: "_JSONLines", sent: bytes
) -> None:
    response = await client.get("/health/live", headers={b"X-Request-ID": sent})

    assert HEX32.fullmatch(response.headers["x-request-id"]), response.headers["x-request-id"]
    [entry] = _access_entries(json_logs.lines)
    assert "client_request_id" not in entry


async def test_responses_made_before_routing_carry_a_request_id(
    client: httpx.AsyncClient,
) -> None:
    too_large = await client.post(
        "/users",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "9" * 12},
    )
    bad_length = await client.post(
        "/users", content=b"{}", headers={"Content-Length": "abc", "X-Request-ID": "mine-1"}
    )

    assert too_large.status_code == 413
    assert HEX32.match(too_large.headers["x-request-id"])
    assert bad_length.status_code == 400
    assert HEX32.fullmatch(bad_length.headers["x-request-id"])


# --- CORS ---------------------------------------------------------------------------------


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_cors_preflight_is_allowed_for_a_configured_origin(
    make_client: ClientFactory,
) -> None:
    async with make_client(cors_origins=[APP_ORIGIN]) as client:
        preflight = await client.options("/oauth2/token", headers=_preflight(APP_ORIGIN))
        actual = await client.post(
            "/oauth2/token",
            data={"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            headers={"Origin": APP_ORIGIN},
        )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == APP_ORIGIN
    # The frontend may read the request id (for support tickets).
    assert "x-request-id" in actual.headers["access-control-expose-headers"].lower()


async def test_cors_refuses_a_foreign_origin(make_client: ClientFactory) -> None:
    async with make_client(cors_origins=[APP_ORIGIN]) as client:
        preflight = await client.options(
            "/oauth2/token", headers=_preflight("https://evil.example")
        )
        actual = await client.get("/health/live", headers={"Origin": "https://evil.example"})
        lookalike = await client.options(
            "/oauth2/token", headers=_preflight("https://app.example.evil.example")
        )

    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers
    assert actual.status_code == 200
    assert "access-control-allow-origin" not in actual.headers
    assert "access-control-allow-origin" not in lookalike.headers


async def test_a_refused_preflight_says_why_in_json(make_client: ClientFactory) -> None:
    async with make_client(cors_origins=[APP_ORIGIN]) as client:
        foreign = await client.options("/oauth2/token", headers=_preflight("https://evil.example"))
        put = {**_preflight(APP_ORIGIN), "Access-Control-Request-Method": "PUT"}
        method = await client.options("/oauth2/token", headers=put)

    assert foreign.status_code == 400
    assert foreign.headers["content-type"] == "application/json"
    assert foreign.json() == {
        "detail": "CORS preflight refused: the origin is not one of AUTH_CORS_ORIGINS."
    }
    assert "access-control-allow-origin" not in foreign.headers
    assert HEX32.fullmatch(foreign.headers["x-request-id"])
    assert foreign.headers["x-content-type-options"] == "nosniff"
    assert method.status_code == 400
    assert method.json() == {"detail": "CORS preflight refused: the method is not allowed."}
    assert method.headers["access-control-allow-origin"] == APP_ORIGIN


async def test_a_refused_origin_is_logged_once_a_minute_and_allowed_ones_at_start(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="auth_service")
    long_origin = "https://" + "x" * 5000 + ".example"
    async with make_client(cors_origins=[APP_ORIGIN, "http://127.0.0.1:5173"]) as client:
        for origin in ["http://127.0.0.1:5173/", "http://127.0.0.1:5173/", long_origin]:
            await client.post("/oauth2/token", data={}, headers={"Origin": origin})
        await client.options("/oauth2/token", headers=_preflight("http://127.0.0.1:5173/"))
        await client.get("/health/live", headers={"Origin": APP_ORIGIN})
        await client.get("/health/live", headers={"Origin": "http://testserver"})  # its own

    started = [r.getMessage() for r in caplog.records if "AUTH_CORS_ORIGINS" in r.getMessage()]
    refused = [r for r in caplog.records if r.name == "auth_service.web.middleware"]
    assert started[0] == (
        "browsers may call the API from: https://app.example, http://127.0.0.1:5173 "
        "(AUTH_CORS_ORIGINS)"
    )
    assert [getattr(r, "origin", None) for r in refused] == [
        "http://127.0.0.1:5173/",
        long_origin[:200],
    ]


def test_refused_origins_are_remembered_within_a_bound() -> None:
    once = _OncePerInterval(interval=60, capacity=3)

    first = [once.first(f"https://{n}.example", now=0) for n in range(5)]
    again = once.first("https://0.example", now=59)
    after_a_minute = [once.first(f"https://{n}.example", now=61) for n in (3, 0)]

    assert first == [True, True, True, False, False]  # full: new origins wait for a place
    assert again is False
    assert after_a_minute == [True, True]
    assert len(once._seen) <= 3


async def test_without_cors_origins_there_are_no_cors_headers(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/oauth2/token", headers=_preflight(APP_ORIGIN))
    actual = await client.get("/health/live", headers={"Origin": APP_ORIGIN})

    assert _cors_headers(preflight) == {}
    assert _cors_headers(actual) == {}


# --- JSON logs ----------------------------------------------------------------------------


class _JSONLines(logging.Handler):
    """Formats each record as the service does in production, at the moment it is logged
    (the request id lives in a context variable only while the request runs), and reads
    the access lines the app's `AccessLog` writes."""

    def __init__(self, access_log: AccessLog) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self._lines: list[str] = []
        self._access_log = access_log
        self._access = io.StringIO()
        access_log.stream = self._access

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's client, not ours
            self._lines.append(self.format(record))

    @property
    def lines(self) -> list[str]:
        """Every line so far: the access lines still pending are written first."""
        self._access_log.flush()
        self._lines.extend(self._access.getvalue().splitlines())
        self._access.seek(0)
        self._access.truncate()
        return self._lines


@pytest.fixture
def json_logs(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> Iterator[_JSONLines]:
    """Every line the service would write with `AUTH_LOG_LEVEL=DEBUG`, as JSON lines.

    The levels are the ones `logging_config("DEBUG")` sets (root and the loggers it names);
    caplog puts them back after the test.
    """
    config = logging_config("DEBUG")
    caplog.set_level(config["root"]["level"])
    for name, settings in config["loggers"].items():
        caplog.set_level(settings["level"], logger=name)
    handler = _JSONLines(app_state(client).access_log)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _access_entries(lines: list[str]) -> list[dict]:  # type: ignore[type-arg]
    entries = [json.loads(line) for line in lines]
    return [e for e in entries if e["logger"] == "auth_service.access"]


async def test_each_request_writes_one_json_access_line(
    client: httpx.AsyncClient, json_logs: _JSONLines
) -> None:
    headers = await admin_headers(client)
    bob = await register(client, "bob@example.com")
    json_logs.lines.clear()
    requests = [
        ("req-live-1", "GET", "/health/live", 200, "/health/live"),
        ("req-user-2", "GET", f"/admin/users/{bob['id']}", 200, "/admin/users/{user_id}"),
        ("req-none-3", "GET", "/no/such/page", 404, "<unmatched>"),
        ("req-list-4", "GET", "/admin/users?q=private-search-term", 200, "/admin/users"),
    ]

    for request_id, method, path, status, _ in requests:
        response = await client.request(
            method, path, headers={**headers, "X-Request-ID": request_id}
        )
        assert response.status_code == status

    entries = _access_entries(json_logs.lines)
    assert len(entries) == len(requests)
    for entry, (request_id, method, _, status, route) in zip(entries, requests, strict=True):
        assert HEX32.fullmatch(entry["request_id"])
        assert entry["client_request_id"] == request_id
        assert entry["status"] == status
        assert entry["route"] == route
        assert isinstance(entry["duration_ms"], int | float)
        assert entry["duration_ms"] >= 0
        assert entry["msg"].startswith(f"{method} ")
        assert entry["level"] == "INFO"
    # The path is logged without its query string (it may carry personal data).
    assert "private-search-term" not in entries[-1]["msg"]


async def test_access_lines_are_written_after_the_requests_of_one_loop_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="auth_service.access")
    stream = io.StringIO()
    access_log = AccessLog(stream)

    for n in range(3):
        access_log.record(
            "GET",
            f"/page/{n}",
            200,
            0.001,
            route="/page/{n}",
            request_id=f"id{n}",
            client_request_id=None,
        )
    written_before = stream.getvalue()
    await asyncio.sleep(0)  # the loop turn ends

    assert written_before == ""
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == [
        "GET /page/0 200",
        "GET /page/1 200",
        "GET /page/2 200",
    ]


def test_an_access_line_is_the_line_the_json_formatter_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="auth_service.access")
    stream = io.StringIO()
    path = '/caf\u00e9/"quoted"\\'  # escaped as json.dumps escapes it
    AccessLog(stream).record(  # no running loop: written at once
        "POST",
        path,
        400,
        0.01234,
        route="/oauth2/token",
        request_id="ab12",
        client_request_id="client-7",
    )
    record = logging.makeLogRecord(
        {
            "name": "auth_service.access",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "%s %s %s",
            "args": ("POST", path, 400),
            "status": 400,
            "duration_ms": 12.34,
            "route": "/oauth2/token",
            "client_request_id": "client-7",
        }
    )
    context = request_id_var.set("ab12")
    try:
        expected = JSONFormatter().format(record)
    finally:
        request_id_var.reset(context)

    line = stream.getvalue()
    timestamp = json.loads(line)["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp)
    assert line.replace(timestamp, "") == expected.replace(json.loads(expected)["ts"], "") + "\n"


async def test_a_hostile_path_cannot_split_or_forge_an_access_line(
    client: httpx.AsyncClient, json_logs: _JSONLines
) -> None:
    # Percent-decoded by the server: a newline, quotes and a brace arrive in the path.
    forged = '", "level": "ERROR"}\n{"logger": "forged'
    response = await client.get("/x" + urllib.parse.quote(forged))

    assert response.status_code == 404
    [entry] = _access_entries(json_logs.lines)
    assert entry["msg"] == f"GET /x{forged} 404"
    assert entry["level"] == "INFO"
    assert len(json_logs.lines) == 1


async def test_access_lines_follow_the_access_logger_level(
    client: httpx.AsyncClient, json_logs: _JSONLines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="auth_service.access")

    response = await client.get("/health/live")

    assert response.status_code == 200
    assert _access_entries(json_logs.lines) == []


def test_a_broken_stderr_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="auth_service.access")
    stream = io.StringIO()
    stream.close()

    AccessLog(stream).record(  # writing raises ValueError: the line is dropped
        "GET",
        "/health/live",
        200,
        0.0,
        route="/health/live",
        request_id="ab",
        client_request_id=None,
    )


async def test_every_log_line_is_one_json_object(
    client: httpx.AsyncClient, json_logs: _JSONLines
) -> None:
    await register(client, "dave@example.com")
    await auth_headers(client, "dave@example.com")
    await client.post("/oauth2/token", data={"grant_type": "password", "username": "x"})

    assert json_logs.lines
    for line in json_logs.lines:
        assert "\n" not in line
        assert isinstance(json.loads(line), dict)


async def _stored_hash(client: httpx.AsyncClient, email: str) -> str:
    engine = app_state(client).engine
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT hashed_password FROM users WHERE email = :email"), {"email": email}
        )
        hashed: str = result.scalar_one()
    return hashed


async def test_logs_never_contain_passwords_tokens_or_hashes(
    client: httpx.AsyncClient, json_logs: _JSONLines
) -> None:
    """NIST/OWASP: secrets stay out of logs, at every level, from every library."""
    password = "tangerine submarine orchestra"
    new_password = "violet harbour compass ninety"
    await register(client, "frank@example.com", password=password)
    first_hash = await _stored_hash(client, "frank@example.com")
    form = {"grant_type": "password", "username": "frank@example.com", "password": password}
    token_response = await client.post("/oauth2/token", data=form)
    token = token_response.json()["access_token"]
    me = await client.get("/users/me", headers=bearer(token))
    wrong = await client.post(
        "/oauth2/token", data={**form, "password": "guessed password attempt"}
    )
    changed = await client.post(
        "/users/me/password",
        json={"current_password": password, "new_password": new_password},
        headers=bearer(token),
    )
    second_hash = await _stored_hash(client, "frank@example.com")

    assert token_response.status_code == 200
    assert me.status_code == 200
    assert wrong.status_code == 400
    assert changed.status_code == 204
    logged = "\n".join(json_logs.lines)
    assert _access_entries(json_logs.lines)  # the capture works
    secrets = {
        "password": password,
        "new password": new_password,
        "wrong password": "guessed password attempt",
        "access token": token,
        "token signature": token.rsplit(".", 1)[1],
        "authorization header": f"Bearer {token}",
        "password hash": first_hash,
        "password hash digest": first_hash.rsplit("$", 1)[1],
        "new password hash": second_hash,
        "new password hash digest": second_hash.rsplit("$", 1)[1],
    }
    leaked = [name for name, secret in secrets.items() if secret in logged]
    assert leaked == [], f"leaked into logs: {leaked}"


async def test_an_unhandled_error_is_a_json_500_with_the_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_of(client)

    @app.get("/probe/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    response = await client.get("/probe/broken")

    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {"detail": "Internal server error.", "request_id": request_id}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert errors[0].exc_info is not None
    assert "a bug" in str(errors[0].exc_info[1])
