"""Every error the service answers with, in one place, each rendering its own answer.

An error carries its status, its body and its headers, and renders itself in the style of
the route that answers it (`ErrorStyle`, which each router declares: `web/styles.py`):
an RFC 6749 §5.2 body (`error`, `error_description`, never cached) on the OAuth endpoints,
`{"detail": ...}` on the API, a redirect back to the client (RFC 6749 §4.1.2.1) or a page
for a person in a browser. `OAuth2Error`s are always the §5.2 body where JSON is answered,
`BearerError`s add their RFC 6750 §3 challenge. Services raise these; the app's handlers,
the middleware and the server send their `answer(style)`, and fill a page's template.
Nothing here knows the web framework.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any, ClassVar, Literal, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_NO_STORE = {"Cache-Control": "no-store"}  # RFC 6749 §5.1: token answers are never cached


class ErrorStyle(StrEnum):
    """How a route's errors are answered; a router declares it once (`web/styles.py`)."""

    API = "api"  # {"detail": ...}, with more fields where they help (a JSON API)
    OAUTH = "oauth"  # RFC 6749 §5.2: {"error", "error_description"}, never cached
    # RFC 6749 §4.1.2.1: a 302 to the client's validated redirect_uri with `error=`, when the
    # error carries one (`RedirectToClient`); any other error is a page, never a redirect.
    REDIRECT = "redirect"
    HTML = "html"  # a page for the person in the browser (`web/templates/error.html`)


JSON_STYLES = Literal[ErrorStyle.API, ErrorStyle.OAUTH]


@dataclass(frozen=True, slots=True)
class Answer:
    """An error as it goes on the wire: status, headers, and a body of `media_type`
    (None: no body, as a redirect has)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str | None = "application/json"

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI's spelling of the headers, with the body's type and length."""
        kind = [] if self.media_type is None else [(b"content-type", self.media_type.encode())]
        return [
            *kind,
            (b"content-length", b"%d" % len(self.body)),
            *((name.lower().encode(), value.encode()) for name, value in self.headers.items()),
        ]


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """An error as a page for a person: what `web/templates/error.html` is filled with."""

    status: int
    title: str  # the status's own phrase: "Bad Request"
    description: str
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None  # a 500's: what the person can quote to an operator


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class ServiceError(Exception):
    """An answer other than success."""

    status_code: int = 400
    # This error's code in an RFC 6749 §5.2 body, when it happens on an OAuth endpoint.
    oauth_error: ClassVar[str] = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.description}

    @overload
    def answer(self, style: JSON_STYLES) -> Answer: ...
    @overload
    def answer(self, style: ErrorStyle) -> Answer | ErrorPage: ...
    def answer(self, style: ErrorStyle) -> Answer | ErrorPage:
        """The answer in `style`: on the wire, or as the page a template renders."""
        if style is ErrorStyle.OAUTH:
            return self._token_error()
        if style is ErrorStyle.API:
            return self._api_answer()
        # HTML; and REDIRECT, since only a RedirectToClient knows a validated target
        # (RFC 6749 §4.1.2.1: without one, inform the resource owner, never redirect).
        return self.page()

    def _api_answer(self) -> Answer:
        return Answer(self.status_code, _json(self.body()), self.headers())

    def _token_error(self) -> Answer:
        body = {"error": self.oauth_error, "error_description": self.description}
        return Answer(self.status_code, _json(body), {**self.headers(), **_NO_STORE})

    def page(self) -> ErrorPage:
        try:
            title = HTTPStatus(self.status_code).phrase
        except ValueError:  # a status with no registered phrase
            title = "Error"
        return ErrorPage(self.status_code, title, self.description, self.headers())


# --- RFC 6749 §5.2: the token endpoint's own errors ----------------------------------------


class OAuth2Error(ServiceError):
    """RFC 6749 §5.2 error response, wherever it is raised."""

    def headers(self) -> dict[str, str]:
        if self.status_code == 401:
            return {"WWW-Authenticate": 'Basic realm="auth-service"'}  # RFC 6749 §5.2
        return {}

    def _api_answer(self) -> Answer:
        return self._token_error()


class InvalidRequest(OAuth2Error):
    oauth_error = "invalid_request"


class InvalidClient(OAuth2Error):
    oauth_error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuth2Error):
    oauth_error = "invalid_grant"


class UnsupportedGrantType(OAuth2Error):
    oauth_error = "unsupported_grant_type"


class InvalidScope(OAuth2Error):
    oauth_error = "invalid_scope"


class UnauthorizedClient(OAuth2Error):
    """The client may not use this grant type (RFC 6749 §5.2)."""

    oauth_error = "unauthorized_client"


class InvalidTarget(OAuth2Error):
    """The audience or resource asked for is not one this client may have (RFC 8707 §2)."""

    oauth_error = "invalid_target"


# --- RFC 6750 §3: bearer token errors --------------------------------------------------------


class BearerError(ServiceError):
    """RFC 6750 §3 error: answered with a `WWW-Authenticate: Bearer` challenge."""

    error: ClassVar[str | None] = "invalid_token"
    status_code = 401

    def __init__(self, description: str, *, scope: str | None = None) -> None:
        super().__init__(description)
        self.scope = scope

    def headers(self) -> dict[str, str]:
        # RFC 6750 §3: Bearer realm, error, error_description, scope.
        parts = []
        if self.error:
            # §3: error_description excludes '"' and '\\' (it is a quoted-string).
            description = self.description.replace('"', "'").replace("\\", "/")
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{description}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return {"WWW-Authenticate": "Bearer " + ", ".join(parts) if parts else "Bearer"}


class MissingToken(BearerError):
    # RFC 6750 §3.1: a request without credentials gets a challenge with no error code.
    error = None


class InvalidToken(BearerError):
    error = "invalid_token"
    oauth_error = "invalid_token"  # a bearer caller of introspection (RFC 6750 §3.1)


class InsufficientScope(BearerError):
    error = "insufficient_scope"
    oauth_error = "insufficient_scope"
    status_code = 403


# --- refused operations ------------------------------------------------------------------


class DomainError(ServiceError):
    """A refused operation: `{"detail": description}` with `status_code`."""


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Conflict(DomainError):
    status_code = 409


class EmailTaken(Conflict):
    def __init__(self) -> None:
        super().__init__("A user with this email already exists.")


class EmailRefused(DomainError):
    """A new account may not have this address (see `accounts.emails.check_new_address`)."""

    status_code = 422

    def __init__(self, reason: str) -> None:
        super().__init__(f"email: {reason}")
        self.reason = reason


class LastAdmin(Conflict):
    def __init__(self) -> None:
        super().__init__("This change would leave no active admin.")


class LastAdminClient(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "This change would leave no active client through which an admin can sign in "
            "with the scope admin:clients (the grant type password and admin:clients in its "
            "scopes): no admin could then repair the clients."
        )


class PasswordRejected(DomainError):
    """The password policy refused a new password; `rule` names which rule."""

    status_code = 422

    def __init__(self, rule: str, description: str) -> None:
        super().__init__(description)
        self.rule = rule

    def body(self) -> dict[str, Any]:
        return {**super().body(), "rule": self.rule}


class UnprocessableClient(DomainError):
    """A client configuration that cannot work (a public client that acts for itself)."""

    status_code = 422


class NotInSession(DomainError):
    """A sign-out with an access token tied to no session (a service client's)."""

    status_code = 400

    def __init__(self) -> None:
        super().__init__("This access token belongs to no session: there is none to end.")


class WrongPassword(DomainError):
    status_code = 400

    def __init__(self) -> None:
        super().__init__("The current password is not correct.")


class InvalidInput(DomainError):
    """A request that does not match its schema; `errors` says where (never the input)."""

    status_code = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        super().__init__(f"{where}: {first['msg']}" if where else str(first["msg"]))
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": self.errors}


# --- the protocol and the server's own answers ---------------------------------------------


class HTTPError(ServiceError):
    """An answer of the HTTP layer itself: no route, wrong method, a malformed request."""

    def __init__(
        self, status: int, description: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status_code = status
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


class RetryLater(ServiceError):
    """Not now: the client may retry after `retry_after` seconds (RFC 9110 §10.2.3)."""

    oauth_error = "temporarily_unavailable"  # RFC 6749 §5.2 (defined in §4.1.2.1)

    def __init__(self, description: str, *, status: int, retry_after: int) -> None:
        super().__init__(description)
        self.status_code = status
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InternalError(ServiceError):
    """A bug: the request id lets an operator find the logged traceback."""

    status_code = 500

    def __init__(self, request_id: str) -> None:
        super().__init__("Internal server error.")
        self.request_id = request_id

    def body(self) -> dict[str, Any]:
        return {**super().body(), "request_id": self.request_id}

    def _token_error(self) -> Answer:
        # The same body everywhere: the request id matters more than the OAuth shape.
        return Answer(self.status_code, _json(self.body()), _NO_STORE)

    def page(self) -> ErrorPage:
        return ErrorPage(
            self.status_code, "Internal Server Error", self.description, request_id=self.request_id
        )


# --- RFC 6749 §4.1.2.1: errors sent back to the client through the browser ---------------


@dataclass(frozen=True, slots=True)
class ClientRedirect:
    """Where an authorization request's errors go: its redirect_uri once validated against
    the client's registered ones, the request's `state`, and our issuer (RFC 9207 §2)."""

    redirect_uri: str
    state: str | None
    issuer: str

    def location(self, error: str, description: str) -> str:
        """The redirect_uri with the error added to its query (RFC 6749 §4.1.2.1), keeping
        the query it was registered with (§3.1.2)."""
        parts = urlsplit(self.redirect_uri)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query += [("error", error), ("error_description", description)]
        if self.state is not None:
            query.append(("state", self.state))
        query.append(("iss", self.issuer))
        return urlunsplit(parts._replace(query=urlencode(query)))


class RedirectToClient(ServiceError):
    """An error to send back to the client that asked (RFC 6749 §4.1.2.1): a 302 to its
    validated redirect_uri where the route's style is REDIRECT, else `error` as that style
    answers it."""

    status_code = 302

    def __init__(self, error: ServiceError, *, to: ClientRedirect) -> None:
        super().__init__(error.description)
        self.error = error
        self.to = to

    @overload
    def answer(self, style: JSON_STYLES) -> Answer: ...
    @overload
    def answer(self, style: ErrorStyle) -> Answer | ErrorPage: ...
    def answer(self, style: ErrorStyle) -> Answer | ErrorPage:
        if style is not ErrorStyle.REDIRECT:
            return self.error.answer(style)
        location = self.to.location(self.error.oauth_error, self.error.description)
        return Answer(self.status_code, b"", {"Location": location}, media_type=None)
