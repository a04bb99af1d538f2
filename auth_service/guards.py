"""Guards: FastAPI dependencies that authenticate and authorize a request.

Bearer tokens per RFC 6750; failures answer 401 `invalid_token` or 403
`insufficient_scope` with a `WWW-Authenticate` challenge (§3). Every guard returns one
`Principal`: the verified token and the user it was issued to, read afresh for the request.
"""

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from auth_service.deps import state_of
from auth_service.errors import InsufficientScope, InvalidToken, MissingToken
from auth_service.models import ADMIN_ROLE
from auth_service.scopes import DESCRIPTIONS, Scope, split_scope
from auth_service.security import jwt
from auth_service.services.tokens import is_revoked
from auth_service.services.user_state import UserState, UserStates

TOKEN_URL = "/oauth2/token"  # noqa: S105 (a path, not a secret)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a verified, unrevoked token and the active user it names."""

    claims: dict[str, Any]
    scopes: frozenset[str]
    user: UserState


class BearerGuard(OAuth2PasswordBearer):
    """The bearer scheme and the guard in one dependency.

    As an `OAuth2PasswordBearer` it is the OAuth2 password flow of the OpenAPI document,
    with the scopes each route requires; called, it returns the request's principal. One
    dependency rather than the scheme plus a guard on top: FastAPI's dependency solving is
    the largest part of a guarded request's cost (bench/README.md).
    """

    async def __call__(  # type: ignore[override]  # the principal, not the raw token
        self, request: Request, security_scopes: SecurityScopes
    ) -> Principal:
        """The request's principal, holding every scope the route requires."""
        token = await super().__call__(request)
        if not token:
            required = security_scopes.scope_str or None
            raise MissingToken("An access token is required.", scope=required)
        state = state_of(request)
        settings = state.settings
        try:
            claims = state.token_cache.decode(
                token,
                keys=state.keys.by_kid,
                algorithm=settings.signing_alg,
                issuer=settings.issuer,
                audience=settings.token_audience,
            )
        except jwt.TokenError as exc:
            raise InvalidToken(str(exc)) from None
        try:
            # RFC 6749 §3.3: scope-tokens split on the ASCII space only (a str: `jwt` checked).
            granted = frozenset(split_scope(claims["scope"])) if "scope" in claims else frozenset()
        except ValueError:
            raise InvalidToken("The access token's scope claim is malformed.") from None
        missing = [s for s in security_scopes.scopes if s not in granted]
        if missing:
            raise InsufficientScope(
                f"The access token lacks the scope {' '.join(missing)}.",
                scope=security_scopes.scope_str,
            )
        user = await _active_user(state.user_states, claims)
        return Principal(claims=claims, scopes=granted, user=user)


current_principal = BearerGuard(
    tokenUrl=TOKEN_URL,
    scopes=DESCRIPTIONS,
    auto_error=False,
    scheme_name="OAuth2PasswordBearer",  # the OpenAPI document's name for it, as before
)


async def _active_user(states: UserStates, claims: dict[str, Any]) -> UserState:
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


def require_scopes(*scopes: str) -> Any:
    """A dependency returning the principal of a still-valid token with every one of `scopes`."""
    return Security(current_principal, scopes=list(scopes))


def require_roles(
    *roles: str, scopes: tuple[str, ...] = ()
) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency returning the principal if its user holds every one of `roles`."""

    async def guard(
        security_scopes: SecurityScopes,
        principal: Annotated[Principal, Security(current_principal, scopes=list(scopes))],
    ) -> Principal:
        missing = [role for role in roles if role not in principal.user.roles]
        if missing:
            # RFC 6750 §3: name the scopes the route requires, as `current_principal` does.
            required = [*security_scopes.scopes, *scopes]
            raise InsufficientScope(
                f"This requires the role {' '.join(missing)}.", scope=" ".join(required) or None
            )
        return principal

    return guard


CurrentPrincipal = Annotated[Principal, Security(current_principal, scopes=[Scope.ACCOUNT])]
require_admin = require_roles(ADMIN_ROLE, scopes=(Scope.ADMIN_USERS,))
