"""Access token issuance: RFC 9068 JWT profile for OAuth 2.0 access tokens."""

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auth_service.config import Settings
from auth_service.errors import InvalidTarget
from auth_service.models import User
from auth_service.scopes import (
    format_scope,
)
from auth_service.security import jwt
from auth_service.security.jwt import SESSION_CLAIM, TOKEN_VERSION_CLAIM
from auth_service.services.clients import Client
from auth_service.services.keys import KeySet
from auth_service.services.user_state import UserState

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


def predates_version(claims: dict[str, Any], user: User | UserState | Client) -> bool:
    """Was the token issued at another token version than the user's now: before the
    user's latest password change, deactivation or end of every session (or the client's
    latest deactivation or emergency rotation)?

    `jwt.decode` has checked the claim is an int (`False` and `0.0` would equal 0).
    """
    return claims.get(TOKEN_VERSION_CLAIM) != user.token_version
