"""Resource owner password credentials (RFC 6749 §4.3): a user's email and password."""

from typing import Any, ClassVar

from auth_service.access import service as access
from auth_service.access.scopes import format_scope, grant_scopes, parse_scope, within_client
from auth_service.accounts import service as accounts
from auth_service.clients import service as clients
from auth_service.errors import InvalidGrant
from auth_service.kit.time import utcnow
from auth_service.oauth import forms
from auth_service.oauth.grants import (
    AUDIENCE_PARAMETERS,
    Grant,
    TokenRequest,
    requested_audience,
    token_response,
)
from auth_service.oauth.schemas import TokenResponse
from auth_service.sessions import service as sessions


class PasswordGrant(Grant):
    grant_type = "password"
    parameters: ClassVar[dict[str, dict[str, Any]]] = {
        "username": {"type": "string", "description": "The user's email address."},
        "password": {"type": "string", "format": "password"},
        "scope": {"type": "string", "description": "Space-separated scopes (RFC 6749 §3.3)."},
        **AUDIENCE_PARAMETERS,
    }
    required = ("username", "password")

    async def respond(self, request: TokenRequest) -> TokenResponse:
        state, form = request.state, request.form
        username = forms.required(form, "username")
        password = forms.required(form, "password")
        # Everything the password does not decide is checked before the password work.
        requested = parse_scope(forms.optional(form, "scope"))
        within_client(requested, request.client.scopes)
        audience = access.audience_for(
            requested_audience(form), client=request.client, settings=state.settings
        )
        # The caller's place in the fair password queue, before the lookup reads the database.
        async with state.hasher.turn(request.peer):
            user = await accounts.authenticate(
                db=request.db,
                reads=state.reads,
                hasher=state.hasher,
                email=username,
                password=password,
            )
        if user is None:
            # RFC 6749 §5.2: one answer for unknown, inactive and wrong password (no enumeration).
            raise InvalidGrant("The email or password is incorrect.")
        scopes = grant_scopes(requested, roles=user.roles, client_scopes=request.client.scopes)
        login, refresh_token = await sessions.start(
            request.db,
            user=user,
            client_id=request.client.client_id,
            scope=format_scope(scopes),
            audience=None if audience == state.settings.token_audience else audience,
            device=request.device,
            settings=state.settings,
            refresh_tokens=state.refresh_tokens,
            now=utcnow(),
        )
        # The client was read before the password work: still there? (See `hold_active`.)
        await clients.hold_active(request.db, request.client.client_id)
        return token_response(
            request, user=user, scopes=scopes, login=login, refresh_token=refresh_token
        )
