"""HTTP for the verifier: one GET or POST and its answer, bounded in time and in size.

Every exchange with the auth service (its metadata, its JWK Set, its introspection endpoint)
has `timeout` for the whole of it, headers included, however slowly the bytes come, and a
body past `_MAX_DOCUMENT_BYTES` is never read into memory: an auth service that is slow,
broken or hostile costs its consumers a bounded wait and a bounded buffer, then a
`FetchError`. The synchronous driver holds to the deadline on its own connections, the
asynchronous one with `asyncio.timeout`.
"""

import asyncio
import contextvars
import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

_MAX_DOCUMENT_BYTES = 1 << 20
_TOO_SLOW = "the answer took longer than the timeout"

# When the exchange this thread is making must be over (time.monotonic), or None.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


class FetchError(Exception):
    """A document (metadata, a JWK Set, an introspection answer) could not be fetched or
    was not acceptable."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """An answer and its body, read in chunks: reading stops once the body is past
    `_MAX_DOCUMENT_BYTES` (`too_large`), so a huge answer is never held in memory."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    too_large: bool = False


def _within(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """A socket operation's timeout, cut to what is left of the exchange's deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired(_TOO_SLOW)  # 0 would make the socket non-blocking, not time out
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the exchange using it
    (connections are reused: the deadline is the thread's, not the connection's)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        within = _within(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, within))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, each wrapped in a `_DeadlineStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        within = _within(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_tcp(host, port, within, local_address, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over connections that keep `fetch`'s deadline: httpx's timeout
    bounds each read, so without it an issuer dripping its headers a byte at a time would
    hold a synchronous fetch (and the threads waiting on it) for as long as it went on."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_DeadlineBackend()
        )


def sync_client(transport: httpx.BaseTransport | None, *, timeout: float) -> httpx.Client:
    """A client for `fetch`: over `transport` if one was given, else over connections that
    end every exchange by its deadline, headers included."""
    chosen = _DeadlineTransport() if transport is None else transport
    return httpx.Client(transport=chosen, timeout=timeout)


def fetch(client: httpx.Client, request: httpx.Request, *, timeout: float) -> Fetched:
    """Send `request`; read the answer's body up to the cap, then close it.

    The whole exchange has `timeout`, however slowly the bytes come: with `sync_client`'s own
    connections every socket operation ends by the deadline, the headers' reads included;
    over a transport of the caller's the body is checked against it at each chunk (so at
    most one read late). FetchError otherwise.
    """
    deadline = time.monotonic() + timeout
    reset = _DEADLINE.set(deadline)
    try:
        response = client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_DOCUMENT_BYTES:
                    return Fetched(response.status_code, response.headers, b"", too_large=True)
                if time.monotonic() > deadline:
                    raise FetchError(_TOO_SLOW)
            return Fetched(response.status_code, response.headers, bytes(body))
        finally:
            response.close()
    except httpx.TimeoutException:
        raise FetchError(_TOO_SLOW) from None  # every timeout is the exchange's: same words
    finally:
        _DEADLINE.reset(reset)


async def afetch(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    timeout: float,  # noqa: ASYNC109 (the fetch's own: its expiry is a FetchError)
) -> Fetched:
    """`fetch` for asyncio, where the whole exchange, headers included, has `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_DOCUMENT_BYTES:
                        return Fetched(response.status_code, response.headers, b"", True)
                return Fetched(response.status_code, response.headers, bytes(body))
            finally:
                await response.aclose()
    except TimeoutError:
        raise FetchError(_TOO_SLOW) from None


def json_document(response: Fetched, what: str) -> Any:
    """The JSON value of a 200 answer, or FetchError: whatever is wrong with a document
    is a failed fetch, never another exception."""
    if response.status_code != 200:
        raise FetchError(f"{what}: HTTP {response.status_code}")
    if response.too_large:
        raise FetchError(f"{what}: too large")
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise FetchError(f"{what}: not JSON") from None
