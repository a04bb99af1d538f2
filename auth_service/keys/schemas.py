"""Signing keys as admins see them."""

from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)


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
