"""The token endpoint's grants (RFC 6749 §4), one module each.

A grant validates its own parameters and issues its own response; the endpoint
(`oauth/token.py`) has parsed the form and authenticated the client before it runs.
Shaped like Authlib's grant classes (`GRANT_TYPE`, `validate_token_request`,
`create_token_response`), but async: ours read the database and queue for bcrypt without
blocking the event loop, which Authlib's synchronous server classes would.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access import service as access
from auth_service.clients.service import Client
from auth_service.errors import InvalidRequest
from auth_service.models import LoginSession, User
from auth_service.oauth import forms
from auth_service.oauth.forms import Form
from auth_service.oauth.schemas import TokenResponse
from auth_service.sessions.service import Device
from auth_service.state import AppState


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token request, its client authenticated."""

    form: Form
    client: Client
    peer: str  # who is asking, for the fair password queue (`deps.client_key`)
    device: Device  # where it comes from, for the user's list of sessions
    state: AppState
    db: AsyncSession  # the request's transaction: committed after the answer is built


class Grant(ABC):
    grant_type: ClassVar[str]
    # The grant's form parameters as JSON Schema properties, for the OpenAPI document.
    parameters: ClassVar[dict[str, dict[str, Any]]]
    required: ClassVar[tuple[str, ...]]

    @abstractmethod
    async def respond(self, request: TokenRequest) -> TokenResponse:
        """The RFC 6749 §5.1 answer; an `OAuth2Error` when the grant is refused."""


# RFC 8707 §2 `resource`, or `audience` as other servers spell it: who the token is for.
AUDIENCE_PARAMETERS: dict[str, dict[str, Any]] = {
    "audience": {
        "type": "string",
        "description": "The API the access token is for, among those the client may have "
        "(default: the service's audience).",
    },
    "resource": {"type": "string", "description": "RFC 8707: the same as `audience`."},
}


def requested_audience(form: Form) -> str | None:
    """The audience a token request names, by either spelling; None when it names none."""
    audience, resource = forms.optional(form, "audience"), forms.optional(form, "resource")
    if audience is not None and resource is not None and audience != resource:
        raise InvalidRequest("The audience and the resource differ: name one.")
    return audience or resource


def token_response(
    request: TokenRequest,
    *,
    user: User,
    scopes: set[str],
    login: LoginSession,
    refresh_token: str,
) -> TokenResponse:
    """The RFC 6749 §5.1 answer of a grant that continues session `login`: a new access
    token for `user` with `scopes`, and `refresh_token`."""
    settings = request.state.settings
    issued = access.issue_access_token(
        subject=str(user.id),
        client_id=request.client.client_id,
        scopes=scopes,
        audience=login.audience or settings.token_audience,
        keys=request.state.keys,
        settings=settings,
        claims=access.user_claims(user, session_id=login.id),
        not_after=login.expires_at,  # a token never outlives its session
    )
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        refresh_token=refresh_token,
    )
