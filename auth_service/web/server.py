"""The HTTP server `serve` runs: uvicorn with httptools and uvloop, plus the limits it lacks.

uvicorn itself bounds idle keep-alive time and the number of connections, but with httptools
it bounds neither the size of a request head nor the time a client may take to send the head
or the body: its keep-alive timer is disarmed by every byte that arrives (uvicorn issue #157),
so one header line or body byte every few seconds holds a connection for ever, and httptools
buffers a header of any size. ASGI middleware cannot help: it only runs once the head is in.
`GuardedHttpToolsProtocol` keeps uvicorn's httptools protocol (the fast path) and adds, per
connection, what the settings in `HttpLimits` say; a request that arrives in one read, as
almost all do, costs a few comparisons and no timer of its own.
"""

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from auth_service.config import Settings
from auth_service.errors import Answer, ErrorStyle, HTTPError, RetryLater, ServiceError
from auth_service.web.styles import LIFESPAN_KEY, ErrorStyles

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` that apply the settings' limits to any app."""
    limits = HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        header_timeout_seconds=settings.http_header_timeout_seconds,
        body_timeout_seconds=settings.http_body_timeout_seconds,
    )
    return {
        # A partial, not a class built here: workers are spawned processes and unpickle it.
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits),
        "loop": "auto",  # uvloop where installed
        "ws": "none",  # the service has no WebSocket routes: no upgrade path to guard
        "limit_concurrency": settings.http_max_connections,
        "timeout_keep_alive": settings.http_keep_alive_timeout_seconds,
        # The app reads forwarded headers itself, from the proxies the settings name and
        # only as IP addresses (`middleware.ForwardedHeadersMiddleware`); uvicorn's would pass
        # any text on as the client's address.
        "proxy_headers": False,
        "server_header": False,
    }


# Before the head is in there is no path to answer for: these have the plain shape.
_HEAD_TOO_LARGE = HTTPError(431, "The request header fields are too large.").answer(ErrorStyle.API)
_HEAD_TOO_SLOW = HTTPError(408, "The request header was not received in time.").answer(
    ErrorStyle.API
)
_BODY_TOO_SLOW = "The request body was not received in time."
_BUSY = "The server is busy; retry in a moment."
# On every answer of the app; its middleware never sees these.
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_CLOSE = (b"connection", b"close")


def _answer(error: ServiceError, scope: Scope) -> Answer:
    """`error` in the style of the request's route, as the app's lifespan published the
    styles (ASGI lifespan state); the API style for an app that published none."""
    styles: ErrorStyles | None = scope.get("state", {}).get(LIFESPAN_KEY)
    if styles is None:
        return error.answer(ErrorStyle.API)
    return styles.answer(error, dict(scope))


async def _service_unavailable(
    scope: Scope, _receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """What a request over the concurrency limit gets instead of the app (uvicorn's is text)."""
    busy = RetryLater(_BUSY, status=503, retry_after=RETRY_AFTER_SECONDS)
    answer = _answer(busy, scope)
    # Connection: close frees the connection, which is what is short.
    headers = [*answer.raw_headers(), _NOSNIFF, _CLOSE]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit, head and body deadlines, and a JSON
    503 for its concurrency limit.

    - Head size: at most `max_header_bytes` of request line and headers; beyond, 431 and close.
      Bytes are counted as they arrive, before httptools buffers them.
    - Head deadline: the whole head within `header_timeout_seconds` of the connection opening
      or of its first byte on a kept-alive connection; else 408 (silent close for a connection
      that sent nothing) — RFC 9110 §15.5.9.
    - Body deadline: the whole body within `body_timeout_seconds` of the head; else 408 while
      the app still waits for it, or close once it has answered.
    - Concurrency: uvicorn's own `limit_concurrency` check, answered with JSON and Retry-After.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        # Take over uvicorn's check (which answers text/plain) to answer JSON instead.
        self._max_concurrency, self.limit_concurrency = self.limit_concurrency, None
        # Bytes the current head may still take; None while a body is being read.
        self._head_room: int | None = limits.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # Set by the parser's callbacks during one read: a message ended, a new one began.
        self._message_ended = False
        self._head_begun = False

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte has the same deadline as a slow head.
        self._head_timer = self.loop.call_later(
            self._limits.header_timeout_seconds, self._head_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes | memoryview) -> None:
        room = self._head_room
        if room is not None and len(data) > room:
            self._feed_up_to_limit(memoryview(data))
            return
        self._message_ended = self._head_begun = False
        super().data_received(data)  # type: ignore[arg-type]  # httptools takes a memoryview
        if self._head_room is None:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self._limits.body_timeout_seconds, self._body_timed_out
                )
            return
        if not self._message_ended:
            self._head_room -= len(data)
        elif self._head_begun:
            # A pipelined head began after a message within this read; where is not known,
            # so the whole read counts against it (only pipelining clients can notice).
            self._head_room = self._limits.max_header_bytes - len(data)
        if self._head_room < self._limits.max_header_bytes and self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self._limits.header_timeout_seconds, self._head_timed_out
            )

    def _feed_up_to_limit(self, view: memoryview) -> None:
        """The head may end within this read: parse only what the limit allows, then see."""
        while True:
            room = self._head_room
            if room is None or len(view) <= room:
                self.data_received(view)
                return
            self.data_received(view[:room])
            if self.transport.is_closing():
                return
            if self._head_room is not None and self._head_room <= 0:
                self._refuse_head()
                return
            view = view[room:]

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_room = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limit = self._max_concurrency
        # This connection counts itself; the request's own task does not exist yet.
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            app, self.app = self.app, _service_unavailable
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_room = self._limits.max_header_bytes
        self._message_ended, self._head_begun = True, False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Refusals

    def _answer_and_close(self, answer: Answer) -> None:
        """Write a complete JSON response outside any ASGI cycle, then close."""
        content = [STATUS_LINE[answer.status]]
        headers = [*self.server_state.default_headers, *answer.raw_headers(), _NOSNIFF, _CLOSE]
        for name, value in headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"\r\n", answer.body])
        self.transport.write(b"".join(content))
        self.transport.close()

    def _answering(self) -> bool:
        """A response to an earlier request on this connection is still being written."""
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse_head(self) -> None:
        if self._answering():
            # Pipelined: the requests before this head are answered, then the connection
            # closes (RFC 9112 §9.3.2: the client retries the rest). Room stays 0, so every
            # later byte lands here unparsed.
            self.cycle.keep_alive = False
        else:
            self._answer_and_close(_HEAD_TOO_LARGE)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._answering():
            self.cycle.keep_alive = False  # a pipelined head: close once the answer is out
        elif self._head_room == self._limits.max_header_bytes:
            self.transport.close()  # it sent nothing: nobody to answer
        else:
            self._answer_and_close(_HEAD_TOO_SLOW)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if cycle.response_started:
            self.transport.close()  # the app has answered; the rest of the body is not needed
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # We are not reading (flow control) or the app has not asked for the body yet
            # (RFC 9110 §10.1.1 100-continue): the client is not the one late.
            self._body_timer = self.loop.call_later(
                self._limits.body_timeout_seconds, self._body_timed_out
            )
            return
        # The app is waiting for the body: it gets a disconnect and its answer is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer_and_close(_answer(HTTPError(408, _BODY_TOO_SLOW), cycle.scope))
