"""Discovery: RFC 8414 / OpenID Connect Discovery 1.0 metadata and the RFC 7517 JWK Set.

Both are the same bytes for every request until the settings or the keys change, so they
are serialized once, with an entity tag: a client that sends it back in `If-None-Match`
gets 304 Not Modified (RFC 9110 §13.1.2) and the documents may be cached for 5 minutes.
"""

from typing import Any

from fastapi import APIRouter, Request, Response

from auth_service.config import Settings
from auth_service.guards import TOKEN_URL
from auth_service.scopes import Scope
from auth_service.services.keys import JSONDocument
from auth_service.state import state_of

router = APIRouter(prefix="/.well-known", tags=["discovery"])

_CACHE_CONTROL = "public, max-age=300"
_JSON = {"content": {"application/json": {}}, "description": "The document."}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "The client's copy (its `If-None-Match`) is current."}
}


def metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_URL,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "userinfo_endpoint": issuer + "/userinfo",
        "grant_types_supported": ["password"],
        # No authorization endpoint: nothing is issued through the front channel.
        "response_types_supported": [],
        "scopes_supported": [s.value for s in Scope],
        "token_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.signing_alg],
        "access_token_signing_alg_values_supported": [settings.signing_alg],
        "claims_supported": ["sub", "email", "email_verified", "name"],
        "service_documentation": issuer + "/docs",
    }


def _answer(request: Request, document: JSONDocument) -> Response:
    headers = {"Cache-Control": _CACHE_CONTROL, "ETag": document.etag}
    wanted = request.headers.get("if-none-match")
    if wanted is not None:
        # Weak comparison (RFC 9110 §13.1.2): a W/ prefix does not matter here.
        tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
        if "*" in tags or document.etag in tags:
            return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)


@router.get(
    "/openid-configuration", response_class=Response, responses={200: _JSON, **_NOT_MODIFIED}
)
async def openid_configuration(request: Request) -> Response:
    """OpenID Connect Discovery 1.0 provider metadata."""
    return _answer(request, state_of(request).discovery)


@router.get(
    "/oauth-authorization-server", response_class=Response, responses={200: _JSON, **_NOT_MODIFIED}
)
async def oauth_authorization_server(request: Request) -> Response:
    """RFC 8414 authorization server metadata."""
    return _answer(request, state_of(request).discovery)


@router.get("/jwks.json", response_class=Response, responses={200: _JSON, **_NOT_MODIFIED})
async def jwks(request: Request) -> Response:
    """The public keys access tokens are signed with (RFC 7517 JWK Set)."""
    # No dependency: solving one costs more than this whole answer.
    return _answer(request, state_of(request).keys.jwks)
