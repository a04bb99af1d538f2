"""The OpenAPI document, with every error answer an operation can give.

FastAPI documents what a route declares. The errors that come from what a route depends on
are added here, derived from its dependencies, so a new route gets them without declaring
them: 401 and 403 where a guard checks a bearer token, 429 where the fair password queue
may refuse, 503 where the database is used, 400 and 413 where a body is read. Every 422 is
documented with the body the service really sends (a string `detail`), not FastAPI's list.
What a route declares itself stays as declared.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import BaseRoute

from auth_service.accounts import password_policy
from auth_service.errors import ErrorStyle
from auth_service.oauth.schemas import OAuth2ErrorResponse
from auth_service.web.deps import get_db, password_turn
from auth_service.web.guards import CLIENT_SCHEME, TOKEN_URL, current_principal
from auth_service.web.schemas import ErrorResponse, UnprocessableResponse
from auth_service.web.styles import style_of

_REF = "#/components/schemas/{model}"
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
_CHALLENGE = {
    "WWW-Authenticate": {
        "description": "The RFC 6750 §3 challenge: `Bearer`, with `error` and `scope`.",
        "schema": {"type": "string"},
    }
}
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")
# The fields that set a password, which the policy checks (its length limits are settings).
_NEW_PASSWORDS = (
    ("UserCreate", "password"),
    ("AdminUserCreate", "password"),
    ("PasswordChange", "new_password"),
)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _response(
    description: str, model: type[BaseModel], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _errors(route: RouteContext, *, oauth: bool, max_body_bytes: int) -> dict[str, dict[str, Any]]:
    """The error answers that `route`'s dependencies and body can give."""
    error = OAuth2ErrorResponse if oauth else ErrorResponse
    calls = set(_calls(route.dependant))
    found: dict[str, dict[str, Any]] = {}
    if route.body_field is not None or oauth:
        found["400"] = _response("A malformed request (its Content-Length, its body).", error)
        found["413"] = _response(f"The body is over {max_body_bytes // 1024} KiB.", error)
    if current_principal in calls:
        found["401"] = _response("No access token, or not a valid one.", error, _CHALLENGE)
        found["403"] = _response("The token lacks a scope or the user a role.", error, _CHALLENGE)
    # The token endpoint queues its password grant itself, not through a dependency.
    if password_turn in calls or route.path_format == TOKEN_URL:
        found["429"] = _response(
            "The fair password queue is full and this client holds the most places in it.",
            error,
            _RETRY_AFTER,
        )
    # The guard reads the user; the OAuth endpoints read the client.
    if get_db in calls or current_principal in calls or oauth:
        found["503"] = _response("The database is unavailable.", error, _RETRY_AFTER)
    return found


def _with_errors(
    document: dict[str, Any],
    routes: Sequence[BaseRoute],
    *,
    max_body_bytes: int,
) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, OAuth2ErrorResponse, UnprocessableResponse):
        definition = model.model_json_schema(ref_template=_REF)
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    # Through their contexts: an included router's routes carry its prefix and dependencies.
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        oauth = style_of(route.original_route) is ErrorStyle.OAUTH
        errors = _errors(route, oauth=oauth, max_body_bytes=max_body_bytes)
        for method in route.methods or ():
            responses = document["paths"][route.path_format][method.lower()]["responses"]
            for status, response in errors.items():
                responses.setdefault(status, response)
            if "422" in responses:  # FastAPI's own, or a route's with the plain model
                declared = responses["422"].get("description", "Validation Error")
                if declared == "Validation Error":  # FastAPI's
                    declared = "The request failed validation."
                responses["422"] = _response(declared, UnprocessableResponse)
    for name in _FASTAPI_422:  # referenced by nothing any more
        schemas.pop(name, None)
    return document


def _with_password_policy(document: dict[str, Any], min_length: int) -> dict[str, Any]:
    # In words, not as minLength/maxLength: JSON Schema counts code points as sent, the policy
    # counts them after NFKC, which can expand (`¼` is three) or compose (`e` + U+0301 is one).
    schemas = document["components"]["schemas"]
    for model, field in _NEW_PASSWORDS:
        schemas[model]["properties"][field]["description"] = (
            f"Checked by the password policy: {min_length} to {password_policy.MAX_LENGTH} "
            "characters after NFKC normalization, and not too easy to guess. A refusal is "
            "422 naming the `rule`."
        )
    return document


def install(app: FastAPI, *, max_body_bytes: int, password_min_length: int) -> None:
    """Serve the document with the error answers; built once, on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)  # FastAPI's own, which it caches in openapi_schema
            document = _with_errors(document, app.routes, max_body_bytes=max_body_bytes)
            schemes = document["components"].setdefault("securitySchemes", {})
            schemes[CLIENT_SCHEME] = {
                "type": "http",
                "scheme": "basic",
                "description": "A confidential client's id and secret (RFC 6749 §2.3.1), "
                "for revocation and introspection.",
            }
            app.openapi_schema = _with_password_policy(document, password_min_length)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
