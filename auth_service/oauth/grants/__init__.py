"""The token endpoint's grants (RFC 6749 §4), one module each.

A grant validates its own parameters and issues its own response; the endpoint
(`oauth/token.py`) has parsed the form and authenticated the client before it runs.
Shaped like Authlib's grant classes (`GRANT_TYPE`, `validate_token_request`,
`create_token_response`), but async: ours read the database and queue for bcrypt without
blocking the event loop, which Authlib's synchronous server classes would.
"""

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import User
from auth_service.oauth.forms import Form
from auth_service.schemas import TokenResponse
from auth_service.services import tokens
from auth_service.services.clients import Client
from auth_service.services.sessions import Device
from auth_service.state import AppState


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token request, its client authenticated."""

    form: Form
    client: Client
    peer: str  # who is asking, for the fair password queue (`deps.client_key`)
    device: Device  # where it comes from, for the user's list of sessions
    state: AppState
    session: AsyncSession  # the request's transaction: committed after the answer is built


class Grant(ABC):
    grant_type: ClassVar[str]
    # The grant's form parameters as JSON Schema properties, for the OpenAPI document.
    parameters: ClassVar[dict[str, dict[str, Any]]]
    required: ClassVar[tuple[str, ...]]

    @abstractmethod
    async def respond(self, request: TokenRequest) -> TokenResponse:
        """The RFC 6749 §5.1 answer; an `OAuth2Error` when the grant is refused."""


def token_response(
    request: TokenRequest,
    *,
    user: User,
    scopes: set[str],
    session_id: uuid.UUID,
    refresh_token: str,
) -> TokenResponse:
    """The RFC 6749 §5.1 answer of a grant that continues session `session_id`: a new access
    token for `user` with `scopes`, and `refresh_token`."""
    issued = tokens.issue_access_token(
        user=user,
        client_id=request.client.client_id,
        scopes=scopes,
        keys=request.state.keys,
        settings=request.state.settings,
        session_id=session_id,
    )
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        refresh_token=refresh_token,
    )
