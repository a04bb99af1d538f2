"""OAuth clients' admin request and response bodies."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from auth_service.kit.forms import Input, Integer, Name

ScopeToken = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5B\x5D-\x7E]{1,128}$")]
# What a session stores of its grant (`sessions.scope`, VARCHAR(2000)): a sign-in may be
# granted every scope of its client's list, so the list, space-joined, must fit.
MAX_SCOPE_CHARS = 2000


def _fits_a_session(scopes: list[str]) -> list[str]:
    if len(" ".join(set(scopes))) > MAX_SCOPE_CHARS:
        raise PydanticCustomError(
            "too_long",
            "the scopes, joined by spaces, are longer than {limit} characters",
            {"limit": MAX_SCOPE_CHARS},
        )
    return scopes


Scopes = Annotated[list[ScopeToken], Field(max_length=64), AfterValidator(_fits_a_session)]
GrantType = Literal["password", "refresh_token", "client_credentials"]
# An audience: an API's name or URI, printable, no white space (RFC 7519 §4.1.3 StringOrURI).
Audience = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7E]{1,255}$")]
# The longest a replaced client secret may keep working.
MAX_SECRET_GRACE_SECONDS = 30 * 24 * 3600
RedirectURI = Annotated[str, StringConstraints(pattern=r"^https?://[\x21-\x7E]{1,2040}$")]


class ClientCreate(Input):
    name: Name
    confidential: bool = Field(
        default=True,
        description="A service that keeps a secret (true), or a login form or app that "
        "cannot (false).",
    )
    scopes: Scopes = Field(default_factory=list)
    grant_types: list[GrantType] = Field(
        default_factory=lambda: list[GrantType](["client_credentials"]), min_length=1, max_length=3
    )
    audiences: list[Audience] = Field(
        default_factory=list,
        max_length=32,
        description="APIs its tokens may be for, beside the service's default audience.",
    )
    redirect_uris: list[RedirectURI] = Field(
        default_factory=list, max_length=16, description="Reserved for later grants."
    )


class ClientUpdate(Input):
    name: Name | None = None
    scopes: Scopes | None = None
    grant_types: list[GrantType] | None = Field(default=None, min_length=1, max_length=3)
    audiences: list[Audience] | None = Field(default=None, max_length=32)
    redirect_uris: list[RedirectURI] | None = Field(default=None, max_length=16)
    is_active: bool | None = None


class ClientPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    name: str
    is_confidential: bool
    scopes: list[str]
    grant_types: list[str]
    audiences: list[str]
    redirect_uris: list[str]
    is_active: bool
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret the last rotation replaced is still accepted "
        "(null: it stopped at once)."
    )


class ClientCreated(ClientPublic):
    client_secret: str | None = Field(
        description="Shown this once (null for a public client): only its digest is kept."
    )


class SecretRotation(Input):
    grace_seconds: Integer = Field(
        default=0,
        ge=0,
        le=MAX_SECRET_GRACE_SECONDS,
        description="How long the secret being replaced keeps working, so the services "
        "holding it can move to the new one without a moment of refusals: 0 (the default) "
        "ends it at once, as after a leak; at most 30 days. A secret replaced earlier stops "
        "now either way.",
    )


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str = Field(description="Shown this once: only its digest is kept.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret it replaces is still accepted (null: no longer)."
    )


class ClientsPublic(BaseModel):
    data: list[ClientPublic]
    count: int = Field(description="Total number of clients.")
