"""Guards: FastAPI dependencies that authenticate and authorize a request.

Bearer tokens per RFC 6750; failures answer 401 `invalid_token` or 403
`insufficient_scope` with a `WWW-Authenticate` challenge (§3). Every guard returns one
`Principal`: the active token and the user it was issued to, read afresh for the request
(`access.service` decides what is active, for introspection too).
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from auth_service.access import service as access
from auth_service.access.scopes import USER_SCOPE_DESCRIPTIONS, Scope
from auth_service.access.service import ClientPrincipal, Principal
from auth_service.errors import InsufficientScope, MissingToken
from auth_service.models import ADMIN_ROLE
from auth_service.web.deps import state_of

TOKEN_URL = "/oauth2/token"  # noqa: S105 (a path, not a secret)
# The OAuth endpoints' client authentication (HTTP Basic), as the OpenAPI document names it.
CLIENT_SCHEME = "ClientSecretBasic"


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
        principal = await access.principal_of(
            token,
            keys=state.keys,
            settings=state.settings,
            cache=state.token_cache,
            reads=state.reads,
        )
        missing = [s for s in security_scopes.scopes if s not in principal.scopes]
        if missing:
            raise InsufficientScope(
                f"The access token lacks the scope {' '.join(missing)}.",
                scope=security_scopes.scope_str,
            )
        if isinstance(principal, ClientPrincipal):
            # A client's own token (client credentials) acts for no user.
            raise InsufficientScope(
                "This requires a user's access token.", scope=security_scopes.scope_str or None
            )
        return principal


current_principal = BearerGuard(
    tokenUrl=TOKEN_URL,
    scopes=USER_SCOPE_DESCRIPTIONS,
    auto_error=False,
    scheme_name="OAuth2PasswordBearer",  # the OpenAPI document's name for it, as before
)


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
# A scope of its own: a token for managing users cannot replace the keys every token relies on.
require_key_admin = require_roles(ADMIN_ROLE, scopes=(Scope.ADMIN_KEYS,))
