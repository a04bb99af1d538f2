"""Discovery: RFC 8414 / OpenID Connect Discovery 1.0 metadata and the RFC 7517 JWK Set.

Both are the same bytes for every request until the settings or the keys change, so they
are serialized once, with an entity tag: a client that sends it back in `If-None-Match`
gets 304 Not Modified (RFC 9110 §13.1.2). The metadata may be cached for 5 minutes; the JWK
Set for half an access token's lifetime at most, well inside the window in which a
superseded key still verifies, and a rotation publishes the next key for longer than that
before it signs, so a verifier's copy always holds the keys of valid tokens.
`WellKnownFastPath` answers their GETs before routing, with what the routes answer.
"""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from auth_service.access.scopes import Scope
from auth_service.config import Settings
from auth_service.keys.service import jwks_max_age
from auth_service.kit.documents import JSONDocument
from auth_service.oauth.server import token_endpoint
from auth_service.state import AppState
from auth_service.web.deps import state_of
from auth_service.web.guards import TOKEN_URL

router = APIRouter(prefix="/.well-known", tags=["discovery"])

_METADATA_MAX_AGE = 300


def _cache_control(max_age: int) -> str:
    return f"public, max-age={max_age}"


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
        "revocation_endpoint": issuer + "/oauth2/revoke",
        "introspection_endpoint": issuer + "/oauth2/introspect",
        "grant_types_supported": token_endpoint.grant_types,
        # No authorization endpoint: nothing is issued through the front channel.
        "response_types_supported": [],
        "scopes_supported": [s.value for s in Scope],
        # RFC 6749 §2.3.1: public clients send none; confidential ones either way.
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.signing_alg],
        "access_token_signing_alg_values_supported": [settings.signing_alg],
        "claims_supported": ["sub", "email", "email_verified", "name"],
        "service_documentation": issuer + "/docs",
    }


def _answer(request_headers: Headers, document: JSONDocument, cache_control: str) -> Response:
    """The answer to a GET of `document`, for a request with these headers."""
    wanted = request_headers.get("if-none-match")
    headers = {"Cache-Control": cache_control, "ETag": document.etag}
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
    return _answer(request.headers, _discovery(state_of(request)), _metadata_cache_control)


@router.get(
    "/oauth-authorization-server", response_class=Response, responses={200: _JSON, **_NOT_MODIFIED}
)
async def oauth_authorization_server(request: Request) -> Response:
    """RFC 8414 authorization server metadata."""
    return _answer(request.headers, _discovery(state_of(request)), _metadata_cache_control)


@router.get("/jwks.json", response_class=Response, responses={200: _JSON, **_NOT_MODIFIED})
async def jwks(request: Request) -> Response:
    """The public keys access tokens are signed with (RFC 7517 JWK Set): the signing key,
    those still verifying tokens they signed before a rotation, and the next key, published
    before it signs."""
    state = state_of(request)
    return _answer(request.headers, _jwks(state), _jwks_cache_control(state))


_metadata_cache_control = _cache_control(_METADATA_MAX_AGE)


def _discovery(state: AppState) -> JSONDocument:
    return state.discovery


def _jwks(state: AppState) -> JSONDocument:
    return state.keys.jwks  # the current key set's: it follows rotations and revocations


def _jwks_cache_control(state: AppState) -> str:
    # A rotation's lead counts this (`keys.service.publication_lead`).
    return _cache_control(jwks_max_age(state.settings.access_token_ttl))


class WellKnownFastPath:
    """Answer a GET of these documents before routing: with the routes' own answer.

    Choosing among the app's routes and solving an endpoint's parameters cost more than
    sending bytes computed once; these are fetched by every client and every verifying
    service. Only an exact GET of one of the paths is answered here; anything else (HEAD, a
    slash appended, another method) goes on to the routes, which also describe the documents
    in OpenAPI. The request is attributed to its route (`scope["route"]`) for the metrics.
    Installed inside the other middleware, so the answer gets a request id, CORS headers, a
    metric and an access line like any other.
    """

    def __init__(self, app: ASGIApp, *, state: AppState) -> None:
        self.app = app
        self.state = state
        documents: dict[Any, tuple[Callable[[AppState], JSONDocument], str]] = {
            openid_configuration: (_discovery, _metadata_cache_control),
            oauth_authorization_server: (_discovery, _metadata_cache_control),
            jwks: (_jwks, _jwks_cache_control(state)),
        }
        self.routes = {
            route.path: (route, *documents[route.endpoint])
            for route in router.routes
            if isinstance(route, APIRoute)
        }

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            served = self.routes.get(path)
            if served is not None:
                route, document, cache_control = served
                scope["route"] = route
                response = _answer(Headers(scope=scope), document(self.state), cache_control)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
