"""Signing keys (`signing_keys`)."""

from datetime import datetime

from sqlalchemy import LargeBinary
from sqlmodel import Field, SQLModel

from auth_service.kit.time import utcnow
from auth_service.models.base import UTCDateTime


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
