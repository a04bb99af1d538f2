"""Database tables. Request and response shapes live in `schemas.py`."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, LargeBinary, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Relationship, SQLModel

# Same constraint names on SQLite and PostgreSQL, so autogenerate and migrations agree.
SQLModel.metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ADMIN_ROLE = "admin"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # As typed (NFKC-normalized): what the user sees and mail goes to.
    email: str = Field(max_length=320)
    # `security.emails` key (local part NFKC + case folded): one account per mailbox
    # however it is spelled; the unique constraint makes registration race-free.
    email_key: str = Field(max_length=320, unique=True)
    hashed_password: str = Field(max_length=255)
    name: str | None = Field(default=None, max_length=200)
    is_active: bool = True
    is_verified: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Carried in every access token; raising it (password change, deactivation) revokes
    # all earlier tokens exactly, even one whose login read the old password hash.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})

    role_links: list["UserRole"] = Relationship(
        sa_relationship_kwargs={"lazy": "selectin", "cascade": "all, delete-orphan"},
    )

    @property
    def roles(self) -> list[str]:
        return sorted(link.role for link in self.role_links)

    def set_roles(self, roles: list[str]) -> None:
        wanted = set(roles)
        self.role_links = [link for link in self.role_links if link.role in wanted] + [
            UserRole(user_id=self.id, role=role) for role in sorted(wanted - set(self.roles))
        ]


class UserRole(SQLModel, table=True):
    __tablename__ = "user_roles"

    user_id: uuid.UUID = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    role: str = Field(max_length=64, primary_key=True, index=True)


class SigningKey(SQLModel, table=True):
    """A JWS signing key; the private part is AES-GCM encrypted under AUTH_SECRET_KEY.

    Its state follows from the timestamps (`services.keys.state_of`): a rotation publishes
    a new key that signs from a later `signs_from` and sets the earlier keys' `retires_at`
    (when the last token they signed has expired), an emergency revocation `revoked_at`.
    Rows are never deleted: they are the record of which key signed when.
    """

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    alg: str = Field(max_length=16)
    private_key_encrypted: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    signs_from: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    retires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


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


class RevokedAccessToken(SQLModel, table=True):
    """An access token revoked before its `exp` (RFC 7009), by its `jti`: refused by the
    guards and introspection until it would have expired anyway, then purged."""

    __tablename__ = "revoked_access_tokens"

    jti: str = Field(primary_key=True, max_length=255)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
