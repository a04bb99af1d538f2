"""Access tokens: issuing them (RFC 9068), judging them, and revoking them (RFC 7009).

Issuing: the claims of a user's or a client's token, its audience, its signature. Revoking:
an access token needs no lookup to verify, so revoking one puts its `jti` on a denylist
until it would have expired anyway; the judgement below reads that list.

Judging: is this access token active? One answer, for the guards and for introspection
alike. Active means: `jwt.decode` accepts it (our key, our algorithm, `typ`, the claims, their
times; its signature checked once and cached until `exp`), its scope claim is well formed,
its `jti` was not revoked (RFC 7009), and what it acts for is still there:

- a user's token (`sub` a user id): the user exists and is active, the token was issued at
  the user's current token version (no password change or deactivation since), and the
  session it names (`sid`), if any, has not ended;
- a client's own token (client credentials: `sub` is its `client_id`): the client exists,
  is active, and has not been deactivated or had its secret replaced after a leak since the
  token was issued; it still has the client credentials grant and the token's audience; its
  scopes are those the client still has.

All of it is read in one statement on every call, never cached, so a change through any
worker or replica counts at once.
"""

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access import repository
from auth_service.access.scopes import format_scope, split_scope
from auth_service.clients.service import Client
from auth_service.config import Settings
from auth_service.errors import InvalidTarget, InvalidToken
from auth_service.keys.service import KeySet
from auth_service.kit.jobs import Job
from auth_service.kit.reads import ClientRow, Reads, TokenRow, UserRow
from auth_service.kit.time import utcnow
from auth_service.models import User
from auth_service.security import jwt
from auth_service.security.jwt import (
    LEEWAY_SECONDS,
    SESSION_CLAIM,
    TOKEN_VERSION_CLAIM,
    VerifiedTokenCache,
)

REVOKED = "The access token has been revoked."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an active user's token acts for: its claims, its scopes and the active user."""

    claims: dict[str, Any]
    scopes: frozenset[str]
    user: UserRow
    # The session the token was issued in (its `sid`); None for a token tied to none.
    session_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ClientPrincipal:
    """A service client acting for itself (client credentials): its token and the client."""

    claims: dict[str, Any]
    scopes: frozenset[str]
    client: ClientRow


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a token's state is read by."""

    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    client_id: str | None = None


def verified_claims(
    token: str,
    *,
    keys: KeySet,
    settings: Settings,
    cache: VerifiedTokenCache,
    audience: str | None,
) -> dict[str, Any]:
    """The claims of a token we signed, its form and times checked (and `audience`, unless
    None); InvalidToken, saying why, for any other."""
    try:
        return cache.decode(
            token,
            keys=keys.by_kid,
            algorithm=settings.signing_alg,
            issuer=settings.issuer,
            audience=audience,
        )
    except jwt.TokenError as exc:
        raise InvalidToken(str(exc)) from None


def _canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID `value` spells in its one canonical form (uuid.UUID also reads upper case,
    braces, bare hex and urn:uuid:), else None."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None


def _subject(claims: dict[str, Any]) -> _Subject:
    # RFC 9068 §2.2: a client acting for itself is the token's subject.
    if claims["sub"] == claims["client_id"] and SESSION_CLAIM not in claims:
        return _Subject(client_id=claims["sub"])
    user_id = _canonical_uuid(claims["sub"])
    if user_id is None:
        raise InvalidToken("The access token does not name a user.")
    session_id = None
    if SESSION_CLAIM in claims:
        session_id = _canonical_uuid(claims[SESSION_CLAIM])
        if session_id is None:
            raise InvalidToken("The access token's sid claim is malformed.")
    return _Subject(user_id=user_id, session_id=session_id)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    try:
        # RFC 6749 §3.3: scope-tokens split on the ASCII space only (a str: `jwt` checked).
        return frozenset(split_scope(claims["scope"])) if "scope" in claims else frozenset()
    except ValueError:
        raise InvalidToken("The access token's scope claim is malformed.") from None


def _judge(
    claims: dict[str, Any],
    scopes: frozenset[str],
    subject: _Subject,
    row: TokenRow,
    settings: Settings,
) -> Principal | ClientPrincipal:
    """The principal, if `row` (read for `subject`) still lets the token act."""
    # One answer for a revoked token, a deleted, deactivated or logged-out user, an ended
    # session and a removed client: the token is no longer valid.
    if row.revoked:
        raise InvalidToken(REVOKED)
    if subject.client_id is not None:
        client = row.client
        if (
            client is None
            or not client.is_active
            or predates_version(claims, client)
            or not still_granted(claims, client, settings=settings)
        ):
            raise InvalidToken(REVOKED)
        # The client's list as it is now: a scope taken away counts at once.
        return ClientPrincipal(claims=claims, scopes=scopes & client.scopes, client=client)
    user = row.user
    if (
        user is None
        or not user.is_active
        or predates_version(claims, user)
        or (subject.session_id is not None and not row.session_alive)
    ):
        raise InvalidToken(REVOKED)
    return Principal(claims=claims, scopes=scopes, user=user, session_id=subject.session_id)


async def principal_of(
    token: str,
    *,
    keys: KeySet,
    settings: Settings,
    cache: VerifiedTokenCache,
    reads: Reads,
) -> Principal | ClientPrincipal:
    """The principal of an active access token for this service; InvalidToken, saying why,
    for any other."""
    claims = verified_claims(
        token, keys=keys, settings=settings, cache=cache, audience=settings.token_audience
    )
    subject, scopes = _subject(claims), _scopes(claims)
    row = await reads.read(
        user_id=subject.user_id,
        session_id=subject.session_id,
        jti=claims["jti"],
        client_id=subject.client_id,
    )
    return _judge(claims, scopes, subject, row, settings)


@dataclass(frozen=True, slots=True)
class Inspection:
    """What introspection learned in its one read: the token's principal (None: the token
    is not active) and the client asking (None: unknown)."""

    principal: Principal | ClientPrincipal | None
    caller: ClientRow | None


async def inspect(
    token: str,
    *,
    caller_id: str | None,
    keys: KeySet,
    settings: Settings,
    cache: VerifiedTokenCache,
    reads: Reads,
) -> Inspection:
    """Introspection's view of an access token of any audience, read in one statement with
    the client asking (RFC 7662 §2.2: a token we did not sign, or no longer honour, is
    simply not active)."""
    try:
        claims = verified_claims(token, keys=keys, settings=settings, cache=cache, audience=None)
        subject, scopes = _subject(claims), _scopes(claims)
    except InvalidToken:
        return Inspection(None, (await reads.read(caller_id=caller_id)).caller)
    row = await reads.read(
        user_id=subject.user_id,
        session_id=subject.session_id,
        jti=claims["jti"],
        client_id=subject.client_id,
        caller_id=caller_id,
    )
    try:
        principal: Principal | ClientPrincipal | None = _judge(
            claims, scopes, subject, row, settings
        )
    except InvalidToken:
        principal = None
    return Inspection(principal, row.caller)


# RFC 6749 §4.4: the grant of a client's own tokens.
CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def _allowed_audiences(client: Client, settings: Settings) -> set[str]:
    return {settings.token_audience, *settings.allowed_audiences, *client.audiences}


def audience_for(requested: str | None, *, client: Client, settings: Settings) -> str:
    """The `aud` of a token `client` asks for (RFC 8707 `resource`, or `audience`): the
    service's default, or one the settings or the client's configuration allow."""
    if requested is None:
        return settings.token_audience
    if requested not in _allowed_audiences(client, settings):
        raise InvalidTarget("This client may not have tokens for that audience.")
    return requested


def still_granted(claims: dict[str, Any], client: Client, *, settings: Settings) -> bool:
    """Would `client` (as it is now) still be granted its own token with these claims: it
    keeps the client credentials grant (RFC 6749 §4.4) and may have every audience of the
    token? A grant or an audience taken away counts at once, as a scope does."""
    return CLIENT_CREDENTIALS in client.grant_types and all(
        aud in _allowed_audiences(client, settings) for aud in jwt.audiences(claims)
    )


def issue_access_token(
    *,
    subject: str,
    client_id: str,
    scopes: set[str],
    audience: str,
    keys: KeySet,
    settings: Settings,
    claims: Mapping[str, Any] | None = None,
    not_after: datetime | None = None,
) -> IssuedToken:
    """An RFC 9068 access token for `subject` (a user's id, or the client's own for client
    credentials), with `claims` added, expiring after AUTH_ACCESS_TOKEN_TTL or at
    `not_after` (its session's end), whichever comes first."""
    now = int(time.time())
    exp = now + settings.access_token_ttl
    if not_after is not None:
        exp = min(exp, int(not_after.timestamp()))
    scope = format_scope(scopes)
    payload: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": audience,
        "exp": exp,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": scope,
        **(claims or {}),
    }
    return IssuedToken(
        access_token=jwt.encode(payload, keys.signing),
        expires_in=exp - now,
        scope=scope,
    )


def client_claims(client: Client) -> dict[str, Any]:
    """What a client's own access token carries besides RFC 9068's claims: the client's
    token version, which refuses the token once the client is deactivated or its secret
    replaced after a leak."""
    return {TOKEN_VERSION_CLAIM: client.token_version}


def user_claims(user: User, *, session_id: uuid.UUID) -> dict[str, Any]:
    """What a user's access token carries besides RFC 9068's claims. `sid` names the session
    it was issued in, which ends it when the session ends."""
    return {
        "roles": user.roles,
        # Read with the password hash it was checked against: see User.token_version.
        TOKEN_VERSION_CLAIM: user.token_version,
        SESSION_CLAIM: str(session_id),
    }


def predates_version(claims: dict[str, Any], user: User | UserRow | Client) -> bool:
    """Was the token issued at another token version than the user's now: before the
    user's latest password change, deactivation or end of every session (or the client's
    latest deactivation or emergency rotation)?

    `jwt.decode` has checked the claim is an int (`False` and `0.0` would equal 0).
    """
    return claims.get(TOKEN_VERSION_CLAIM) != user.token_version


async def revoke(db: AsyncSession, *, jti: str, exp: float) -> None:
    """Refuse the token `jti` from now until it expires (its `exp`, and the leeway the
    guards allow past it). Revoking it again changes nothing."""
    until = datetime.fromtimestamp(exp, tz=UTC) + timedelta(seconds=LEEWAY_SECONDS)
    await repository.deny(db, jti=jti, until=until)


def jobs(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    """The denylist forgets each token once it has expired anyway."""

    async def purge() -> int:
        return await repository.purge(sessionmaker, now=utcnow())

    return [Job("purged revoked access tokens", settings.purge_interval_seconds, purge)]
