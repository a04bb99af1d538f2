"""Access tokens have one spelling and claims of one type.

RFC 7515 §2 and §7.1 (three base64url segments, no padding, and canonical: one spelling per
byte string), RFC 7515 §4.1.11 (`crit`), RFC 7519 §2 and §4 (NumericDate, unique member
names), RFC 8259 §6 (no NaN), RFC 6749 §3.3 (scope-tokens split on SP only) and RFC 6750 §3
(every refusal is 401 `invalid_token` with a challenge, never a 500; a missing role is 403
with the scopes the route requires).
Forged tokens are signed here, with PyJWT's RSA primitive and the app's own private key.
"""

import base64
import json
import re
import time
import uuid
from typing import Annotated, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import Depends, Security
from jwt.algorithms import RSAAlgorithm

from auth_service.models import User
from auth_service.web.guards import require_roles
from tests.helpers.app import app_of, app_state, b64url, bearer, login, register, request_token

pytestmark = pytest.mark.anyio

ISSUER = "http://testserver"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _object(*parts: dict[str, str]) -> bytes:
    """A JSON object of member names and raw JSON texts (`NaN` and `1e400` stay as written).

    The members of each part in turn: a name in two parts appears twice.
    """
    members = [f"{_json(name)}:{raw}" for part in parts for name, raw in part.items()]
    return ("{" + ",".join(members) + "}").encode()


def _header(client: httpx.AsyncClient, **raw: str) -> dict[str, str]:
    kid = app_state(client).keys.signing.kid
    return {"alg": '"RS256"', "typ": '"at+jwt"', "kid": _json(kid), **raw}


def _claims(user_id: str, **raw: str) -> dict[str, str]:
    """The claims of a token we would issue to `user_id`, as raw JSON texts, with `raw` on top."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": user_id,
        "aud": ISSUER,
        "exp": now + 300,
        "iat": now,
        "jti": "forged-test-jti-0001",
        "client_id": "auth-service",
        "scope": "account email openid profile",
        "roles": [],
        "token_version": 0,
    }
    return {**{name: _json(value) for name, value in claims.items()}, **raw}


def _sign(client: httpx.AsyncClient, header: bytes, payload: bytes) -> str:
    """A compact JWS over exactly these header and payload bytes, signed with our key."""
    rsa = RSAAlgorithm(RSAAlgorithm.SHA256)
    key = rsa.prepare_key(app_state(client).keys.signing.private.to_pem())
    assert isinstance(key, RSAPrivateKey)
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(rsa.sign(signing_input.encode(), key))}"


def _token(client: httpx.AsyncClient, user_id: str, **raw: str) -> str:
    return _sign(client, _object(_header(client)), _object(_claims(user_id, **raw)))


def _challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", header
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def _assert_invalid_token(response: httpx.Response) -> str:
    """A 401 with an RFC 6750 `invalid_token` challenge; returns its error_description."""
    assert response.status_code == 401, response.text
    challenge = _challenge(response)
    assert challenge["error"] == "invalid_token"
    assert challenge["error_description"]
    return challenge["error_description"]


async def _me(client: httpx.AsyncClient, token: str | bytes) -> httpx.Response:
    value = token if isinstance(token, bytes) else token.encode()
    return await client.get("/users/me", headers={b"Authorization": b"Bearer " + value})


async def _user(client: httpx.AsyncClient, email: str) -> str:
    return str((await register(client, email))["id"])


def _unused_bits_set(segment: str) -> str:
    """The segment with its last character's unused low bits set: the same bytes to a lax decoder.

    A canonical last character of a 2- or 3-character group is a multiple of 16 or 4 in the
    alphabet; the next character differs only in bits past the last whole byte.
    """
    assert len(segment) % 4 in (2, 3), "no unused bits in a whole group"
    return segment[:-1] + B64URL[B64URL.index(segment[-1]) + 1]


# --- one spelling (RFC 7515 §2, §7.1) -----------------------------------------------------


def _plus_slash(signature: str) -> str:
    assert "-" in signature or "_" in signature
    return signature.replace("-", "+").replace("_", "/")


SIGNATURE_RESPELLINGS = {
    "standard base64 alphabet": _plus_slash,
    "padding": lambda s: s + "==",
    "one padding character": lambda s: s + "=",
    "junk appended": lambda s: s + "***",
    "space inside": lambda s: s[:100] + " " + s[100:],
    "tab inside": lambda s: s[:100] + "\t" + s[100:],
    "unused bits set": _unused_bits_set,
}


async def _token_with_dash_or_underscore(client: httpx.AsyncClient, user_id: str) -> str:
    # A signature of 342 characters nearly always has one; vary the jti until it does.
    for attempt in range(100):
        token = _token(client, user_id, jti=_json(f"forged-test-jti-{attempt}"))
        if "-" in token.rsplit(".", 1)[1] or "_" in token.rsplit(".", 1)[1]:
            return token
    raise AssertionError("no signature with '-' or '_' in 100 tokens")


@pytest.mark.parametrize("respell", SIGNATURE_RESPELLINGS.values(), ids=SIGNATURE_RESPELLINGS)
async def test_respelled_signature_is_refused_before_verification(
    client: httpx.AsyncClient, respell: Any
) -> None:
    user_id = await _user(client, "respell@example.com")
    token = await _token_with_dash_or_underscore(client, user_id)
    signing_input, signature = token.rsplit(".", 1)

    description = _assert_invalid_token(await _me(client, f"{signing_input}.{respell(signature)}"))

    assert "malformed" in description
    assert (await _me(client, token)).status_code == 200


@pytest.mark.parametrize(
    "suffix", ["é".encode(), b"\xff", "Ω".encode()], ids=["e-acute", "ff", "omega"]
)
async def test_non_ascii_bytes_after_the_signature_are_refused(
    client: httpx.AsyncClient, suffix: bytes
) -> None:
    user_id = await _user(client, "nonascii@example.com")
    token = _token(client, user_id)

    description = _assert_invalid_token(await _me(client, token.encode() + suffix))

    assert "malformed" in description
    assert (await _me(client, token)).status_code == 200


async def test_payload_segment_with_unused_bits_set_is_malformed_not_a_bad_signature(
    client: httpx.AsyncClient,
) -> None:
    # A 3-character final group: pad the jti until the payload's length leaves one.
    user_id = await _user(client, "bits@example.com")
    for pad in range(3):
        token = _token(client, user_id, jti=_json("j" * (20 + pad)))
        header, payload, signature = token.split(".")
        if len(payload) % 4 == 3:
            break
    respelled = f"{header}.{_unused_bits_set(payload)}.{signature}"

    description = _assert_invalid_token(await _me(client, respelled))

    assert "malformed" in description


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda h, p, s: f"{h}==.{p}.{s}", id="padded header"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.", id="four segments"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.{s}", id="two signatures"),
        pytest.param(lambda h, p, s: f"{h}.{p}", id="two segments"),
    ],
)
async def test_token_that_is_not_three_base64url_segments_is_malformed(
    client: httpx.AsyncClient, shape: Any
) -> None:
    user_id = await _user(client, "segments@example.com")
    token = _token(client, user_id)

    description = _assert_invalid_token(await _me(client, shape(*token.split("."))))

    assert "malformed" in description


async def test_over_long_token_is_refused_even_when_signed_by_us(
    client: httpx.AsyncClient,
) -> None:
    user_id = await _user(client, "long@example.com")
    long = _token(client, user_id, padding=_json("x" * 8000))

    description = _assert_invalid_token(await _me(client, long))

    assert "malformed" in description
    assert (await _me(client, _token(client, user_id, padding=_json("x" * 100)))).status_code == 200


async def test_token_issued_by_the_token_endpoint_is_canonical_and_accepted(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "issued@example.com")
    token = await login(client, "issued@example.com")

    for segment in token.split("."):
        assert b64url(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))) == segment
    assert (await _me(client, token)).status_code == 200


# --- claims and header members of the wrong type (RFC 7519 §2, §4; RFC 9068 §2.2) --------

# Each a valid value in the wrong type, or a number outside any sane date; the strings are
# times jose would have accepted, the rest made it answer 500 or compare equal to ours.
_WRONG_DATES = ("null", "[]", "{}", "1e400", "true", "-1")
WRONG_CLAIMS = [
    *[
        pytest.param("exp", raw, id=f"exp={raw}")
        for raw in _WRONG_DATES
        if raw not in ("true", "-1")
    ],
    *[
        pytest.param(claim, raw, id=f"{claim}={raw}")
        for claim in ("nbf", "iat")
        for raw in _WRONG_DATES
    ],
    pytest.param("exp", '"9999999999"', id="exp a numeric string"),
    pytest.param("nbf", '"0"', id="nbf a numeric string"),
    pytest.param("iat", '"0"', id="iat a numeric string"),
    pytest.param("exp", "1e20", id="exp past year 9999"),
    pytest.param("token_version", "false", id="token_version=false"),
    pytest.param("token_version", "0.0", id="token_version=0.0"),
    pytest.param("jti", '""', id="empty jti"),
    pytest.param("client_id", '""', id="empty client_id"),
    pytest.param("roles", '"admin"', id="roles a string"),
    pytest.param("roles", "[1]", id="roles not strings"),
    pytest.param("scope", '["account"]', id="scope a list"),
    pytest.param("scope", "null", id="scope null"),
]


@pytest.mark.parametrize(("claim", "raw"), WRONG_CLAIMS)
async def test_claim_of_the_wrong_type_is_invalid_token(
    client: httpx.AsyncClient, claim: str, raw: str
) -> None:
    user_id = await _user(client, "types@example.com")

    _assert_invalid_token(await _me(client, _token(client, user_id, **{claim: raw})))

    assert (await _me(client, _token(client, user_id))).status_code == 200


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(str.upper, id="upper case"),
        pytest.param(lambda s: "{" + s + "}", id="braces"),
        pytest.param(lambda s: s.replace("-", ""), id="no hyphens"),
        pytest.param(lambda s: "urn:uuid:" + s, id="urn"),
    ],
)
async def test_subject_in_a_non_canonical_uuid_form_is_invalid_token(
    client: httpx.AsyncClient, spell: Any
) -> None:
    user_id = await _user(client, "subject@example.com")
    assert uuid.UUID(spell(user_id)) == uuid.UUID(user_id)

    _assert_invalid_token(await _me(client, _token(client, user_id, sub=_json(spell(user_id)))))

    assert (await _me(client, _token(client, user_id, sub=_json(user_id)))).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"crit": '["x-unknown"]', "x-unknown": "1"}, id="crit unknown"),
        pytest.param({"crit": '["exp"]'}, id="crit registered name"),
        pytest.param({"b64": "false", "crit": '["b64"]'}, id="b64 false"),
        pytest.param({"b64": "true"}, id="b64 true"),
        pytest.param({"typ": '["at+jwt"]'}, id="typ a list"),
        pytest.param({"kid": "null"}, id="kid null"),
        pytest.param({"alg": '["RS256"]'}, id="alg a list"),
    ],
)
async def test_header_with_unsupported_or_mistyped_members_is_invalid_token(
    client: httpx.AsyncClient, raw: dict[str, str]
) -> None:
    user_id = await _user(client, "header@example.com")
    token = _sign(client, _object(_header(client, **raw)), _object(_claims(user_id)))

    _assert_invalid_token(await _me(client, token))

    assert (await _me(client, _token(client, user_id))).status_code == 200


# --- strict JSON (RFC 7515 §4, RFC 7519 §4, RFC 8259 §6) ----------------------------------


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
async def test_claims_with_nan_or_infinity_are_invalid_token(
    client: httpx.AsyncClient, raw: str
) -> None:
    user_id = await _user(client, "nan@example.com")

    _assert_invalid_token(await _me(client, _token(client, user_id, extra=raw)))


async def test_claims_with_a_duplicate_member_name_are_invalid_token(
    client: httpx.AsyncClient,
) -> None:
    # A parser keeping the last `sub` and one keeping the first would disagree on the subject.
    user_id = await _user(client, "dup@example.com")
    other = await _user(client, "other@example.com")
    claims = _object({"sub": _json(other)}, _claims(user_id))
    assert json.loads(claims)["sub"] == user_id

    _assert_invalid_token(await _me(client, _sign(client, _object(_header(client)), claims)))


async def test_header_with_a_duplicate_member_name_is_invalid_token(
    client: httpx.AsyncClient,
) -> None:
    user_id = await _user(client, "duphead@example.com")
    header = _object({"alg": '"none"'}, _header(client))

    _assert_invalid_token(await _me(client, _sign(client, header, _object(_claims(user_id)))))


async def test_deeply_nested_header_is_invalid_token_without_any_key(
    client: httpx.AsyncClient,
) -> None:
    # The header is parsed before any signature check: anyone can send this one.
    header = _object(_header(client, x="[" * 1500 + "]" * 1500))
    token = f"{b64url(header)}.{b64url(b'{}')}.{b64url(b'sig')}"

    _assert_invalid_token(await _me(client, token))


# --- scopes split on the ASCII space only (RFC 6749 §3.3) ---------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        "openid\temail",
        "openid\xa0email",
        "openid\u3000email",
        "openid\x1femail",
        "openid\nemail",
        "openid  email",
        " openid",
        "openid ",
        "   ",
    ],
    ids=repr,
)
async def test_requested_scope_not_separated_by_single_spaces_is_invalid_scope(
    client: httpx.AsyncClient, scope: str
) -> None:
    await register(client, "scope@example.com")

    response = await request_token(client, "scope@example.com", scope=scope)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_scope"
    assert (await login(client, "scope@example.com", scope="openid email")).count(".") == 2


@pytest.mark.parametrize("scope", ["account\topenid", "openid\xa0account", "openid  account"])
async def test_scope_claim_not_separated_by_single_spaces_is_invalid_token(
    client: httpx.AsyncClient, scope: str
) -> None:
    user_id = await _user(client, "claim@example.com")

    _assert_invalid_token(await _me(client, _token(client, user_id, scope=_json(scope))))

    assert (await _me(client, _token(client, user_id, scope='"openid account"'))).status_code == 200


# --- the challenge of a missing role (RFC 6750 §3) ----------------------------------------


async def test_missing_role_challenge_names_the_scope_the_route_requires(
    client: httpx.AsyncClient,
) -> None:
    # The scope check comes first: only a token holding admin:users reaches the role check.
    user_id = await _user(client, "pleb@example.com")
    token = _token(client, user_id, scope='"account admin:users"')

    response = await client.get("/admin/users", headers=bearer(token))

    assert response.status_code == 403
    challenge = _challenge(response)
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"] == "admin:users"


@pytest.mark.parametrize(
    ("dependency", "scope"),
    [
        pytest.param(Depends(require_roles("auditor")), None, id="no scope"),
        pytest.param(
            Security(require_roles("auditor", scopes=("openid",)), scopes=["account"]),
            "account openid",
            id="the guard's and the route's",
        ),
    ],
)
async def test_missing_role_challenge_names_every_scope_of_the_route_or_none(
    client: httpx.AsyncClient, dependency: Any, scope: str | None
) -> None:
    @app_of(client).get("/probe/auditor")
    async def probe(user: Annotated[User, dependency]) -> str:
        return str(user.id)

    await register(client, "auditor@example.com")
    token = await login(client, "auditor@example.com")

    response = await client.get("/probe/auditor", headers=bearer(token))

    assert response.status_code == 403
    expected = {
        "error": "insufficient_scope",
        "error_description": "This requires the role auditor.",
    }
    assert _challenge(response) == (expected if scope is None else {**expected, "scope": scope})
