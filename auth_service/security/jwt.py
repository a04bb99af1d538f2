"""JWS signing and verification of access tokens: the only module that imports jose.

Access tokens follow RFC 9068 (JWT profile for OAuth 2.0 access tokens) and RFC 8725
(JWT BCP): one allowed algorithm, our own keys looked up by `kid`, explicit `typ`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jose import jwk
from jose import jwt as jose_jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

# RFC 9068 §2.1: access tokens carry `typ: at+jwt`; §4 resource servers must check it.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type)
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")


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
    private = jwk.construct(private_pem, alg)
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
    audience: str,
) -> dict[str, Any]:
    """Verify signature, header and registered claims; return the claims."""
    try:
        header = jose_jwt.get_unverified_header(token)
    except JWTError:
        raise TokenError("The access token is malformed.") from None
    if str(header.get("typ", "")).lower() not in _ACCEPTED_TYPES:
        raise TokenError("The token is not an access token.")
    # RFC 8725 §3.1: accept exactly the configured algorithm, never the one the token names.
    if header.get("alg") != algorithm:
        raise TokenError("The token is signed with an unexpected algorithm.")
    key = keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if key is None or key.alg != algorithm:
        raise TokenError("The token is signed with an unknown key.")
    try:
        claims: dict[str, Any] = jose_jwt.decode(
            token,
            key.public,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            options={"leeway": LEEWAY_SECONDS},
        )
    except ExpiredSignatureError:
        raise TokenError("The access token expired.") from None
    except JWTClaimsError as exc:
        raise TokenError(f"The access token is not valid here: {exc}.") from None
    except JWTError:
        raise TokenError("The access token signature is invalid.") from None
    # jose checks iss, aud and exp only when present: RFC 9068 §2.2 makes them all required.
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise TokenError(f"The access token lacks the claim {', '.join(missing)}.")
    if not all(isinstance(claims[name], str) for name in ("sub", "jti", "client_id")):
        raise TokenError("The access token has malformed claims.")
    return claims
