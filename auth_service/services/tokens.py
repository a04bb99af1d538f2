"""Access token issuance: RFC 9068 JWT profile for OAuth 2.0 access tokens."""

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from auth_service.config import Settings
from auth_service.errors import InvalidScope
from auth_service.models import User
from auth_service.scopes import Scope, allowed_for, format_scope, split_scope
from auth_service.security import jwt
from auth_service.security.jwt import SESSION_CLAIM, TOKEN_VERSION_CLAIM
from auth_service.services.keys import KeySet
from auth_service.services.user_state import UserState


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def parse_scope(requested: str | None) -> set[str] | None:
    """The requested scopes (None when none were asked for); unknown ones are an error."""
    if not requested:  # RFC 6749 §3.1: a parameter without a value counts as omitted
        return None
    try:
        wanted = split_scope(requested)
    except ValueError:
        raise InvalidScope(
            "The scope must be scope names separated by single spaces (RFC 6749 §3.3)."
        ) from None
    unknown = wanted - {s.value for s in Scope}
    if unknown:
        raise InvalidScope(f"Unknown scope: {format_scope(unknown)}.")
    return wanted


def grant_scopes(requested: set[str] | None, *, roles: list[str]) -> set[str]:
    """RFC 6749 §3.3: the scopes to grant.

    Known scopes the user may not have are left out (the response's `scope` says what was
    granted); nothing requested means everything allowed.
    """
    allowed = {str(s) for s in allowed_for(roles)}
    granted = allowed if requested is None else requested & allowed
    if not granted:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return granted


def issue_access_token(
    *,
    user: User,
    client_id: str,
    scopes: set[str],
    keys: KeySet,
    settings: Settings,
    session_id: uuid.UUID | None = None,
) -> IssuedToken:
    """An RFC 9068 access token for `user`; `session_id` (the `sid` claim) names the session
    it was issued in, which ends it when the session ends."""
    now = int(time.time())
    scope = format_scope(scopes)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": str(user.id),
        "aud": settings.token_audience,
        "exp": now + settings.access_token_ttl,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": scope,
        "roles": user.roles,
        # Read with the password hash it was checked against: see User.token_version.
        TOKEN_VERSION_CLAIM: user.token_version,
    }
    if session_id is not None:
        claims[SESSION_CLAIM] = str(session_id)
    return IssuedToken(
        access_token=jwt.encode(claims, keys.signing),
        expires_in=settings.access_token_ttl,
        scope=scope,
    )


def is_revoked(claims: dict[str, Any], user: User | UserState) -> bool:
    """Was the token issued before the user's latest password change or deactivation?

    `jwt.decode` has checked the claim is an int (`False` and `0.0` would equal 0).
    """
    return claims.get(TOKEN_VERSION_CLAIM) != user.token_version


def refresh_scopes(requested: set[str] | None, *, granted: str, roles: list[str]) -> set[str]:
    """RFC 6749 §6: the scopes of a refresh, never wider than the token's own.

    Nothing requested means the token's scopes. Those the user may no longer have (a role
    taken away since) are left out, as at sign-in.
    """
    had = split_scope(granted)
    if requested is not None and not requested <= had:
        raise InvalidScope(
            f"A refresh cannot add scopes: {format_scope(requested - had)} was not granted."
        )
    scopes = (had if requested is None else requested) & {str(s) for s in allowed_for(roles)}
    if not scopes:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return scopes
