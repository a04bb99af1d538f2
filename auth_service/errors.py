"""Every error the service answers with, in one place.

`OAuth2Error` subclasses render as RFC 6749 §5.2 bodies; `BearerError` subclasses as
RFC 6750 §3 challenges; `DomainError` subclasses as `{"detail": ...}` with their status.
Services raise these; the handlers in `app.py` turn them into responses.
"""

from typing import ClassVar


class OAuth2Error(Exception):
    """RFC 6749 §5.2 error response."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(OAuth2Error):
    error = "invalid_request"


class InvalidClient(OAuth2Error):
    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuth2Error):
    error = "invalid_grant"


class UnsupportedGrantType(OAuth2Error):
    error = "unsupported_grant_type"


class InvalidScope(OAuth2Error):
    error = "invalid_scope"


class BearerError(Exception):
    """RFC 6750 §3 error: answered with a `WWW-Authenticate: Bearer` challenge."""

    error: ClassVar[str | None] = "invalid_token"
    status_code: ClassVar[int] = 401

    def __init__(self, description: str, *, scope: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.scope = scope


class MissingToken(BearerError):
    # RFC 6750 §3.1: a request without credentials gets a challenge with no error code.
    error = None


class InvalidToken(BearerError):
    error = "invalid_token"


class InsufficientScope(BearerError):
    error = "insufficient_scope"
    status_code = 403


class DomainError(Exception):
    """A refused operation: `{"detail": description}` with `status_code`."""

    status_code: ClassVar[int] = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


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
    """A new account may not have this address (see `security.emails.check_new_address`)."""

    status_code = 422

    def __init__(self, reason: str) -> None:
        super().__init__(f"email: {reason}")
        self.reason = reason


class LastAdmin(Conflict):
    def __init__(self) -> None:
        super().__init__("This change would leave no active admin.")


class PasswordRejected(DomainError):
    """The password policy refused a new password; `rule` names which rule."""

    status_code = 422

    def __init__(self, rule: str, description: str) -> None:
        super().__init__(description)
        self.rule = rule


class WrongPassword(DomainError):
    status_code = 400

    def __init__(self) -> None:
        super().__init__("The current password is not correct.")
