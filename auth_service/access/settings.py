"""Settings of access."""

from pydantic import BaseModel, Field

from auth_service.kit.settings import StrList


class AccessSettings(BaseModel):
    """Access tokens: their lifetime and audiences.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    access_token_ttl: int = Field(default=900, ge=60, le=86_400, description="seconds")
    audience: str | None = Field(
        default=None, description="`aud` of access tokens; defaults to the issuer."
    )
    allowed_audiences: StrList = Field(
        default=[],
        description="Audiences any client may ask tokens for (`audience` or RFC 8707 "
        "`resource`), beside the default and a client's own list.",
    )
