"""Signing key rotation and emergency revocation (RFC 7517 key sets, RFC 7515 `kid`).

A rotation publishes a new key, the next one, which signs only once verifiers have fetched
it (OpenID Connect Core §10.1.1); tokens the old one signed keep working until they expire,
then the old key retires. A revocation refuses a key's tokens at once. Every worker and
replica follows the `signing_keys` table by polling it, so a change made through any of them,
or by `auth-service rotate-keys`, reaches all within seconds. Waits are bounded loops with a
deadline; the clock is moved by writing timestamps into the database.
"""

import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import jwt
import psycopg
import pytest
from sqlalchemy import create_engine, select
from sqlmodel import col

from auth_service import cli
from auth_service.keys import service as keys_service
from auth_service.keys.service import KeyRing
from auth_service.keys.settings import KEY_REFRESH_MAX_SECONDS
from auth_service.kit.db import STARTUP_LOCK_ID, create_sessionmaker, sync_url, transaction
from auth_service.kit.db import create_engine as create_async_engine
from auth_service.models import SigningKey
from auth_service.security.jwt import LEEWAY_SECONDS
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    BCRYPT_TEST_ROUNDS,
    DATABASES,
    SECRET_KEY,
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    app_state,
    bearer,
    login,
    register,
    request_token,
)
from tests.helpers.keys import CLI_ROTATED, kid_of, now_signing, set_times
from tests.helpers.outage import DATABASE_TIMEOUT, answered_while_locked, assert_unavailable

pytestmark = pytest.mark.anyio

# Bounds on the waits for a change to reach a worker (a poll every AUTH_KEY_REFRESH_SECONDS).
IN_PROCESS_WAIT_SECONDS = 15.0
FAST_POLL = 0.05  # AUTH_KEY_REFRESH_SECONDS of the in-process apps that wait for a poll
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}
KEY_FIELDS = {"kid", "alg", "state", "created_at", "signs_from", "retires_at", "revoked_at"}
only_sqlite = pytest.mark.parametrize(
    "database", [d for d in DATABASES if d == "sqlite"], indirect=True
)


async def jwks_kids(client: httpx.AsyncClient) -> set[str]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return {key["kid"] for key in response.json()["keys"]}


async def listed_keys(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/admin/keys", headers=headers)
    assert response.status_code == 200, response.text
    return {key["kid"]: key for key in response.json()["data"]}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _stored(database: str) -> list[tuple[str, datetime | None, datetime | None]]:
    engine = create_engine(sync_url(database))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(col(SigningKey.kid), col(SigningKey.retires_at), col(SigningKey.revoked_at))
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]
    finally:
        engine.dispose()


def _assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def _until(condition: Callable[[], Any], what: str) -> None:
    """Wait until `await condition()` is true, failing after IN_PROCESS_WAIT_SECONDS."""
    deadline = time.monotonic() + IN_PROCESS_WAIT_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {IN_PROCESS_WAIT_SECONDS} s: {what}")
        await anyio.sleep(FAST_POLL)


async def _rotate(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """Rotate through the admin endpoint: the next key, published, not signing yet."""
    response = await client.post("/admin/keys/rotate", headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["state"] == "next", body
    return body


async def _rotate_and_sign(
    client: httpx.AsyncClient, headers: dict[str, str], database: str
) -> dict[str, Any]:
    """Rotate, then let the next key's time to sign come: this worker signs with it now."""
    rotated = await _rotate(client, headers)
    now_signing(database, rotated["kid"])
    await app_state(client).key_ring.load()
    return rotated


# --- rotation --------------------------------------------------------------------------------


async def test_a_rotation_publishes_the_next_key_before_it_signs(
    make_client: ClientFactory, database: str
) -> None:
    """OpenID Connect Core §10.1.1: the key is in the JWKS for a whole max-age and a worker's
    poll before any token names it, so a verifier never needs its refetch for an unknown
    kid (which tokens with made-up kids may have spent) to accept the new key's tokens."""
    async with make_client(key_refresh_seconds=FAST_POLL) as client:
        await register(client, "steady@example.com")
        old = await login(client, "steady@example.com")
        admin = await admin_headers(client)
        max_age = (await client.get("/.well-known/jwks.json")).headers["cache-control"]
        before = datetime.now(UTC)

        rotated = await _rotate(client, admin)
        meanwhile = await login(client, "steady@example.com")
        published = await jwks_kids(client)
        listed = await listed_keys(client, admin)

        # As if the lead had passed but 3 s: the ring knows the time, the table stays.
        set_times(database, rotated["kid"], signs_from=datetime.now(UTC) + timedelta(seconds=3))
        await app_state(client).key_ring.load()
        assert kid_of(await login(client, "steady@example.com")) == kid_of(old)

        async def signs_with_the_next_key() -> bool:
            kid: str = rotated["kid"]
            return kid_of(await login(client, "steady@example.com")) == kid

        await _until(signs_with_the_next_key, "the next key signs at its time, no call made")
        new = await login(client, "steady@example.com")
        for token in (old, meanwhile, new):
            assert (await client.get("/users/me", headers=bearer(token))).status_code == 200
        after = await listed_keys(client, admin)

    assert set(rotated) == KEY_FIELDS
    assert rotated["retires_at"] is None
    assert kid_of(meanwhile) == kid_of(old) != rotated["kid"]  # the old key still signs
    assert published == {kid_of(old), rotated["kid"]}
    assert listed[rotated["kid"]]["state"] == "next"
    assert listed[kid_of(old)]["state"] == "signing"
    # It signs from one JWKS max-age and the longest poll interval after the rotation...
    lead = int(max_age.removeprefix("public, max-age=")) + KEY_REFRESH_MAX_SECONDS
    signs_from = _parse_time(rotated["signs_from"])
    assert lead == 300 + 60
    assert before + timedelta(seconds=lead) <= signs_from
    assert signs_from <= datetime.now(UTC) + timedelta(seconds=lead)
    # ... and the old key verifies until its last token has expired, with the guards'
    # leeway, however late (up to the longest AUTH_KEY_REFRESH_SECONDS) a worker switches.
    window = timedelta(seconds=900 + LEEWAY_SECONDS + KEY_REFRESH_MAX_SECONDS)
    assert _parse_time(listed[kid_of(old)]["retires_at"]) == signs_from + window
    assert after[rotated["kid"]]["state"] == "signing"
    assert after[kid_of(old)]["state"] == "verifying"
    assert after[kid_of(old)]["revoked_at"] is None


async def test_a_short_max_age_still_leaves_the_verifiers_minimum_cache_to_the_lead(
    make_client: ClientFactory,
) -> None:
    """With 60 s tokens the JWKS max-age is 30 s, but auth-service-verifier keeps a set at
    least 60 s: the next key waits for that."""
    async with make_client(access_token_ttl=60) as client:
        admin = await admin_headers(client)
        max_age = (await client.get("/.well-known/jwks.json")).headers["cache-control"]
        before = datetime.now(UTC)
        rotated = await _rotate(client, admin)

    assert max_age == "public, max-age=30"
    signs_from = _parse_time(rotated["signs_from"])
    assert before + timedelta(seconds=60 + KEY_REFRESH_MAX_SECONDS) <= signs_from


async def test_a_rotation_while_a_key_is_next_is_409_and_changes_nothing(
    client: httpx.AsyncClient, database: str
) -> None:
    admin = await admin_headers(client)
    rotated = await _rotate(client, admin)
    stored = _stored(database)

    again = await client.post("/admin/keys/rotate", headers=admin)

    assert again.status_code == 409, again.text
    detail = again.json()["detail"]
    assert detail.startswith(f"Key {rotated['kid']} is already the next signing key")
    assert _stored(database) == stored
    assert len(await jwks_kids(client)) == 2

    now_signing(database, rotated["kid"])  # once it signs, rotating is fine again
    assert (await _rotate(client, admin))["kid"] not in {kid for kid, _, _ in stored}


async def test_the_key_listing_shows_no_private_material(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    await _rotate(client, admin)

    response = await client.get("/admin/keys", headers=admin)

    assert response.status_code == 200
    keys = response.json()["data"]
    assert [key["state"] for key in keys] == ["next", "signing"]  # newest first
    for key in keys:
        assert set(key) == KEY_FIELDS
        assert not PRIVATE_JWK_MEMBERS & set(key)
    assert "PRIVATE" not in response.text


async def test_a_restart_signs_with_the_newest_key_whose_time_has_come(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client() as first:
        old = kid_of(await login(first, ADMIN_EMAIL, ADMIN_PASSWORD))
        rotated = await _rotate(first, await admin_headers(first))

    async with make_client() as second:
        before = await login(second, ADMIN_EMAIL, ADMIN_PASSWORD)
    now_signing(database, rotated["kid"])
    async with make_client() as third:
        after = await login(third, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert kid_of(before) == old
    assert kid_of(after) == rotated["kid"]


async def test_a_superseded_key_never_signs_again_whatever_the_clocks_said(
    make_client: ClientFactory, database: str
) -> None:
    """A rotation on a replica whose clock is behind gives the new key an older date."""
    async with make_client() as first:
        rotated = await _rotate(first, await admin_headers(first))
    now_signing(database, rotated["kid"])
    set_times(database, rotated["kid"], created_at=datetime(2000, 1, 1, tzinfo=UTC))
    try:
        async with make_client() as second:
            token = await login(second, ADMIN_EMAIL, ADMIN_PASSWORD)
    finally:  # the fixture keeps the oldest key for the next test
        set_times(database, rotated["kid"], created_at=_parse_time(rotated["created_at"]))

    assert kid_of(token) == rotated["kid"]


async def test_a_superseded_key_retires_once_its_window_has_passed(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client(key_refresh_seconds=FAST_POLL) as client:
        await register(client, "late@example.com")
        old = await login(client, "late@example.com")
        admin = await admin_headers(client)
        rotated = await _rotate_and_sign(client, admin, database)
        admin = await admin_headers(client)  # signed by the new key
        assert kid_of(old) in await jwks_kids(client)

        # As if the access token lifetime had passed since the rotation.
        set_times(database, kid_of(old), retires_at=datetime.now(UTC) - timedelta(seconds=1))

        async def gone() -> bool:
            return kid_of(old) not in await jwks_kids(client)

        await _until(gone, "the retired key leaves the JWKS")
        _assert_invalid_token(await client.get("/users/me", headers=bearer(old)))
        assert await jwks_kids(client) == {rotated["kid"]}
        listed = await listed_keys(client, admin)

    assert listed[kid_of(old)]["state"] == "retired"
    assert kid_of(old) in {kid for kid, _, _ in _stored(database)}  # kept for the record


async def test_a_worker_a_poll_behind_signs_tokens_that_verify_until_they_expire(
    make_client: ClientFactory, database: str
) -> None:
    """A worker signs with the superseded key until its next poll; every token it signs so
    verifies until its exp (and the guards' leeway), whichever process rotated."""
    async with (
        make_client(key_refresh_seconds=FAST_POLL) as here,
        make_client(key_refresh_seconds=KEY_REFRESH_MAX_SECONDS) as there,  # the slowest
    ):
        await register(here, "late@example.com")
        old = await login(there, "late@example.com")
        rotated = await _rotate(here, await admin_headers(here))
        # As if the new key had begun to sign 55 s ago: `there` has not polled since, as it
        # may not.
        signs_from = datetime.now(UTC) - timedelta(seconds=55)
        retires_at = signs_from + keys_service.overlap(900)  # as the rotation sets it
        set_times(database, rotated["kid"], signs_from=signs_from)
        set_times(database, kid_of(old), retires_at=retires_at)

        late = await login(there, "late@example.com")

    assert kid_of(late) == kid_of(old)  # signed with the superseded key
    expires = jwt.decode(late, options={"verify_signature": False})["exp"]
    assert expires + LEEWAY_SECONDS <= retires_at.timestamp()


def _retirement(database: str, kid: str) -> datetime:
    (retires_at,) = [retires for stored, retires, _ in _stored(database) if stored == kid]
    assert retires_at is not None
    return retires_at


async def test_a_retirement_falls_due_without_any_write(
    make_client: ClientFactory, database: str
) -> None:
    """The poll reloads when a known retirement time comes, though the table is unchanged."""
    async with make_client(key_refresh_seconds=FAST_POLL) as client:
        old = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        await _rotate_and_sign(client, bearer(old), database)
        set_times(database, kid_of(old), retires_at=datetime.now(UTC) + timedelta(seconds=1))
        await app_state(client).key_ring.load()  # knows the new time; the table stays as is
        assert kid_of(old) in await jwks_kids(client)

        async def gone() -> bool:
            return kid_of(old) not in await jwks_kids(client)

        await _until(gone, "the key leaves the JWKS at its retirement time")


# --- a change of AUTH_SIGNING_ALG -------------------------------------------------------------


async def test_a_new_signing_algorithm_retires_the_earlier_algorithms_keys_at_once(
    make_client: ClientFactory, database: str
) -> None:
    """RFC 8725 §3.1: one algorithm. From the first start with the new one, tokens of the
    earlier one are refused; so its keys leave the JWKS then, and say when, while sessions
    go on with their refresh tokens."""
    async with make_client() as first:  # RS256
        await register(first, "switch@example.com")
        issued = (await request_token(first, "switch@example.com")).json()
    old = issued["access_token"]
    before = datetime.now(UTC)

    async with make_client(signing_alg="ES256") as second:
        refused = await second.get("/users/me", headers=bearer(old))
        refreshed = await second.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text
        new = refreshed.json()["access_token"]
        accepted = await second.get("/users/me", headers=bearer(new))
        published = (await second.get("/.well-known/jwks.json")).json()["keys"]
        listed = await listed_keys(second, await admin_headers(second))
    stored = _stored(database)
    async with make_client(signing_alg="ES256"):  # a restart changes nothing more
        pass

    _assert_invalid_token(refused)
    assert accepted.status_code == 200, accepted.text
    assert [(key["kid"], key["alg"]) for key in published] == [(kid_of(new), "ES256")]
    assert listed[kid_of(new)]["state"] == "signing"
    earlier = listed[kid_of(old)]
    assert earlier["alg"] == "RS256"
    assert earlier["state"] == "retired"
    assert earlier["revoked_at"] is None
    assert before <= _parse_time(earlier["retires_at"]) <= datetime.now(UTC)
    assert _stored(database) == stored


async def test_going_back_to_an_earlier_algorithm_signs_with_a_new_key(
    make_client: ClientFactory, database: str
) -> None:
    async with make_client() as client:
        rs256 = kid_of(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    async with make_client(signing_alg="ES256") as client:
        es256 = kid_of(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    retired = {kid: retires for kid, retires, _ in _stored(database)}

    async with make_client() as client:
        admin = await admin_headers(client)
        published = await jwks_kids(client)
        listed = await listed_keys(client, admin)

    signing = kid_of(admin["Authorization"].removeprefix("Bearer "))
    assert signing not in {rs256, es256}  # a retired key never signs again
    assert published == {signing}
    assert listed[es256]["state"] == listed[rs256]["state"] == "retired"
    assert _retirement(database, rs256) == retired[rs256]  # retired once, when it stopped


async def test_a_key_of_another_algorithm_is_never_published(
    make_client: ClientFactory, database: str
) -> None:
    """Made by a process still configured with the earlier algorithm (a replica not yet
    restarted): this service refuses its tokens, so it does not publish it either."""
    async with make_client(signing_alg="ES256") as client:
        es256 = await jwks_kids(client)
        rs256 = await _rotate_elsewhere(database, alg="RS256")
        await app_state(client).key_ring.load()

        assert rs256 in {kid for kid, _, _ in _stored(database)}
        assert await jwks_kids(client) == es256
        assert kid_of(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)) in es256


# --- revocation ------------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_at_once_and_leaves_the_jwks(
    client: httpx.AsyncClient, database: str
) -> None:
    await register(client, "exposed@example.com")
    old = await login(client, "exposed@example.com")
    assert (await client.get("/users/me", headers=bearer(old))).status_code == 200  # cached
    await _rotate_and_sign(client, await admin_headers(client), database)
    admin = await admin_headers(client)
    new = await login(client, "exposed@example.com")
    etag = (await client.get("/.well-known/jwks.json")).headers["etag"]

    revoked = await client.post(f"/admin/keys/{kid_of(old)}/revoke", headers=admin)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    _assert_invalid_token(await client.get("/users/me", headers=bearer(old)))
    assert (await client.get("/users/me", headers=bearer(new))).status_code == 200
    jwks = await client.get("/.well-known/jwks.json")
    assert {key["kid"] for key in jwks.json()["keys"]} == {kid_of(new)}
    assert jwks.headers["etag"] != etag


async def test_revoking_the_signing_key_puts_a_new_one_in_place_first(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "first@example.com")
    old_admin = await admin_headers(client)
    old = await login(client, "first@example.com")

    revoked = await client.post(f"/admin/keys/{kid_of(old)}/revoke", headers=old_admin)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    _assert_invalid_token(await client.get("/users/me", headers=old_admin))
    new = await login(client, "first@example.com")
    assert kid_of(new) != kid_of(old)
    assert (await client.get("/users/me", headers=bearer(new))).status_code == 200
    assert await jwks_kids(client) == {kid_of(new)}
    listed = await listed_keys(client, await admin_headers(client))
    assert listed[kid_of(new)]["state"] == "signing"
    assert [key["state"] for key in listed.values()].count("signing") == 1


async def test_revoking_the_signing_key_makes_the_next_key_sign_at_once(
    client: httpx.AsyncClient, database: str
) -> None:
    """A revocation cannot wait for the next key's time: it signs now."""
    await register(client, "urgent@example.com")
    old = await login(client, "urgent@example.com")
    rotated = await _rotate(client, await admin_headers(client))
    admin = await admin_headers(client)
    assert kid_of(admin["Authorization"].removeprefix("Bearer ")) == kid_of(old)
    before = datetime.now(UTC)

    revoked = await client.post(f"/admin/keys/{kid_of(old)}/revoke", headers=admin)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    new = await login(client, "urgent@example.com")
    assert kid_of(new) == rotated["kid"]
    _assert_invalid_token(await client.get("/users/me", headers=bearer(old)))
    assert (await client.get("/users/me", headers=bearer(new))).status_code == 200
    assert await jwks_kids(client) == {rotated["kid"]}
    listed = await listed_keys(client, await admin_headers(client))
    assert listed[rotated["kid"]]["state"] == "signing"
    assert before <= _parse_time(listed[rotated["kid"]]["signs_from"]) <= datetime.now(UTC)
    assert len(listed) == 2  # no key made beside the next one


async def test_revoking_the_next_key_cancels_the_rotation(
    client: httpx.AsyncClient, database: str
) -> None:
    admin = await admin_headers(client)
    signing = kid_of(admin["Authorization"].removeprefix("Bearer "))
    rotated = await _rotate(client, admin)

    revoked = await client.post(f"/admin/keys/{rotated['kid']}/revoke", headers=admin)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert await jwks_kids(client) == {signing}
    listed = await listed_keys(client, admin)
    assert listed[signing]["state"] == "signing"
    assert listed[signing]["retires_at"] is None  # it goes on, as before the rotation
    assert (await _rotate(client, admin))["state"] == "next"  # a rotation may start again


async def test_revoking_a_key_twice_changes_nothing(
    client: httpx.AsyncClient, database: str
) -> None:
    admin = await admin_headers(client)
    await _rotate_and_sign(client, admin, database)
    admin = await admin_headers(client)
    kid = next(kid for kid, state in (await _states(client, admin)).items() if state != "signing")

    first = await client.post(f"/admin/keys/{kid}/revoke", headers=admin)
    stored = _stored(database)
    second = await client.post(f"/admin/keys/{kid}/revoke", headers=admin)

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert _stored(database) == stored


async def _states(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    return {kid: key["state"] for kid, key in (await listed_keys(client, headers)).items()}


@pytest.mark.parametrize("kid", ["no-such-kid", "x" * 64])
async def test_revoking_an_unknown_kid_is_404(
    client: httpx.AsyncClient, database: str, kid: str
) -> None:
    stored = _stored(database)

    response = await client.post(f"/admin/keys/{kid}/revoke", headers=await admin_headers(client))

    assert response.status_code == 404
    assert response.json() == {"detail": "No signing key has this kid."}
    assert _stored(database) == stored


# NUL above all: PostgreSQL refuses it in text, which was a 500.
@pytest.mark.parametrize("kid", ["a%00b", "a%20b", "%C3%A9", "x" * 65])
async def test_a_kid_that_no_key_could_have_is_422(
    client: httpx.AsyncClient, database: str, kid: str
) -> None:
    stored = _stored(database)

    response = await client.post(f"/admin/keys/{kid}/revoke", headers=await admin_headers(client))

    assert response.status_code == 422, response.text
    assert _stored(database) == stored


# --- who may -----------------------------------------------------------------------------------


async def test_key_routes_are_for_admins_holding_the_keys_scope(
    client: httpx.AsyncClient, database: str
) -> None:
    await register(client, "plain@example.com")
    user = await admin_headers_for(client, "plain@example.com", STRONG_PASSWORD, scope=None)
    users_only = await admin_headers_for(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:users")
    kid = kid_of(users_only["Authorization"].removeprefix("Bearer "))
    stored = _stored(database)
    calls = [
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys/rotate"),
        ("POST", f"/admin/keys/{kid}/revoke"),
    ]

    for method, path in calls:
        nobody = await client.request(method, path)
        assert nobody.status_code == 401, (method, path)
        assert nobody.headers["www-authenticate"] == 'Bearer scope="admin:keys"'
        for headers in (user, users_only):
            refused = await client.request(method, path, headers=headers)
            assert refused.status_code == 403, (method, path, refused.text)
            assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert _stored(database) == stored


async def admin_headers_for(
    client: httpx.AsyncClient, email: str, password: str, *, scope: str | None
) -> dict[str, str]:
    return bearer(await login(client, email, password, scope=scope))


# --- waits on start-up and migrations ----------------------------------------------------------


@asynccontextmanager
async def _start_up_elsewhere(database: str) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """Hold the lock a replica's start-up or migration holds, from a connection of its own;
    yields the coroutine function that releases it (once or more)."""
    if database.startswith("postgresql"):
        other = await psycopg.AsyncConnection.connect(database, autocommit=True)

        async def release_advisory() -> None:
            await other.execute("SELECT pg_advisory_unlock_all()")

        try:
            await other.execute("SELECT pg_advisory_lock(%s)", [STARTUP_LOCK_ID])
            yield release_advisory
        finally:
            await other.close()
        return
    holder = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)

    async def release_write_lock() -> None:
        if holder.in_transaction:
            holder.execute("ROLLBACK")

    try:
        holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock: its start-up lock
        yield release_write_lock
    finally:
        holder.close()


@pytest.mark.parametrize("change", ["rotate", "revoke"])
async def test_a_change_waiting_on_a_starting_replica_is_503_after_the_database_timeout(
    make_client: ClientFactory, database: str, change: str
) -> None:
    """Start-up waits for another replica as long as it takes; a request waits no longer
    than AUTH_DATABASE_TIMEOUT_SECONDS, then answers as on an unavailable database."""
    async with make_client(database_timeout_seconds=DATABASE_TIMEOUT) as client:
        admin = await admin_headers(client)
        kid = kid_of(admin["Authorization"].removeprefix("Bearer "))
        path = "/admin/keys/rotate" if change == "rotate" else f"/admin/keys/{kid}/revoke"
        stored = _stored(database)

        async with _start_up_elsewhere(database) as release:
            started = time.monotonic()
            refused = await answered_while_locked(client.post(path, headers=admin), release)
            waited = time.monotonic() - started

        assert_unavailable(refused)
        assert waited >= DATABASE_TIMEOUT - 0.1
        assert _stored(database) == stored  # the failed request changed nothing
        done = await client.post(path, headers=admin)  # the other replica has started
        assert done.status_code == (201 if change == "rotate" else 200), done.text


# --- other workers and replicas ----------------------------------------------------------------


async def test_another_replica_follows_a_rotation_and_a_revocation(
    make_client: ClientFactory, database: str
) -> None:
    async with (
        make_client(key_refresh_seconds=FAST_POLL) as here,
        make_client(key_refresh_seconds=FAST_POLL) as there,
    ):
        await register(here, "roaming@example.com")
        old = await login(there, "roaming@example.com")
        assert (await there.get("/users/me", headers=bearer(old))).status_code == 200  # cached
        rotated = await _rotate(here, await admin_headers(here))

        async def publishes_the_next_key() -> bool:
            return rotated["kid"] in await jwks_kids(there)

        await _until(publishes_the_next_key, "the other replica publishes the next key")
        assert kid_of(await login(there, "roaming@example.com")) == kid_of(old)
        now_signing(database, rotated["kid"])

        async def signs_with_the_new_key() -> bool:
            return kid_of(await login(there, "roaming@example.com")) == str(rotated["kid"])

        await _until(signs_with_the_new_key, "the other replica signs with the new key")
        assert (await there.get("/users/me", headers=bearer(old))).status_code == 200

        revoked = await here.post(
            f"/admin/keys/{kid_of(old)}/revoke", headers=await admin_headers(here)
        )
        assert revoked.status_code == 200, revoked.text

        async def refuses_the_old_token() -> bool:
            return (await there.get("/users/me", headers=bearer(old))).status_code == 401

        await _until(refuses_the_old_token, "the other replica refuses the revoked key's tokens")
        assert await jwks_kids(there) == {rotated["kid"]}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database: str) -> str:
    monkeypatch.setenv("AUTH_DATABASE_URL", database)
    monkeypatch.setenv("AUTH_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", str(BCRYPT_TEST_ROUNDS))
    return database


@pytest.mark.usefixtures("restore_logging")
async def test_rotate_keys_command_reaches_a_running_service(
    cli_env: str, make_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command does what the admin endpoint does: the same next key, the same lead."""
    async with make_client(key_refresh_seconds=FAST_POLL) as client:
        old = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)

        code = await anyio.to_thread.run_sync(cli.main, ["rotate-keys"])

        assert code == 0
        printed = capsys.readouterr().out
        found = CLI_ROTATED.fullmatch(printed)
        assert found, printed
        kid = found[1]

        async def publishes_it() -> bool:
            return kid in await jwks_kids(client)

        await _until(publishes_it, "the running service publishes the key the command made")
        assert kid_of(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)) == kid_of(old)
        listed = (await listed_keys(client, bearer(old)))[kid]
        assert listed["state"] == "next"
        assert _parse_time(listed["signs_from"]) - _parse_time(listed["created_at"]) == timedelta(
            seconds=300 + KEY_REFRESH_MAX_SECONDS
        )
        assert _parse_time(found[2]) == _parse_time(listed["signs_from"]).replace(microsecond=0)

        refused = await anyio.to_thread.run_sync(cli.main, ["rotate-keys"])
        assert refused == 1
        assert f"Key {kid} is already the next signing key" in capsys.readouterr().err
        now_signing(cli_env, kid)

        async def signs_with_it() -> bool:
            return kid_of(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)) == kid

        await _until(signs_with_it, "the running service signs with the key the command made")
        assert (await client.get("/users/me", headers=bearer(old))).status_code == 200


# --- the published key set ------------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "max_age"), [(60, 30), (900, 300), (86_400, 300)])
async def test_the_jwks_is_cached_for_less_than_a_superseded_key_still_verifies(
    make_client: ClientFactory, ttl: int, max_age: int
) -> None:
    async with make_client(access_token_ttl=ttl) as client:
        jwks = await client.get("/.well-known/jwks.json")
        metadata = await client.get("/.well-known/openid-configuration")

    assert jwks.headers["cache-control"] == f"public, max-age={max_age}"
    assert max_age < ttl + LEEWAY_SECONDS  # the overlap window of a rotation
    assert metadata.headers["cache-control"] == "public, max-age=300"


# --- failures of the poll ----------------------------------------------------------------------


@only_sqlite
async def test_a_poll_that_cannot_reach_the_database_keeps_the_last_good_keys(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's ring, polling a SQLite file that has been moved away, then put back."""
    home, away = tmp_path / "db-home", tmp_path / "db-away"
    home.mkdir()
    shutil.copy(database.removeprefix("sqlite:///"), home / "auth.db")
    url = f"sqlite:///{home / 'auth.db'}"
    engine = create_async_engine(url, timeout=1)
    ring = KeyRing(sessionmaker=create_sessionmaker(engine), alg="RS256", secret_key=SECRET_KEY)
    caplog.set_level(logging.INFO, logger="auth_service.keys.service")

    def logged(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    try:
        keys = await ring.load()
        home.rename(away)
        await engine.dispose()  # pooled connections would keep the moved file open
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ring.follow, FAST_POLL)

            async def warned() -> bool:
                return logged("keeping the last good set") > 0

            await _until(warned, "the failed poll is logged")
            await anyio.sleep(10 * FAST_POLL)  # more polls fail: still one warning
            assert logged("keeping the last good set") == 1
            assert ring.keys is keys

            away.rename(home)
            rotated = await _rotate_elsewhere(url)

            async def recovered() -> bool:
                return logged("refreshed again") == 1 and rotated in ring.keys.by_kid

            await _until(recovered, "the poll recovers by itself and follows the rotation")
            tasks.cancel_scope.cancel()
    finally:
        await engine.dispose()
    assert SECRET_KEY not in caplog.text


async def _rotate_elsewhere(url: str, alg: str = "RS256") -> str:
    """Rotate as another replica would, through an engine of its own: the new kid."""
    engine = create_async_engine(url)
    try:
        async with transaction(create_sessionmaker(engine)) as db:
            key = await keys_service.rotate(
                db=db, alg=alg, secret_key=SECRET_KEY, access_token_ttl=900
            )
    finally:
        await engine.dispose()
    return key.kid


# --- `auth-service serve --workers 2` over loopback HTTP --------------------------------------
