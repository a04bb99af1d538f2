"""Service settings: `AUTH_*` environment variables and a `.env` file, validated once."""

import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from auth_service.accounts import emails
from auth_service.security.crypto import estimate_entropy_bits

logger = logging.getLogger(__name__)

ENV_PREFIX = "AUTH_"
# Values that show up in tutorials and sample .env files; never acceptable in production.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me", "dev"})
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_PRODUCTION_SECRET_BITS = 128
KEY_GENERATION_HINT = "generate one with `openssl rand -base64 32`"
# The longest AUTH_KEY_REFRESH_SECONDS: a rotation's overlap window counts it (keys/service.py).
KEY_REFRESH_MAX_SECONDS = 60


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


_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
_LOOPBACK_NAMES = ("localhost", "127.", "[::1]")


def _serialized_origin(entry: str) -> str | None:
    """The origin `entry` names, spelled as a browser sends it in `Origin` (RFC 6454 §6.2:
    lowercase scheme and host, the port only when it is not the scheme's default, nothing
    else); None when it names none (no host, another scheme, a wildcard)."""
    if "://" not in entry:
        # A browser on the machine itself is served over http; anything else over https.
        entry = ("http://" if entry.lower().startswith(_LOOPBACK_NAMES) else "https://") + entry
    parts = urlsplit(entry)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        return None
    if ":" in host:
        host = f"[{host}]"
    if scheme not in _DEFAULT_PORTS or not _HOST.fullmatch(host):
        return None
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, _DEFAULT_PORTS[scheme]) else "")


def _check_origin(entry: str) -> str:
    """`entry` if it is an origin as a browser spells it (so an `Origin` header can equal
    it), else ValueError with the spelling that would be, when there is one."""
    serialized = _serialized_origin(entry)
    if serialized == entry:
        return entry
    if entry.lower() == "null":
        reason = "'null' is the origin of sandboxed pages and files, which any site can make"
    elif "*" in entry:
        reason = "a wildcard matches nothing here: list each origin, or '*' alone for any"
    elif serialized is None:
        reason = "an origin is http:// or https://, a host and an optional port, nothing else"
    else:
        reason = f"did you mean {serialized!r}?"
    raise ValueError(f"{entry!r} is not an origin: {reason}")


def _split_list(value: object) -> object:
    """Accept `a,b` and JSON-style `["a", "b"]` for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything the service can be told; one instance is built per app."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

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
    audience: str | None = Field(
        default=None, description="`aud` of access tokens; defaults to the issuer."
    )
    allowed_audiences: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Audiences any client may ask tokens for (`audience` or RFC 8707 "
        "`resource`), beside the default and a client's own list.",
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
    signing_alg: Literal["RS256", "ES256"] = Field(
        default="RS256",
        description="RS256 (RSA 2048) or ES256 (P-256): the one algorithm the service signs "
        "and accepts; a change retires the keys of the earlier one at the next start.",
    )
    access_token_ttl: int = Field(default=900, ge=60, le=86_400, description="seconds")
    refresh_token_ttl: int = Field(
        default=14 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="seconds a refresh token stays usable unused (the session's idle limit); "
        "every refresh starts it afresh.",
    )
    session_max_age: int = Field(
        default=30 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="seconds a session (one sign-in and its refreshes) lasts at most, however "
        "often it refreshes; then the user signs in again.",
    )
    refresh_reuse_interval: int = Field(
        default=0,
        ge=0,
        le=300,
        description="seconds within which a spent refresh token may be presented again and "
        "get the same answer as the first time (concurrent tabs, retried requests); "
        "0: any second presentation ends the session.",
    )
    max_sessions_per_user: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="live sessions one user may have; a sign-in beyond it ends that user's "
        "oldest session.",
    )
    purge_interval_seconds: int = Field(
        default=600,
        ge=1,
        le=86_400,
        description="how often each worker deletes expired sessions and revoked access "
        "tokens, and the answers kept for the refresh reuse interval once it has passed "
        "(in small batches).",
    )
    key_refresh_seconds: float = Field(
        default=2,
        gt=0,
        le=KEY_REFRESH_MAX_SECONDS,
        description="how often each worker checks the signing keys table for a rotation or "
        "revocation made elsewhere (a cheap query; the keys are reloaded only on a change).",
    )
    client_ids: Annotated[list[str], NoDecode] = Field(
        default=["auth-service"],
        min_length=1,
        description="Public OAuth clients allowed to use the password grant; the first "
        "is assumed when a request names none.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Origins allowed to call the API from a browser, spelled as a browser "
        "sends them: `https://app.example` or `http://127.0.0.1:5173` (no path, no trailing "
        "slash, no default port); `*` alone for any.",
    )
    registration_open: bool = Field(
        default=True,
        description="`false` makes `POST /users` answer 403 (admins can still create users).",
    )
    allow_unicode_email: bool = Field(
        default=False,
        description="Let new accounts have non-ASCII local parts (each in one script); "
        "off, a look-alike such as a Cyrillic `а` in `аlice` cannot be registered.",
    )
    bootstrap_admin_email: str | None = Field(
        default=None,
        description="An admin to create at start-up while no account holds the admin role "
        "and the address is free; never promotes or reactivates an existing account.",
    )
    bootstrap_admin_password: SecretStr | None = Field(
        default=None, description="The password of `AUTH_BOOTSTRAP_ADMIN_EMAIL`'s account."
    )
    # Each step doubles the cost: 16 is ~5 s a hash here, more would stall start-up and logins.
    bcrypt_rounds: int = Field(
        default=12,
        ge=4,
        le=16,
        description="bcrypt cost; stored hashes of another cost are upgraded at the next login.",
    )
    password_min_length: int = Field(
        default=15,
        ge=8,
        le=64,
        description="Minimum password length in characters after NFKC (NIST SP 800-63B rev. 4: "
        "15 for a single factor, 8 where every user also has a second factor).",
    )
    password_hash_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="bcrypt computations running at once (worker threads).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="`WARNING` and above also turn the access lines off."
    )

    # The HTTP server (`serve`, per worker): what keeps it safe to expose (README "Exposure").
    http_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Bytes of a request line and headers together; beyond them 431 and close.",
    )
    http_header_timeout_seconds: float = Field(
        default=10,
        ge=1,
        le=300,
        description="Seconds for a whole request head to arrive, from the connection's opening "
        "(or a kept-alive request's first byte); else 408 and close.",
    )
    http_body_timeout_seconds: float = Field(
        default=30,
        ge=1,
        le=600,
        description="Seconds for a whole request body to arrive after its head; else 408 "
        "(a close, once the service has answered).",
    )
    http_keep_alive_timeout_seconds: int = Field(
        default=5, ge=1, le=300, description="Seconds an idle kept-alive connection stays open."
    )
    http_max_connections: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Open connections, and requests in flight, per worker; beyond them 503 "
        "with `Retry-After: 1`.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Addresses or networks whose X-Forwarded-For/-Proto are believed; "
        "`*` for any. None: the socket peer is the client.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_addresses(cls, value: object) -> object:
        entries = _split_list(value)
        if not isinstance(entries, list) or entries == ["*"]:
            return entries
        normalized = []
        for entry in entries:
            try:
                # strict: a network with host bits set (10.0.0.1/8) is a typo, not a network
                address = (
                    ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
                )
            except (TypeError, ValueError):
                raise ValueError(
                    f"{entry!r} is not an IP address or network ('*' alone trusts any)"
                ) from None
            normalized.append(str(address))
        return normalized

    @field_validator("client_ids", "cors_origins", "allowed_audiences", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # A browser sends `Origin` in one spelling only (RFC 6454 §6.2), compared as written:
        # any other spelling would never match, and the browser would show only a failure.
        if value == ["*"]:
            return value
        return [_check_origin(entry) for entry in value]

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

    @field_validator("bootstrap_admin_email")
    @classmethod
    def _bootstrap_address(cls, value: str | None) -> str | None:
        return None if value is None else emails.parse(value).address

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
    def _bootstrap_address_allowed(self) -> "Settings":
        if self.bootstrap_admin_email is not None:
            address = emails.parse(self.bootstrap_admin_email)
            try:
                emails.check_new_address(address, allow_unicode=self.allow_unicode_email)
            except emails.InvalidEmail as exc:
                raise ValueError(f"AUTH_BOOTSTRAP_ADMIN_EMAIL: {exc}") from None
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> "Settings":
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

    @property
    def token_audience(self) -> str:
        return self.audience or self.issuer

    @property
    def default_client_id(self) -> str:
        return self.client_ids[0]


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
