"""The issuer's keys, found through its metadata and kept fresh: a local key source.

RFC 8414 §3 / OpenID Connect Discovery 1.0 §4 (metadata at `/.well-known/openid-
configuration`, whose `issuer` must be the one configured, §3.3) and RFC 7517 (the JWK
Set at its `jwks_uri`). The set is kept for the answer's `Cache-Control: max-age`, bounded;
a token naming an unknown `kid` makes it fetch again at once, but never more than once per
`min_refetch_interval`, so a stream of made-up kids cannot turn into a stream of fetches.
A refresh due to max-age holds up no request (one caller or a background task makes it), and
a failed fetch keeps the last good set in use (an auth service that is down or slow must not
take its consumers down with it). A token naming a kid the set lacks is refused only when a
fetch made since the token arrived did not find it: the issuer publishes a key before it signs
with it, so until the verifier can look again it cannot tell a made-up kid from a new key,
and says "not now" (`KeysUnavailableError`), not "never". The steps are written once, as a
generator of requests, and driven by a synchronous or an asynchronous httpx client (`_http`).
"""

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from auth_service_verifier._errors import IssuerMismatchError, KeysUnavailableError
from auth_service_verifier._http import (
    Fetched,
    FetchError,
    afetch,
    fetch,
    json_document,
    sync_client,
)
from auth_service_verifier._rules import ALLOWED_ALGORITHMS, KeySet

# What the key type (and curve) must be for each algorithm (RFC 7518 §3, RFC 8037 §3.1).
_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"{family}{bits}": ("RSA", None) for family in ("RS", "PS") for bits in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
# The members only a private key (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2) or a symmetric key
# (RFC 7518 §6.4.1) has. PyJWK would build a private key from such an entry, which cannot
# verify; and a published key set holds public keys only.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)

logger = logging.getLogger("auth_service_verifier")


Steps = Generator[httpx.Request, Fetched, None]


@dataclass(frozen=True, slots=True)
class KeySetVersion:
    """A key set and its generation, replaced together by a fetch that changes the set: a
    caller holding one knows exactly which keys a token was verified with, whatever a
    concurrent refresh does meanwhile."""

    keys: KeySet
    generation: int  # 1 for the first set, bumped whenever the set changes


_NO_KEYS = "The issuer's signing keys could not be fetched; try again later."
_NOT_YET = "The token names a signing key not known here yet; try again later."


def parse_key_set(document: Any) -> tuple[dict[str, jwt.PyJWK], str | None]:
    """The signing keys of a JWK Set we accept: a kid, an allowed `alg`, a matching key type,
    public; and, when entries holding private key material were left out, a warning.

    Other keys (encryption keys, HMAC secrets, keys without `alg`) are left out, so a token
    can never be verified with them.
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchError("the JWK Set has no keys member")
    keys: dict[str, jwt.PyJWK] = {}
    leaked: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if not _PRIVATE_MEMBERS.isdisjoint(entry):
            leaked.append(kid[:64] if type(kid) is str else "without a kid")
            continue
        # Types first: a list or an object where a string belongs cannot be hashed.
        if type(kid) is not str or type(alg) is not str:
            continue
        if alg not in ALLOWED_ALGORITHMS or kid in keys:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        kty, crv = _KEY_TYPES[alg]
        if entry.get("kty") != kty or (crv is not None and entry.get("crv") != crv):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    warning = None
    if leaked:
        # Said, not only skipped: the issuer has published a secret, and must hear of it.
        named = ", ".join(leaked[:3]) + (", ..." if len(leaked) > 3 else "")
        warning = (
            f"the JWK Set publishes private key material ({len(leaked)} key(s): {named}); "
            "those keys were left out: a published key set holds public keys only"
        )
    if not keys:
        raise FetchError(
            "the JWK Set has no usable signing key" + (f"; {warning}" if warning else "")
        )
    return keys, warning


def max_age(cache_control: str | None) -> float | None:
    """The `max-age` of a Cache-Control header (RFC 9111 §5.2.2.1), 0 for no-store/no-cache."""
    if cache_control is None:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    found = _MAX_AGE.search(cache_control)
    return float(found.group(1)) if found else None


def issuer_metadata(response: Fetched, issuer: str) -> dict[str, Any]:
    """The issuer's metadata document (RFC 8414 §3), FetchError if unusable, or, when it
    names another issuer than `issuer` (OpenID Connect Discovery 1.0 §4.3), an
    IssuerMismatchError naming both, also logged: a misconfiguration nobody else would see."""
    metadata = json_document(response, "metadata")
    if not isinstance(metadata, dict):
        raise FetchError("metadata: not a JSON object")
    named = metadata.get("issuer")
    if named != issuer:
        shown = "no issuer" if named is None else repr(named)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        message = (
            f"This service is configured with the issuer {issuer!r}, but the auth service's "
            f"metadata names {shown}; they must be the same URL (the auth service's "
            "AUTH_ISSUER), so no token can be verified."
        )
        logger.error(message)
        raise IssuerMismatchError(message)
    return metadata


def endpoint(metadata: Any, member: str) -> str:
    """The http(s) URL the issuer's metadata gives as `member`, or FetchError."""
    value = metadata.get(member) if isinstance(metadata, dict) else None
    if type(value) is not str or not value.startswith(("https://", "http://")):
        raise FetchError(f"metadata: no {member}")
    try:
        # httpx refuses most bad URLs (InvalidURL, or idna's UnicodeError for a host it
        # cannot encode); the standard library's idna codec, which the synchronous
        # transport resolves the host with, refuses the empty or over-long labels it lets by.
        httpx.URL(value).host.encode("idna")
    except (httpx.InvalidURL, UnicodeError):
        raise FetchError(f"metadata: {member} is not a usable URL") from None
    return value


class JWKSKeySource:
    """The issuer's current signing keys, by kid, fetched over HTTP and cached."""

    def __init__(
        self,
        issuer: str,
        *,
        timeout: float,
        min_cache_seconds: float,
        max_cache_seconds: float,
        min_refetch_interval: float,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.metadata_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._timeout = timeout
        self._min_cache, self._max_cache = min_cache_seconds, max_cache_seconds
        self._min_refetch_interval = min_refetch_interval
        self._transport, self._async_transport = transport, async_transport
        self._wall_clock = clock  # `fetched_at`
        self._clock = monotonic_clock  # the cache's lifetime and the refetch interval
        self._current: KeySetVersion | None = None
        self._jwks: Any = None  # the document behind `_current`: did a fetch change it?
        self._jwks_uri: str | None = None
        self._expires_at = float("-inf")
        self._last_attempt = float("-inf")
        self._fetched_at = float("-inf")  # when the last fetch that succeeded began
        self._thread_lock = threading.Lock()
        self._async_lock = asyncio.Lock()  # bound to the event loop that first waits on it
        self._refresh: asyncio.Task[None] | None = None  # held: a task nobody holds may vanish
        self.fetches = 0  # JWK Set requests sent: what the issuer sees of us
        self.fetched_at: float | None = None  # wall clock: when the last good fetch ended
        self.last_error: str | None = None
        self._mismatch: str | None = None  # the last fetch found another issuer named

    # --- the keys ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The generation of the key set in use (0 before the first)."""
        current = self._current
        return 0 if current is None else current.generation

    def keys(self, kid: str | None) -> KeySetVersion:
        """The key set to verify a token naming `kid` with, and its generation, in one read;
        fetches (blocking) when due. KeysUnavailableError when it cannot answer now.

        Only a caller that needs the fetch waits for it: with no keys yet, or a kid the set
        lacks (a rotation). A refresh that is due because the set's max-age has passed is
        made by one caller while the others go on with the keys in hand, so a slow or hung
        auth service holds up one request, not all of them.
        """
        arrived = self._clock()
        if self._current is None or self._due(kid):
            if self._thread_lock.acquire(blocking=self._must_wait(kid)):
                try:
                    if self._due(kid):
                        self._run_sync()
                finally:
                    self._thread_lock.release()
        return self._answer(kid, arrived)

    async def akeys(self, kid: str | None) -> KeySetVersion:
        """`keys` for asyncio: fetched without blocking the event loop, and a refresh due
        to max-age is made in the background while every request goes on."""
        arrived = self._clock()
        if self._current is None or self._due(kid):
            if self._must_wait(kid):
                async with self._async_lock:
                    if self._due(kid):
                        await self._run_async()
            elif self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._refresh_in_background())
        return self._answer(kid, arrived)

    def _answer(self, kid: str | None, arrived: float) -> KeySetVersion:
        """The keys for a token that came at `arrived`, or KeysUnavailableError: no set yet,
        or a kid the set lacks that no successful fetch since has looked for (the refetch
        interval had not passed, or the fetch failed). The issuer publishes a key before it
        signs with it, so a set fetched after the token came holds its key if it is genuine;
        an older set may simply predate it, and the next fetch may find it. When the last
        fetch found the metadata naming another issuer, IssuerMismatchError instead."""
        current = self._current
        if current is not None and (
            kid is None or kid in current.keys or self._fetched_at >= arrived
        ):
            return current
        if self._mismatch is not None:
            raise IssuerMismatchError(self._mismatch)  # not "try again later": it will not pass
        raise KeysUnavailableError(_NO_KEYS if current is None else _NOT_YET)

    async def _refresh_in_background(self) -> None:
        async with self._async_lock:
            if self._due(None):
                await self._run_async()

    def _must_wait(self, kid: str | None) -> bool:
        """Whether this caller cannot answer without the fetch's outcome."""
        current = self._current
        return current is None or (kid is not None and kid not in current.keys)

    def _due(self, kid: str | None) -> bool:
        """Whether to fetch before answering: never twice within the refetch interval."""
        now = self._clock()
        if now - self._last_attempt < self._min_refetch_interval:
            return False
        current = self._current
        if current is None or now >= self._expires_at:
            return True
        return kid is not None and kid not in current.keys

    # --- fetching: the steps once, two drivers ---------------------------------------

    def _steps(self) -> Steps:
        if self._jwks_uri is None:
            response = yield httpx.Request("GET", self.metadata_url)
            self._jwks_uri = endpoint(issuer_metadata(response, self.issuer), "jwks_uri")
        self.fetches += 1
        response = yield httpx.Request("GET", self._jwks_uri)
        document = json_document(response, "JWK Set")
        keys, warning = parse_key_set(document)
        age = max_age(response.headers.get("cache-control"))
        lifetime = min(max(age if age is not None else 0.0, self._min_cache), self._max_cache)
        current = self._current
        if current is None or document != self._jwks:
            # One assignment: no reader can pair these keys with another set's generation.
            self._current = KeySetVersion(keys, 1 if current is None else current.generation + 1)
            self._jwks = document
        self._expires_at = self._clock() + lifetime
        self._fetched_at = self._last_attempt
        self.fetched_at = self._wall_clock()
        self._mismatch = None
        self.last_error = None if warning is None else f"JWK Set: {warning}"

    def _start(self) -> Steps:
        self._last_attempt = self._clock()
        return self._steps()

    def _failed(self, error: Exception) -> None:
        # The last good keys stay in use; the next attempt waits for the refetch interval,
        # and looks the jwks_uri up again in case it moved.
        self._jwks_uri = None
        self._mismatch = str(error) if isinstance(error, IssuerMismatchError) else None
        self.last_error = f"{type(error).__name__}: {error}"

    def _run_sync(self) -> None:
        steps = self._start()
        try:
            with sync_client(self._transport, timeout=self._timeout) as client:
                request = next(steps)
                while True:
                    request = steps.send(fetch(client, request, timeout=self._timeout))
        except StopIteration:
            return
        except (httpx.HTTPError, httpx.InvalidURL, FetchError, IssuerMismatchError) as exc:
            self._failed(exc)

    async def _run_async(self) -> None:
        steps = self._start()
        try:
            async with httpx.AsyncClient(
                transport=self._async_transport, timeout=self._timeout
            ) as client:
                request = next(steps)
                while True:
                    request = steps.send(await afetch(client, request, timeout=self._timeout))
        except StopIteration:
            return
        except (httpx.HTTPError, httpx.InvalidURL, FetchError, IssuerMismatchError) as exc:
            self._failed(exc)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The kids of the keys in use, sorted (none before the first fetch)."""
        current = self._current
        return () if current is None else tuple(sorted(current.keys))
