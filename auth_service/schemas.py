"""Request and response bodies. Tables live in `models.py`; nothing here is stored."""

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from auth_service.models import LoginSession
from auth_service.security import emails

# A hard ceiling, far above the policy's maximum: anything longer is refused while parsing,
# before any hashing or pattern matching; the policy then explains its own limit.
PASSWORD_HARD_LIMIT = 1024


def _address(text: str) -> str:
    try:
        return emails.parse(text).address
    except emails.InvalidEmail as exc:
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: {reason}", {"reason": str(exc)}
        ) from None


# Kept as typed (NFKC-normalized); accounts are unique by `emails.parse(...).key`, so
# Alice@x, alice@x and ａｌｉｃｅ@x are one account.
Email = Annotated[
    str, AfterValidator(_address), WithJsonSchema({"type": "string", "format": "email"})
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_HARD_LIMIT)]
# Printable text only, 422 otherwise: C0 and C1 controls and DEL (NUL above all: PostgreSQL
# text refuses it), and the bidirectional embeddings, overrides, isolates and marks
# (U+202A-E, U+2066-9, U+200E/F, U+061C) that make a name display as something else
# (CVE-2021-42574, "Trojan Source").
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
PRINTABLE = f"^[^{_CONTROLS}]*$"
_UNPRINTABLE = re.compile(f"[{_CONTROLS}]")


def _printable_as_sent(value: object) -> object:
    # Before stripping: Unicode counts U+0085 (NEL, a C1 control) as white space, so the
    # strip would otherwise turn "\x85bob" into "bob" instead of a 422.
    if isinstance(value, str) and _UNPRINTABLE.search(value):
        raise PydanticCustomError("string_pattern_mismatch", "control or bidi character")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE),
    BeforeValidator(_printable_as_sent),
]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")]


def _integral(value: object) -> object:
    return int(value) if type(value) is float and value.is_integer() else value


# JSON Schema's integer: a number with no fraction, which 60.0 is too; still never a string
# or a boolean (strict), and 1.5 is refused.
Integer = Annotated[int, BeforeValidator(_integral)]


def normalize_email(text: str) -> str | None:
    """The address as registration stores it, or None when `text` is not one."""
    try:
        return emails.parse(text).address
    except emails.InvalidEmail:
        return None


class _Input(BaseModel):
    # Strict: a flag is `true` or `false`, never 1 or "yes", as the OpenAPI document says.
    model_config = ConfigDict(extra="forbid", strict=True)


class UserCreate(_Input):
    email: Email
    password: Password
    name: Name | None = None


class UserUpdateMe(_Input):
    name: Name | None = None


class PasswordChange(_Input):
    current_password: Password
    new_password: Password


class AdminUserCreate(UserCreate):
    roles: list[Role] = Field(default_factory=list, max_length=32)
    is_active: bool = True
    is_verified: bool = False


class AdminUserUpdate(_Input):
    name: Name | None = None
    roles: list[Role] | None = Field(default=None, max_length=32)
    is_active: bool | None = None
    is_verified: bool | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str | None
    is_active: bool
    is_verified: bool
    roles: list[str]
    created_at: datetime
    updated_at: datetime


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int = Field(description="Total number of users matching the query.")


class SessionPublic(BaseModel):
    """A session: one sign-in and its refreshes (a refresh token family)."""

    id: uuid.UUID
    created_at: datetime = Field(description="When the sign-in happened.")
    last_used_at: datetime = Field(description="The sign-in or the latest refresh.")
    expires_at: datetime = Field(
        description="When it ends unless refreshed: its refresh token's expiry, never past "
        "the session's maximum age."
    )
    client_id: str = Field(description="The client that signed in.")
    ip: str | None = Field(description="The address the sign-in came from.")
    user_agent: str | None = Field(description="The sign-in's User-Agent, to 512 characters.")
    current: bool = Field(description="Whether the caller's access token belongs to it.")

    @classmethod
    def of(cls, login: LoginSession, *, current: uuid.UUID | None) -> "SessionPublic":
        """`login` as its owner sees it; `current` is the caller's session, if any."""
        return cls(
            id=login.id,
            created_at=login.created_at,
            last_used_at=login.last_used_at,
            expires_at=min(login.expires_at, login.idle_expires_at),
            client_id=login.client_id,
            ip=login.ip,
            user_agent=login.user_agent,
            current=login.id == current,
        )


class SessionsPublic(BaseModel):
    data: list[SessionPublic]
    count: int = Field(description="Total number of live sessions.")

    @classmethod
    def of(
        cls, found: Sequence[LoginSession], count: int, *, current: uuid.UUID | None
    ) -> "SessionsPublic":
        return cls(data=[SessionPublic.of(s, current=current) for s in found], count=count)


class SigningKeyPublic(BaseModel):
    """A signing key as admins see it: its public identity and state, never private material."""

    model_config = ConfigDict(from_attributes=True)

    kid: str
    alg: str
    state: Literal["next", "signing", "verifying", "retired", "revoked"] = Field(
        description="`next`: in the JWK Set already, signing from `signs_from`; `signing`: "
        "signs new tokens; `verifying`: in the JWK Set, verifying the tokens it signed until "
        "`retires_at`; `retired`: out of the JWK Set since `retires_at`; `revoked`: out at "
        "once, at `revoked_at`."
    )
    created_at: datetime
    signs_from: datetime = Field(
        description="When it signs (or signed) its first token: a rotation's new key some "
        "minutes after `created_at`, once verifiers' cached JWK Sets hold it."
    )
    retires_at: datetime | None = Field(
        description="When the last token it may have signed expires and it leaves the JWK "
        "Set; null while it signs with no next key due."
    )
    revoked_at: datetime | None


class SigningKeysPublic(BaseModel):
    data: list[SigningKeyPublic] = Field(description="Every key ever stored, newest first.")


class UserInfo(BaseModel):
    """OpenID Connect Core §5.3.2 UserInfo response (the claims the scopes allow)."""

    sub: str
    email: str | None = None
    email_verified: bool | None = None
    name: str | None = None


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


class ErrorResponse(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field.")
    msg: str
    type: str


class UnprocessableResponse(BaseModel):
    """Every 422: a request that parsed but says something the service refuses."""

    detail: str = Field(description="What was refused, naming the field.")
    rule: str | None = Field(
        default=None, description="The password policy's rule, when it refused the password."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field, when the request failed validation."
    )


# --- OAuth clients (admin) -------------------------------------------------------------------

# RFC 6749 §3.3 scope-token: printable ASCII but space, '"' and '\'.
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


class ClientCreate(_Input):
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


class ClientUpdate(_Input):
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


class SecretRotation(_Input):
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
