"""Settings of keys."""

from typing import Literal

from pydantic import BaseModel, Field

# The longest AUTH_KEY_REFRESH_SECONDS: a rotation's overlap window counts it (keys/service.py).
KEY_REFRESH_MAX_SECONDS = 60


class KeySettings(BaseModel):
    """Signing keys: the algorithm, and how soon a rotation made elsewhere is seen.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    signing_alg: Literal["RS256", "ES256"] = Field(
        default="RS256",
        description="RS256 (RSA 2048) or ES256 (P-256): the one algorithm the service signs "
        "and accepts; a change retires the keys of the earlier one at the next start.",
    )
    key_refresh_seconds: float = Field(
        default=2,
        gt=0,
        le=KEY_REFRESH_MAX_SECONDS,
        description="how often each worker checks the signing keys table for a rotation or "
        "revocation made elsewhere (a cheap query; the keys are reloaded only on a change).",
    )
