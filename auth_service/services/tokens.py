"""Access token issuance: RFC 9068 JWT profile for OAuth 2.0 access tokens."""

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auth_service.config import Settings
from auth_service.errors import InvalidScope, InvalidTarget
from auth_service.models import User
from auth_service.scopes import (
    CLIENT_ONLY_SCOPES,
    USER_SCOPES,
    allowed_for,
    format_scope,
    split_scope,
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


def parse_scope(requested: str | None) -> set[str] | None:
    """The requested scopes (None when none were asked for); RFC 6749 §3.3 syntax only:
    which of them may be granted is the grant's to decide, by its client and user."""
    if not requested:  # RFC 6749 §3.1: a parameter without a value counts as omitted
        return None
    try:
        return split_scope(requested)
    except ValueError:
        raise InvalidScope(
            "The scope must be scope names separated by single spaces (RFC 6749 §3.3)."
        ) from None


def within_client(requested: set[str] | None, client_scopes: frozenset[str]) -> None:
    """Refuse a scope the client may not ask for (`invalid_scope`, RFC 6749 §5.2)."""
    unknown = (requested or set()) - client_scopes
    if unknown:
        raise InvalidScope(f"Unknown scope for this client: {format_scope(unknown)}.")


def _for_user(scopes: set[str] | frozenset[str], roles: list[str]) -> set[str]:
    """Those of `scopes` a user with `roles` may hold: built-in user scopes by role, and the
    scopes an admin made for services (`orders:read`), which the client's list governs."""
    allowed = {str(s) for s in allowed_for(roles)}
    return {
        s for s in scopes if s in allowed or (s not in USER_SCOPES and s not in CLIENT_ONLY_SCOPES)
    }


def grant_scopes(
    requested: set[str] | None, *, roles: list[str], client_scopes: frozenset[str]
) -> set[str]:
    """RFC 6749 §3.3: the scopes to grant a user through a client.

    The grant has refused scopes outside the client's list (`within_client`) before the
    password work; one the user may not have is left out (the response's `scope` says what
    was granted); nothing requested means everything allowed.
    """
    granted = _for_user(client_scopes if requested is None else requested, roles)
    if not granted:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return granted


def service_scopes(requested: set[str] | None, *, client_scopes: frozenset[str]) -> set[str]:
    """RFC 6749 §4.4: the scopes a client gets for itself: its own list, never a scope that
    acts for a user (there is none)."""
    own = client_scopes - USER_SCOPES
    within_client(requested, own)
    granted = set(own if requested is None else requested)
    if not granted:
        raise InvalidScope("This client has no scopes it may be granted for itself.")
    return granted


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


def within_granted(requested: set[str] | None, granted: str) -> set[str]:
    """The scopes of a refresh token's grant (`granted`); `invalid_scope` when `requested`
    asks for one beyond them (RFC 6749 §6)."""
    had = split_scope(granted)
    if requested is not None and not requested <= had:
        raise InvalidScope(
            f"A refresh cannot add scopes: {format_scope(requested - had)} was not granted."
        )
    return had


def refresh_scopes(
    requested: set[str] | None, *, granted: str, roles: list[str], client_scopes: frozenset[str]
) -> set[str]:
    """RFC 6749 §6: the scopes of a refresh, never wider than the token's own.

    Nothing requested means the token's scopes. Those the user or the client may no longer
    have (a role or a client scope taken away since) are left out, as at sign-in.
    """
    had = within_granted(requested, granted)
    scopes = _for_user((had if requested is None else requested) & client_scopes, roles)
    if not scopes:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return scopes
