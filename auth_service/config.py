"""Service settings: `AUTH_*` environment variables and a `.env` file, validated once."""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from auth_service.access.settings import AccessSettings
from auth_service.accounts.settings import AccountSettings
from auth_service.clients.settings import ClientSettings
from auth_service.keys.settings import KeySettings
from auth_service.security.crypto import estimate_entropy_bits
from auth_service.sessions.settings import SessionSettings
from auth_service.web.settings import HTTPSettings

logger = logging.getLogger(__name__)

ENV_PREFIX = "AUTH_"
# Values that show up in tutorials and sample .env files; never acceptable in production.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me", "dev"})
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_PRODUCTION_SECRET_BITS = 128
KEY_GENERATION_HINT = "generate one with `openssl rand -base64 32`"


def secret_key_weakness(value: str) -> str | None:
    """Why `value` is not fit to be the production secret key, or None when it is."""
    if value.lower() in PLACEHOLDER_SECRETS or len(value) < MIN_PRODUCTION_SECRET_LENGTH:
        return f"must be a random value of at least {MIN_PRODUCTION_SECRET_LENGTH} characters"
    bits = estimate_entropy_bits(value)
    if bits < MIN_PRODUCTION_SECRET_BITS:
        return (
            f"has too little entropy (about {bits:.0f} bits by a simple estimate, "
            f"{MIN_PRODUCTION_SECRET_BITS} needed)"
        )
    return None


class ServiceSettings(BaseModel):
    """The service itself: where it runs, its database, its issuer, its secret and its logs."""

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` demands a strong secret key (or an existing key file) and an "
        "`https` issuer; `development` only warns about a weak key.",
    )
    database_url: str = Field(
        default="sqlite:///./auth.db",
        description="`sqlite:///path` (a file: an in-memory database is refused) or "
        "`postgresql://user:pass@host/db`, written as-is: the service picks its drivers.",
    )
    database_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="seconds a request waits for the database (connect, a free pooled "
        "connection, SQLite's write lock) before it answers 503.",
    )
    issuer: str = Field(
        default="http://localhost:8000",
        description="Public base URL: the `iss` claim and every URL in the discovery "
        "metadata. Other services are given this, not the address `serve` listens on.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts private signing keys. Read from `secret_key_file` when unset; "
        "generated there outside production.",
    )
    secret_key_file: Path = Field(
        default=Path(".auth-secret-key"),
        description="The key when `AUTH_SECRET_KEY` is unset: created with a random key on "
        "first start outside production; in production it must exist (a container secret), "
        "be no symbolic link and be closed to group and others.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="`WARNING` and above also turn the access lines off."
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            # RFC 8414 §2: the issuer has no query or fragment components.
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if scheme == "sqlite" and make_url(value).database in (None, "", ":memory:"):
            # Each connection would get an empty database of its own: migrated in one,
            # read in another.
            raise ValueError("must name a SQLite file (an in-memory database is not shared)")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Self:
        if self.env != "production":
            return self
        if self.secret_key is None:
            # A file named on purpose (a container secret) is checked when it is read;
            # production never generates a key of its own.
            if "secret_key_file" not in self.model_fields_set:
                raise ValueError(
                    "AUTH_SECRET_KEY (or AUTH_SECRET_KEY_FILE) is required when "
                    f"AUTH_ENV=production: {KEY_GENERATION_HINT}"
                )
        elif weakness := secret_key_weakness(self.secret_key.get_secret_value()):
            raise ValueError(f"AUTH_SECRET_KEY {weakness} in production: {KEY_GENERATION_HINT}")
        if not self.issuer.startswith("https://"):
            raise ValueError("AUTH_ISSUER must be an https URL in production")
        return self


class Settings(
    ServiceSettings,
    HTTPSettings,
    AccountSettings,
    ClientSettings,
    SessionSettings,
    AccessSettings,
    KeySettings,
    BaseSettings,
):
    """Everything the service can be told, validated once; one instance is built per app.

    The groups are defined beside what they configure (`<capability>/settings.py`, this
    module's `ServiceSettings`) and share the `AUTH_` prefix; a new setting carries its unit
    in its name (`_seconds`, `_bytes`).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    @property
    def token_audience(self) -> str:
        """The `aud` of access tokens that ask for none: AUTH_AUDIENCE, else the issuer."""
        return self.audience or self.issuer


def unknown_variables(environ: Mapping[str, object]) -> list[str]:
    """`AUTH_*` variables that match no setting: most likely typos."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def warn_unknown_variables(environ: Mapping[str, object] | None = None) -> None:
    """Log each unknown AUTH_* name, from the environment or the .env file."""
    if environ is None:
        environ = {**dotenv_values(".env"), **os.environ}
    for name in unknown_variables(environ):
        logger.warning("ignoring unknown setting %s (a typo?)", name)
