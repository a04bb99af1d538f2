"""What `auth-service serve` does to slow, oversized and too many requests, over raw sockets.

One real `serve` (one worker, so its process is the one that answers and its memory can be
read) runs on a loopback port with short limits set through the environment. Each attack
holds its connection while a normal request is served beside it, and every wait is bounded:
a limit that failed would show as a timeout of a few seconds, never as a hang.
"""

import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from auth_service.config import Settings
from auth_service.web.middleware import ForwardedHeadersMiddleware
from auth_service.web.server import uvicorn_options
from tests.helpers.serve import Server, free_port

HEADER_TIMEOUT_SECONDS = 3.0
BODY_TIMEOUT_SECONDS = 3.0
KEEP_ALIVE_SECONDS = 1
MAX_HEADER_BYTES = 32 * 1024  # the default
MAX_CONNECTIONS = 8
SLACK_SECONDS = 0.5  # a timer may fire this much early, as the loop's clock sees it
GRACE_SECONDS = 5.0  # how late a cut-off may come on a busy machine before it counts as none
TRICKLE_INTERVAL_SECONDS = 1.0


class LimitedServer(Server):
    workers = 1

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "AUTH_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
            "AUTH_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
            "AUTH_HTTP_KEEP_ALIVE_TIMEOUT_SECONDS": str(KEEP_ALIVE_SECONDS),
            "AUTH_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        }

    def peak_memory_bytes(self) -> int:
        """The serving process's peak resident set (VmHWM) since it started."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedServer]:
    workdir = tmp_path_factory.mktemp("serve-limits")
    running = LimitedServer(f"sqlite:///{workdir / 'auth.db'}", workdir)
    try:
        running.start()
        yield running
    finally:
        running.close()


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=GRACE_SECONDS)
    sock.settimeout(GRACE_SECONDS)
    return sock


def _readable_within(sock: socket.socket, seconds: float) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as closed)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a complete head: {received!r}"
        received += chunk
    status, headers, body = _parse(received)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed before a complete body"
        body += chunk
    return status, headers, body


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _assert_json_error(raw: bytes, status: int) -> tuple[dict[str, str], dict[str, Any]]:
    got, headers, body = _parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    document: dict[str, Any] = json.loads(body)
    return headers, document


def _assert_served(server: Server) -> None:
    """A normal request on a connection of its own is answered at once."""
    response = server.http.get("/health/live", timeout=GRACE_SECONDS)
    assert response.status_code == 200, response.text


def _trickle(sock: socket.socket, piece: bytes, server: Server) -> float:
    """Send `piece` every TRICKLE_INTERVAL_SECONDS until the server answers or closes; the
    seconds that took. Each gap is well inside the limit; only the total is not."""
    started = time.monotonic()
    longest = max(HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS) + GRACE_SECONDS
    for sent in range(int(longest / TRICKLE_INTERVAL_SECONDS)):
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        if sent == 1:
            _assert_served(server)  # meanwhile
        if _readable_within(sock, TRICKLE_INTERVAL_SECONDS):
            return time.monotonic() - started
    pytest.fail(f"still open after {time.monotonic() - started:.1f} s of trickling")


def _assert_cut_at(elapsed: float, limit: float) -> None:
    assert limit - SLACK_SECONDS <= elapsed <= limit + GRACE_SECONDS, elapsed


# The concurrency cap comes first: connections of other tests must not be open yet.


def test_over_the_connection_cap_requests_get_a_json_503_with_retry_after(
    server: LimitedServer,
) -> None:
    # Half-open requests hold their connections (until the header timeout).
    holders = [_connect(server) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        for holder in holders:
            holder.sendall(b"GET /health/live HTTP/1.1\r\n")
        # The listen queue hands connections over in order: the holders are counted now.
        _assert_served(server)  # MAX_CONNECTIONS open, counting its own

        holders.append(_connect(server))
        holders[-1].sendall(b"GET /health/live HTTP/1.1\r\n")
        busy = server.http.get("/health/live", timeout=GRACE_SECONDS)
        login = server.http.post(
            "/oauth2/token",
            data={"grant_type": "password", "username": "a@example.com", "password": "x"},
            timeout=GRACE_SECONDS,
        )
    finally:
        for holder in holders:
            holder.close()

    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["x-content-type-options"] == "nosniff"
    assert busy.json() == {"detail": "The server is busy; retry in a moment."}
    # The token endpoint answers in RFC 6749 §5.2 form, as it does for its own 503.
    assert login.status_code == 503
    assert login.headers["retry-after"] == "1"
    assert login.headers["cache-control"] == "no-store"
    assert login.json()["error"] == "temporarily_unavailable"
    deadline = time.monotonic() + GRACE_SECONDS
    while server.http.get("/health/live").status_code != 200:  # closes reach it shortly
        assert time.monotonic() < deadline, "still refusing after the holders closed"
        time.sleep(0.05)


@pytest.mark.parametrize("after_a_request", [False, True], ids=["new", "kept-alive"])
def test_a_header_sent_line_by_line_is_cut_off_at_the_header_timeout(
    server: LimitedServer, after_a_request: bool
) -> None:
    with _connect(server) as sock:
        if after_a_request:
            # uvicorn's keep-alive timer stops at the first byte of the next request.
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            assert _read_response(sock)[0] == 200
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")

        elapsed = _trickle(sock, b"X-Slow: 1\r\n", server)
        raw = _read_until_closed(sock)

    _assert_cut_at(elapsed, HEADER_TIMEOUT_SECONDS)
    _, body = _assert_json_error(raw, 408)
    assert body == {"detail": "The request header was not received in time."}


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    server: LimitedServer,
) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        closed = _readable_within(sock, HEADER_TIMEOUT_SECONDS + GRACE_SECONDS)
        elapsed = time.monotonic() - started
        _assert_served(server)
        raw = _read_until_closed(sock) if closed else None

    assert raw == b""  # closed, with nothing to answer
    _assert_cut_at(elapsed, HEADER_TIMEOUT_SECONDS)


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    server: LimitedServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, _ = _read_response(sock)
        started = time.monotonic()
        closed = _readable_within(sock, HEADER_TIMEOUT_SECONDS + GRACE_SECONDS)
        elapsed = time.monotonic() - started
        raw = _read_until_closed(sock) if closed else None

    assert status == 200
    assert "connection" not in headers  # kept alive
    assert raw == b""
    # The keep-alive timer closed it (the head deadline of a kept-alive connection starts only
    # at its first byte, so nothing else could); how late it may come is the usual grace.
    _assert_cut_at(elapsed, KEEP_ALIVE_SECONDS)


def test_a_body_sent_byte_by_byte_is_answered_408_at_the_body_timeout(
    server: LimitedServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /oauth2/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"grant_type=password"
        )

        elapsed = _trickle(sock, b"a", server)
        raw = _read_until_closed(sock)

    _assert_cut_at(elapsed, BODY_TIMEOUT_SECONDS)
    headers, body = _assert_json_error(raw, 408)
    # The token endpoint's RFC 6749 §5.2 form: the app was waiting for this body.
    assert body == {
        "error": "invalid_request",
        "error_description": "The request body was not received in time.",
    }
    assert headers["cache-control"] == "no-store"


def test_a_body_the_app_does_not_read_cannot_hold_the_connection(
    server: LimitedServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        status, _, _ = _read_response(sock)  # answered without waiting for the body

        elapsed = _trickle(sock, b"a", server)  # each byte used to stop the keep-alive timer
        raw = _read_until_closed(sock)

    assert status == 200
    assert raw == b""
    _assert_cut_at(elapsed, BODY_TIMEOUT_SECONDS)


def test_bytes_past_the_content_length_are_a_request_of_their_own_never_body(
    server: LimitedServer,
) -> None:
    """The body limit trusts a declared length within it (RFC 9112 §6.3): prove the server
    hands the app exactly that many bytes and reads what follows as the next request."""
    declared = b"grant_type=password"
    with _connect(server) as sock:
        head = (
            b"POST /oauth2/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(declared)
        )
        sock.sendall(head + declared + b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        raw = _read_until_closed(sock)  # both answers, then the keep-alive timeout

    token_status, headers, rest = _parse(raw)
    length = int(headers["content-length"])
    token_body, following = rest[:length], rest[length:]
    next_status, _, _ = _parse(following)
    # "password" and nothing after it: a known grant that lacks its username.
    assert token_status == 400
    assert json.loads(token_body)["error"] == "invalid_request"
    assert next_status == 200


def _header_request(size: int, *, name: bytes = b"X-Padding") -> bytes:
    return b"GET /health/live HTTP/1.1\r\nHost: test\r\n" + name + b": " + b"a" * size + b"\r\n\r\n"


def test_headers_within_the_limit_are_served_even_with_a_body_in_the_same_read(
    server: LimitedServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(_header_request(MAX_HEADER_BYTES - 1024))
        near_limit = _read_response(sock)[0]
    # A small head and a large body in one write: only the head counts against the limit.
    body = b"grant_type=password&username=a%40example.com&password=" + b"x" * 48_000
    with _connect(server) as sock:
        sock.sendall(
            b"POST /oauth2/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        login_status, _, login_body = _read_response(sock)

    assert near_limit == 200
    assert login_status == 400  # the app read it all and judged it: an overlong password
    assert json.loads(login_body)["error"] == "invalid_grant"


def test_a_header_over_the_limit_is_refused_with_431(server: LimitedServer) -> None:
    with _connect(server) as sock:
        sock.sendall(_header_request(MAX_HEADER_BYTES + 1024))
        raw = _read_until_closed(sock)

    _, body = _assert_json_error(raw, 431)  # RFC 6585 §5
    assert body == {"detail": "The request header fields are too large."}
    _assert_served(server)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak memory from /proc")
def test_a_32_mib_header_is_refused_before_it_is_buffered(server: LimitedServer) -> None:
    huge = _header_request(32 * 1024 * 1024, name=b"Authorization: Bearer")
    peak_before = server.peak_memory_bytes()

    with _connect(server) as sock:
        started = time.monotonic()
        try:
            sock.sendall(huge)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while sending: the point
        raw = _read_until_closed(sock)
        elapsed = time.monotonic() - started

    if raw:  # the answer can be lost to the reset of the unread rest
        assert _parse(raw)[0] == 431, raw[:100]
    grown = server.peak_memory_bytes() - peak_before
    assert grown < 8 * 1024 * 1024, f"peak memory grew by {grown / 2**20:.0f} MiB"
    assert elapsed < GRACE_SECONDS
    _assert_served(server)


# Trusted proxies: the same options `serve` passes, around an app that shows what it is told.


async def _echo_client(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"][0], "scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _seen_by_app(settings: Settings, forwarded_for: str) -> dict[str, str]:
    """What an app behind `serve`'s options sees, with the forwarded headers read as
    `create_app` reads them."""
    port = free_port()
    app: Any = _echo_client
    if settings.trusted_proxies:
        app = ForwardedHeadersMiddleware(app, trusted=settings.trusted_proxies)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, **uvicorn_options(settings)
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + GRACE_SECONDS
        while not running.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        response = httpx.get(
            f"http://127.0.0.1:{port}/",
            headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
            timeout=GRACE_SECONDS,
        )
    finally:
        running.should_exit = True
        thread.join(GRACE_SECONDS)
    seen: dict[str, str] = response.json()
    return seen


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "expected"),
    [
        (None, "203.0.113.7", {"client": "127.0.0.1", "scheme": "http"}),  # the default: nobody
        ("10.0.0.0/8", "203.0.113.7", {"client": "127.0.0.1", "scheme": "http"}),
        ("127.0.0.1", "203.0.113.7", {"client": "203.0.113.7", "scheme": "https"}),
        ("127.0.0.1", "<script>", {"client": "127.0.0.1", "scheme": "https"}),
        ("*", "[2001:DB8::1]:443", {"client": "2001:db8::1", "scheme": "https"}),
    ],
)
def test_forwarded_headers_count_only_from_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch,
    trusted: str | None,
    forwarded_for: str,
    expected: dict[str, str],
) -> None:
    monkeypatch.delenv("AUTH_TRUSTED_PROXIES", raising=False)
    if trusted is not None:
        monkeypatch.setenv("AUTH_TRUSTED_PROXIES", trusted)

    seen = _seen_by_app(Settings(_env_file=None), forwarded_for)

    assert seen == expected


@pytest.mark.parametrize("value", ["10.0.0.1/8", "localhost", "*,10.0.0.1", "1.2.3"])
def test_trusted_proxies_refuse_what_is_not_an_address(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AUTH_TRUSTED_PROXIES", value)

    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(_env_file=None)
