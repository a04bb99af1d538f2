"""`TokenVerifier`: auth-service's access tokens verified in another service.

The rules are `_rules` (RFC 9068 §4, RFC 8725), the keys come from a key source (`_jwks`:
the issuer's JWK Set found through its metadata). Verified tokens are kept, bounded and
never past their `exp`, so a token's signature is checked once, not on every request.
In introspection mode (`_introspection`, RFC 7662) the auth service is asked too, about a
token that passed those rules only (§4: every request costs the service; a forged token must
cost it nothing), and its answer is held to the same rules; what `verify` returns and raises
is the same.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from auth_service_verifier import _rules
from auth_service_verifier._errors import InvalidTokenError
from auth_service_verifier._introspection import Introspection, IntrospectionSource
from auth_service_verifier._jwks import JWKSKeySource, KeySetVersion
from auth_service_verifier._rules import ParsedToken, TokenRuleError, VerifiedToken


@dataclass(frozen=True, slots=True)
class VerifierStatus:
    """What a verifier holds and how its last exchanges with the auth service went, as of
    `TokenVerifier.status()`: for a health endpoint or a log line. No secret is in it."""

    key_ids: tuple[str, ...]  # the kids of the key set in use, sorted; () before the first
    keys_fetched_at: float | None  # wall clock (time.time()) of the last good key fetch
    fetches: int  # JWK Set requests sent
    last_error: str | None  # why the last key fetch failed or what it warned of; else None
    introspection_requests: int | None  # introspection requests sent; None without the mode
    introspection_error: str | None  # why the last introspection request failed; else None


class _VerifiedTokens:
    """Tokens verified with one generation of keys, each until its `exp`; oldest out first.

    Keyed by the token string: a token has one spelling (`_rules.parse` refuses every
    other), so a tampered token is another key and is verified in full. The generation and
    its tokens are one value, replaced whole, so a thread never files a token under a
    generation other than the one it was verified with.
    """

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._held: tuple[int, dict[str, VerifiedToken]] = (0, {})

    def get(self, token: str, *, generation: int, now: float) -> VerifiedToken | None:
        held, tokens = self._held
        if generation != held:
            return None
        verified = tokens.get(token)
        if verified is None:
            return None
        if verified.expires_at <= now:
            tokens.pop(token, None)
            return None
        return verified

    def put(self, token: str, verified: VerifiedToken, *, generation: int, now: float) -> None:
        held, tokens = self._held
        if generation < held:
            return  # verified with keys a refresh has since replaced: never kept
        if generation > held:
            tokens = {}  # other keys: what the old ones verified is forgotten
            self._held = (generation, tokens)
        if verified.expires_at <= now or self._maxsize <= 0:
            return  # accepted within the leeway: never kept past exp
        while len(tokens) >= self._maxsize:
            tokens.pop(next(iter(tokens)), None)
        tokens[token] = verified


class TokenVerifier:
    """Verifies access tokens issued by `issuer` for `audience`, with the issuer's keys.

    `verify(token)` (synchronous: Flask, Django, a queue worker) and `averify(token)`
    (asyncio) return a `VerifiedToken` or raise a `VerificationError`: `InvalidTokenError`
    (the token is bad), `VerificationUnavailableError` (not now) or `IssuerMismatchError`
    (this service is misconfigured); `require(*scopes)` is a FastAPI dependency (the
    `fastapi` extra); `status()` says what it holds, for a health endpoint. One instance per
    process, shared: it holds the key set and the verified tokens.

    With `introspection=Introspection(client_id=..., client_secret=...)` every token that
    passes local verification is then looked up at the auth service's introspection
    endpoint (answers kept a few seconds): a revocation, sign-out or deactivation is seen at
    once, for one request per token per cache window, and no token is accepted while the
    auth service cannot answer.

    Two clocks, for tests to move on: `clock` (seconds since the epoch, `time.time`) judges
    a token's `exp`, `nbf` and `iat` and how long verified tokens and introspection answers
    are kept; `monotonic_clock` (`time.monotonic`) times how long the key set is cached and
    the refetch interval. Each HTTP exchange's `timeout` runs on the real clock.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        leeway: float = _rules.DEFAULT_LEEWAY_SECONDS,
        cache_size: int = 4096,
        timeout: float = 5.0,
        min_cache_seconds: float = 60.0,
        max_cache_seconds: float = 3600.0,
        min_refetch_interval: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        introspection: Introspection | None = None,
        clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer.startswith(("https://", "http://")) or not audience:
            # A configuration mistake: say so at start-up, not as 401s on every request.
            raise ValueError("TokenVerifier needs the issuer's http(s) URL and an audience")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._clock = clock
        self.keys = JWKSKeySource(
            issuer,
            timeout=timeout,
            min_cache_seconds=min_cache_seconds,
            max_cache_seconds=max_cache_seconds,
            min_refetch_interval=min_refetch_interval,
            transport=transport,
            async_transport=async_transport,
            clock=clock,
            monotonic_clock=monotonic_clock,
        )
        self._verified = _VerifiedTokens(cache_size)
        self.introspection = (
            None
            if introspection is None
            else IntrospectionSource(
                issuer,
                introspection,
                timeout=timeout,
                transport=transport,
                async_transport=async_transport,
                clock=clock,
            )
        )

    def verify(self, token: str) -> VerifiedToken:
        """The verified token; InvalidTokenError, with a message safe to show, if it is bad
        (VerificationUnavailableError if it cannot be verified now, IssuerMismatchError if
        this service names another issuer than the auth service does).

        May block on fetching the issuer's keys (at most `timeout` per request, and rarely);
        in introspection mode, on asking the auth service (once per token per cache window).
        """
        if self.introspection is not None:
            verdict = self.introspection.cached(token)
            if verdict is None:
                self._verify_locally(token)  # RFC 7662 §4: forged tokens are never sent
                answer = self.introspection.ask(token)
                verdict = self._introspected(self.introspection, token, answer)
            return _accepted(verdict)
        return self._verify_locally(token)

    async def averify(self, token: str) -> VerifiedToken:
        """`verify` for asyncio: fetching keys (or asking) does not block the event loop."""
        if self.introspection is not None:
            verdict = self.introspection.cached(token)
            if verdict is None:
                await self._averify_locally(token)
                answer = await self.introspection.aask(token)
                verdict = self._introspected(self.introspection, token, answer)
            return _accepted(verdict)
        return await self._averify_locally(token)

    def require(self, *scopes: str) -> Callable[..., Awaitable[VerifiedToken]]:
        """A FastAPI dependency: the request's verified bearer token holding every one of
        `scopes` (none: any valid token); 401 and 403 with RFC 6750 §3 challenges, 503 while
        the token cannot be verified, 500 when the issuer is misconfigured."""
        try:  # imported here, not at the top: FastAPI is optional
            from auth_service_verifier._fastapi import BearerToken
        except ImportError as exc:
            if exc.name in ("fastapi", "starlette"):
                raise ImportError(
                    "TokenVerifier.require needs FastAPI: pip install fastapi"
                ) from exc
            raise
        return BearerToken(self, scopes)

    def status(self) -> VerifierStatus:
        """What this verifier holds and how its last exchanges with the auth service went,
        read now: for the health endpoint of the service using it."""
        keys, introspection = self.keys, self.introspection
        return VerifierStatus(
            key_ids=keys.key_ids,
            keys_fetched_at=keys.fetched_at,
            fetches=keys.fetches,
            last_error=keys.last_error,
            introspection_requests=None if introspection is None else introspection.requests,
            introspection_error=None if introspection is None else introspection.last_error,
        )

    def close(self) -> None:
        """Close the connections introspection mode keeps open (at shutdown)."""
        if self.introspection is not None:
            self.introspection.close()

    async def aclose(self) -> None:
        """`close`, and the asyncio connections too."""
        if self.introspection is not None:
            self.introspection.close()
            await self.introspection.aclose()

    def _introspected(
        self, source: IntrospectionSource, token: str, answer: object
    ) -> VerifiedToken | str:
        """The verdict on an introspection answer, kept for the next few seconds."""
        try:
            verdict: VerifiedToken | str = _rules.introspected(
                answer,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                now=self._clock(),
            )
        except TokenRuleError as exc:
            verdict = str(exc)
        source.keep(token, verdict)
        return verdict

    def _verify_locally(self, token: str) -> VerifiedToken:
        cached = self._verified.get(token, generation=self.keys.generation, now=self._clock())
        if cached is not None:
            return cached
        parsed = _parse(token)
        return self._finish(token, parsed, self.keys.keys(parsed.kid))

    async def _averify_locally(self, token: str) -> VerifiedToken:
        cached = self._verified.get(token, generation=self.keys.generation, now=self._clock())
        if cached is not None:
            return cached
        parsed = _parse(token)
        return self._finish(token, parsed, await self.keys.akeys(parsed.kid))

    def _finish(self, token: str, parsed: ParsedToken, keys: KeySetVersion) -> VerifiedToken:
        now = self._clock()
        try:
            verified = _rules.verify(
                parsed,
                keys.keys,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                now=now,
            )
        except TokenRuleError as exc:
            raise InvalidTokenError(str(exc)) from None
        # Filed under the generation it was verified with, read with the keys: not the one
        # current now, which a refresh in another thread may have moved on meanwhile.
        self._verified.put(token, verified, generation=keys.generation, now=now)
        return verified


def _accepted(verdict: VerifiedToken | str) -> VerifiedToken:
    if isinstance(verdict, str):
        raise InvalidTokenError(verdict)
    return verdict


def _parse(token: str) -> ParsedToken:
    try:
        return _rules.parse(token)
    except TokenRuleError as exc:
        raise InvalidTokenError(str(exc)) from None
