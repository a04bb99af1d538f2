"""The token endpoint (RFC 6749 §3.2): parse the form once, authenticate the client,
dispatch to the grant its `grant_type` names.

Grants are registered by type, as in Authlib's `AuthorizationServer.register_grant`; the
endpoint owns what every grant shares (the form, the client, the login metric) and nothing
a grant decides.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import OAuth2Error, UnauthorizedClient, UnsupportedGrantType
from auth_service.kit.fair_queue import QueueRefused
from auth_service.oauth import client_auth, forms
from auth_service.oauth.grants import Grant, TokenRequest
from auth_service.oauth.schemas import TokenResponse
from auth_service.sessions.service import Device
from auth_service.state import AppState
from auth_service.web.observability import Metrics

_CLIENT_PARAMETERS: dict[str, dict[str, Any]] = {
    "client_id": {"type": "string", "description": "The client's id (RFC 6749 §2.3.1)."},
    "client_secret": {
        "type": "string",
        "format": "password",
        "description": "A confidential client's secret, when it does not use HTTP Basic "
        "(client_secret_post, RFC 6749 §2.3.1).",
    },
}


class TokenEndpoint:
    def __init__(self, *grants: Grant) -> None:
        self._grants: dict[str, Grant] = {}
        for grant in grants:
            self.register_grant(grant)

    def register_grant(self, grant: Grant) -> None:
        if grant.grant_type in self._grants:
            raise ValueError(f"the grant type {grant.grant_type} is registered already")
        self._grants[grant.grant_type] = grant

    @property
    def grant_types(self) -> list[str]:
        return list(self._grants)

    async def respond(
        self,
        *,
        content_type: str,
        body: bytes,
        authorization: str | None,
        peer: str,
        device: Device,
        state: AppState,
        db: AsyncSession,
    ) -> TokenResponse:
        """The answer to a token request, counted by its grant type and outcome."""
        with _counted(state.metrics) as counted:
            form = forms.parse(content_type, body)
            grant_type = forms.required(form, "grant_type")
            grant = self._grants.get(grant_type)
            if grant is None:
                supported = ", ".join(self._grants)
                raise UnsupportedGrantType(f"The grant types supported are: {supported}.")
            counted.grant_type = grant_type
            client = await client_auth.authenticate(authorization, form, state=state)
            if grant_type not in client.grant_types:
                raise UnauthorizedClient(f"This client may not use the {grant_type} grant.")
            request = TokenRequest(
                form=form, client=client, peer=peer, device=device, state=state, db=db
            )
            return await grant.respond(request)

    def form_schema(self) -> dict[str, Any]:
        """The request body's JSON Schema for the OpenAPI document.

        One flat object (Swagger UI builds a form from it; it builds none from a `oneOf`):
        every grant's parameters, each saying which grants take it, and the parameters each
        grant requires in the description.
        """
        properties: dict[str, dict[str, Any]] = {
            "grant_type": {"type": "string", "enum": list(self._grants)},
        }
        takers: dict[str, list[str]] = {}
        for grant in self._grants.values():
            for name, schema in grant.parameters.items():
                properties.setdefault(name, dict(schema))
                takers.setdefault(name, []).append(grant.grant_type)
        for name, grant_types in takers.items():
            prefix = f"grant_type={' or '.join(grant_types)}"
            described = properties[name].get("description")
            properties[name]["description"] = f"{prefix}: {described}" if described else prefix
        properties.update(_CLIENT_PARAMETERS)
        needs = "; ".join(
            f"{grant.grant_type}: {', '.join(grant.required)}" for grant in self._grants.values()
        )
        return {
            "type": "object",
            "required": ["grant_type"],
            "properties": properties,
            "description": f"The parameters each grant type requires: {needs}.",
        }


@dataclass(slots=True)
class _Counted:
    grant_type: str | None = None  # known once the form names a supported one


@contextmanager
def _counted(metrics: Metrics) -> Iterator[_Counted]:
    """Count what the block answers: success, its RFC 6749 error code, or busy (429)."""
    counted = _Counted()
    try:
        yield counted
    except OAuth2Error as exc:
        metrics.count_token_request(counted.grant_type, exc.oauth_error)
        raise
    except QueueRefused:
        metrics.count_token_request(counted.grant_type, "busy")
        raise
    metrics.count_token_request(counted.grant_type, "success")
