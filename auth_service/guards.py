"""Guards: FastAPI dependencies that authenticate and authorize a request.

Bearer tokens per RFC 6750; failures answer 401 `invalid_token` or 403
`insufficient_scope` with a `WWW-Authenticate` challenge (§3).
"""

import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from auth_service.deps import KeysDep, SettingsDep, TokenCacheDep, UserStatesDep
from auth_service.errors import InsufficientScope, InvalidToken, MissingToken
from auth_service.models import ADMIN_ROLE
from auth_service.scopes import DESCRIPTIONS, Scope, split_scope
from auth_service.security import jwt
from auth_service.services.tokens import is_revoked
from auth_service.services.user_state import UserState

TOKEN_URL = "/oauth2/token"  # noqa: S105 (a path, not a secret)

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, scopes=DESCRIPTIONS, auto_error=False)


async def current_token(
    security_scopes: SecurityScopes,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    keys: KeysDep,
    settings: SettingsDep,
    cache: TokenCacheDep,
) -> dict[str, Any]:
    """The verified claims of the request's access token, holding every required scope."""
    if not token:
        raise MissingToken("An access token is required.", scope=security_scopes.scope_str or None)
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
        # RFC 6749 §3.3: scope-tokens split on the ASCII space only (`jwt` checked it is a str).
        granted = split_scope(claims["scope"]) if "scope" in claims else set()
    except ValueError:
        raise InvalidToken("The access token's scope claim is malformed.") from None
    missing = [s for s in security_scopes.scopes if s not in granted]
    if missing:
        raise InsufficientScope(
            f"The access token lacks the scope {' '.join(missing)}.",
            scope=security_scopes.scope_str,
        )
    return claims


async def current_user(
    states: UserStatesDep,
    claims: Annotated[dict[str, Any], Security(current_token)],
) -> UserState:
    """The active user the token was issued to, if the token is still valid for them."""
    user_id: uuid.UUID | None
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        user_id = None
    # One spelling per user: uuid.UUID also reads upper case, braces, bare hex and urn:uuid:.
    if user_id is None or str(user_id) != claims["sub"]:
        raise InvalidToken("The access token does not name a user.")
    # Read on every request, never cached: a change through any process counts at once.
    user = await states.get(user_id)
    # One answer for a deleted, deactivated or logged-out user: the token is no longer valid.
    if user is None or not user.is_active or is_revoked(claims, user):
        raise InvalidToken("The access token has been revoked.")
    return user


async def current_claims(
    claims: Annotated[dict[str, Any], Security(current_token)],
    _user: Annotated[UserState, Security(current_user)],
) -> dict[str, Any]:
    """The token's claims, once `current_user` has confirmed the token is still valid."""
    return claims


def require_scopes(*scopes: str) -> Any:
    """A dependency returning the claims of a still-valid token carrying every one of `scopes`.

    `current_token` alone checks only the token (signature, claims, scopes), not the user.
    """
    return Security(current_claims, scopes=list(scopes))


def require_roles(
    *roles: str, scopes: tuple[str, ...] = ()
) -> Callable[..., Coroutine[Any, Any, UserState]]:
    """A dependency returning the current user if they hold every one of `roles`."""

    async def guard(
        security_scopes: SecurityScopes,
        user: Annotated[UserState, Security(current_user, scopes=list(scopes))],
    ) -> UserState:
        missing = [role for role in roles if role not in user.roles]
        if missing:
            # RFC 6750 §3: name the scopes the route requires, as `current_token` does.
            required = [*security_scopes.scopes, *scopes]
            raise InsufficientScope(
                f"This requires the role {' '.join(missing)}.", scope=" ".join(required) or None
            )
        return user

    return guard


CurrentUser = Annotated[UserState, Security(current_user, scopes=[Scope.ACCOUNT])]
require_admin = require_roles(ADMIN_ROLE, scopes=(Scope.ADMIN_USERS,))
