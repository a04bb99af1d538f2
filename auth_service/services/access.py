"""Is this access token active? One answer, for the guards and for introspection alike.

Active means: `jwt.decode` accepts it (our key, our algorithm, `typ`, the claims, their
times; its signature checked once and cached until `exp`), its scope claim is well formed,
its `sub` names a user who exists and is active, it was issued at the user's current token
version (no password change or deactivation since), and the session it names (`sid`), if
any, has not ended. The user is read on every call,
never cached, so a change through any worker or replica counts at once.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from auth_service.config import Settings
from auth_service.errors import InvalidToken
from auth_service.scopes import split_scope
from auth_service.security import jwt
from auth_service.security.jwt import SESSION_CLAIM, VerifiedTokenCache
from auth_service.services.keys import KeySet
from auth_service.services.tokens import is_revoked
from auth_service.services.user_state import UserState, UserStates


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an active token acts for: its claims, its scopes and the active user it names."""

    claims: dict[str, Any]
    scopes: frozenset[str]
    user: UserState
    # The session the token was issued in (its `sid`); None for a token tied to none.
    session_id: uuid.UUID | None = None


async def principal_of(
    token: str,
    *,
    keys: KeySet,
    settings: Settings,
    cache: VerifiedTokenCache,
    states: UserStates,
) -> Principal:
    """The principal of an active access token; InvalidToken, saying why, for any other."""
    try:
        claims = cache.decode(
            token,
            keys=keys.by_kid,
            algorithm=settings.signing_alg,
            issuer=settings.issuer,
            audience=settings.token_audience,
        )
    except jwt.TokenError as exc:
        raise InvalidToken(str(exc)) from None
    try:
        # RFC 6749 §3.3: scope-tokens split on the ASCII space only (a str: `jwt` checked).
        scopes = frozenset(split_scope(claims["scope"])) if "scope" in claims else frozenset()
    except ValueError:
        raise InvalidToken("The access token's scope claim is malformed.") from None
    user, session_id = await _active_user(states, claims)
    return Principal(claims=claims, scopes=scopes, user=user, session_id=session_id)


def _canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID `value` spells in its one canonical form (uuid.UUID also reads upper case,
    braces, bare hex and urn:uuid:), else None."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None


async def _active_user(
    states: UserStates, claims: dict[str, Any]
) -> tuple[UserState, uuid.UUID | None]:
    """The active user the token was issued to, if the token is still valid for them, and
    the session it names."""
    user_id = _canonical_uuid(claims["sub"])
    if user_id is None:
        raise InvalidToken("The access token does not name a user.")
    session_id = None
    if SESSION_CLAIM in claims:
        session_id = _canonical_uuid(claims[SESSION_CLAIM])
        if session_id is None:
            raise InvalidToken("The access token's sid claim is malformed.")
    user = await states.get(user_id, session_id)
    # One answer for a deleted, deactivated or logged-out user, and for an ended session:
    # the token is no longer valid.
    if (
        user is None
        or not user.is_active
        or is_revoked(claims, user)
        or (session_id is not None and not user.session_alive)
    ):
        raise InvalidToken("The access token has been revoked.")
    return user, session_id
