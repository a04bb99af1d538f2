"""Client credentials (RFC 6749 §4.4): a confidential client asks a token for itself.

The token's `sub` is the client's id (RFC 9068 §2.2); it holds the client's own scopes,
never a user's, and comes without a refresh token (§4.4.3): the client authenticates again
when it needs another.
"""

from typing import Any, ClassVar

from auth_service.access import service as access
from auth_service.access.scopes import parse_scope, service_scopes
from auth_service.errors import UnauthorizedClient
from auth_service.oauth import forms
from auth_service.oauth.grants import (
    AUDIENCE_PARAMETERS,
    Grant,
    TokenRequest,
    requested_audience,
)
from auth_service.oauth.schemas import TokenResponse


class ClientCredentialsGrant(Grant):
    grant_type = "client_credentials"
    parameters: ClassVar[dict[str, dict[str, Any]]] = {
        "scope": {
            "type": "string",
            "description": "Space-separated scopes, within the client's own (RFC 6749 §4.4.2).",
        },
        **AUDIENCE_PARAMETERS,
    }
    required = ()

    async def respond(self, request: TokenRequest) -> TokenResponse:
        client, settings = request.client, request.state.settings
        # RFC 6749 §4.4: only for a client that authenticated; a public one cannot.
        if not client.is_confidential:
            raise UnauthorizedClient("A public client cannot act for itself.")
        scopes = service_scopes(
            parse_scope(forms.optional(request.form, "scope")), client_scopes=client.scopes
        )
        audience = access.audience_for(
            requested_audience(request.form), client=client, settings=settings
        )
        issued = access.issue_access_token(
            subject=client.client_id,
            client_id=client.client_id,
            scopes=scopes,
            audience=audience,
            keys=request.state.keys,
            settings=settings,
            claims=access.client_claims(client),
        )
        return TokenResponse(
            access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope
        )
