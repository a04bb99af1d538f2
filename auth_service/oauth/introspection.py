"""Token introspection (RFC 7662): may a resource server honour this token right now?

For callers that must see a revocation at once rather than verify signatures locally. The
caller authenticates as a confidential client whose list holds `introspect` (HTTP Basic or
the form), or with a bearer token holding that scope; anyone else gets 401 (§2.1). The
answer is `{"active": false}` and nothing more for any token that is not active: malformed,
not ours, expired, revoked, of a deactivated or deleted user, issued before the user's last
password change, of an ended session (§2.2). An access token of a client credentials grant
is active while its client is. The caller and the token's state are read in one statement.
"""

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.db import session_scope
from auth_service.errors import InsufficientScope, InvalidClient
from auth_service.models import utcnow
from auth_service.oauth import client_auth, forms
from auth_service.oauth.revocation import is_jwt
from auth_service.scopes import Scope, format_scope
from auth_service.services import access, clients, sessions
from auth_service.services.access import ClientPrincipal, Principal
from auth_service.state import AppState

INACTIVE: dict[str, Any] = {"active": False}
# §2.2: the members an active access token's answer takes from its claims.
_CLAIMS = ("scope", "client_id", "exp", "iat", "nbf", "sub", "aud", "iss", "jti")


def _access_token(principal: Principal | ClientPrincipal) -> dict[str, Any]:
    claims = principal.claims
    answer = {"active": True, "token_type": "Bearer"}
    answer |= {name: claims[name] for name in _CLAIMS if name in claims}
    if isinstance(principal, Principal):
        answer["username"] = principal.user.email
    else:  # the scopes the client still has, not all those it had
        answer["scope"] = format_scope(principal.scopes)
    return answer


class IntrospectionEndpoint:
    async def respond(
        self,
        *,
        content_type: str,
        body: bytes,
        authorization: str | None,
        state: AppState,
    ) -> dict[str, Any]:
        """The RFC 7662 §2.2 answer for the token of this request."""
        form = forms.parse(content_type, body)
        # §2.1: the caller first; who it is decides whether it learns anything, even that
        # its request lacks a token.
        caller_id, secret = await self._caller(authorization, form, state)
        token = forms.required(form, "token")
        forms.optional(form, "token_type_hint")  # §2.1: a hint; the token's form tells
        if is_jwt(token):
            inspection = await access.inspect(
                token,
                caller_id=caller_id,
                keys=state.keys,
                settings=state.settings,
                cache=state.token_cache,
                states=state.user_states,
            )
            if secret is not None:
                clients.authenticated_caller(inspection.caller, secret, scope=Scope.INTROSPECT)
            return INACTIVE if inspection.principal is None else _access_token(inspection.principal)
        if secret is not None:
            caller = (await state.user_states.read(caller_id=caller_id)).caller
            clients.authenticated_caller(caller, secret, scope=Scope.INTROSPECT)
        # A refresh token is looked up in a transaction of its own; an access token needed
        # none (its state and the caller came in one statement).
        async with session_scope(state.sessionmaker) as session:
            return await self._refresh_token(token, state=state, session=session)

    @staticmethod
    async def _caller(
        authorization: str | None, form: forms.Form, state: AppState
    ) -> tuple[str | None, str | None]:
        """The client credentials to check with the token's state, (id, secret); or, for a
        bearer caller, its token checked now and (None, None)."""
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            caller = await access.principal_of(
                credentials.strip(),
                keys=state.keys,
                settings=state.settings,
                cache=state.token_cache,
                states=state.user_states,
            )
            if Scope.INTROSPECT not in caller.scopes:
                raise InsufficientScope(
                    f"The access token lacks the scope {Scope.INTROSPECT}.",
                    scope=Scope.INTROSPECT,
                )
            return None, None
        presented = client_auth.presented(authorization, form)
        if presented.client_id is None or presented.secret is None:
            raise InvalidClient("Introspection is for authenticated clients.")
        return presented.client_id, presented.secret

    @staticmethod
    async def _refresh_token(
        token: str, *, state: AppState, session: AsyncSession
    ) -> dict[str, Any]:
        found = await sessions.find(session, token, refresh_tokens=state.refresh_tokens)
        if found is None or not found.active(utcnow()):
            return INACTIVE
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": found.login.scope,
            "client_id": found.login.client_id,
            "username": found.user.email,
            "exp": int(found.login.idle_expires_at.timestamp()),
            "iat": int(found.login.last_used_at.timestamp()),
            "sub": str(found.user.id),
            "aud": found.login.audience or state.settings.token_audience,
            "iss": state.settings.issuer,
        }
