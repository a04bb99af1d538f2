"""Settings of web."""

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from auth_service.kit.settings import StrList, split_list

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


class HTTPSettings(BaseModel):
    """HTTP: browsers' origins, the limits that keep `serve` safe to expose, trusted proxies.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    cors_origins: StrList = Field(
        default=[],
        description="Origins allowed to call the API from a browser, spelled as a browser "
        "sends them: `https://app.example` or `http://127.0.0.1:5173` (no path, no trailing "
        "slash, no default port); `*` alone for any.",
    )

    # The HTTP server (`serve`, per worker): what keeps it safe to expose
    # (docs/operations/exposure.md).
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
    trusted_proxies: StrList = Field(
        default=[],
        description="Addresses or networks whose X-Forwarded-For/-Proto are believed; "
        "`*` for any. None: the socket peer is the client.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_addresses(cls, value: object) -> object:
        entries = split_list(value)
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

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # A browser sends `Origin` in one spelling only (RFC 6454 §6.2), compared as written:
        # any other spelling would never match, and the browser would show only a failure.
        if value == ["*"]:
            return value
        return [_check_origin(entry) for entry in value]
