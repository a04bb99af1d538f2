"""The FastAPI dependency: a bearer token verified, answered as auth-service's guards do.

RFC 6750: the token travels in `Authorization: Bearer` (§2.1); a request without one gets
401 with a bare challenge (§3.1: no error code), an unacceptable token 401
`error="invalid_token"`, a token without a required scope 403 `error="insufficient_scope"`,
each with `{"detail": ...}` and the scopes the route requires; a token that cannot be
verified now (no keys yet, introspection unanswered) 503 with `Retry-After`; and when this
service names another issuer than the auth service does, 500 saying so (a misconfiguration
here: neither the caller's fault nor worth a retry). It is an `HTTPBearer`, so `/docs` shows
the route as needing a bearer token.
"""

from collections.abc import Sequence
from typing import Protocol

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from auth_service_verifier._errors import (
    InvalidTokenError,
    IssuerMismatchError,
    VerificationUnavailableError,
)
from auth_service_verifier._rules import VerifiedToken

RETRY_AFTER_SECONDS = 10


class Verifier(Protocol):
    """What the dependency needs of a verifier (`TokenVerifier` is one): this module knows
    nothing else of it, so the dependency runs one way, from `TokenVerifier.require` here."""

    async def averify(self, token: str) -> VerifiedToken: ...


def challenge(error: str | None, description: str, scope: str | None) -> str:
    """A `WWW-Authenticate: Bearer` challenge (RFC 6750 §3), as auth-service spells it."""
    parts = []
    if error:
        # §3: error_description excludes '"' and '\' (it is a quoted-string).
        safe = description.replace('"', "'").replace("\\", "/")
        parts += [f'error="{error}"', f'error_description="{safe}"']
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def _refusal(status: int, error: str | None, description: str, scope: str | None) -> HTTPException:
    headers = {"WWW-Authenticate": challenge(error, description, scope)}
    return HTTPException(status, detail=description, headers=headers)


class BearerToken(HTTPBearer):
    """The bearer scheme and the check in one dependency (one dependency is cheaper to
    solve than a scheme with a check on top of it)."""

    def __init__(self, verifier: Verifier, scopes: Sequence[str]) -> None:
        super().__init__(
            scheme_name="HTTPBearer",
            description="An access token of the auth service, verified by this service.",
            auto_error=False,
        )
        self.verifier = verifier
        self.scopes = tuple(scopes)
        self.scope = " ".join(self.scopes) or None

    async def __call__(self, request: Request) -> VerifiedToken:  # type: ignore[override]
        # Read as auth-service's guards (FastAPI's OAuth2PasswordBearer) read it.
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "bearer" or not token:
            raise _refusal(401, None, "An access token is required.", self.scope)
        try:
            verified = await self.verifier.averify(token)
        except VerificationUnavailableError as exc:
            raise HTTPException(
                503, detail=str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        except InvalidTokenError as exc:
            raise _refusal(401, "invalid_token", str(exc), None) from None
        except IssuerMismatchError as exc:
            raise HTTPException(500, detail=str(exc)) from None  # logged where it was found
        missing = [scope for scope in self.scopes if scope not in verified.scopes]
        if missing:
            description = f"The access token lacks the scope {' '.join(missing)}."
            raise _refusal(403, "insufficient_scope", description, self.scope)
        return verified
