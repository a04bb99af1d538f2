"""The token endpoint over HTTP (RFC 6749 §3.2); the protocol is in `auth_service.oauth`."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from auth_service.deps import SessionDep, client_key, state_of
from auth_service.guards import TOKEN_URL
from auth_service.oauth.server import token_endpoint
from auth_service.schemas import OAuth2ErrorResponse, TokenResponse
from auth_service.services.sessions import Device

router = APIRouter(tags=["oauth2"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuth2ErrorResponse, "description": "RFC 6749 §5.2 error"},
    401: {"model": OAuth2ErrorResponse, "description": "invalid_client"},
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    TOKEN_URL,
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": token_endpoint.form_schema()}
            },
        }
    },
)
async def token(request: Request, session: SessionDep) -> JSONResponse:
    """Sign in with an email and password (RFC 6749 §4.3), or refresh (§6).

    Both answer an access token and a refresh token. A refresh token is single use: the
    answer carries its successor, and presenting a spent one again ends the session.
    """
    answer = await token_endpoint.respond(
        content_type=request.headers.get("content-type", ""),
        body=await request.body(),  # the size limit applies while it streams in
        authorization=request.headers.get("authorization"),
        peer=client_key(request),
        device=Device(
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        ),
        state=state_of(request),
        session=session,
    )
    return JSONResponse(answer.model_dump(exclude_none=True), headers=NO_STORE)
