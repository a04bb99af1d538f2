"""The OAuth endpoints over HTTP: token (RFC 6749 §3.2), revocation (RFC 7009) and
introspection (RFC 7662); the protocol is in `auth_service.oauth`."""

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from auth_service.errors import ErrorStyle
from auth_service.oauth import revocation
from auth_service.oauth.schemas import OAuth2ErrorResponse, TokenResponse
from auth_service.oauth.server import introspection_endpoint, revocation_endpoint, token_endpoint
from auth_service.sessions.service import Device
from auth_service.web import styles
from auth_service.web.deps import DbDep, client_key, state_of
from auth_service.web.guards import CLIENT_SCHEME, TOKEN_URL

# RFC 6749 §5.2 error responses on every endpoint here (RFC 7009 §2.2.1 and RFC 7662 §2.3
# answer as the token endpoint does).
router = styles.router(ErrorStyle.OAUTH, tags=["oauth2"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuth2ErrorResponse, "description": "RFC 6749 §5.2 error"},
    401: {"model": OAuth2ErrorResponse, "description": "invalid_client"},
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body of `schema` as a form (Swagger UI renders its fields)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


@router.post(
    TOKEN_URL,
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=_form_body(token_endpoint.form_schema()),
)
async def token(request: Request, db: DbDep) -> JSONResponse:
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
        db=db,
    )
    return JSONResponse(answer.model_dump(exclude_none=True), headers=NO_STORE)


@router.post(
    "/oauth2/revoke",
    response_class=Response,
    responses={200: {"description": "Revoked, or nothing to revoke (RFC 7009 §2.2)."}, **_ERRORS},
    # A public client names itself in the form; a confidential one authenticates.
    openapi_extra={
        **_form_body(revocation.PARAMETERS),
        "security": [{}, {CLIENT_SCHEME: []}],
    },
)
async def revoke(request: Request, db: DbDep) -> Response:
    """Revoke a refresh token (its whole session) or an access token (RFC 7009).

    A confidential client authenticates as at the token endpoint; a public one names
    itself. Unknown, malformed, expired and revoked tokens answer 200 as well.
    """
    await revocation_endpoint.respond(
        content_type=request.headers.get("content-type", ""),
        body=await request.body(),
        authorization=request.headers.get("authorization"),
        state=state_of(request),
        db=db,
    )
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/oauth2/introspect",
    responses={
        200: {
            "description": 'RFC 7662 §2.2: `{"active": false}` alone for a token that is '
            "not active.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_ERRORS,
        403: {"model": OAuth2ErrorResponse, "description": "insufficient_scope"},
    },
    openapi_extra={**_form_body(revocation.PARAMETERS), "security": [{CLIENT_SCHEME: []}]},
)
async def introspect(request: Request) -> JSONResponse:
    """Is this token active, and what is it (RFC 7662)? For service clients with the
    `introspect` scope, by client authentication or a bearer token."""
    answer = await introspection_endpoint.respond(
        content_type=request.headers.get("content-type", ""),
        body=await request.body(),
        authorization=request.headers.get("authorization"),
        state=state_of(request),
    )
    return JSONResponse(answer, headers=NO_STORE)
