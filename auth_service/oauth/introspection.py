"""Token introspection (RFC 7662): may a resource server honour this token right now?

For callers that must see a revocation at once rather than verify signatures locally. The
caller authenticates as a confidential client whose list holds `introspect` (HTTP Basic or
the form), or with a bearer token holding that scope; anyone else gets 401 (§2.1). The
answer is `{"active": false}` and nothing more for any token that is not active: malformed,
not ours, expired, revoked, of a deactivated or deleted user, issued before the user's last
password change, of an ended session (§2.2), and a refresh token asked about by any client
but its own. An access token of a client credentials grant is active while its client is and
still has that grant and the token's audience. An access token of any audience is described
to any introspecting client (a gateway asks for the services behind it), but the user's
email (`username`) only to the client the token is for, its `aud` (§5). The caller and an
access token's state are read in one statement.
"""

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access import service as access
from auth_service.access.scopes import Scope, format_scope
from auth_service.access.service import ClientPrincipal, Principal
from auth_service.clients import service as clients
from auth_service.errors import InsufficientScope, InvalidClient
from auth_service.kit.db import transaction
from auth_service.kit.time import utcnow
from auth_service.oauth import client_auth, forms
from auth_service.oauth.revocation import is_jwt
from auth_service.security import jwt
from auth_service.sessions import service as sessions
from auth_service.state import AppState

INACTIVE: dict[str, Any] = {"active": False}
# §2.2: the members an active access token's answer takes from its claims.
_CLAIMS = ("scope", "client_id", "exp", "iat", "nbf", "sub", "aud", "iss", "jti")


def _access_token(principal: Principal | ClientPrincipal, *, caller_id: str) -> dict[str, Any]:
    claims = principal.claims
    answer = {"active": True, "token_type": "Bearer"}
    answer |= {name: claims[name] for name in _CLAIMS if name in claims}
    if isinstance(principal, Principal):
        # §5: the user's email only to the resource server the token is for.
        if caller_id in jwt.audiences(claims):
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
        # its request lacks a token. An access token's state is read in the same statement
        # as the caller; anything else waits for the caller to be checked alone.
        caller_id, secret = await self._caller(authorization, form, state)
        presented = form.get("token", [])
        if len(presented) == 1 and is_jwt(presented[0]):
            inspection = await access.inspect(
                presented[0],
                caller_id=caller_id,
                keys=state.keys,
                settings=state.settings,
                cache=state.token_cache,
                reads=state.reads,
            )
            if secret is not None:
                clients.authenticated_caller(inspection.caller, secret, scope=Scope.INTROSPECT)
            forms.optional(form, "token_type_hint")  # §2.1: a hint; the token's form tells
            if inspection.principal is None:
                return INACTIVE
            return _access_token(inspection.principal, caller_id=caller_id)
        if secret is not None:
            caller = (await state.reads.read(caller_id=caller_id)).caller
            clients.authenticated_caller(caller, secret, scope=Scope.INTROSPECT)
        token = forms.required(form, "token")
        forms.optional(form, "token_type_hint")
        # A refresh token is looked up in a transaction of its own; an access token needed
        # none (its state and the caller came in one statement).
        async with transaction(state.sessionmaker) as db:
            return await self._refresh_token(token, caller_id=caller_id, state=state, db=db)

    @staticmethod
    async def _caller(
        authorization: str | None, form: forms.Form, state: AppState
    ) -> tuple[str, str | None]:
        """The client credentials to check with the token's state, (id, secret); or, for a
        bearer caller, its token checked now and (its client's id, None)."""
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            caller = await access.principal_of(
                credentials.strip(),
                keys=state.keys,
                settings=state.settings,
                cache=state.token_cache,
                reads=state.reads,
            )
            if Scope.INTROSPECT not in caller.scopes:
                raise InsufficientScope(
                    f"The access token lacks the scope {Scope.INTROSPECT}.",
                    scope=Scope.INTROSPECT,
                )
            return str(caller.claims["client_id"]), None
        presented = client_auth.presented(authorization, form)
        if presented.client_id is None or presented.secret is None:
            raise InvalidClient("Introspection is for authenticated clients.")
        return presented.client_id, presented.secret

    @staticmethod
    async def _refresh_token(
        token: str, *, caller_id: str, state: AppState, db: AsyncSession
    ) -> dict[str, Any]:
        found = await sessions.find(db, token, refresh_tokens=state.refresh_tokens)
        # §2.2: a caller not allowed to introspect this token learns only `active: false`;
        # a refresh token is its client's alone (RFC 6749 §10.4), as for revocation.
        if found is None or not found.active(utcnow()) or found.login.client_id != caller_id:
            return INACTIVE
        aud = found.login.audience or state.settings.token_audience
        answer = {
            "active": True,
            "token_type": "refresh_token",
            "scope": found.login.scope,
            "client_id": found.login.client_id,
            "exp": int(found.login.idle_expires_at.timestamp()),
            "iat": int(found.login.last_used_at.timestamp()),
            "sub": str(found.user.id),
            "aud": aud,
            "iss": state.settings.issuer,
        }
        if caller_id == aud:
            answer["username"] = found.user.email
        return answer
