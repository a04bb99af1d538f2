"""Signing keys: generated once, stored encrypted, shared by every process and restart."""

from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text

from auth_service.keys.service import SigningKeyUnreadable
from auth_service.kit import migrate
from auth_service.kit.db import sync_url
from tests.helpers.app import (
    SECRET_KEY,
    ClientFactory,
    bearer,
    login,
    make_settings,
    register,
    started_client,
)

pytestmark = pytest.mark.anyio

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def _signing_keys(database: str, columns: str) -> list[Any]:
    """`columns` of every stored signing key."""
    engine = create_engine(sync_url(database))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(f"SELECT {columns} FROM signing_keys")).all())  # noqa: S608
    finally:
        engine.dispose()


def _stored_keys(database: str) -> list[tuple[str, str, bytes]]:
    rows = _signing_keys(database, "kid, alg, private_key_encrypted")
    return [(row[0], row[1], bytes(row[2])) for row in rows]


async def test_first_start_creates_one_encrypted_key(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    async with started_client(make_settings(empty_database)) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()

    keys = _stored_keys(empty_database)

    assert len(keys) == 1
    kid, alg, blob = keys[0]
    assert alg == "RS256"
    assert b"PRIVATE KEY" not in blob
    assert SECRET_KEY.encode() not in blob
    assert [key["kid"] for key in jwks["keys"]] == [kid]
    # It signs at once: no verifier has a copy of the JWKS to wait for.
    assert _signing_times(empty_database) == [(kid, True)]


def _signing_times(database: str) -> list[tuple[str, bool]]:
    """Each key, and whether it signs from its creation."""
    rows = _signing_keys(database, "kid, created_at, signs_from")
    return [(row[0], row[1] == row[2]) for row in rows]


async def test_jwks_publishes_public_parameters_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["kty"] == "RSA"
    assert key["use"] == "sig"
    assert key["alg"] == "RS256"
    assert {"n", "e", "kid"} <= set(key)
    assert not PRIVATE_JWK_MEMBERS & set(key)


async def test_restarts_sign_and_verify_with_the_same_key(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client() as first:
        await register(first, "keep@example.com")
        token = await login(first, "keep@example.com")
        jwks_before = (await first.get("/.well-known/jwks.json")).json()

    async with make_client() as second:
        jwks_after = (await second.get("/.well-known/jwks.json")).json()
        me = await second.get("/users/me", headers=bearer(token))

    assert jwks_after == jwks_before
    assert me.status_code == 200
    assert len(_stored_keys(database)) == 1


async def test_es256_is_selectable(make_client: ClientFactory) -> None:
    async with make_client(signing_alg="ES256") as client:
        await register(client, "ec@example.com")
        token = await login(client, "ec@example.com")
        jwks = (await client.get("/.well-known/jwks.json")).json()
        me = await client.get("/users/me", headers=bearer(token))

    assert me.status_code == 200
    # The RS256 key of earlier starts retired: the service accepts one algorithm.
    (key,) = jwks["keys"]
    assert key["kid"] == jwt.get_unverified_header(token)["kid"]
    assert key["kty"] == "EC"
    assert key["crv"] == "P-256"
    assert key["alg"] == "ES256"
    assert not PRIVATE_JWK_MEMBERS & set(key)


async def test_a_wrong_secret_key_cannot_start_the_service(make_client: ClientFactory) -> None:
    async with make_client():
        pass

    with pytest.raises(SigningKeyUnreadable, match="AUTH_SECRET_KEY"):
        async with make_client(secret_key="another secret key"):
            pass
