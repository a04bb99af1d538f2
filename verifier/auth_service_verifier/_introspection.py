"""Introspection mode: the auth service itself says whether a token is active right now.

RFC 7662: a token that passed local verification (the verifier's; §4: a forged token must
cost the auth service nothing) is POSTed (§2.1) to the `introspection_endpoint` of the issuer's
metadata (RFC 8414 §2; its `issuer` must be the one configured), the caller authenticated
as a client with HTTP Basic (RFC 6749 §2.3.1: id and secret form-urlencoded first), and the
answer (§2.2) is the token's state, revocation included. §4 lets a resource server cache
answers, trading freshness for load: here a few seconds, bounded, never past the token's
`exp`, and an inactive answer for less. An auth service that does not answer (down, slow,
an error, our credentials refused) is never taken to mean "active": the caller gets
`IntrospectionUnavailableError`. The steps are written once, as a generator of requests,
driven by a synchronous or an asynchronous httpx client (`_http`), as in `_jwks`.
"""

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx

from auth_service_verifier._errors import IntrospectionUnavailableError, IssuerMismatchError
from auth_service_verifier._http import (
    Fetched,
    FetchError,
    afetch,
    fetch,
    json_document,
    sync_client,
)
from auth_service_verifier._jwks import endpoint, issuer_metadata
from auth_service_verifier._rules import VerifiedToken

_UNAVAILABLE = "The auth service could not say whether the token is active; try again later."

Steps = Generator[httpx.Request, Fetched, Any]


@dataclass(frozen=True, slots=True)
class Introspection:
    """Introspection mode's settings: a confidential client allowed the `introspect` scope.

    `cache_seconds`: how long an active answer is reused (never past the token's `exp`);
    a revocation is seen at most this late. `inactive_cache_seconds`: the same for a
    refusal, shorter, so a flood of one revoked token costs one request per window while
    such answers do not crowd the cache. `cache_size` bounds the answers kept.
    """

    client_id: str
    client_secret: str = field(repr=False)  # never in a repr, a log line or a traceback
    cache_seconds: float = 5.0
    inactive_cache_seconds: float = 1.0
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ValueError("Introspection needs the client's id and secret")
        if min(self.cache_seconds, self.inactive_cache_seconds, self.cache_size) < 0:
            raise ValueError("Introspection's cache settings cannot be negative")


@dataclass(frozen=True, slots=True)
class _Answer:
    verdict: VerifiedToken | str  # the token, or why it is refused
    until: float  # wall clock (a token's exp is one)


class IntrospectionSource:
    """Asks the issuer's introspection endpoint about tokens, and keeps its answers briefly."""

    def __init__(
        self,
        issuer: str,
        settings: Introspection,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.settings = settings
        self.metadata_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        credentials = f"{quote_plus(settings.client_id)}:{quote_plus(settings.client_secret)}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        self._timeout = timeout
        self._transport, self._async_transport = transport, async_transport
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._client_lock = threading.Lock()
        self._clock = clock  # how long answers are kept
        self._endpoint: str | None = None
        self._answers: dict[str, _Answer] = {}
        self._asking: dict[str, asyncio.Future[Any]] = {}  # held: an unheld task may vanish
        self.requests = 0  # introspection requests sent: what the issuer sees of us
        self.last_error: str | None = None

    # --- the answers kept -------------------------------------------------------------

    def cached(self, token: str) -> VerifiedToken | str | None:
        """The kept verdict on `token`, or None when there is none still fresh."""
        answer = self._answers.get(token)
        if answer is None:
            return None
        if answer.until <= self._clock():
            self._answers.pop(token, None)
            return None
        return answer.verdict

    def keep(self, token: str, verdict: VerifiedToken | str) -> None:
        now = self._clock()
        if isinstance(verdict, VerifiedToken):
            until = min(now + self.settings.cache_seconds, verdict.expires_at)
        else:
            until = now + self.settings.inactive_cache_seconds
        if until <= now or self.settings.cache_size <= 0:
            return
        self._answers.pop(token, None)  # re-inserted last: oldest out first
        while len(self._answers) >= self.settings.cache_size:
            self._answers.pop(next(iter(self._answers)), None)
        self._answers[token] = _Answer(verdict, until)

    # --- asking: the steps once, two drivers -------------------------------------------

    def ask(self, token: str) -> Any:
        """The endpoint's answer about `token` (a JSON value), or
        IntrospectionUnavailableError; blocks for at most `timeout` per request."""
        with self._client_lock:
            if self._client is None:
                self._client = sync_client(self._transport, timeout=self._timeout)
        client = self._client
        steps = self._steps(token)
        try:
            request = next(steps)
            while True:
                request = steps.send(fetch(client, request, timeout=self._timeout))
        except StopIteration as done:
            return done.value
        except (httpx.HTTPError, httpx.InvalidURL, FetchError, IssuerMismatchError) as exc:
            raise self._failed(exc) from None

    async def aask(self, token: str) -> Any:
        """`ask` for asyncio: the event loop is never blocked, and requests arriving while
        one token is being asked about wait for that answer rather than ask again (a page
        making ten calls with a new token costs one introspection)."""
        asking = self._asking.get(token)
        if asking is None:
            asking = asyncio.ensure_future(self._aask(token))
            self._asking[token] = asking
            asking.add_done_callback(lambda done: self._asked(token, done))
        # Shielded: a caller that gives up (its client went away) does not cancel the
        # request the others wait for.
        return await asyncio.shield(asking)

    def _asked(self, token: str, done: asyncio.Future[Any]) -> None:
        self._asking.pop(token, None)
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" noise if every caller left

    async def _aask(self, token: str) -> Any:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(
                transport=self._async_transport, timeout=self._timeout
            )
        client = self._async_client
        steps = self._steps(token)
        try:
            request = next(steps)
            while True:
                request = steps.send(await afetch(client, request, timeout=self._timeout))
        except StopIteration as done:
            return done.value
        except (httpx.HTTPError, httpx.InvalidURL, FetchError, IssuerMismatchError) as exc:
            raise self._failed(exc) from None

    def _steps(self, token: str) -> Steps:
        if self._endpoint is None:
            response = yield httpx.Request("GET", self.metadata_url)
            metadata = issuer_metadata(response, self.issuer)
            self._endpoint = endpoint(metadata, "introspection_endpoint")
        self.requests += 1
        request = httpx.Request(
            "POST",
            self._endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": self._authorization, "Accept": "application/json"},
        )
        # A 401 (our credentials refused) is a failure like a 5xx: say so, never "inactive".
        answer = json_document((yield request), "introspection")
        self.last_error = None
        return answer

    def _failed(self, error: Exception) -> IntrospectionUnavailableError | IssuerMismatchError:
        # The endpoint is looked up again next time, in case it moved. The message names
        # the failure only: neither the secret nor the token is in it. A mismatched issuer
        # is a misconfiguration, not an outage: it is raised as it is.
        self._endpoint = None
        self.last_error = f"{type(error).__name__}: {error}"
        if isinstance(error, IssuerMismatchError):
            return error
        return IntrospectionUnavailableError(_UNAVAILABLE)

    # --- the clients --------------------------------------------------------------------

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await client.aclose()
