"""The access-token denylist (`revoked_access_tokens`)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from auth_service.models.base import UTCDateTime


class RevokedAccessToken(SQLModel, table=True):
    """An access token revoked before its `exp` (RFC 7009), by its `jti`: refused by the
    guards and introspection until it would have expired anyway, then purged."""

    __tablename__ = "revoked_access_tokens"

    jti: str = Field(primary_key=True, max_length=255)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
