"""RFC 6749 token endpoint bodies."""

from pydantic import (
    BaseModel,
)


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 successful token response."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (RFC 6750 token type)
    expires_in: int
    scope: str
    # RFC 6749 §5.1: with the grants that start or continue a session.
    refresh_token: str | None = None


class OAuth2ErrorResponse(BaseModel):
    """RFC 6749 §5.2 error response."""

    error: str
    error_description: str
