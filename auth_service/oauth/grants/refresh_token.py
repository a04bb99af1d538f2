"""Refreshing an access token (RFC 6749 §6) with rotation and reuse detection (RFC 9700
§4.14.2): the refresh token presented is spent, its successor issued in the same session.

A spent token presented again ends its session, the newest token included: one of the two
presenters is not the user. With `AUTH_REFRESH_REUSE_INTERVAL` set, a token spent within
that many seconds gets the answer its first presentation got instead (kept sealed under
AUTH_SECRET_KEY in its session), so two tabs or a retried request refreshing at once
share one successor and the session never forks; after the interval, reuse ends the session.

A refused refresh leaves its own writes undone (the spend is rolled back with the request),
but the end of a session it refuses must stay: that end is a side write
(`kit.db.SideWrites`), queued with `after` to run in a transaction of its own once the
request's has rolled back, before the answer is sent. Not `run` at once: reuse is known only
under the session's row lock (`sessions.spend`), which the request holds until its
transaction ends (PostgreSQL `FOR UPDATE`; on SQLite the spend's write holds the database's
write lock), and a write of the same row from another transaction would wait on it. A plain
read before the lock would see most reuse lock-free (a number below the live one is spent
for good: numbers only grow), but not the refreshes that lose a race for the live token
while waiting on the lock, which must end the session too: one path serves both, off the
hot path, which still takes one lock and no extra read.
"""

from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

from auth_service.access import service as access
from auth_service.access.scopes import format_scope, parse_scope, refresh_scopes, within_granted
from auth_service.accounts import service as accounts
from auth_service.errors import InvalidGrant, InvalidTarget
from auth_service.kit.time import utcnow
from auth_service.models import LoginSession
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
        state, db = request.state, request.db
        token = forms.required(request.form, "refresh_token")
        requested = parse_scope(forms.optional(request.form, "scope"))
        audience = requested_audience(request.form)
        now = utcnow()
        presented = await sessions.spend(
            db,
            token=token,
            client_id=request.client.client_id,
            refresh_tokens=state.refresh_tokens,
            now=now,
        )
        if presented is None:
            raise InvalidGrant(INVALID)
        login = presented.login
        if not presented.spent_now:
            interval = timedelta(seconds=state.settings.refresh_reuse_interval)
            if (
                presented.just_replaced
                and login.successor is not None
                and login.refreshed_at is not None
                and now - login.refreshed_at <= interval
            ):
                # The same answer as the first presentation's, to a request a fresh refresh
                # would have granted (its scope and audience judged alike).
                self._within_grant(request, login, requested=requested, audience=audience)
                kept = state.successors.open(
                    login.successor, associated=sessions.successor_association(presented)
                )
                return TokenResponse.model_validate_json(kept)
            # The answer is an error, but the session must end: after the request's
            # transaction, which holds the session's row lock, has rolled back.
            state.side_writes.after(db, partial(sessions.end, session_id=login.id))
            raise InvalidGrant("The refresh token was used already; its session has ended.")
        user = await accounts.find_user(db=db, user_id=login.user_id)
        if user is None or not user.is_active:
            raise InvalidGrant(INVALID)  # and the spend is rolled back with the request
        if user.token_version != login.token_version:
            # A sign-in that was in flight when the password changed (or the account was
            # deactivated): its session must not outlive the change.
            state.side_writes.after(db, partial(sessions.end, session_id=login.id))
            raise InvalidGrant(INVALID)  # and the spend is rolled back with the request
        self._within_grant(request, login, requested=requested, audience=audience)
        # RFC 6749 §6: the successor keeps the presented token's scope (less what the user or
        # the client has lost since); a narrower request narrows this access token alone.
        scopes_of = partial(
            refresh_scopes,
            granted=login.scope,
            roles=user.roles,
            client_scopes=request.client.scopes,
        )
        whole = scopes_of(None)
        scopes = whole if requested is None else scopes_of(requested)
        successor = await sessions.rotate(
            db,
            presented,
            scope=format_scope(whole),
            settings=state.settings,
            refresh_tokens=state.refresh_tokens,
            now=now,
        )
        answer = token_response(
            request, user=user, scopes=scopes, login=login, refresh_token=successor
        )
        if state.settings.refresh_reuse_interval:
            sealed = state.successors.seal(
                answer.model_dump_json(exclude_none=True).encode(),
                associated=sessions.successor_association(presented),
            )
            await sessions.keep_successor(db, presented, sealed)
        return answer

    @staticmethod
    def _within_grant(
        request: TokenRequest,
        login: LoginSession,
        *,
        requested: set[str] | None,
        audience: str | None,
    ) -> None:
        """Refuse a request for more than the session holds: a scope beyond its refresh
        token's (`invalid_scope`, RFC 6749 §6), or an audience other than its sign-in's, or
        one the client or the settings no longer allow (`invalid_target`, RFC 8707 §2.2)."""
        within_granted(requested, login.scope)
        settings = request.state.settings
        if audience is not None and audience != (login.audience or settings.token_audience):
            raise InvalidTarget("A refresh keeps the audience of its sign-in.")
        access.audience_for(login.audience, client=request.client, settings=settings)
