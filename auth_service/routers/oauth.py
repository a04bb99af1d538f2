"""Token endpoint: RFC 6749 §3.2, resource owner password credentials grant (§4.3)."""

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.deps import SessionDep, client_key
from auth_service.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    OAuth2Error,
    UnsupportedGrantType,
)
from auth_service.guards import TOKEN_URL
from auth_service.schemas import OAuth2ErrorResponse, TokenResponse
from auth_service.security.fair_queue import QueueRefused
from auth_service.services import tokens, users
from auth_service.state import AppState, state_of

router = APIRouter(tags=["oauth2"])

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type", "username", "password"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["password"]},
        "username": {"type": "string", "description": "The user's email address."},
        "password": {"type": "string", "format": "password"},
        "scope": {"type": "string", "description": "Space-separated scopes (RFC 6749 §3.3)."},
        "client_id": {"type": "string", "description": "A public client's id."},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuth2ErrorResponse, "description": "RFC 6749 §5.2 error"},
    401: {"model": OAuth2ErrorResponse, "description": "invalid_client"},
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


Form = dict[str, list[str]]
# A `%` that does not start a two-digit hex escape (WHATWG URL: such bytes are not decoded).
_BROKEN_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FORM_TYPE = "application/x-www-form-urlencoded"


def _decode_form_part(raw: bytes) -> str:
    if _BROKEN_ESCAPE.search(raw):
        raise InvalidRequest("The form body has a malformed percent-escape.")
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The form body is not UTF-8.") from None


def _parse_form(body: bytes) -> Form:
    """An application/x-www-form-urlencoded body (RFC 6749 Appendix B), strictly UTF-8.

    General-purpose parsers read raw bytes as Latin-1 and turn undecodable escapes into
    U+FFFD, so different bytes become one password. Here each name and value must be UTF-8
    after percent-decoding, or the request is refused: one password has one spelling.
    """
    form: Form = {}
    for part in body.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        form.setdefault(_decode_form_part(name), []).append(_decode_form_part(value))
    return form


async def _read_form(request: Request) -> Form:
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    if media_type.strip().lower() != _FORM_TYPE:
        raise InvalidRequest(f"The body must be {_FORM_TYPE}.")
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]*)", parameters, flags=re.IGNORECASE)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise InvalidRequest("The form body must be UTF-8.")
    return _parse_form(await request.body())  # the size limit applies while it streams in


def _optional(form: Form, name: str) -> str | None:
    values = form.get(name, [])
    # RFC 6749 §3.2: parameters must not be included more than once.
    if len(values) > 1:
        raise InvalidRequest(f"The parameter {name} is repeated.")
    return (values[0] or None) if values else None  # empty counts as missing


def _required(form: Form, name: str) -> str:
    value = _optional(form, name)
    if value is None:
        raise InvalidRequest(f"The parameter {name} is missing.")
    return value


def _client_from_basic(header: str | None) -> str | None:
    """RFC 6749 §2.3.1: client_id from HTTP Basic. Public clients carry no secret."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Only HTTP Basic client authentication is supported.")
    try:
        decoded = base64.b64decode(encoded.encode("ascii"), validate=True).decode()
    except (UnicodeError, binascii.Error):  # non-ASCII header bytes, bad base64, bad UTF-8
        raise InvalidClient("The Basic credentials are malformed.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClient("The Basic credentials are malformed.")
    if secret:
        raise InvalidClient("Unknown client credentials: public clients have no secret.")
    return unquote_plus(client_id) or None


def _client_id(request: Request, form: Form, settings: Settings) -> str:
    from_header = _client_from_basic(request.headers.get("authorization"))
    from_form = _optional(form, "client_id")
    if from_header and from_form and from_header != from_form:
        raise InvalidRequest("The client is identified twice, differently.")
    client_id = from_header or from_form or settings.default_client_id
    if client_id not in settings.client_ids:
        raise InvalidClient("Unknown client.")
    return client_id


@router.post(
    TOKEN_URL,
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA}},
        }
    },
)
async def token(request: Request, session: SessionDep) -> JSONResponse:
    """Exchange a user's email and password for an access token (RFC 6749 §4.3)."""
    state = state_of(request)
    logins = state.metrics.logins
    try:
        issued = await _password_grant(request, session, state)
    except OAuth2Error as exc:
        logins.labels(exc.oauth_error).inc()
        raise
    except QueueRefused:
        logins.labels("busy").inc()
        raise
    logins.labels("success").inc()
    body = TokenResponse(
        access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


async def _password_grant(
    request: Request, session: AsyncSession, state: AppState
) -> tokens.IssuedToken:
    settings, hasher = state.settings, state.hasher
    form = await _read_form(request)
    grant_type = _required(form, "grant_type")
    if grant_type != "password":
        raise UnsupportedGrantType("Only the password grant is supported.")
    username = _required(form, "username")
    password = _required(form, "password")
    requested_scopes = tokens.parse_scope(_optional(form, "scope"))  # before any password work
    client_id = _client_id(request, form, settings)
    # The caller's place in the fair password queue, before the lookup touches the database.
    async with hasher.turn(client_key(request)):
        user = await users.authenticate(
            session=session,
            states=state.user_states,
            hasher=hasher,
            email=username,
            password=password,
        )
    if user is None:
        # RFC 6749 §5.2: one answer for unknown, inactive and wrong password (no enumeration).
        raise InvalidGrant("The email or password is incorrect.")
    scopes = tokens.grant_scopes(requested_scopes, roles=user.roles)
    return tokens.issue_access_token(
        user=user, client_id=client_id, scopes=scopes, keys=state.keys, settings=settings
    )
