"""Refreshing an access token (RFC 6749 §6) with rotation and reuse detection (RFC 9700
§4.14.2): the refresh token presented is spent, its successor issued in the same session.

A spent token presented again ends its session, the newest token included: one of the two
presenters is not the user. With `AUTH_REFRESH_REUSE_INTERVAL` set, a token spent within
that many seconds gets the answer its first presentation got instead (kept sealed under
AUTH_SECRET_KEY with the spent token), so two tabs or a retried request refreshing at once
share one successor and the session never forks; after the interval, reuse ends the session.
"""

from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

from auth_service.errors import InvalidGrant, InvalidTarget
from auth_service.models import User, utcnow
from auth_service.oauth import forms
from auth_service.oauth.grants import (
    AUDIENCE_PARAMETERS,
    Grant,
    TokenRequest,
    requested_audience,
    token_response,
)
from auth_service.schemas import TokenResponse
from auth_service.scopes import format_scope
from auth_service.services import sessions, tokens

INVALID = "The refresh token is invalid, expired or revoked."


class RefreshTokenGrant(Grant):
    grant_type = "refresh_token"
    parameters: ClassVar[dict[str, dict[str, Any]]] = {
        "refresh_token": {"type": "string", "format": "password"},
        "scope": {
            "type": "string",
            "description": "Space-separated scopes, within the refresh token's (RFC 6749 §6).",
        },
        **AUDIENCE_PARAMETERS,
    }
    required = ("refresh_token",)

    async def respond(self, request: TokenRequest) -> TokenResponse:
        state, db = request.state, request.session
        token = forms.required(request.form, "refresh_token")
        requested = tokens.parse_scope(forms.optional(request.form, "scope"))
        audience = requested_audience(request.form)
        now = utcnow()
        presented = await sessions.spend(
            db, token=token, client_id=request.client.client_id, now=now
        )
        if presented is None:
            raise InvalidGrant(INVALID)
        if not presented.spent_now:
            spent_at, sealed = presented.token.spent_at, presented.token.successor
            interval = timedelta(seconds=state.settings.refresh_reuse_interval)
            if sealed is not None and spent_at is not None and now - spent_at <= interval:
                kept = state.successors.open(sealed, associated=presented.token.digest)
                return TokenResponse.model_validate_json(kept)
            await sessions.end(db, presented.login.id)
            await db.commit()  # the answer is an error, but the session must end
            raise InvalidGrant("The refresh token was used already; its session has ended.")
        user = await db.get(User, presented.login.user_id)
        if user is None or not user.is_active:
            raise InvalidGrant(INVALID)  # and the spend is rolled back with the request
        # RFC 8707 §2.2: a refresh may name the audience its session was granted, no other,
        # and only while the client or the settings still allow it.
        if audience is not None and audience != (
            presented.login.audience or state.settings.token_audience
        ):
            raise InvalidTarget("A refresh keeps the audience of its sign-in.")
        tokens.audience_for(
            presented.login.audience, client=request.client, settings=state.settings
        )
        # RFC 6749 §6: the successor keeps the presented token's scope (less what the user or
        # the client has lost since); a narrower request narrows this access token alone.
        scopes_of = partial(
            tokens.refresh_scopes,
            granted=presented.token.scope,
            roles=user.roles,
            client_scopes=request.client.scopes,
        )
        whole = scopes_of(None)
        scopes = whole if requested is None else scopes_of(requested)
        successor = await sessions.rotate(
            db, presented, scope=format_scope(whole), settings=state.settings, now=now
        )
        answer = token_response(
            request,
            user=user,
            scopes=scopes,
            login=presented.login,
            refresh_token=successor,
        )
        if state.settings.refresh_reuse_interval:
            sealed = state.successors.seal(
                answer.model_dump_json(exclude_none=True).encode(),
                associated=presented.token.digest,
            )
            await sessions.keep_successor(db, presented.token, sealed)
        return answer
