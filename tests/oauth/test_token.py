"""The token endpoint: POST /oauth2/token with the password grant.

RFC 6749 §4.3 (resource owner password credentials), §5.1 (successful response), §5.2
(error response) and RFC 9068 (JWT profile for OAuth 2.0 access tokens). Every failure
answers `{"error", "error_description"}`, never FastAPI's 422 shape.
"""

import base64
import unicodedata
from collections import Counter
from typing import Any

import httpx
import jwt
import pytest

from auth_service.security.passwords import PasswordHasher
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    STRONG_PASSWORD,
    admin_headers,
    app_state,
    login,
    register,
)
from tests.helpers.hashers import DelegatingHasher

pytestmark = pytest.mark.anyio

TOKEN_URL = "/oauth2/token"
USER_SCOPES = "account email openid profile"


def _form(email: str, password: str = STRONG_PASSWORD, **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": password, **extra}


def _assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: exactly `error` and a non-empty `error_description`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    return body


async def _verified_claims(
    client: httpx.AsyncClient, token: str, *, alg: str = "RS256", audience: str
) -> dict[str, Any]:
    """Verify `token` as a downstream service would: with the JWKS the app publishes."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in jwks["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        key=jwt.PyJWK(jwk),
        algorithms=[alg],
        audience=audience,
        issuer="http://testserver",
    )
    return claims


class CountingHasher(DelegatingHasher):
    """The app's real hasher, with a count of each bcrypt operation it is asked for."""

    def __init__(self, inner: PasswordHasher) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    async def hash(self, password: str) -> str:
        self.calls["hash"] += 1
        return await self.inner.hash(password)

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        self.calls["verify"] += 1
        return await self.inner.verify(password, hashed)

    async def dummy_verify(self, password: str) -> None:
        self.calls["dummy_verify"] += 1
        await self.inner.dummy_verify(password)


def _count_hashing(client: httpx.AsyncClient) -> CountingHasher:
    state = app_state(client)
    counting = CountingHasher(state.hasher)
    state.hasher = counting
    return counting


# --- success (RFC 6749 §5.1) ------------------------------------------------------------


async def test_password_grant_answers_a_bearer_token_that_must_not_be_cached(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ann@example.com")

    response = await client.post(TOKEN_URL, data=_form("ann@example.com"))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == USER_SCOPES
    assert body["access_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_expires_in_follows_the_configured_access_token_ttl(make_client: Any) -> None:
    async with make_client(access_token_ttl=120) as client:
        await register(client, "ttl@example.com")

        response = await client.post(TOKEN_URL, data=_form("ttl@example.com"))

        assert response.status_code == 200
        assert response.json()["expires_in"] == 120
        claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
        assert 119 <= claims["exp"] - claims["iat"] <= 120


# --- the access token (RFC 9068) --------------------------------------------------------


async def test_access_token_is_an_rs256_at_jwt_signed_by_a_published_key(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "jay@example.com")
    token = await login(client, "jay@example.com")

    header = jwt.get_unverified_header(token)
    jwks = (await client.get("/.well-known/jwks.json")).json()

    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    published = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    assert published["alg"] == "RS256"
    assert published["use"] == "sig"
    assert "d" not in published  # public parameters only
    await _verified_claims(client, token, audience="http://testserver")


async def test_access_token_carries_the_rfc_9068_claims(client: httpx.AsyncClient) -> None:
    user = await register(client, "kim@example.com")
    token = await login(client, "kim@example.com")

    claims = await _verified_claims(client, token, audience="http://testserver")

    assert claims["iss"] == "http://testserver"
    assert claims["sub"] == user["id"]
    assert claims["aud"] == "http://testserver"  # the issuer, when no audience is set
    assert claims["client_id"] == "auth-service"
    assert claims["scope"] == USER_SCOPES
    assert claims["roles"] == []
    assert isinstance(claims["iat"], int | float)
    assert isinstance(claims["exp"], int)
    assert 899 <= claims["exp"] - claims["iat"] <= 900
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


async def test_every_login_gets_a_token_with_its_own_jti(client: httpx.AsyncClient) -> None:
    await register(client, "jo@example.com")

    first = jwt.decode(await login(client, "jo@example.com"), options={"verify_signature": False})
    second = jwt.decode(await login(client, "jo@example.com"), options={"verify_signature": False})

    assert first["jti"] != second["jti"]
    assert first["sub"] == second["sub"]


async def test_configured_audience_becomes_the_aud_claim_and_is_accepted(
    make_client: Any,
) -> None:
    async with make_client(audience="https://api.example.com") as client:
        await register(client, "aud@example.com")
        token = await login(client, "aud@example.com")

        claims = await _verified_claims(client, token, audience="https://api.example.com")
        me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})

        assert claims["aud"] == "https://api.example.com"
        assert claims["iss"] == "http://testserver"
        assert me.status_code == 200


async def test_es256_signing_is_used_when_configured(make_client: Any) -> None:
    async with make_client(signing_alg="ES256") as client:
        user = await register(client, "ec@example.com")
        token = await login(client, "ec@example.com")

        header = jwt.get_unverified_header(token)
        claims = await _verified_claims(client, token, alg="ES256", audience="http://testserver")
        jwks = (await client.get("/.well-known/jwks.json")).json()

        assert header["alg"] == "ES256"
        assert header["typ"] == "at+jwt"
        assert {key["kid"]: key["kty"] for key in jwks["keys"]}[header["kid"]] == "EC"
        assert claims["sub"] == user["id"]


async def test_client_id_claim_names_the_client_that_asked(make_client: Any) -> None:
    async with make_client(client_ids=["web", "mobile"]) as client:
        await register(client, "cid@example.com")

        named = await client.post(TOKEN_URL, data=_form("cid@example.com", client_id="mobile"))
        default = await client.post(TOKEN_URL, data=_form("cid@example.com"))

        assert named.status_code == 200
        assert default.status_code == 200
        decoded = [
            jwt.decode(r.json()["access_token"], options={"verify_signature": False})
            for r in (named, default)
        ]
        assert [c["client_id"] for c in decoded] == ["mobile", "web"]


# --- malformed requests: invalid_request, never 422 ---------------------------------------


@pytest.mark.parametrize("missing", ["grant_type", "username", "password"])
async def test_missing_parameter_is_invalid_request(
    client: httpx.AsyncClient, missing: str
) -> None:
    form = _form("ann@example.com")
    del form[missing]

    response = await client.post(TOKEN_URL, data=form)

    body = _assert_oauth_error(response, 400, "invalid_request")
    assert missing in body["error_description"]


async def test_empty_parameter_counts_as_missing(client: httpx.AsyncClient) -> None:
    response = await client.post(TOKEN_URL, data=_form("", password=""))

    _assert_oauth_error(response, 400, "invalid_request")


async def test_repeated_parameter_is_invalid_request(client: httpx.AsyncClient) -> None:
    await register(client, "rep@example.com")
    # RFC 6749 §3.2: request parameters MUST NOT be included more than once.
    content = "grant_type=password&username=rep%40example.com&password=a&password=b"

    response = await client.post(
        TOKEN_URL,
        content=content,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    body = _assert_oauth_error(response, 400, "invalid_request")
    assert "password" in body["error_description"]


async def test_json_body_is_invalid_request_not_422(client: httpx.AsyncClient) -> None:
    await register(client, "json@example.com")

    response = await client.post(TOKEN_URL, json=_form("json@example.com"))

    _assert_oauth_error(response, 400, "invalid_request")


async def test_body_without_content_type_is_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN_URL, content=b"grant_type=password&username=a%40b.c&password=x"
    )

    _assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("grant_type", ["authorization_code", "foo", "Password"])
async def test_other_grant_types_are_unsupported(
    client: httpx.AsyncClient, grant_type: str
) -> None:
    response = await client.post(TOKEN_URL, data=_form("ann@example.com", grant_type=grant_type))

    body = _assert_oauth_error(response, 400, "unsupported_grant_type")
    assert body["error_description"] == (
        "The grant types supported are: password, refresh_token, client_credentials."
    )


async def test_unknown_scope_is_invalid_scope(client: httpx.AsyncClient) -> None:
    await register(client, "sc@example.com")

    response = await client.post(
        TOKEN_URL, data=_form("sc@example.com", scope="openid launch:missiles")
    )

    body = _assert_oauth_error(response, 400, "invalid_scope")
    assert "launch:missiles" in body["error_description"]


async def test_one_mebibyte_body_is_refused_with_413_json(client: httpx.AsyncClient) -> None:
    counting = _count_hashing(client)

    response = await client.post(
        TOKEN_URL, data=_form("big@example.com", password="x" * (1024 * 1024))
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request body is too large.",
    }
    assert sum(counting.calls.values()) == 0


# --- bad credentials: invalid_grant, one answer for every reason ---------------------------


async def test_wrong_password_unknown_email_and_inactive_user_get_identical_answers(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "known@example.com")
    inactive = await register(client, "gone@example.com")
    deactivated = await client.patch(
        f"/admin/users/{inactive['id']}",
        json={"is_active": False},
        headers=await admin_headers(client),
    )
    assert deactivated.status_code == 200

    wrong = await client.post(
        TOKEN_URL, data=_form("known@example.com", password="not the right passphrase")
    )
    unknown = await client.post(TOKEN_URL, data=_form("nobody@example.com"))
    inactive_answer = await client.post(TOKEN_URL, data=_form("gone@example.com"))

    body = _assert_oauth_error(wrong, 400, "invalid_grant")
    assert body["error_description"] == "The email or password is incorrect."
    assert unknown.status_code == inactive_answer.status_code == 400
    assert unknown.content == wrong.content
    assert inactive_answer.content == wrong.content


async def test_unknown_email_runs_a_real_bcrypt_verification(client: httpx.AsyncClient) -> None:
    await register(client, "real@example.com")
    counting = _count_hashing(client)

    unknown = await client.post(TOKEN_URL, data=_form("nobody@example.com"))
    unknown_calls = dict(counting.calls)
    counting.calls.clear()
    wrong = await client.post(TOKEN_URL, data=_form("real@example.com", password="wrong one!"))

    _assert_oauth_error(unknown, 400, "invalid_grant")
    _assert_oauth_error(wrong, 400, "invalid_grant")
    # The same single bcrypt verification, against a dummy hash when there is no user.
    assert unknown_calls == {"dummy_verify": 1}
    assert dict(counting.calls) == {"verify": 1}


async def test_inactive_user_costs_a_bcrypt_verification_like_an_unknown_email(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "idle@example.com")
    await client.patch(
        f"/admin/users/{user['id']}",
        json={"is_active": False},
        headers=await admin_headers(client),
    )
    counting = _count_hashing(client)

    response = await client.post(TOKEN_URL, data=_form("idle@example.com"))

    _assert_oauth_error(response, 400, "invalid_grant")
    # Even with the right password: a right one would cost passlib more than a wrong one.
    assert dict(counting.calls) == {"dummy_verify": 1}


async def test_password_longer_than_128_characters_is_refused_without_hashing(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "long@example.com")
    wrong = await client.post(TOKEN_URL, data=_form("long@example.com", password="wrong one!"))
    counting = _count_hashing(client)

    too_long = await client.post(TOKEN_URL, data=_form("long@example.com", password="y" * 129))
    unknown_too_long = await client.post(
        TOKEN_URL, data=_form("nobody@example.com", password="y" * 129)
    )

    _assert_oauth_error(too_long, 400, "invalid_grant")
    assert too_long.content == wrong.content
    assert unknown_too_long.content == wrong.content
    assert sum(counting.calls.values()) == 0


async def test_password_of_exactly_128_characters_is_still_verified(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "edge@example.com")
    counting = _count_hashing(client)

    response = await client.post(TOKEN_URL, data=_form("edge@example.com", password="y" * 128))

    _assert_oauth_error(response, 400, "invalid_grant")
    assert dict(counting.calls) == {"verify": 1}


async def test_password_accepted_at_registration_logs_in_whatever_its_normal_form(
    client: httpx.AsyncClient,
) -> None:
    # NIST SP 800-63B: length counts code points after NFKC. Typed in decomposed form (NFD,
    # as some keyboards and macOS produce it), this passphrase is 120 characters long but
    # 144 code points as sent. Registration accepts it, so login must too.
    composed = (
        "Été à Genève: René a rêvé près du lac, thé glacé, crêpe brûlée, "
        "café crème élégant, fenêtre ouverte à Nîmes, été à Sète."
    )
    decomposed = unicodedata.normalize("NFD", composed)
    assert len(composed) <= 128 < len(decomposed)
    await register(client, "rene@example.com", password=decomposed)

    response = await client.post(TOKEN_URL, data=_form("rene@example.com", password=decomposed))

    assert response.status_code == 200, response.text


async def test_email_login_is_case_insensitive(client: httpx.AsyncClient) -> None:
    user = await register(client, "Carol@Example.com")

    token = await login(client, "CAROL@EXAMPLE.COM")

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == user["id"]


# --- client identification (RFC 6749 §2.3.1) ----------------------------------------------


async def test_unknown_client_id_is_invalid_client(client: httpx.AsyncClient) -> None:
    await register(client, "cli@example.com")

    response = await client.post(TOKEN_URL, data=_form("cli@example.com", client_id="intruder"))

    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_http_basic_public_client_without_secret_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "basic@example.com")
    credentials = base64.b64encode(b"auth-service:").decode()

    response = await client.post(
        TOKEN_URL,
        data=_form("basic@example.com"),
        headers={"Authorization": f"Basic {credentials}"},
    )

    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "auth-service"


@pytest.mark.parametrize("raw", [b"auth-service:s3cret", b"auth-service", b"\xff\xfe:"])
async def test_http_basic_with_a_secret_or_malformed_is_invalid_client(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    await register(client, "secret@example.com")
    credentials = base64.b64encode(raw).decode()

    response = await client.post(
        TOKEN_URL,
        data=_form("secret@example.com"),
        headers={"Authorization": f"Basic {credentials}"},
    )

    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "header",
    [b"Basic \xe9", b"Basic \xc3\xa9\xc3\xa9==", b"Basic YXV0aC1zZXJ2aWNlOg\xff", b"\xe9 abc"],
)
async def test_non_ascii_basic_credentials_are_invalid_client_not_a_500(
    client: httpx.AsyncClient, header: bytes
) -> None:
    await register(client, "latin@example.com")

    response = await client.post(
        TOKEN_URL, data=_form("latin@example.com"), headers={b"Authorization": header}
    )

    _assert_oauth_error(response, 401, "invalid_client")


# --- form bytes (RFC 6749 Appendix B: UTF-8, percent-encoded) -----------------------------

FORM = {"content-type": "application/x-www-form-urlencoded"}
ACCENTED_PASSWORD = "crème brûlée au café noir"


async def test_raw_utf8_in_a_form_body_is_read_as_utf8(client: httpx.AsyncClient) -> None:
    await register(client, "utf8@example.com", ACCENTED_PASSWORD)
    body = f"grant_type=password&username=utf8%40example.com&password={ACCENTED_PASSWORD}"

    raw = await client.post(TOKEN_URL, content=body.encode(), headers=FORM)
    encoded = await client.post(TOKEN_URL, data=_form("utf8@example.com", ACCENTED_PASSWORD))

    assert raw.status_code == 200, raw.text
    assert encoded.status_code == 200, encoded.text


@pytest.mark.parametrize(
    "password",
    [
        b"cr\xe8me br\xfbl\xe9e au caf\xe9 noir",  # raw Latin-1 bytes
        b"cr%E8me br%FBl%E9e au caf%E9 noir",  # Latin-1, percent-encoded
        b"%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff%ff",  # collapsed to U+FFFD before
        b"%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe%fe",
        b"cr%C3%A8me%",  # broken escapes, and a cut-off UTF-8 sequence
        b"cr%C3%A8me%zz",
        b"cr%C3",
    ],
)
async def test_form_bytes_that_are_not_utf8_are_invalid_request(
    client: httpx.AsyncClient, password: bytes
) -> None:
    await register(client, "bytes@example.com")
    body = b"grant_type=password&username=bytes%40example.com&password=" + password

    response = await client.post(TOKEN_URL, content=body, headers=FORM)

    _assert_oauth_error(response, 400, "invalid_request")


async def test_a_form_declaring_another_charset_is_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "charset@example.com")

    response = await client.post(
        TOKEN_URL,
        content=b"grant_type=password&username=charset%40example.com&password=x",
        headers={"content-type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
    )

    _assert_oauth_error(response, 400, "invalid_request")


async def test_plus_and_percent_encoded_plus_are_space_and_plus(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "plus@example.com", "one+two three+four five")
    body = b"grant_type=password&username=plus%40example.com&password=one%2Btwo+three%2Bfour+five"

    response = await client.post(TOKEN_URL, content=body, headers=FORM)

    assert response.status_code == 200, response.text


# --- scopes (RFC 6749 §3.3) ---------------------------------------------------------------


async def test_no_scope_requested_grants_everything_the_user_may_have(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "all@example.com")

    response = await client.post(TOKEN_URL, data=_form("all@example.com"))

    assert response.json()["scope"] == USER_SCOPES
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == USER_SCOPES


async def test_plain_user_asking_for_admin_scope_gets_only_the_rest(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "plain@example.com")

    response = await client.post(
        TOKEN_URL, data=_form("plain@example.com", scope="openid admin:users")
    )

    assert response.status_code == 200
    assert response.json()["scope"] == "openid"
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "openid"
    assert claims["roles"] == []


async def test_plain_user_asking_only_for_admin_scope_is_invalid_scope(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "climber@example.com")

    response = await client.post(TOKEN_URL, data=_form("climber@example.com", scope="admin:users"))

    _assert_oauth_error(response, 400, "invalid_scope")


async def test_admin_is_granted_the_admin_scope(client: httpx.AsyncClient) -> None:
    everything = await client.post(TOKEN_URL, data=_form(ADMIN_EMAIL, ADMIN_PASSWORD))
    only_admin = await client.post(
        TOKEN_URL, data=_form(ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:users")
    )

    assert everything.json()["scope"] == (
        "account admin:clients admin:keys admin:roles admin:users email openid profile"
    )
    assert only_admin.json()["scope"] == "admin:users"
    claims = jwt.decode(only_admin.json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "admin:users"
    assert claims["roles"] == ["admin"]


@pytest.mark.parametrize(
    "address", [" pad@example.com", "ada@ＥＸＡＭＰＬＥ.com", "Ada@Example.COM"]
)
async def test_a_user_logs_in_with_the_exact_address_they_registered(
    client: httpx.AsyncClient, address: str
) -> None:
    await register(client, address)

    response = await client.post(TOKEN_URL, data=_form(address))

    assert response.status_code == 200, response.text


# --- client credentials (RFC 6749 §2.3) -----------------------------------------------------


async def test_a_client_secret_in_the_form_needs_its_client_id(client: httpx.AsyncClient) -> None:
    await register(client, "sec@example.com")

    response = await client.post(TOKEN_URL, data=_form("sec@example.com", client_secret="s"))

    _assert_oauth_error(response, 400, "invalid_request")


async def test_a_client_authenticates_by_one_method_only(client: httpx.AsyncClient) -> None:
    await register(client, "two@example.com")
    basic = "Basic " + base64.b64encode(b"auth-service:").decode()

    response = await client.post(
        TOKEN_URL,
        data=_form("two@example.com", client_secret="s"),
        headers={"Authorization": basic},
    )

    _assert_oauth_error(response, 400, "invalid_request")


async def test_a_secret_for_a_public_client_is_invalid_client(client: httpx.AsyncClient) -> None:
    await register(client, "pub@example.com")

    response = await client.post(
        TOKEN_URL, data=_form("pub@example.com", client_id="auth-service", client_secret="s")
    )

    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")
