"""The token rules: what makes an access token acceptable, whatever supplies the keys.

RFC 9068 §4 (resource servers check `typ`, `iss`, `aud`, `exp` and the signature with the
issuer's keys), RFC 8725 (JWT BCP: the algorithm is the key's, never the token's choice;
no `none`, no HMAC; explicit typing) and RFC 7515 / 7519 (one spelling of a token: strict
base64url and JSON). These are auth-service's own rules (its `security/jwt.py`); the two
run one catalogue of forged tokens (`tests/forged_tokens.py`) so they cannot drift apart.
Nothing here does I/O: a key source hands in the keys.
"""

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt

# RFC 9068 §2.1 and §4: `typ` is `at+jwt`, or its full media type.
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Asymmetric signatures only: `none` and HS* (a public key used as an HMAC secret) never.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
DEFAULT_LEEWAY_SECONDS = 30.0
# auth-service's tokens are under 1 KiB; the cap bounds the work a junk token can cause.
MAX_TOKEN_LENGTH = 8192
# RFC 7515 §2 and §7.1: three base64url segments without padding, in their canonical
# spelling (RFC 4648 §3.5: the bits past the last whole byte are zero).
_SEGMENT = re.compile(
    r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?"
)
# RFC 6749 §3.3: scope-tokens of printable ASCII but SP, '"' and '\', one space apart.
_SCOPE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*")
_LATEST_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z


class TokenRuleError(ValueError):
    """A rule refused the token; the message is safe to show to its bearer."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """An access token whose signature and claims were verified."""

    sub: str
    scopes: frozenset[str]
    roles: tuple[str, ...]
    client_id: str
    claims: Mapping[str, Any]

    @property
    def expires_at(self) -> float:
        """The token's `exp` (seconds since the epoch)."""
        exp: float = self.claims["exp"]
        return exp


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split and its header read: what picking its key needs."""

    header: Mapping[str, Any]
    signing_input: bytes
    payload_segment: str
    signature: bytes

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if type(kid) is str else None


KeySet = Mapping[str, jwt.PyJWK]  # kid -> a public key with its one algorithm


def parse(token: str) -> ParsedToken:
    """Split `token` and check its header: form, `typ`, algorithm, no `crit`."""
    segments = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else []
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise TokenRuleError("The access token is malformed.")
    header = _json_object(segments[0])
    if header is None:
        raise TokenRuleError("The access token is malformed.")
    # Each member's type is checked before its value is used: the header is the bearer's
    # JSON, and a list or an object where a string belongs is a refusal, never a crash.
    typ = header.get("typ")  # a media type: ASCII, case-insensitive (RFC 7515 §4.1.9)
    if type(typ) is not str or not typ.isascii() or typ.lower() not in ACCEPTED_TYPES:
        raise TokenRuleError("The token is not an access token.")
    alg = header.get("alg")  # RFC 7515 §4.1.1: a string
    if type(alg) is not str or alg not in ALLOWED_ALGORITHMS:
        raise TokenRuleError("The token is signed with an unexpected algorithm.")
    if "kid" in header and type(header["kid"]) is not str:  # RFC 7515 §4.1.4: a string
        raise TokenRuleError("The token is signed with an unknown key.")
    # RFC 7515 §4.1.11: reject a `crit` we do not understand (we understand none); `b64`
    # (RFC 7797) would change what the signature covers.
    if "crit" in header or "b64" in header:
        raise TokenRuleError("The token uses header parameters this service does not support.")
    return ParsedToken(
        header=header,
        signing_input=f"{segments[0]}.{segments[1]}".encode("ascii"),
        payload_segment=segments[1],
        signature=_b64decode(segments[2]),
    )


def verify(
    parsed: ParsedToken,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    leeway: float,
    now: float,
) -> VerifiedToken:
    """Check the signature with the key `kid` names, then every claim."""
    kid = parsed.kid
    key = keys.get(kid) if kid is not None else None
    if key is None:
        raise TokenRuleError("The token is signed with an unknown key.")
    # RFC 8725 §3.1: the algorithm is the key's; the token's `alg` must name it.
    if parsed.header["alg"] != key.algorithm_name:
        raise TokenRuleError("The token is signed with an unexpected algorithm.")
    if not key.Algorithm.verify(parsed.signing_input, key.key, parsed.signature):
        raise TokenRuleError("The access token signature is invalid.")
    claims = _json_object(parsed.payload_segment)
    if claims is None:
        raise TokenRuleError("The access token's claims are malformed.")
    return _checked(claims, issuer=issuer, audience=audience, leeway=leeway, now=now)


def introspected(
    answer: Any, *, issuer: str, audience: str, leeway: float, now: float
) -> VerifiedToken:
    """An introspection answer (RFC 7662 §2.2) held to the rules a token's claims are.

    Only an active access token passes: `active` true and `token_type` `Bearer` (RFC 6750;
    a refresh token's answer says `refresh_token`), then the members a token's claims would
    be, checked as `verify` checks claims (iss, aud, exp with the leeway...).
    """
    if type(answer) is not dict or answer.get("active") is not True:
        raise TokenRuleError("The access token is not active.")
    token_type = answer.get("token_type")  # RFC 6749 §7.1: compared case-insensitively
    if type(token_type) is not str or token_type.lower() != "bearer":
        raise TokenRuleError("The token is not an access token.")
    claims = {name: value for name, value in answer.items() if name not in _ANSWER_ONLY}
    return _checked(claims, issuer=issuer, audience=audience, leeway=leeway, now=now)


_ANSWER_ONLY = frozenset({"active", "token_type"})


def _b64decode(segment: str) -> bytes:
    # Only for segments _SEGMENT accepted: the padding is all that is missing.
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 and RFC 7519 §4: member names are unique; reject rather than guess.
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
    except (ValueError, RecursionError):
        return None
    return value if type(value) is dict else None


def _is_text(value: Any) -> bool:
    return type(value) is str and value != ""


def _is_numeric_date(value: Any) -> bool:
    # RFC 7519 §2: a JSON number (not a bool or a string), neither negative nor overflowed.
    return type(value) in (int, float) and 0 <= value <= _LATEST_NUMERIC_DATE


# RFC 7519 §4.1, RFC 9068 §2.2 and auth-service's claims: the form each must have if present.
_CLAIM_FORMS: dict[str, Callable[[Any], bool]] = {
    "iss": _is_text,
    "sub": _is_text,
    "aud": lambda v: _is_text(v) or (type(v) is list and v != [] and all(map(_is_text, v))),
    "exp": _is_numeric_date,
    "nbf": _is_numeric_date,
    "iat": _is_numeric_date,
    "jti": _is_text,
    "client_id": _is_text,
    "scope": lambda v: type(v) is str,
    "roles": lambda v: type(v) is list and all(type(r) is str for r in v),
}


def _checked(
    claims: dict[str, Any], *, issuer: str, audience: str, leeway: float, now: float
) -> VerifiedToken:
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise TokenRuleError(f"The access token lacks the claim {', '.join(missing)}.")
    malformed = [
        name for name, ok in _CLAIM_FORMS.items() if name in claims and not ok(claims[name])
    ]
    if malformed:
        raise TokenRuleError(f"The access token has a malformed claim {', '.join(malformed)}.")
    if claims["exp"] < now - leeway:
        raise TokenRuleError("The access token expired.")
    if "nbf" in claims and claims["nbf"] > now + leeway:
        raise TokenRuleError("The access token is not valid yet (nbf).")
    # RFC 7519 §4.1.6 gives iat no rule; a token issued in the future is forged or from a
    # clock far off, and either way not to be trusted.
    if claims["iat"] > now + leeway:
        raise TokenRuleError("The access token was issued in the future (iat).")
    if claims["iss"] != issuer:
        raise TokenRuleError("The access token is from another issuer.")
    aud = claims["aud"]
    if audience not in ([aud] if type(aud) is str else aud):
        raise TokenRuleError("The access token is for another audience.")
    scope = claims.get("scope")
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise TokenRuleError("The access token's scope claim is malformed.")
    return VerifiedToken(
        sub=claims["sub"],
        scopes=frozenset(scope.split(" ")) if scope else frozenset(),
        roles=tuple(claims.get("roles", ())),
        client_id=claims["client_id"],
        claims=MappingProxyType(claims),
    )
