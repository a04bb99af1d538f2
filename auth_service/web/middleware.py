"""ASGI middleware: the client's address behind trusted proxies; request ids, metrics and
access log per request; CORS that says what it refuses; the JSON 500; the body size limit.
In `create_app` the order is, outermost first: ForwardedHeaders (with AUTH_TRUSTED_PROXIES),
RequestContext, CORS, BodySizeLimit, UnhandledError, then the discovery documents' fast path
(`oauth/discovery.py`), so every answer a middleware builds also gets CORS headers."""

import ipaddress
import json
import logging
import re
import secrets
import time
from itertools import islice
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_service.errors import Answer, HTTPError, InternalError
from auth_service.web.observability import AccessLog, Metrics, request_id_var
from auth_service.web.styles import ErrorStyles

_REQUEST_ID = b"x-request-id"
MAX_BODY_BYTES = 64 * 1024
BODY_TOO_LARGE = "The request body is too large."
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # used with fullmatch: no "a\n"
# Every answer: browsers must not guess a content type (a JSON error rendered as HTML).
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"})
logger = logging.getLogger(__name__)


_FORWARDED_FOR, _FORWARDED_PROTO = b"x-forwarded-for", b"x-forwarded-proto"
_PORT = re.compile(r"[0-9]{1,5}")


def _forwarded_address(hop: str) -> tuple[str, int] | None:
    """One X-Forwarded-For entry as (address in canonical form, port or 0); None when it is
    not an IP address, bare or as `a.b.c.d:port` or `[v6]:port`."""
    host, port = hop, "0"
    if hop.startswith("["):
        host, bracket, rest = hop[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "0"
    elif hop.count(":") == 1:
        host, _, port = hop.partition(":")
    if not _PORT.fullmatch(port) or int(port) > 65535:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):  # fe80::1%<any text>: a zone is no client's
        return None
    return str(address), int(port)


class ForwardedHeadersMiddleware:
    """The client's address and scheme as a trusted proxy forwards them.

    Only when the socket peer is one of `trusted` (AUTH_TRUSTED_PROXIES; `*`: any): the client
    is the nearest X-Forwarded-For entry that is not itself a trusted proxy (with `*`, the
    first), stored in its canonical form. Every entry up to it must be an IP address, else
    the header is not believed and the socket peer stays the client: what a session shows as
    its address is always one. X-Forwarded-Proto counts when it is `http` or `https`.
    """

    def __init__(self, app: ASGIApp, *, trusted: list[str]) -> None:
        self.app = app
        self.any = trusted == ["*"]
        self.networks = [] if self.any else [ipaddress.ip_network(entry) for entry in trusted]

    def _trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def _client(self, forwarded_for: str) -> tuple[str, int] | None:
        found = None
        for hop in reversed(forwarded_for.split(",")):  # each proxy appends the peer it saw
            found = _forwarded_address(hop.strip())
            if found is None or not self._trusts(found[0]):
                return found
        return found  # every entry a trusted proxy: the first is the client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and (self.any or (peer and self._trusts(peer[0]))):
            headers = scope["headers"]
            forwarded = [value for name, value in headers if name == _FORWARDED_FOR]
            proto = [value for name, value in headers if name == _FORWARDED_PROTO]
            if proto and (scheme := proto[-1].decode("latin-1").strip()) in ("http", "https"):
                scope["scheme"] = scheme
            client = self._client(b",".join(forwarded).decode("latin-1")) if forwarded else None
            if client is not None:
                scope["client"] = client
        await self.app(scope, receive, send)


async def _send(send: Send, answer: Answer) -> None:
    start = {"type": "http.response.start", "status": answer.status}
    await send({**start, "headers": answer.raw_headers()})
    await send({"type": "http.response.body", "body": answer.body})


def _route_template(scope: Scope, path: str, root_path: str) -> str:
    """The matched route's path template: a bounded label, never a raw path with ids.

    `scope` is the request's scope after routing; `path` and `root_path` are its own from
    before (a Mount rewrites them).
    """
    route = scope.get("route")  # set by FastAPI's APIRoute
    if route is not None:
        return str(route.path)
    original = {**scope, "path": path, "root_path": root_path}
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        template = getattr(candidate, "path", None)  # Starlette routes: /openapi.json, assets
        if template is not None and candidate.matches(original)[0] is Match.FULL:
            return f"{template}/{{path}}" if isinstance(candidate, Mount) else str(template)
    return "<unmatched>"


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException, so FastAPI's body reader re-raises
    it (it turns any other error into a 400) and the app's handler answers 413."""

    def __init__(self) -> None:
        super().__init__(413, BODY_TOO_LARGE)


class BodySizeLimitMiddleware:
    """Refuse request bodies over `max_body_bytes` before anything parses or hashes them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, styles: ErrorStyles) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.styles = styles

    async def _refuse(self, scope: Scope, send: Send, status: int, description: str) -> None:
        await _send(send, self.styles.answer(HTTPError(status, description), scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await self._refuse(scope, send, 400, "The Content-Length header is malformed.")
            return
        if declared is not None and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send, 413, BODY_TOO_LARGE)
            return
        if b"transfer-encoding" not in headers:
            # RFC 9112 §6.3: the body is the declared length, which the server delivers
            # exactly, or there is none. A transfer coding overrides any length: count it.
            await self.app(scope, receive, send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(scope, send, 413, BODY_TOO_LARGE)


# Refused origins remembered per worker, each logged once a minute; at most this many at once,
# so random Origin headers cannot grow it (beyond it, new ones wait for a free place).
CORS_LOG_INTERVAL_SECONDS = 60.0
CORS_LOG_CAPACITY = 1000
MAX_LOGGED_ORIGIN = 200  # characters: a header's worth of text is no origin
_CORS_FAILURES = {
    "origin": "the origin is not one of AUTH_CORS_ORIGINS",
    "method": "the method is not allowed",
    "headers": "a requested header is not allowed",
    "private-network": "private network access is not allowed",
}


class _OncePerInterval:
    """Whether a key was not seen in the last `interval` seconds, remembering at most
    `capacity` keys (ordered by when they were last let through, so expired ones leave
    from the front)."""

    def __init__(self, *, interval: float, capacity: int) -> None:
        self.interval = interval
        self.capacity = capacity
        self._seen: dict[str, float] = {}

    def first(self, key: str, now: float) -> bool:
        # Two out per call keeps up with one in; the oldest are first.
        for oldest in [k for k, at in islice(self._seen.items(), 2) if now - at >= self.interval]:
            del self._seen[oldest]
        at = self._seen.get(key)
        if at is not None and now - at < self.interval:
            return False
        if at is None and len(self._seen) >= self.capacity:
            return False
        self._seen.pop(key, None)
        self._seen[key] = now
        return True


class CORS(CORSMiddleware):
    """Starlette's CORS, which also says what it refuses: a refused preflight gets a JSON
    body (not plain text), and a request from an origin not allowed is logged as a warning,
    once a minute per origin, since the browser shows its user only a failed fetch.
    A same-origin request (the service's own pages and /docs) is no CORS request."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(app, **options)
        self._refused = _OncePerInterval(
            interval=CORS_LOG_INTERVAL_SECONDS, capacity=CORS_LOG_CAPACITY
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
            if origin is not None and origin != own and not self.is_allowed_origin(origin):
                self._log_refused(origin)
        await super().__call__(scope, receive, send)

    def _log_refused(self, origin: str) -> None:
        origin = origin[:MAX_LOGGED_ORIGIN]
        if self._refused.first(origin, time.monotonic()):
            logger.warning(
                "refused a cross-origin request: its origin is not in AUTH_CORS_ORIGINS",
                extra={"origin": origin},
            )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # Starlette's text names what failed: "Disallowed CORS origin, headers".
        failed = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        reasons = "; ".join(_CORS_FAILURES.get(part, part) for part in failed)
        body = json.dumps({"detail": f"CORS preflight refused: {reasons}."}).encode()
        headers = {k: v for k, v in response.headers.items() if k.startswith(("access-", "vary"))}
        return Response(body, status_code=400, headers=headers, media_type="application/json")


class UnhandledErrorMiddleware:
    """A bug: log it with the request id, answer a JSON 500 (inside CORS, so a browser can
    read it), never Starlette's plain-text page."""

    def __init__(self, app: ASGIApp, *, styles: ErrorStyles) -> None:
        self.app = app
        self.styles = styles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise  # too late for an answer: the server drops the connection
            error = InternalError(request_id=request_id_var.get() or "")
            await _send(send, self.styles.answer(error, scope))


class RequestContextMiddleware:
    """Per request: our own id (answered in X-Request-ID), metrics and one access log line.

    A client's own X-Request-ID is logged beside ours as `client_request_id` when it is of
    the safe form, so both sides can find the request; it never replaces ours, so a client
    cannot make its requests look like someone else's in the logs.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log: AccessLog) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(_REQUEST_ID, b"").decode("latin-1")
        client_request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else None
        request_id = secrets.token_hex(16)
        token = request_id_var.set(request_id)
        id_header = (_REQUEST_ID, request_id.encode())
        path, root_path = scope["path"], scope.get("root_path", "")  # a Mount rewrites them
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header, _NOSNIFF]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            template = _route_template(scope, path, root_path)
            # A bounded label set: methods the service answers, anything else as OTHER.
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.observe_request(method, template, status, elapsed)
            self.access_log.record(
                method,
                path,
                status,
                elapsed,
                route=template,
                request_id=request_id,
                client_request_id=client_request_id,
            )
            request_id_var.reset(token)
