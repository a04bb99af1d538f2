"""Bad input anywhere gets a fast 4xx JSON answer, never echoes a password, and changes nothing.

Every write endpoint is fed broken bodies (malformed JSON, the wrong JSON type, wrong field
types, unknown fields, invalid UTF-8, oversized and mis-declared bodies); the token endpoint
broken forms; the admin list broken query parameters. After each batch the full user list,
read as an admin, must be exactly what it was before. SQL metacharacters must be data, never
syntax: searches treat `%`, `_` and quotes literally.
"""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    STRONG_PASSWORD,
    admin_headers,
    auth_headers,
    register,
)

pytestmark = pytest.mark.anyio

# A password that must never come back in any response body.
CANARY = "canary mauve lighthouse 4217"
USER_EMAIL = "bob@example.com"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ONE_MIB = 1024 * 1024


@dataclass
class World:
    client: httpx.AsyncClient
    admin: dict[str, str]
    user: dict[str, str]
    user_id: str

    def headers_for(self, who: str) -> dict[str, str]:
        return {"anyone": {}, "user": self.user, "admin": self.admin}[who]

    async def users(self) -> dict[str, Any]:
        """Every user as an admin sees them: any change to any row shows up here."""
        response = await self.client.get("/admin/users", params={"limit": 500}, headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    created = await register(client, USER_EMAIL, name="Bob")
    return World(
        client=client,
        admin=await admin_headers(client),
        user=await auth_headers(client, USER_EMAIL),
        user_id=created["id"],
    )


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    who: str
    # A body that succeeds and changes the database: proves the "unchanged" check can fail.
    valid: dict[str, Any]
    # Bodies with a wrong type or an unknown field: each must be a 422.
    invalid: tuple[dict[str, Any], ...]

    def url(self, world: World) -> str:
        return self.path.format(user_id=world.user_id)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint(
        "POST",
        "/users",
        "anyone",
        valid={"email": "carol@example.com", "password": STRONG_PASSWORD},
        invalid=(
            {"email": 5, "password": CANARY},
            {"email": ["carol@example.com"], "password": CANARY},
            {"email": "carol@example.com", "password": 123456789012345678},
            {"email": "carol@example.com", "password": [CANARY]},
            {"email": "carol@example.com", "password": CANARY, "name": {"first": "C"}},
            {"email": "carol@example.com", "password": None},
            {"email": "carol@example.com"},
            {"password": CANARY},
            # Privilege escalation through registration: unknown fields are refused.
            {"email": "carol@example.com", "password": CANARY, "roles": ["admin"]},
            {"email": "carol@example.com", "password": CANARY, "is_verified": True},
            {"email": "' OR 1=1 --@example.com", "password": CANARY},
            {"email": "carol@example.com'; DROP TABLE users; --", "password": CANARY},
            {"email": "carol@example.com", "password": CANARY * 5},  # over the hard maximum
            {"email": "carol@example.com", "password": "password"},  # the policy refuses
        ),
    ),
    Endpoint(
        "PATCH",
        "/users/me",
        "user",
        valid={"name": "Robert"},
        invalid=(
            {"name": 5},
            {"name": ["Robert"]},
            {"name": {"given": "Robert"}},
            {"name": ""},
            {"name": "x" * 201},
            {"name": "Robert", "email": "mallory@example.com"},
            {"name": "Robert", "roles": ["admin"]},
            {"password": CANARY},
        ),
    ),
    Endpoint(
        "POST",
        "/users/me/password",
        "user",
        valid={"current_password": STRONG_PASSWORD, "new_password": "a brand new long passphrase"},
        invalid=(
            {"current_password": 5, "new_password": CANARY},
            {"current_password": STRONG_PASSWORD, "new_password": None},
            {"current_password": STRONG_PASSWORD, "new_password": [CANARY]},
            {"current_password": STRONG_PASSWORD},
            {"current_password": STRONG_PASSWORD, "new_password": CANARY, "email": "m@x.com"},
            {"current_password": STRONG_PASSWORD, "new_password": CANARY * 5},
            {"current_password": STRONG_PASSWORD, "new_password": "password"},
            {"current_password": CANARY, "new_password": STRONG_PASSWORD + " 2"},  # wrong: 400
        ),
    ),
    Endpoint(
        "POST",
        "/admin/users",
        "admin",
        valid={"email": "dave@example.com", "password": STRONG_PASSWORD, "roles": ["admin"]},
        invalid=(
            {"email": 5, "password": CANARY},
            {"email": "dave@example.com", "password": CANARY, "roles": "admin"},
            {"email": "dave@example.com", "password": CANARY, "roles": [5]},
            {"email": "dave@example.com", "password": CANARY, "roles": ["Admin; DROP"]},
            {"email": "dave@example.com", "password": CANARY, "roles": ["r"] * 33},
            {"email": "dave@example.com", "password": CANARY, "is_active": "maybe"},
            # A flag is a JSON boolean, as the OpenAPI document says: not 0, 1 or "false".
            {"email": "dave@example.com", "password": CANARY, "is_active": 0},
            {"email": "dave@example.com", "password": CANARY, "is_verified": "true"},
            {"email": "dave@example.com", "password": CANARY, "is_admin": True},
            {"email": "dave@example.com", "password": CANARY, "hashed_password": "x"},
            {"email": "dave@example.com", "password": CANARY, "id": str(uuid.uuid4())},
            {"email": "dave@example.com", "password": CANARY * 5},
        ),
    ),
    Endpoint(
        "PATCH",
        "/admin/users/{user_id}",
        "admin",
        valid={"name": "Bobby", "roles": ["admin"]},
        invalid=(
            {"roles": "admin"},
            {"roles": [5]},
            {"roles": ["ADMIN"]},
            {"roles": [["admin"]]},
            {"is_active": "maybe"},
            {"is_active": 0},
            {"is_active": "false"},
            {"is_verified": 1},
            {"is_verified": {"yes": True}},
            {"name": 5},
            {"email": "mallory@example.com"},
            {"password": CANARY},
            {"hashed_password": CANARY},
            {"id": str(uuid.uuid4())},
        ),
    ),
]
ENDPOINT_IDS = [str(e) for e in ENDPOINTS]

# Bodies no endpoint can accept: (what, bytes, content type).
BROKEN_BODIES: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"email": "a@example.com", "password": ', JSON),
    ("single-quoted JSON", b"{'name': 'x', 'password': '" + CANARY.encode() + b"'}", JSON),
    ("trailing comma", b'{"name": "x",}', JSON),
    ("bare word", b"hello", JSON),
    ("empty body", b"", JSON),
    ("JSON array", b"[]", JSON),
    ("JSON array of objects", b'[{"name": "x", "password": "' + CANARY.encode() + b'"}]', JSON),
    ("JSON number", b"5", JSON),
    ("JSON string", b'"' + CANARY.encode() + b'"', JSON),
    ("JSON null", b"null", JSON),
    ("JSON true", b"true", JSON),
    ("invalid UTF-8", b'{"name": "\xff\xfe\xfd", "password": "\xc3\x28"}', JSON),
    ("UTF-8 overlong NUL", b'{"name": "\xc0\x80"}', JSON),
    ("lone surrogate escape", b'{"name": "\\ud800", "new_password": "\\udfff"}', JSON),
    ("deeply nested", b"[" * 50_000 + b"]" * 50_000, JSON),
    ("5000-digit number", b'{"name": ' + b"9" * 5000 + b"}", JSON),
    ("JSON sent as text/plain", b'{"name": "x"}', "text/plain"),
    ("JSON sent as a form", b"name=x&password=" + CANARY.encode(), FORM),
]


def assert_json_4xx(response: httpx.Response, what: str, *status: int) -> dict[str, Any]:
    """A 4xx (one of `status` when given) with a JSON object body that echoes no password."""
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text}"
    if status:
        assert response.status_code in status, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    assert isinstance(body, dict), what
    assert "detail" in body or "error" in body, f"{what}: {body}"
    assert CANARY not in response.text, f"{what}: the password came back: {response.text}"
    return body


async def send_json(
    world: World, endpoint: Endpoint, content: bytes, ctype: str = JSON
) -> httpx.Response:
    return await world.client.request(
        endpoint.method,
        endpoint.url(world),
        content=content,
        headers={**world.headers_for(endpoint.who), "Content-Type": ctype},
    )


async def assert_valid_body_changes_the_database(
    world: World, endpoint: Endpoint, before: dict[str, Any]
) -> None:
    response = await world.client.request(
        endpoint.method,
        endpoint.url(world),
        json=endpoint.valid,
        headers=world.headers_for(endpoint.who),
    )
    assert response.status_code < 300, response.text
    assert await world.users() != before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_broken_json_bodies_get_a_4xx_and_change_nothing(
    world: World, endpoint: Endpoint
) -> None:
    before = await world.users()

    for what, content, ctype in BROKEN_BODIES:
        response = await send_json(world, endpoint, content, ctype)
        assert_json_4xx(response, what)

    assert await world.users() == before
    await assert_valid_body_changes_the_database(world, endpoint, before)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_wrong_types_and_unknown_fields_are_refused_and_change_nothing(
    world: World, endpoint: Endpoint
) -> None:
    before = await world.users()

    for body in endpoint.invalid:
        response = await world.client.request(
            endpoint.method,
            endpoint.url(world),
            json=body,
            headers=world.headers_for(endpoint.who),
        )
        assert_json_4xx(response, repr(body), 400, 422)

    assert await world.users() == before
    await assert_valid_body_changes_the_database(world, endpoint, before)


async def test_validation_errors_name_the_field_without_echoing_the_input(world: World) -> None:
    response = await world.client.post(
        "/users", json={"email": "erin@example.com", "password": CANARY, "roles": ["admin"]}
    )

    body = assert_json_4xx(response, "unknown field", 422)
    assert body["errors"][0]["loc"] == ["body", "roles"]
    assert "roles" in body["detail"]
    assert "admin" not in response.text
    for error in body["errors"]:
        assert set(error) <= {"loc", "msg", "type"}, error


async def test_a_one_mebibyte_password_is_refused_with_413_everywhere(world: World) -> None:
    before = await world.users()
    huge = "x" * ONE_MIB

    for endpoint in ENDPOINTS:
        body = {**endpoint.valid, "password": huge, "new_password": huge}
        response = await world.client.request(
            endpoint.method, endpoint.url(world), json=body, headers=world.headers_for(endpoint.who)
        )
        assert_json_4xx(response, str(endpoint), 413)
        assert huge[:100] not in response.text
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": huge}
    response = await world.client.post("/oauth2/token", data=form)
    assert_json_4xx(response, "POST /oauth2/token", 413)

    assert await world.users() == before


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield b'{"password": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@pytest.mark.parametrize(
    ("path", "ctype"), [("/users", JSON), ("/oauth2/token", FORM)], ids=["json", "form"]
)
async def test_an_oversized_body_without_content_length_is_refused_with_413(
    world: World, path: str, ctype: str
) -> None:
    """Chunked transfer declares no length: the limit must hold while the body streams in."""
    before = await world.users()

    response = await world.client.post(
        path, content=_chunks(ONE_MIB), headers={"Content-Type": ctype}
    )

    assert "content-length" not in response.request.headers
    assert_json_4xx(response, "chunked 1 MiB body", 413)
    assert await world.users() == before


async def test_a_chunked_body_is_counted_even_beside_a_small_content_length(
    world: World,
) -> None:
    """A transfer coding overrides Content-Length (RFC 9112 §6.3): the small declared length
    must not let a large chunked body past the limit."""
    before = await world.users()

    response = await world.client.post(
        "/users",
        content=_chunks(ONE_MIB),
        headers={"Content-Type": JSON, "Content-Length": "10", "Transfer-Encoding": "chunked"},
    )

    assert_json_4xx(response, "chunked 1 MiB body declared as 10 bytes", 413)
    assert await world.users() == before


BAD_CONTENT_LENGTHS = ["abc", "-1", "", "1.5", "0x10", "12 ", "+5", "1e3", "١٢"]


async def test_a_malformed_content_length_gets_400(world: World) -> None:
    before = await world.users()
    content = b'{"email": "frank@example.com", "password": "' + STRONG_PASSWORD.encode() + b'"}'

    for path in ("/users", "/oauth2/token"):
        for declared in BAD_CONTENT_LENGTHS:
            # Bytes: httpx refuses a non-ASCII str header value.
            headers = {b"Content-Type": JSON.encode(), b"Content-Length": declared.encode()}
            response = await world.client.post(path, content=content, headers=headers)
            assert_json_4xx(response, f"{path} Content-Length {declared!r}", 400)

    assert await world.users() == before


async def test_an_absurd_content_length_gets_413(world: World) -> None:
    response = await world.client.post(
        "/users",
        content=b"{}",
        headers={"Content-Type": JSON, "Content-Length": "9" * 40},
    )

    assert_json_4xx(response, "huge Content-Length", 413)


OAUTH_ERRORS = {"invalid_request", "invalid_grant", "invalid_client", "unsupported_grant_type"}
ADMIN_FORM = quote_plus(ADMIN_PASSWORD).encode()
TOKEN_FORMS: list[tuple[str, bytes, str]] = [
    (
        "invalid UTF-8 password",
        b"grant_type=password&username=root%40example.com&password=\xff\xfe" + CANARY.encode(),
        FORM,
    ),
    ("invalid UTF-8 username", b"grant_type=password&username=\xff\xfe&password=x", FORM),
    ("invalid UTF-8 grant type", b"grant_type=pass\xffword&username=a&password=x", FORM),
    ("percent-encoded invalid UTF-8", b"grant_type=password&username=%FF&password=%C3%28", FORM),
    ("broken percent escapes", b"grant_type=password&username=%ZZ&password=%", FORM),
    ("only separators", b"&&&==&=", FORM),
    ("empty form", b"", FORM),
    (
        "JSON instead of a form",
        b'{"grant_type": "password", "username": "root@example.com", "password": "x"}',
        JSON,
    ),
    ("JSON array", b"[1, 2]", JSON),
    ("text/plain", b"grant_type=password&username=a&password=x", "text/plain"),
    ("no content type", b"grant_type=password&username=a&password=x", ""),
    (
        "repeated password",
        b"grant_type=password&username=root%40example.com&password=a&password=b",
        FORM,
    ),
    ("SQL in the username", b"grant_type=password&username=%27+OR+1%3D1+--&password=x", FORM),
    (
        "SQL comment after a real email",
        b"grant_type=password&username=root%40example.com%27+--&password=%27+OR+%271%27%3D%271",
        FORM,
    ),
    # A LIKE lookup would find the admin with these; the admin's real password must not help.
    ("% as the username", b"grant_type=password&username=%25&password=" + ADMIN_FORM, FORM),
    (
        "_ wildcards",
        b"grant_type=password&username=r__t%40example.com&password=" + ADMIN_FORM,
        FORM,
    ),
    ("% wildcard", b"grant_type=password&username=root%25&password=" + ADMIN_FORM, FORM),
]


async def test_broken_token_requests_get_an_oauth_error_and_change_nothing(world: World) -> None:
    before = await world.users()

    for what, content, ctype in TOKEN_FORMS:
        headers = {"Content-Type": ctype} if ctype else {}
        response = await world.client.post("/oauth2/token", content=content, headers=headers)
        body = assert_json_4xx(response, what, 400, 401)
        # RFC 6749 §5.2 shape, never FastAPI's 422 shape.
        assert set(body) == {"error", "error_description"}, (what, body)
        assert body["error"] in OAUTH_ERRORS, (what, body)

    assert await world.users() == before
    # The control: the admin's password, sent with the wildcard usernames above, is right.
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    assert (await world.client.post("/oauth2/token", data=form)).status_code == 200


NUL_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("register: NUL in the name", "POST", "/users", {"name": "Eve\x00"}),
    ("register: NUL in the email", "POST", "/users", {"email": "eve\x00@example.com"}),
    ("own name", "PATCH", "/users/me", {"name": "Bob\x00by"}),
    ("admin create: NUL in the name", "POST", "/admin/users", {"name": "Eve\x00"}),
    ("admin update: NUL in the name", "PATCH", "/admin/users/{user_id}", {"name": "Bob\x00"}),
    ("own name: a lone surrogate", "PATCH", "/users/me", {"name": "Bob\ud800"}),
]


@pytest.mark.parametrize(
    ("what", "method", "path", "fields"), NUL_CASES, ids=[c[0] for c in NUL_CASES]
)
async def test_control_characters_in_stored_text_are_refused_with_422(
    world: World, what: str, method: str, path: str, fields: dict[str, Any]
) -> None:
    """A NUL can't be stored in PostgreSQL text: it must be a 422, on every database alike."""
    before = await world.users()
    body = fields
    if method == "POST":
        body = {"email": "eve@example.com", "password": STRONG_PASSWORD, **fields}
    headers = world.admin if path.startswith("/admin") else world.user

    response = await world.client.request(
        method,
        path.format(user_id=world.user_id),
        content=json.dumps(body).encode(),  # ASCII escapes: a lone surrogate survives
        headers={**headers, "Content-Type": JSON},
    )

    assert_json_4xx(response, what, 422)
    assert await world.users() == before


async def test_a_nul_in_the_login_username_is_an_invalid_grant(world: World) -> None:
    form = {"grant_type": "password", "username": "root\x00@example.com", "password": "x"}

    response = await world.client.post("/oauth2/token", data=form)

    body = assert_json_4xx(response, "NUL username", 400)
    assert body["error"] == "invalid_grant"


async def test_a_nul_in_the_search_matches_literally_or_is_refused(world: World) -> None:
    """`bob\\0` is not a substring of any address: no match (or a 422), never `bob`."""
    response = await world.client.get("/admin/users", params={"q": "bob\x00"}, headers=world.admin)

    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json() == {"data": [], "count": 0}
    else:
        assert_json_4xx(response, "NUL in q", 422)


BAD_IDS = ["not-a-uuid", "1", "' OR 1=1 --", "%", "_", "00000000-0000-0000-0000-00000000000g"]


async def test_a_non_uuid_user_id_is_a_422_and_changes_nothing(world: World) -> None:
    before = await world.users()

    for method in ("GET", "PATCH", "DELETE"):
        for bad in BAD_IDS:
            response = await world.client.request(
                method,
                f"/admin/users/{quote(bad, safe='')}",
                json={"name": "x"} if method == "PATCH" else None,
                headers=world.admin,
            )
            assert_json_4xx(response, f"{method} {bad!r}", 422)

    assert await world.users() == before


async def test_an_unknown_user_id_is_a_404_and_changes_nothing(world: World) -> None:
    before = await world.users()

    for method in ("GET", "PATCH", "DELETE"):
        response = await world.client.request(
            method,
            f"/admin/users/{uuid.uuid4()}",
            json={"name": "x"} if method == "PATCH" else None,
            headers=world.admin,
        )
        assert_json_4xx(response, f"{method} unknown id", 404)

    assert await world.users() == before


OUT_OF_RANGE = [
    {"limit": "0"},
    {"limit": "100000"},
    {"limit": "501"},
    {"limit": "-1"},
    {"limit": "abc"},
    {"limit": "1.5"},
    {"limit": "9" * 30},
    {"limit": ""},
    {"offset": "-1"},
    {"offset": "abc"},
    {"offset": "1e3"},
    {"q": "x" * 321},
]


async def test_out_of_range_list_parameters_are_a_422(world: World) -> None:
    for params in OUT_OF_RANGE:
        response = await world.client.get("/admin/users", params=params, headers=world.admin)
        body = assert_json_4xx(response, str(params), 422)
        assert body["errors"][0]["loc"][0] == "query", params


@pytest.mark.parametrize("offset", [str(2**63), "9" * 30])
async def test_a_huge_offset_is_a_422_not_a_database_overflow(world: World, offset: str) -> None:
    response = await world.client.get(
        "/admin/users", params={"offset": offset}, headers=world.admin
    )

    assert_json_4xx(response, f"offset={offset}", 422)


async def test_list_parameters_at_their_limits_are_accepted(world: World) -> None:
    """The control for the 422s above: the bounds themselves are valid."""
    for params in ({"limit": "1"}, {"limit": "500"}, {"offset": "0"}, {"q": "x" * 320}):
        response = await world.client.get("/admin/users", params=params, headers=world.admin)
        assert response.status_code == 200, (params, response.text)


SEARCH_USERS = [
    ("percent%sign@example.com", None),
    ("under_score@example.com", None),
    ("underxscore@example.com", None),
    ("o'brien@example.com", "Pat O'Brien"),
    ("plain@example.com", "100% plain"),
    ("back.slash@example.com", "back\\slash"),
]
SEARCHES = [
    "%",
    "_",
    "%%",
    "%_%",
    "under_score",
    "' OR 1=1 --",
    "' OR '1'='1",
    "o'brien",
    "\\",
    "\\%",
    "[a-z]",
    "*",
    '"',
    ";",
    "--",
    "EXAMPLE",
]


async def test_search_treats_sql_metacharacters_literally(world: World) -> None:
    for email, name in SEARCH_USERS:
        await register(world.client, email, name=name)
    everyone = (await world.users())["data"]

    for q in SEARCHES:
        response = await world.client.get(
            "/admin/users", params={"q": q, "limit": 500}, headers=world.admin
        )
        assert response.status_code == 200, (q, response.text)
        body = response.json()
        # Substring semantics, case-insensitive, over email and name: nothing else matches.
        expected = {
            u["email"]
            for u in everyone
            if q.lower() in u["email"] or q.lower() in (u["name"] or "").lower()
        }
        assert {u["email"] for u in body["data"]} == expected, q
        assert body["count"] == len(expected), q

    percent = await world.client.get("/admin/users", params={"q": "%"}, headers=world.admin)
    assert {u["email"] for u in percent.json()["data"]} == {
        "percent%sign@example.com",
        "plain@example.com",
    }


async def test_sql_metacharacters_in_a_valid_email_are_stored_verbatim(world: World) -> None:
    email = "o'hara--%_=1@example.com"

    created = await register(world.client, email)
    headers = await auth_headers(world.client, email)
    me = await world.client.get("/users/me", headers=headers)

    assert me.json()["id"] == created["id"]
    assert me.json()["email"] == email
    assert (await world.users())["count"] == 3  # the admin, Bob, and this one
