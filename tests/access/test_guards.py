"""Guards: who may call a protected endpoint with which bearer token.

RFC 6750 §3 (`WWW-Authenticate: Bearer` challenges: 401 `invalid_token`, 403
`insufficient_scope`), RFC 8725 (JWT BCP: one algorithm, our keys only, explicit typing)
and RFC 9068 §4 (resource servers validate `typ`, `iss`, `aud`, `exp` and the claims).
Forged tokens are built here, with PyJWT and foreign keys from `cryptography`.
"""

import base64
import json
import re
import time
import uuid
from typing import Annotated, Any

import httpx
import jwt
import pytest

from auth_service.access.service import Principal
from auth_service.web.guards import require_scopes
from tests.helpers.app import (
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
from tests.helpers.forged_tokens import NOT_TOKENS, SIGNATURE, Forgery, Signer, forgery_params

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


@pytest.mark.parametrize("token", [t for t in NOT_TOKENS if t])
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


# --- forged tokens (RFC 8725): the catalogue the verifier runs too ------------------------


async def _signer(client: httpx.AsyncClient) -> Signer:
    signing = app_state(client).keys.signing
    user_id = await _user(client, "forged@example.com")
    return Signer(signing.private.to_pem(), signing.kid, ISSUER, ISSUER, user_id)


async def test_the_catalogues_control_token_is_accepted(client: httpx.AsyncClient) -> None:
    signer = await _signer(client)

    response = await client.get("/users/me", headers=bearer(signer.token()))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == signer.sub


@pytest.mark.parametrize("forgery", forgery_params(guard=True))
async def test_forged_token_is_refused_saying_why(
    client: httpx.AsyncClient, forgery: Forgery
) -> None:
    token = forgery.make(await _signer(client))

    description = _assert_invalid_token(await client.get("/users/me", headers=bearer(token)))

    assert forgery.says in description
    if forgery.says != SIGNATURE:  # a well-signed token's refusal names its real problem
        assert "signature" not in description


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


async def test_token_expired_within_the_leeway_is_still_accepted(
    client: httpx.AsyncClient,
) -> None:
    # `iat` stays "now": it must follow the account's creation, or the token counts as revoked.
    user_id = await _user(client, "leeway@example.com")
    token = _sign_with_our_key(client, _claims(user_id, exp=int(time.time()) - 10))

    response = await client.get("/users/me", headers=bearer(token))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id


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
