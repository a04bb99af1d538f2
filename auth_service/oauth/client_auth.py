"""The client credentials a request presents (RFC 6749 §2.3.1): HTTP Basic or the form."""

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from auth_service.clients import service as clients
from auth_service.clients.service import Client
from auth_service.errors import InvalidClient, InvalidRequest
from auth_service.oauth import forms
from auth_service.state import AppState

# RFC 6749 Appendix A.1: client-id = *VSCHAR (%x20-7E); and no longer than a stored one.
_CLIENT_ID = re.compile(r"[\x20-\x7E]{1,255}")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """Who the request says its client is; None where it did not say."""

    client_id: str | None
    secret: str | None


def _from_basic(header: str) -> ClientCredentials:
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
    # Both are form-urlencoded before they are joined (RFC 6749 §2.3.1).
    credentials = ClientCredentials(unquote_plus(client_id) or None, unquote_plus(secret) or None)
    if credentials.secret is not None and credentials.client_id is None:
        # The id of a client authenticating by Basic is its user-id, not a form parameter.
        raise InvalidClient("The Basic credentials name no client.")
    return credentials


def presented(authorization: str | None, form: forms.Form) -> ClientCredentials:
    """The client credentials of a request with this `Authorization` header and form.

    A client id no client could have (a control character, too long) fails here, before
    any lookup: InvalidClient.
    """
    credentials = _presented(authorization, form)
    if credentials.client_id is not None and not _CLIENT_ID.fullmatch(credentials.client_id):
        raise InvalidClient("Client authentication failed.")
    return credentials


def _presented(authorization: str | None, form: forms.Form) -> ClientCredentials:
    in_form = ClientCredentials(
        forms.optional(form, "client_id"), forms.optional(form, "client_secret")
    )
    if not authorization:
        if in_form.secret is not None and in_form.client_id is None:
            raise InvalidRequest("A client_secret needs its client_id.")
        return in_form
    in_header = _from_basic(authorization)
    if in_form.secret is not None:
        # RFC 6749 §2.3: one authentication method per request.
        raise InvalidRequest("The client authenticates twice: in the header and in the form.")
    if in_form.client_id and in_header.client_id and in_form.client_id != in_header.client_id:
        raise InvalidRequest("The client is identified twice, differently.")
    return ClientCredentials(in_header.client_id or in_form.client_id, in_header.secret)


async def authenticate(authorization: str | None, form: forms.Form, *, state: AppState) -> Client:
    """The client a request with this `Authorization` header and form authenticates as (a
    public one by naming itself); InvalidClient when it is none."""
    credentials = presented(authorization, form)
    return await clients.authenticate(
        reads=state.reads,
        client_id=credentials.client_id,
        secret=credentials.secret,
        settings=state.settings,
    )
