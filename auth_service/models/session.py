"""Sign-ins (`sessions`)."""

import uuid
from datetime import datetime

from sqlalchemy import LargeBinary
from sqlmodel import Field, SQLModel

from auth_service.kit.time import utcnow
from auth_service.models.base import UTCDateTime


class LoginSession(SQLModel, table=True):
    """One sign-in and its refreshes: a refresh token family (RFC 9700 §4.14.2).

    The family is kept in this one row, however often it refreshes: its refresh tokens are
    numbered (`refresh_generation` is the live one's) and each is an HMAC of the session's
    id, its number and `refresh_seed` under a key derived from AUTH_SECRET_KEY
    (`security.refresh_tokens`), so an earlier token is still recognized, and its reuse
    detected, without a row of its own; nobody can make one from a session id alone.

    Deleting the row ends the session: its refresh tokens die with it, and the access
    tokens issued in it (which carry its id as `sid`) are refused from then on.
    """

    __tablename__ = "sessions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    client_id: str = Field(max_length=255)
    # The live refresh token's scope: the sign-in's, less what the user or client has lost
    # since (a refresh never widens it).
    scope: str = Field(max_length=2000)
    # The `aud` of its access tokens (RFC 8707); None: the service's default audience.
    audience: str | None = Field(default=None, max_length=255)
    # The user's token version when it began: a password change or deactivation since
    # refuses its refreshes, even one that committed while this sign-in was in flight.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    refresh_seed: bytes = Field(sa_type=LargeBinary(32))
    refresh_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # When the previous refresh token was spent, and (within AUTH_REFRESH_REUSE_INTERVAL)
    # its answer sealed under AUTH_SECRET_KEY, for a concurrent presentation of that token;
    # the purge clears the answer once the interval has passed.
    refreshed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    successor: bytes | None = Field(default=None, sa_type=LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The absolute end (AUTH_SESSION_MAX_AGE after the sign-in) and the idle one (when the
    # live refresh token expires unused); the purge deletes the row after either.
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    idle_expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
