"""JWS signing and verification of access tokens: the only module that imports jose.

Access tokens follow RFC 9068 (JWT profile for OAuth 2.0 access tokens) and RFC 8725
(JWT BCP): one allowed algorithm, our own keys looked up by `kid`, explicit `typ`.
`decode` parses the token itself, strictly and once (jose reads base64url and JSON
leniently), has jose's key check the signature, then checks every claim by type and form.
"""

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TLRUCache
from cryptography.hazmat.primitives import serialization
from jose import jwk
from jose import jwt as jose_jwt
from jose.backends.base import Key

# RFC 9068 §2.1: access tokens carry `typ: at+jwt`; §4 resource servers must check it.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type)
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
TOKEN_VERSION_CLAIM = "token_version"  # noqa: S105 (a claim name)
SESSION_CLAIM = "sid"  # the session the token was issued in (OpenID Connect's name for it)
# Ours are under 1 KiB; the cap bounds the work a junk token can cause before any check.
MAX_TOKEN_LENGTH = 8192
# RFC 7515 §2 and §7.1: three base64url segments, no padding, nothing else. Canonical too
# (RFC 4648 §3.5): the bits past the last whole byte are zero, so a last character of a
# 2- or 3-character group is one of 4 or 16 values and each byte string has one spelling.
_SEGMENT = re.compile(
    r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?"
)
# 9999-12-31T23:59:59Z: a later NumericDate is an error, not a time.
_LATEST_NUMERIC_DATE = 253402300799


class TokenError(Exception):
    """The token is not acceptable; the message is safe to show to its bearer."""


@dataclass(frozen=True, slots=True)
class SigningKeyPair:
    """A parsed key: built once at start-up, used for every request."""

    kid: str
    alg: str
    private: Key
    public: Key
    public_jwk: Mapping[str, Any]


def load_key_pair(*, kid: str, alg: str, private_pem: bytes) -> SigningKeyPair:
    """The key pair of a stored private key.

    OpenSSL's check of an RSA private key (primality of its factors) would cost a start, and
    every worker's reload after a rotation, tens of milliseconds a key; it is skipped because
    the key is ours: generated here and stored under AES-GCM with AUTH_SECRET_KEY, whose tag
    has already proved it unaltered (`crypto.decrypt_private_key`).
    """
    key = serialization.load_pem_private_key(
        private_pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    private = jwk.construct(key, alg)
    public = private.public_key()
    public_jwk = {**public.to_dict(), "kid": kid, "alg": alg, "use": "sig"}
    return SigningKeyPair(kid=kid, alg=alg, private=private, public=public, public_jwk=public_jwk)


def encode(claims: Mapping[str, Any], key: SigningKeyPair) -> str:
    token: str = jose_jwt.encode(
        dict(claims),
        key.private,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    return token


def decode(
    token: str,
    *,
    keys: Mapping[str, SigningKeyPair],
    algorithm: str,
    issuer: str,
    audience: str | None,
) -> dict[str, Any]:
    """Verify form, header, signature and claims; return the claims. `audience` None skips
    the audience check alone (introspection answers for tokens of every audience)."""
    segments = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else []
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise TokenError("The access token is malformed.")
    header_segment, payload_segment, signature_segment = segments
    header = _json_object(header_segment)
    if header is None:
        raise TokenError("The access token is malformed.")
    key = _key_for(header, keys=keys, algorithm=algorithm)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    if not key.public.verify(signing_input, _b64decode(signature_segment)):
        raise TokenError("The access token signature is invalid.")
    claims = _json_object(payload_segment)
    if claims is None:
        raise TokenError("The access token's claims are malformed.")
    _check_claims(claims, issuer=issuer, audience=audience)
    return claims


def _b64decode(segment: str) -> bytes:
    # Only for segments _SEGMENT accepted: the padding is all that is missing.
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 and RFC 7519 §4: member names are unique; we reject rather than guess.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # RFC 8259 §6: no NaN or Infinity


_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_not_a_number)


def _json_object(segment: str) -> dict[str, Any] | None:
    """The JSON object a segment holds, in strict UTF-8 (RFC 7515 §5.2), or None."""
    try:
        value = _STRICT_JSON.decode(_b64decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; nesting too deep
        return None
    return value if type(value) is dict else None


def _key_for(
    header: dict[str, Any], *, keys: Mapping[str, SigningKeyPair], algorithm: str
) -> SigningKeyPair:
    typ = header.get("typ")  # a media type: ASCII, case-insensitive (RFC 7515 §4.1.9)
    if type(typ) is not str or not typ.isascii() or typ.lower() not in _ACCEPTED_TYPES:
        raise TokenError("The token is not an access token.")
    # RFC 8725 §3.1: accept exactly the configured algorithm, never the one the token names.
    if header.get("alg") != algorithm:
        raise TokenError("The token is signed with an unexpected algorithm.")
    # RFC 7515 §4.1.11: a recipient must reject a `crit` it does not understand, and we
    # understand none; `b64` (RFC 7797) would change what the signature covers.
    if "crit" in header or "b64" in header:
        raise TokenError("The token uses header parameters this service does not support.")
    kid = header.get("kid")
    key = keys.get(kid) if type(kid) is str else None
    if key is None or key.alg != algorithm:
        raise TokenError("The token is signed with an unknown key.")
    return key


def _is_text(value: Any) -> bool:
    return type(value) is str and value != ""


def _is_numeric_date(value: Any) -> bool:
    # RFC 7519 §2: a JSON number of seconds, not a bool or a string; the range refuses
    # negative and overflowed ones (1e400 parses as infinity).
    return type(value) in (int, float) and 0 <= value <= _LATEST_NUMERIC_DATE


# RFC 7519 §4.1, RFC 9068 §2.2 and our own claims: the form each must have when present.
_CLAIM_FORMS: dict[str, Callable[[Any], bool]] = {
    "iss": _is_text,
    "sub": _is_text,
    "aud": lambda v: _is_text(v) or (type(v) is list and v != [] and all(map(_is_text, v))),
    "exp": _is_numeric_date,
    "nbf": _is_numeric_date,
    "iat": _is_numeric_date,
    "jti": _is_text,
    "client_id": _is_text,
    "scope": lambda v: type(v) is str,  # its scope-token grammar is the guard's to check
    "roles": lambda v: type(v) is list and all(type(r) is str for r in v),
    TOKEN_VERSION_CLAIM: lambda v: type(v) is int,  # not a bool, not 0.0: it must equal ours
    SESSION_CLAIM: _is_text,
}


def _check_claims(claims: dict[str, Any], *, issuer: str, audience: str | None) -> None:
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise TokenError(f"The access token lacks the claim {', '.join(missing)}.")
    malformed = [
        name for name, ok in _CLAIM_FORMS.items() if name in claims and not ok(claims[name])
    ]
    if malformed:
        raise TokenError(f"The access token has a malformed claim {', '.join(malformed)}.")
    now = time.time()
    if claims["exp"] < now - LEEWAY_SECONDS:
        raise TokenError("The access token expired.")
    if "nbf" in claims and claims["nbf"] > now + LEEWAY_SECONDS:
        raise TokenError("The access token is not valid yet (nbf).")
    if claims["iss"] != issuer:
        raise TokenError("The access token is from another issuer.")
    if audience is not None:
        check_audience(claims, audience)


def audiences(claims: Mapping[str, Any]) -> list[str]:
    """RFC 7519 §4.1.3: the (checked) claims' `aud`, one string or a list, as a list."""
    aud = claims["aud"]
    return [aud] if type(aud) is str else list(aud)


def check_audience(claims: Mapping[str, Any], audience: str) -> None:
    """RFC 7519 §4.1.3: `audience` must be among the (checked) claims' `aud`."""
    if audience not in audiences(claims):
        raise TokenError("The access token is for another audience.")


class VerifiedTokenCache:
    """Tokens `decode` accepted, with their claims, each until its `exp`: a token's signature
    is checked once, not on every request that carries it.

    Keyed by the token string: a token has exactly one spelling (`decode` refuses every
    other), so a tampered or re-spelled token is another key and is verified in full.
    Bounded (the least recently used go first) and bound to one key set: asked with other
    keys, it empties itself. It holds nothing about the user: whether the user may still use
    the token is read from the database on every request.
    """

    def __init__(self, *, maxsize: int = 4096) -> None:
        self._cache: TLRUCache[str, dict[str, Any]] = TLRUCache(
            maxsize=maxsize, ttu=lambda _token, claims, _now: claims["exp"], timer=time.time
        )
        self._keys: Mapping[str, SigningKeyPair] | None = None

    def __len__(self) -> int:
        return len(self._cache)

    def decode(
        self,
        token: str,
        *,
        keys: Mapping[str, SigningKeyPair],
        algorithm: str,
        issuer: str,
        audience: str | None,
    ) -> dict[str, Any]:
        """`decode(token, ...)`, answered from the cache while the token is in it.

        The cache holds what holds for every caller (form, signature, issuer, times); the
        audience, which differs between callers, is checked on every call.
        """
        if keys is not self._keys:
            self._cache.clear()
            self._keys = keys
        claims = self._cache.get(token)
        if claims is None:
            claims = decode(token, keys=keys, algorithm=algorithm, issuer=issuer, audience=None)
            self._cache[token] = claims
        if audience is not None:
            check_audience(claims, audience)
        return dict(claims)  # a copy: a caller's change never reaches the cache
