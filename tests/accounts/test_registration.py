"""Registration (POST /users) and the password policy (NIST SP 800-63B rev. 4)."""

import asyncio
import unicodedata

import httpx
import pytest

from tests.helpers.app import (
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    login,
    register,
    request_token,
)

pytestmark = pytest.mark.anyio


async def _user_count(client: httpx.AsyncClient) -> int:
    response = await client.get("/admin/users", headers=await admin_headers(client))
    count: int = response.json()["count"]
    return count


async def test_registration_returns_the_user_without_any_hash(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", json={"email": "New@Example.COM", "password": STRONG_PASSWORD, "name": "Nia"}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "New@example.com"  # as typed; only the domain is lower-cased
    assert body["name"] == "Nia"
    assert body["roles"] == []
    assert body["is_active"] is True
    assert body["is_verified"] is False
    assert set(body) == {
        "id", "email", "name", "is_active", "is_verified", "roles", "created_at", "updated_at"
    }  # fmt: skip
    assert "$bcrypt" not in response.text
    assert STRONG_PASSWORD not in response.text


async def test_taken_email_is_409_whatever_its_case(client: httpx.AsyncClient) -> None:
    await register(client, "taken@example.com")

    response = await client.post(
        "/users", json={"email": "TAKEN@example.com", "password": STRONG_PASSWORD}
    )

    assert response.status_code == 409
    assert response.json() == {"detail": "A user with this email already exists."}


async def test_concurrent_registrations_create_exactly_one_user(
    client: httpx.AsyncClient,
) -> None:
    attempts = 8
    responses = await asyncio.gather(
        *(
            client.post(
                "/users", json={"email": f"Race{'!' * 0}@Example.com", "password": STRONG_PASSWORD}
            )
            for _ in range(attempts)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (attempts - 1)
    assert await _user_count(client) == 2  # the bootstrap admin and the winner


async def test_invalid_email_is_422_with_a_clear_message(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", json={"email": "not-an-email", "password": STRONG_PASSWORD}
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("email:")


async def test_closed_registration_is_403_and_creates_nothing(make_client: ClientFactory) -> None:
    async with make_client(registration_open=False) as client:
        response = await client.post(
            "/users", json={"email": "late@example.com", "password": STRONG_PASSWORD}
        )

        invalid = await client.post("/users", json={"email": "nope"})

        assert response.status_code == 403
        assert response.json() == {"detail": "Registration is closed."}
        assert invalid.status_code == 403  # closed says so before judging the body
        assert await _user_count(client) == 1


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short pass", "min_length"),
        ("x" * 129, "max_length"),
        ("aaaaaaaaaaaaaaaa", "pattern"),
        ("123456789012345", "pattern"),
        ("abcdefghijklmnopq", "pattern"),
        ("qwertyuiopasdfgh", "pattern"),
        ("1qaz2wsx3edc4rfv", "common"),
        ("passwordpasswordpassword", "pattern"),
        ("jane.doe loves long walks", "contains_email"),
    ],
)
async def test_refused_passwords_say_which_rule_failed(
    client: httpx.AsyncClient, password: str, rule: str
) -> None:
    response = await client.post(
        "/users", json={"email": "jane.doe@example.com", "password": password}
    )

    assert response.status_code == 422, response.text
    assert response.json()["rule"] == rule
    assert password not in response.text
    assert await _user_count(client) == 1


async def test_minimum_length_counts_code_points_and_is_configurable(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_min_length=8) as client:
        # Eight code points, 24 UTF-8 bytes: long enough at a minimum of 8.
        await register(client, "kanji@example.com", password="猫が好き犬も好き")
        refused = await client.post(
            "/users", json={"email": "b@example.com", "password": "猫が好き犬"}
        )

    assert refused.status_code == 422
    assert refused.json()["rule"] == "min_length"


async def test_sixty_four_character_passphrases_are_allowed(client: httpx.AsyncClient) -> None:
    passphrase = "the quick brown fox jumps over the lazy dog while it rains hard!"
    assert len(passphrase) == 64

    await register(client, "long@example.com", password=passphrase)

    assert await login(client, "long@example.com", passphrase)


async def test_every_byte_of_a_long_password_counts(client: httpx.AsyncClient) -> None:
    # bcrypt alone ignores everything after 72 bytes; bcrypt_sha256 must not.
    prefix = "é" * 40  # 80 bytes of UTF-8
    await register(client, "bytes@example.com", password=prefix + " first ending")

    wrong = await request_token(client, "bytes@example.com", prefix + " other ending")

    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert await login(client, "bytes@example.com", prefix + " first ending")


async def test_passwords_are_nfkc_normalized(client: httpx.AsyncClient) -> None:
    composed = "café crème brûlée au lait"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed

    await register(client, "nfkc@example.com", password=decomposed)

    assert await login(client, "nfkc@example.com", composed)
