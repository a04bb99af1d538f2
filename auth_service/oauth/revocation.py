"""Token revocation (RFC 7009): a client says it no longer needs a token.

A refresh token ends its session, the whole family (RFC 7009 §2.1: revoking a refresh
token should revoke what was issued with it); an access token is refused by the guards and
introspection from then on, until it expires. Public clients may revoke what was issued to
them; confidential clients authenticate first; no client revokes another's tokens.
"""

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access import service as access
from auth_service.clients.service import Client
from auth_service.errors import InvalidGrant, InvalidToken
from auth_service.oauth import client_auth, forms
from auth_service.sessions import service as sessions
from auth_service.state import AppState

NOT_YOURS = "The token was not issued to this client."
# The form of revocation and of introspection alike (RFC 7009 §2.1, RFC 7662 §2.1).
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": {"type": "string", "format": "password"},
        "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string", "format": "password"},
    },
}


def is_jwt(token: str) -> bool:
    """Our access tokens are JWS compact serializations; our refresh tokens have no dot."""
    return token.count(".") == 2


class RevocationEndpoint:
    async def respond(
        self,
        *,
        content_type: str,
        body: bytes,
        authorization: str | None,
        state: AppState,
        db: AsyncSession,
    ) -> None:
        """Revoke the token of this request; an `OAuth2Error` if the request is refused."""
        form = forms.parse(content_type, body)
        token = forms.required(form, "token")
        # §2.1: only a hint; each kind of token is told by its form anyway.
        forms.optional(form, "token_type_hint")
        client = await client_auth.authenticate(authorization, form, state=state)
        if is_jwt(token):
            await self._revoke_access_token(token, client=client, state=state, db=db)
        else:
            await self._revoke_refresh_token(token, client=client, state=state, db=db)

    @staticmethod
    async def _revoke_access_token(
        token: str, *, client: Client, state: AppState, db: AsyncSession
    ) -> None:
        try:
            claims = access.verified_claims(
                token,
                keys=state.keys,
                settings=state.settings,
                cache=state.token_cache,
                audience=None,
            )
        except InvalidToken:
            return  # §2.2: an invalid token (ours or not, expired or malformed) is no error
        if claims["client_id"] != client.client_id:
            raise InvalidGrant(NOT_YOURS)
        await access.revoke(db, jti=claims["jti"], exp=claims["exp"])

    @staticmethod
    async def _revoke_refresh_token(
        token: str, *, client: Client, state: AppState, db: AsyncSession
    ) -> None:
        found = await sessions.find(db, token, refresh_tokens=state.refresh_tokens)
        if found is None:
            return  # §2.2: unknown, or its session has ended already
        if found.login.client_id != client.client_id:
            raise InvalidGrant(NOT_YOURS)
        await sessions.end(db, found.login.id)
