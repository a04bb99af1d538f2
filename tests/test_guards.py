"""Guards: who may call a protected endpoint with which bearer token.

RFC 6750 §3 (`WWW-Authenticate: Bearer` challenges: 401 `invalid_token`, 403
`insufficient_scope`), RFC 8725 (JWT BCP: one algorithm, our keys only, explicit typing)
and RFC 9068 §4 (resource servers validate `typ`, `iss`, `aud`, `exp` and the claims).
Forged tokens are built here, with PyJWT and foreign keys from `cryptography`.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.guards import require_scopes
from auth_service.services.access import Principal
from tests.conftest import (
    STRONG_PASSWORD,
    admin_headers,
    app_of,
    app_state,
    auth_headers,
    b64url,
    bearer,
    login,
    register,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://testserver"
NEW_PASSWORD = "purple elephants dance quietly at noon"


def _b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer ...` challenge (RFC 6750 §3)."""
    header = response.headers["www-authenticate"]
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", header
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def _assert_invalid_token(response: httpx.Response) -> str:
    """A 401 with an `invalid_token` challenge; returns its error_description."""
    assert response.status_code == 401, response.text
    challenge = _challenge(response)
    assert challenge["error"] == "invalid_token"
    assert challenge["error_description"]
    return challenge["error_description"]


def _claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    """The claims of a token we would issue to `user_id` right now."""
    now = time.time()
    claims = {
        "iss": ISSUER,
        "sub": user_id,
        "aud": ISSUER,
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


def _sign_with_our_key(
    client: httpx.AsyncClient,
    claims: dict[str, Any],
    *,
    kid: str | None = None,
    typ: str = "at+jwt",
) -> str:
    """Sign as the service does: its current private key, its kid, `typ: at+jwt`."""
    signing = app_state(client).keys.signing
    return jwt.encode(
        claims,
        signing.private.to_pem(),
        algorithm="RS256",
        headers={"kid": kid if kid is not None else signing.kid, "typ": typ},
    )


async def _user(client: httpx.AsyncClient, email: str) -> str:
    return str((await register(client, email))["id"])


# --- the challenge (RFC 6750 §3) ----------------------------------------------------------


async def test_request_without_token_gets_a_bearer_challenge_without_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/users/me")

    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    assert header.split(" ", 1)[0] == "Bearer"
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    assert "error=" not in header
    assert "error_description=" not in header


async def test_non_bearer_authorization_is_treated_as_no_token(
    client: httpx.AsyncClient,
) -> None:
    basic = base64.b64encode(b"someone:password").decode()

    response = await client.get("/users/me", headers={"Authorization": f"Basic {basic}"})

    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "...."])
async def test_malformed_token_is_invalid_token_with_a_description(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get("/users/me", headers=bearer(token))

    assert response.status_code == 401
    assert re.fullmatch(
        r'Bearer error="invalid_token", error_description="[^"\\]+"',
        response.headers["www-authenticate"],
    ), response.headers["www-authenticate"]


async def test_token_signed_by_us_with_every_claim_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    # The control for the forgeries below: each differs from this token in one way only.
    user_id = await _user(client, "control@example.com")

    response = await client.get(
        "/users/me", headers=bearer(_sign_with_our_key(client, _claims(user_id)))
    )

    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id


# --- forged tokens (RFC 8725) -------------------------------------------------------------


async def test_unsigned_token_with_alg_none_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "none@example.com")
    kid = app_state(client).keys.signing.kid
    header = {"alg": "none", "typ": "at+jwt", "kid": kid}
    token = f"{_b64url_json(header)}.{_b64url_json(_claims(user_id))}."

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "algorithm" in description


async def test_hs256_token_keyed_with_our_public_key_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # Algorithm confusion: the attacker knows our public key and uses it as an HMAC secret.
    user_id = await _user(client, "confused@example.com")
    keys = app_state(client).keys
    public_pem: bytes = keys.signing.public.to_pem()
    header = {"alg": "HS256", "typ": "at+jwt", "kid": keys.signing.kid}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(_claims(user_id))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "algorithm" in description


async def test_token_signed_by_a_foreign_key_under_our_kid_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user_id = await _user(client, "foreign@example.com")
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_pem = foreign.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = app_state(client).keys.signing.kid
    token = jwt.encode(
        _claims(user_id), foreign_pem, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"}
    )

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "signature" in description


@pytest.mark.parametrize("kid", ["unknown-kid", ""])
async def test_token_naming_an_unknown_kid_is_refused(client: httpx.AsyncClient, kid: str) -> None:
    user_id = await _user(client, "kid@example.com")
    token = _sign_with_our_key(client, _claims(user_id), kid=kid)

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "unknown key" in description


async def test_token_without_kid_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "nokid@example.com")
    signing = app_state(client).keys.signing
    token = jwt.encode(
        _claims(user_id), signing.private.to_pem(), algorithm="RS256", headers={"typ": "at+jwt"}
    )

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "unknown key" in description


async def test_tampered_payload_keeping_the_signature_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "mallory@example.com")
    admin = (await client.get("/users/me", headers=await admin_headers(client))).json()
    token = await login(client, "mallory@example.com")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(sub=admin["id"], roles=["admin"], scope=f"{claims['scope']} admin:users")
    forged = f"{header}.{_b64url_json(claims)}.{signature}"

    as_admin = await client.get("/admin/users", headers=bearer(forged))
    as_self = await client.get("/users/me", headers=bearer(forged))

    assert "signature" in _assert_invalid_token(as_admin)
    _assert_invalid_token(as_self)
    # The untouched token still works: only the tampering is refused.
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200


# --- claims of tokens signed with our key (RFC 9068 §4) -----------------------------------


async def test_token_expired_beyond_the_leeway_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "expired@example.com")
    token = _sign_with_our_key(client, _claims(user_id, exp=int(time.time()) - 120))

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "expired" in description


async def test_token_expired_within_the_leeway_is_still_accepted(
    client: httpx.AsyncClient,
) -> None:
    # `iat` stays "now": it must follow the account's creation, or the token counts as revoked.
    user_id = await _user(client, "leeway@example.com")
    token = _sign_with_our_key(client, _claims(user_id, exp=int(time.time()) - 10))

    response = await client.get("/users/me", headers=bearer(token))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id


async def test_token_not_yet_valid_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "nbf@example.com")
    token = _sign_with_our_key(client, _claims(user_id, nbf=int(time.time()) + 3600))

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "nbf" in description


async def test_token_from_another_issuer_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "iss@example.com")
    token = _sign_with_our_key(client, _claims(user_id, iss="https://evil.example.com"))

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "issuer" in description


async def test_token_for_another_audience_is_refused(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "aud@example.com")
    token = _sign_with_our_key(client, _claims(user_id, aud="https://other-api.example.com"))

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "audience" in description


@pytest.mark.parametrize("typ", ["JWT", "id_token+jwt", ""])
async def test_token_not_typed_as_an_access_token_is_refused(
    client: httpx.AsyncClient, typ: str
) -> None:
    # RFC 9068 §4 / RFC 8725 §3.11: an ID token or a generic JWT is not an access token.
    user_id = await _user(client, "typ@example.com")
    token = _sign_with_our_key(client, _claims(user_id), typ=typ)

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "not an access token" in description


@pytest.mark.parametrize("claim", ["jti", "client_id", "exp", "aud", "iss"])
async def test_token_missing_a_required_claim_is_refused(
    client: httpx.AsyncClient, claim: str
) -> None:
    user_id = await _user(client, "claims@example.com")
    claims = _claims(user_id)
    del claims[claim]
    token = _sign_with_our_key(client, claims)

    _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))


async def test_missing_claim_is_described_as_such_not_as_a_bad_signature(
    client: httpx.AsyncClient,
) -> None:
    # The token is correctly signed: the description must name the real problem.
    user_id = await _user(client, "nojti@example.com")
    claims = _claims(user_id)
    del claims["jti"]
    token = _sign_with_our_key(client, claims)

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert "signature" not in description
    assert "claim" in description


@pytest.mark.parametrize("claim", ["jti", "client_id"])
async def test_token_with_a_non_string_jti_or_client_id_is_refused(
    client: httpx.AsyncClient, claim: str
) -> None:
    user_id = await _user(client, "types@example.com")
    token = _sign_with_our_key(client, _claims(user_id, **{claim: 12345}))

    _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))


async def test_token_whose_subject_is_not_a_user_id_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "sub@example.com")
    token = _sign_with_our_key(client, _claims("not-a-uuid"))

    _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))


# --- scopes and roles (RFC 6750 §3.1 insufficient_scope) ----------------------------------


async def test_token_without_account_scope_cannot_read_the_account(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "narrow@example.com")
    token = await login(client, "narrow@example.com", scope="openid")

    response = await client.get("/users/me", headers=bearer(token))

    assert response.status_code == 403
    challenge = _challenge(response)
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"] == "account"


async def test_openid_scope_is_enough_for_userinfo(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "oidc@example.com")
    token = await login(client, "oidc@example.com", scope="openid")

    response = await client.get("/userinfo", headers=bearer(token))

    assert response.status_code == 200, response.text
    # Only `sub`: without the email and profile scopes nothing else is disclosed.
    assert response.json() == {"sub": user_id}


async def test_userinfo_without_openid_scope_is_insufficient_scope(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "noid@example.com")
    token = await login(client, "noid@example.com", scope="account")

    response = await client.get("/userinfo", headers=bearer(token))

    assert response.status_code == 403
    assert _challenge(response)["error"] == "insufficient_scope"


async def test_non_admin_token_cannot_list_users(client: httpx.AsyncClient) -> None:
    await register(client, "pleb@example.com")

    response = await client.get(
        "/admin/users", headers=await auth_headers(client, "pleb@example.com")
    )

    assert response.status_code == 403
    assert _challenge(response)["error"] == "insufficient_scope"


async def test_demoted_admin_with_an_admin_scoped_token_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # The role is read from the database, not from the token's `roles` claim.
    headers = await admin_headers(client)
    created = await client.post(
        "/admin/users",
        json={"email": "deputy@example.com", "password": STRONG_PASSWORD, "roles": ["admin"]},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    deputy = await auth_headers(client, "deputy@example.com")
    assert (await client.get("/admin/users", headers=deputy)).status_code == 200

    demoted = await client.patch(
        f"/admin/users/{created.json()['id']}", json={"roles": []}, headers=headers
    )
    assert demoted.status_code == 200
    response = await client.get("/admin/users", headers=deputy)

    assert response.status_code == 403
    assert _challenge(response)["error"] == "insufficient_scope"


async def test_admin_token_lists_users(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/users", headers=await admin_headers(client))

    assert response.status_code == 200
    assert response.json()["count"] == 1


# --- revocation ---------------------------------------------------------------------------


async def test_password_change_revokes_earlier_tokens(client: httpx.AsyncClient) -> None:
    await register(client, "changer@example.com")
    old = await auth_headers(client, "changer@example.com")

    changed = await client.post(
        "/users/me/password",
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=old,
    )
    assert changed.status_code == 204, changed.text

    description = _assert_invalid_token(await client.get("/users/me", headers=old))
    assert "revoked" in description
    old_password = await client.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "changer@example.com",
            "password": STRONG_PASSWORD,
        },
    )
    assert old_password.status_code == 400
    assert old_password.json()["error"] == "invalid_grant"
    fresh = await auth_headers(client, "changer@example.com", NEW_PASSWORD)
    assert (await client.get("/users/me", headers=fresh)).status_code == 200


async def test_deactivation_revokes_tokens_at_once(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "deact@example.com")
    headers = await auth_headers(client, "deact@example.com")
    assert (await client.get("/users/me", headers=headers)).status_code == 200

    patched = await client.patch(
        f"/admin/users/{user_id}", json={"is_active": False}, headers=await admin_headers(client)
    )
    assert patched.status_code == 200

    _assert_invalid_token(await client.get("/users/me", headers=headers))


async def test_reactivation_does_not_revive_tokens_issued_before_deactivation(
    client: httpx.AsyncClient,
) -> None:
    user_id = await _user(client, "revive@example.com")
    headers = await auth_headers(client, "revive@example.com")
    admin = await admin_headers(client)
    for active in (False, True):
        patched = await client.patch(
            f"/admin/users/{user_id}", json={"is_active": active}, headers=admin
        )
        assert patched.status_code == 200

    _assert_invalid_token(await client.get("/users/me", headers=headers))
    fresh = await auth_headers(client, "revive@example.com")
    assert (await client.get("/users/me", headers=fresh)).status_code == 200


async def test_deleting_the_user_revokes_their_tokens(client: httpx.AsyncClient) -> None:
    user_id = await _user(client, "deleted@example.com")
    headers = await auth_headers(client, "deleted@example.com")

    deleted = await client.delete(f"/admin/users/{user_id}", headers=await admin_headers(client))
    assert deleted.status_code == 204

    _assert_invalid_token(await client.get("/users/me", headers=headers))
    _assert_invalid_token(await client.get("/userinfo", headers=headers))


async def test_require_scopes_refuses_the_token_of_a_deactivated_user(
    client: httpx.AsyncClient,
) -> None:
    @app_of(client).get("/probe/scoped")
    async def probe(principal: Annotated[Principal, require_scopes("openid")]) -> str:
        return str(principal.claims["sub"])

    user_id = await _user(client, "scoped@example.com")
    token = await login(client, "scoped@example.com")
    assert (await client.get("/probe/scoped", headers=bearer(token))).json() == user_id

    await client.patch(
        f"/admin/users/{user_id}", json={"is_active": False}, headers=await admin_headers(client)
    )

    refused = await client.get("/probe/scoped", headers=bearer(token))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


# --- the session a token names (sid) -----------------------------------------------------


@pytest.mark.parametrize(
    "sid",
    [
        "not-a-uuid",
        "",
        "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",  # upper case: not the canonical spelling
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
    ],
)
async def test_a_malformed_sid_is_invalid_token(client: httpx.AsyncClient, sid: str) -> None:
    token = _sign_with_our_key(client, _claims(await _user(client, "sid@example.com"), sid=sid))

    _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))


async def test_a_token_naming_a_session_that_does_not_exist_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user_id = await _user(client, "nosession@example.com")
    signed = _sign_with_our_key(client, _claims(user_id, sid=str(uuid.uuid4())))
    unbound = _sign_with_our_key(client, _claims(user_id))

    assert "revoked" in _assert_invalid_token(await client.get("/users/me", headers=bearer(signed)))
    assert (await client.get("/users/me", headers=bearer(unbound))).status_code == 200
