"""Every error the service answers with, in one place, each rendering its own answer.

An error carries its status, its body and its headers. The body has one of two shapes, and
`answer` is the one place that picks it: an RFC 6749 §5.2 body (`error`,
`error_description`, never cached) on the OAuth endpoints, `{"detail": ...}` everywhere
else. `OAuth2Error`s are always the former, `BearerError`s add their RFC 6750 §3 challenge.
Services raise these; `handlers.py` (in the app), the middleware and the server send
`answer(path)`. Nothing here knows the web framework.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# The endpoints whose every error is an RFC 6749 §5.2 error response (RFC 7009 §2.2.1 and
# RFC 7662 §2.3 answer as the token endpoint does).
OAUTH_PATHS = frozenset({"/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"})
_NO_STORE = {"Cache-Control": "no-store"}  # RFC 6749 §5.1: token answers are never cached


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

    def answer(self, path: str) -> Answer:
        """The answer to a request for `path`."""
        if path in OAUTH_PATHS:
            return self._token_error()
        return Answer(self.status_code, _json(self.body()), self.headers())

    def _token_error(self) -> Answer:
        body = {"error": self.oauth_error, "error_description": self.description}
        return Answer(self.status_code, _json(body), {**self.headers(), **_NO_STORE})


# --- RFC 6749 §5.2: the token endpoint's own errors ----------------------------------------


class OAuth2Error(ServiceError):
    """RFC 6749 §5.2 error response, wherever it is raised."""

    def headers(self) -> dict[str, str]:
        if self.status_code == 401:
            return {"WWW-Authenticate": 'Basic realm="auth-service"'}  # RFC 6749 §5.2
        return {}

    def answer(self, path: str) -> Answer:
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

    def answer(self, path: str) -> Answer:
        # The same body everywhere: the request id matters more than the OAuth shape.
        headers = dict(_NO_STORE) if path in OAUTH_PATHS else {}
        return Answer(self.status_code, _json(self.body()), headers)
