"""Discovery: RFC 8414 / OpenID Connect Discovery 1.0 metadata and the RFC 7517 JWK Set."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from auth_service.config import Settings
from auth_service.deps import KeysDep, SettingsDep
from auth_service.guards import TOKEN_URL
from auth_service.scopes import Scope

router = APIRouter(prefix="/.well-known", tags=["discovery"])

_CACHE = {"Cache-Control": "public, max-age=300"}


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


@router.get("/openid-configuration")
async def openid_configuration(settings: SettingsDep) -> JSONResponse:
    """OpenID Connect Discovery 1.0 provider metadata."""
    return JSONResponse(metadata(settings), headers=_CACHE)


@router.get("/oauth-authorization-server")
async def oauth_authorization_server(settings: SettingsDep) -> JSONResponse:
    """RFC 8414 authorization server metadata."""
    return JSONResponse(metadata(settings), headers=_CACHE)


@router.get("/jwks.json")
async def jwks(keys: KeysDep) -> JSONResponse:
    """The public keys access tokens are signed with (RFC 7517 JWK Set)."""
    return JSONResponse(keys.jwks, headers=_CACHE)
