"""One catalogue of forged access tokens, run against the service's guards
(`test_guards.py`) and against the verifier other services use (`test_verifier.py`).

The service verifies with python-jose (`security/jwt.py`) and the verifier with PyJWT
(`auth_service_verifier._rules`); both must refuse every token here, for the reason named,
so the token rules cannot drift apart (RFC 8725: one algorithm, the issuer's keys, explicit
typing; RFC 9068 §4: `typ`, `iss`, `aud`, `exp`, required claims; RFC 7515 §2: one
spelling). Each forgery is built from a `Signer` holding the issuer's private key and
differs from `Signer.token()`, which both accept, in one way only.
"""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

# What a token must be refused for; the refusal's description names it.
ALGORITHM = "algorithm"
SIGNATURE = "signature"
UNKNOWN_KEY = "unknown key"
MALFORMED = "malformed"
NOT_ACCESS_TOKEN = "not an access token"
LACKS_CLAIM = "lacks the claim"
MALFORMED_CLAIM = "malformed claim"


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2), as a JWS segment is spelled."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Signer:
    """The issuer's signing key and what its tokens say: `token()` is accepted."""

    private_pem: bytes
    kid: str
    issuer: str
    audience: str
    sub: str

    def claims(self, **overrides: Any) -> dict[str, Any]:
        # `iat` is now, not a second earlier: the service refuses tokens older than the account.
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.sub,
            "aud": self.audience,
            "exp": int(now) + 300,
            "iat": now,
            "jti": "forged-test-jti-0001",
            "client_id": "auth-service",
            "scope": "account email openid profile",
            "roles": [],
            "token_version": 0,
        }
        claims.update(overrides)
        return claims

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        typ: str = "at+jwt",
        alg: str = "RS256",
        **header: Any,
    ) -> str:
        """Signed with the issuer's key; `kid` and `typ` as the issuer sets them unless given."""
        return jwt.encode(
            self.claims() if claims is None else claims,
            self.private_pem,
            algorithm=alg,
            headers={"kid": self.kid if kid is None else kid, "typ": typ, **header},
        )

    def raw(self, header: bytes, payload: bytes) -> str:
        """A compact JWS over exactly these bytes, signed (RS256) with the issuer's key."""
        algorithm = RSAAlgorithm(RSAAlgorithm.SHA256)
        key = algorithm.prepare_key(self.private_pem)
        assert isinstance(key, rsa.RSAPrivateKey)
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        return f"{signing_input}.{b64url(algorithm.sign(signing_input.encode(), key))}"

    def public_pem(self) -> bytes:
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class Forgery:
    """A token that must be refused, and a word its refusal's description contains."""

    name: str
    make: Callable[[Signer], str]
    says: str
    guard: bool = True  # False: a rule only the verifier has (`reason` says why)
    reason: str = ""


def _alg_none(signer: Signer) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": signer.kid}
    return f"{_b64url_json(header)}.{_b64url_json(signer.claims())}."


def _hs256_with_public_key(signer: Signer) -> str:
    # Algorithm confusion: the attacker knows our public key and uses it as an HMAC secret.
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signer.kid}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(signer.claims())}"
    mac = hmac.new(signer.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _foreign_key_under_our_kid(signer: Signer) -> str:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = foreign.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(signer.claims(), pem, algorithm="RS256", headers=_header(signer))


def _header(signer: Signer) -> dict[str, str]:
    return {"kid": signer.kid, "typ": "at+jwt"}


def _no_kid(signer: Signer) -> str:
    return jwt.encode(
        signer.claims(), signer.private_pem, algorithm="RS256", headers={"typ": "at+jwt"}
    )


def _numeric_kid(signer: Signer) -> str:
    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": 7})
    return signer.raw(header.encode(), json.dumps(signer.claims()).encode())


def _tampered_payload(signer: Signer) -> str:
    header, _, signature = signer.token().split(".")
    claims = signer.claims(roles=["admin"], scope="account admin:users")
    return f"{header}.{_b64url_json(claims)}.{signature}"


def _without(claim: str) -> Callable[[Signer], str]:
    def make(signer: Signer) -> str:
        claims = signer.claims()
        del claims[claim]
        return signer.token(claims)

    return make


def _with(**claims: Any) -> Callable[[Signer], str]:
    return lambda signer: signer.token(signer.claims(**claims))


def _respelled(spell: Callable[[list[str]], list[str]]) -> Callable[[Signer], str]:
    return lambda signer: ".".join(spell(signer.token().split(".")))


def _padded(segments: list[str]) -> list[str]:
    return [*segments[:2], segments[2] + "=="]  # RS256: 342 characters, two short of 4n


def _last_bits_set(segments: list[str]) -> list[str]:
    # RFC 4648 §3.5: a non-canonical last character decodes to the same bytes.
    header, payload, signature = segments
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(signature) % 4 == 0:
        return segments  # no spare bits (never for RS256's 256 bytes: 342 characters)
    last = alphabet[alphabet.index(signature[-1]) + 1]
    return [header, payload, signature[:-1] + last]


def _duplicate_member(signer: Signer) -> str:
    claims = json.dumps(signer.claims(), separators=(",", ":"))
    payload = claims[:-1] + ',"sub":"someone-else"}'
    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": signer.kid})
    return signer.raw(header.encode(), payload.encode())


def _payload_not_an_object(signer: Signer) -> str:
    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": signer.kid})
    return signer.raw(header.encode(), b'["iss","sub"]')


def _nan_expiry(signer: Signer) -> str:
    claims = json.dumps({**signer.claims(), "exp": 0}, separators=(",", ":"))
    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": signer.kid})
    return signer.raw(header.encode(), claims.replace('"exp":0', '"exp":NaN').encode())


FORGERIES = [
    Forgery("alg none", _alg_none, ALGORITHM),
    Forgery("HS256 keyed with the public key", _hs256_with_public_key, ALGORITHM),
    Forgery("RS384 under an RS256 key", lambda s: s.token(alg="RS384"), ALGORITHM),
    Forgery("a foreign key under our kid", _foreign_key_under_our_kid, SIGNATURE),
    Forgery("tampered payload", _tampered_payload, SIGNATURE),
    Forgery("unknown kid", lambda s: s.token(kid="unknown-kid"), UNKNOWN_KEY),
    Forgery("empty kid", lambda s: s.token(kid=""), UNKNOWN_KEY),
    Forgery("numeric kid", _numeric_kid, UNKNOWN_KEY),
    Forgery("no kid", _no_kid, UNKNOWN_KEY),
    Forgery("typ JWT", lambda s: s.token(typ="JWT"), NOT_ACCESS_TOKEN),
    Forgery("typ id_token+jwt", lambda s: s.token(typ="id_token+jwt"), NOT_ACCESS_TOKEN),
    Forgery("typ empty", lambda s: s.token(typ=""), NOT_ACCESS_TOKEN),
    Forgery("crit header", lambda s: s.token(crit=["exp"]), "not support"),
    Forgery("expired beyond the leeway", _with(exp=int(time.time()) - 120), "expired"),
    Forgery("nbf an hour ahead", _with(nbf=int(time.time()) + 3600), "nbf"),
    Forgery("another issuer", _with(iss="https://evil.example.com"), "issuer"),
    Forgery("another audience", _with(aud="https://other-api.example.com"), "audience"),
    Forgery("audience list without ours", _with(aud=["a", "b"]), "audience"),
    *(Forgery(f"no {claim}", _without(claim), LACKS_CLAIM) for claim in ("jti", "client_id")),
    *(Forgery(f"no {claim}", _without(claim), LACKS_CLAIM) for claim in ("exp", "aud", "iss")),
    Forgery("no iat", _without("iat"), LACKS_CLAIM),
    Forgery("no sub", _without("sub"), LACKS_CLAIM),
    Forgery("numeric jti", _with(jti=12345), MALFORMED_CLAIM),
    Forgery("numeric client_id", _with(client_id=12345), MALFORMED_CLAIM),
    Forgery("exp as a string", _with(exp=str(int(time.time()) + 300)), MALFORMED_CLAIM),
    Forgery("exp true", _with(exp=True), MALFORMED_CLAIM),
    Forgery("roles not a list", _with(roles="admin"), MALFORMED_CLAIM),
    Forgery("scope with two spaces", _with(scope="account  openid"), "scope"),
    Forgery("exp NaN", _nan_expiry, "claims are malformed"),
    Forgery("duplicate claim", _duplicate_member, "claims are malformed"),
    Forgery("claims not an object", _payload_not_an_object, "claims are malformed"),
    Forgery("padded segments", _respelled(_padded), MALFORMED),
    Forgery("non-canonical last character", _respelled(_last_bits_set), MALFORMED),
    Forgery("standard base64 alphabet", _respelled(lambda s: [s[0], s[1], "+/" + s[2]]), MALFORMED),
    Forgery("four segments", _respelled(lambda s: [*s, s[2]]), MALFORMED),
    Forgery("over-long", _with(pad="x" * 9000), MALFORMED),
    Forgery(
        "iat an hour ahead",
        _with(iat=int(time.time()) + 3600),
        "iat",
        guard=False,
        reason="the service compares iat with the account's token version instead",
    ),
]

NOT_TOKENS = ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "....", ""]


def forgery_params(*, guard: bool = False) -> list[Any]:
    """FORGERIES as pytest parameters; with `guard`, the verifier-only ones are left out."""
    return [
        pytest.param(forgery, id=forgery.name)
        for forgery in FORGERIES
        if forgery.guard or not guard
    ]
