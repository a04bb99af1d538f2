"""The OpenAPI document lists every answer an operation can give, with the body it really has.

Each claim is checked against the running service: a guarded operation called without a
token answers the 401 it documents; a 422 has the documented string `detail`; a 405 names
every method of its path in `Allow`. `.ci/schemathesis` checks the rest of the contract
from outside, against a real server.
"""

import re
from typing import Any

import httpx
import pytest

from tests.helpers.app import ClientFactory, admin_headers

pytestmark = pytest.mark.anyio

# Every operation that reads the password queue: hashing is what a client can flood.
PASSWORD_OPERATIONS = [
    ("/oauth2/token", "post"),
    ("/users", "post"),
    ("/admin/users", "post"),
    ("/users/me/password", "post"),
]
# Operations that answer from memory, never from the database.
WITHOUT_DATABASE = [
    ("/health/live", "get"),
    ("/.well-known/jwks.json", "get"),
    ("/.well-known/openid-configuration", "get"),
    ("/.well-known/oauth-authorization-server", "get"),
    ("/metrics", "get"),
]
A_USER_ID = "00000000-0000-4000-8000-000000000000"


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def _schema(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response["content"]["application/json"]["schema"]["$ref"]
    schema: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


async def test_every_guarded_operation_documents_and_answers_401_and_403(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    bearer = "OAuth2PasswordBearer"
    guarded = [
        (p, m, op)
        for p, m, op in _operations(document)
        if any(bearer in requirement for requirement in op.get("security", []))
    ]
    assert len(guarded) >= 9  # the account and admin operations, and userinfo

    for path, method, operation in guarded:
        for status in ("401", "403"):
            answer = operation["responses"][status]
            assert "WWW-Authenticate" in answer["headers"], (path, method, status)
            assert _schema(document, answer)["properties"]["detail"]["type"] == "string"
        # Every path parameter (a user's, a client's id...) spelled as one that exists.
        concrete = re.sub(r"\{[a-z_]+\}", A_USER_ID, path)
        response = await client.request(method, concrete, json={})
        assert response.status_code == 401, (path, method, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_password_operations_document_429_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)

    for path, method in PASSWORD_OPERATIONS:
        answer = document["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"], path
    token_errors = document["paths"]["/oauth2/token"]["post"]["responses"]
    for status in ("400", "401", "429", "503"):  # RFC 6749 §5.2 bodies on the token endpoint
        assert _schema(document, token_errors[status])["required"] == [
            "error",
            "error_description",
        ]


async def test_503_is_documented_exactly_where_the_database_is_used(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)

    for path, method, operation in _operations(document):
        documented = "503" in operation["responses"]
        assert documented == ((path, method) not in WITHOUT_DATABASE), (path, method)
        if documented and path != "/health/ready":  # the probe's own 503 is its answer
            assert "Retry-After" in operation["responses"]["503"]["headers"], (path, method)


async def test_bodies_document_400_and_413(client: httpx.AsyncClient) -> None:
    document = await _document(client)

    for path, method, operation in _operations(document):
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"]), (path, method)


async def test_a_422_has_the_documented_string_detail(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    admin = await admin_headers(client)
    assert "HTTPValidationError" not in document["components"]["schemas"]

    answers = {
        ("/admin/users", "get"): await client.get("/admin/users?limit=0", headers=admin),
        ("/admin/users/{user_id}", "get"): await client.get("/admin/users/1", headers=admin),
        ("/admin/users", "post"): await client.post(
            "/admin/users", json={"email": "x@example.com", "password": "short"}, headers=admin
        ),
    }
    for (path, method), response in answers.items():
        schema = _schema(document, document["paths"][path][method]["responses"]["422"])
        assert schema["properties"]["detail"]["type"] == "string"
        assert response.status_code == 422, response.text
        body = response.json()
        assert isinstance(body["detail"], str), body
        assert set(body) <= set(schema["properties"]), body


async def test_new_passwords_document_the_policys_length(make_client: ClientFactory) -> None:
    async with make_client(password_min_length=20) as client:
        schemas = (await _document(client))["components"]["schemas"]

    for model, field in [
        ("UserCreate", "password"),
        ("AdminUserCreate", "password"),
        ("PasswordChange", "new_password"),
    ]:
        schema = schemas[model]["properties"][field]
        assert "20 to 128 characters after NFKC" in schema["description"], model
        # Not as minLength: JSON Schema counts code points before NFKC, the policy after.
        assert schema["minLength"] == 1, model
    assert "description" not in schemas["PasswordChange"]["properties"]["current_password"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/users/me", "GET, PATCH"),
        ("DELETE", "/users/me", "GET, PATCH"),
        ("POST", f"/admin/users/{A_USER_ID}", "DELETE, GET, PATCH"),
        ("PUT", "/admin/users", "GET, POST"),
        ("GET", "/oauth2/token", "POST"),
    ],
)
async def test_a_405_allows_every_method_of_its_path(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == "application/json"
