"""OAuth clients (`clients`)."""

from datetime import datetime

from sqlalchemy import JSON, LargeBinary
from sqlmodel import Field, SQLModel

from auth_service.kit.time import utcnow
from auth_service.models.base import UTCDateTime


class OAuthClient(SQLModel, table=True):
    """An OAuth client (RFC 6749 §2): a login form that holds no secret (public), or a
    service that authenticates with one (confidential). Only the SHA-256 digest of the
    secret is stored; the secret itself is shown once, when it is made. After a rotation the
    previous secret may keep working for a grace period of the admin's choosing."""

    __tablename__ = "clients"

    client_id: str = Field(primary_key=True, max_length=255)
    name: str = Field(max_length=200)
    is_confidential: bool
    secret_digest: bytes | None = Field(default=None, sa_type=LargeBinary(32))
    # What tokens issued to it may hold: scopes (built-in ones still need the user's role),
    # grant types, and audiences beyond the service's default. Lists are replaced, never
    # changed in place (a JSON column does not notice an in-place change).
    scopes: list[str] = Field(default_factory=list, sa_type=JSON)
    grant_types: list[str] = Field(default_factory=list, sa_type=JSON)
    audiences: list[str] = Field(default_factory=list, sa_type=JSON)
    redirect_uris: list[str] = Field(default_factory=list, sa_type=JSON)  # reserved
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    secret_rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The secret a rotation replaced, still accepted until `previous_secret_expires_at`, so
    # the services holding it can move to the new one without a moment of refusals.
    previous_secret_digest: bytes | None = Field(default=None, sa_type=LargeBinary(32))
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Stamped into the client's own tokens; raised when it is deactivated or its secret is
    # replaced without a grace period (a leak), which refuses every token it had, for good.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
